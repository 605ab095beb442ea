"""Plan lines: one labelled variant per line, ``label: double_blocks=<plan>; single_blocks=<plan>``.

    # comments run from '#' to the end of the line; blank lines are skipped
    skip middle: double_blocks=0-2, 17-18; single_blocks=0-3, 34-37
    reverse:     single_blocks=0-3, 33-4, 34-37        (a stream left out keeps the model's order)

- The label is the text before the first ':', trimmed. It may not be empty, may not contain ':' or
  '#', and must be unique (ignoring case). ``baseline`` is reserved: the model as received is
  always the first variant and carries that label.
- After the ':' come ``stream=plan`` assignments separated by ';'. The streams are
  ``double_blocks`` (SD3: the joint blocks) and ``single_blocks``, each at most once, at least one
  per line. A plan is the plan language of ``core.plan``.

``parse_lines`` checks the syntax without a model (``scan_lines`` too, returning the valid lines
and the errors side by side, for a live preview). ``check_lines`` checks every line against a
model's ``LayerPlan`` (index ranges, composition with what the model already carries, the
family's rules); ``read_lines`` does both. Each reports every bad line at once: line number,
1-based column, the token and the valid choices.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from ..plan import PlanError, parse_plan
from ..rewrite import STREAMS, LayerPlan, Rewrite, plan_rewrite

BASELINE = "baseline"
# Names users bring from other models or tools, and what they are called here.
KEY_HINTS = {
    "joint_blocks": "SD3's joint blocks are double_blocks",
    "double_layers": "AuraFlow's double_layers are double_blocks",
    "single_layers": "AuraFlow's single_layers are single_blocks",
    "transformer_blocks": "diffusers' transformer_blocks are double_blocks",
    "single_transformer_blocks": "diffusers' single_transformer_blocks are single_blocks",
}
FORMAT = "label: double_blocks=<plan>; single_blocks=<plan>"
OrderCheck = Callable[[str, tuple, int], None]


@dataclass(frozen=True)
class StreamPlan:
    stream: str
    text: str  # the plan as typed, surrounding spaces included, so error positions map into the line
    column: int  # 0-based offset of ``text`` in the line


@dataclass(frozen=True)
class PlanLine:
    number: int  # 1-based line number, counting blank and comment lines as an editor does
    label: str
    plans: tuple[StreamPlan, ...]  # in the order typed
    text: str  # the whole line as typed

    def rewrites(self, counts: dict[str, int]) -> list[Rewrite | None]:
        """The rewrites of this line for a model with these block counts (None = the original order)."""
        return [plan_rewrite(counts, p.stream, p.text) for p in self.plans]


@dataclass(frozen=True)
class LineError:
    number: int
    column: int  # 1-based
    token: str
    reason: str
    text: str

    def __str__(self) -> str:
        return f"line {self.number}, column {self.column}: {self.reason}, in {self.text.strip()!r}"


class PlanLinesError(ValueError):
    """Every invalid line of a plans text, found before anything runs."""

    def __init__(self, errors: list[LineError]):
        self.errors = tuple(errors)
        count = f"{len(errors)} invalid line" + ("s" if len(errors) > 1 else "")
        super().__init__(f"plans: {count} (each line is '{FORMAT}'; nothing was run):\n"
                         + "\n".join(str(e) for e in self.errors))


def parse_lines(text: str) -> list[PlanLine]:
    """The variant lines of ``text``, syntax-checked; raises ``PlanLinesError`` naming every bad line."""
    lines, errors = _parse_all(text)
    if errors:
        raise PlanLinesError(errors)
    return lines


def scan_lines(text: str) -> tuple[list[PlanLine], list[LineError]]:
    """Like ``parse_lines``, but returns the valid lines and the errors of the others instead of raising."""
    return _parse_all(text)


def check_lines(lines: list[PlanLine], base: LayerPlan, check: OrderCheck | None = None) -> list[LayerPlan]:
    """The plan of every line composed onto ``base`` (what the model already carries), in order.

    ``check(stream, steps, n_blocks)`` is the model family's rule for an order (for example SD3's
    last joint block); every line's every order is checked. Raises ``PlanLinesError`` naming
    every bad line.
    """
    plans, errors = _check_all(lines, base, check)
    if errors:
        raise PlanLinesError(errors)
    return plans


def read_lines(text: str, base: LayerPlan, check: OrderCheck | None = None) -> list[tuple[PlanLine, LayerPlan]]:
    """``parse_lines`` then ``check_lines``, reporting the errors of both in one ``PlanLinesError``."""
    lines, errors = _parse_all(text)
    plans, more = _check_all(lines, base, check)
    if errors or more:
        raise PlanLinesError(sorted(errors + more, key=lambda e: e.number))
    return list(zip(lines, plans))


def _parse_all(text: str) -> tuple[list[PlanLine], list[LineError]]:
    if not isinstance(text, str):
        raise TypeError(f"plans is text, got {type(text).__name__}")
    lines, errors, labels = [], [], {BASELINE: 0}
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            line = _parse_line(number, raw)
        except _Bad as bad:
            errors.append(LineError(number, bad.column + 1, bad.token, bad.reason, raw))
            continue
        if line is None:
            continue
        key = line.label.casefold()
        if key in labels:
            column = raw.index(line.label) + 1
            if labels[key] == 0:
                reason = (f"the label {line.label!r} is reserved: the model as received is always the first "
                          "variant, named 'baseline'; to compare it with itself, pick another label")
            else:
                reason = f"the label {line.label!r} is already used on line {labels[key]}; labels must be unique"
            errors.append(LineError(number, column, line.label, reason, raw))
            continue
        labels[key] = number
        lines.append(line)
    return lines, errors


def _check_all(lines: list[PlanLine], base: LayerPlan, check) -> tuple[list[LayerPlan], list[LineError]]:
    plans, errors = [], []
    for line in lines:
        try:
            plans.append(_compose(line, base, check))
        except _Bad as bad:
            errors.append(LineError(line.number, bad.column + 1, bad.token, bad.reason, line.text))
    return plans, errors


def _compose(line: PlanLine, plan: LayerPlan, check) -> LayerPlan:
    for part in line.plans:
        try:
            rewrite = plan_rewrite(plan.counts, part.stream, part.text)
            if rewrite is not None:
                plan = plan.with_rewrite(rewrite, check)
        except PlanError as error:
            if error.position is not None:  # a range error inside the plan text
                raise _Bad(part.column + error.position, error.token, error.reason) from None
            start = part.column + len(part.text) - len(part.text.lstrip())  # composition or family rule
            raise _Bad(start, part.text.strip(), str(error)) from None
    return plan


# ------------------------------------------------------------------------------------------ syntax


class _Bad(Exception):
    def __init__(self, column: int, token: str, reason: str):
        super().__init__(reason)
        self.column, self.token, self.reason = column, token, reason


def _parse_line(number: int, raw: str) -> PlanLine | None:
    body_end = raw.find("#")
    content = raw if body_end < 0 else raw[:body_end]
    if not content.strip():
        return None
    colon = content.find(":")
    if colon < 0:
        start = len(content) - len(content.lstrip())
        hint = " (every line starts with its label)" if "=" in content else ""
        raise _Bad(start, content.strip(), f"no ':' after a label{hint}; expected '{FORMAT}'")
    label = content[:colon].strip()
    if not label:
        raise _Bad(colon, ":", f"the label before ':' is empty; expected '{FORMAT}'")
    plans, seen = [], {}
    offset = colon + 1
    for piece in content[colon + 1:].split(";"):
        if piece.strip():
            part = _assignment(piece, offset)
            if part.stream in seen:
                raise _Bad(_key_column(piece, offset), part.stream,
                           f"{part.stream} is given twice in this line (first at column {seen[part.stream] + 1}); "
                           "give each stream once")
            seen[part.stream] = _key_column(piece, offset)
            plans.append(part)
        offset += len(piece) + 1
    if not plans:
        raise _Bad(colon, ":", f"no plan after ':'; write {' and/or '.join(s + '=<plan>' for s in STREAMS)}")
    return PlanLine(number, label, tuple(plans), raw)


def _key_column(piece: str, offset: int) -> int:
    return offset + len(piece) - len(piece.lstrip())


def _assignment(piece: str, offset: int) -> StreamPlan:
    start = _key_column(piece, offset)
    equals = piece.find("=")
    if equals < 0:
        raise _Bad(start, piece.strip(),
                   f"expected stream=plan, found {piece.strip()!r}; the streams are {', '.join(STREAMS)} "
                   f"(for example double_blocks={piece.strip()})")
    key = piece[:equals].strip()
    if key.lower() not in STREAMS:
        raise _Bad(start, key, _unknown_key(key))
    text = piece[equals + 1:]
    column = offset + equals + 1
    try:
        parse_plan(text)
    except PlanError as error:
        reason = f"{key.lower()}: {error.reason}"
        if error.token.lower() in STREAMS or error.token.lower() in KEY_HINTS:
            reason += "; separate the streams with ';'"
        raise _Bad(column + (error.position or 0), error.token, reason) from None
    return StreamPlan(key.lower(), text, column)


def _unknown_key(key: str) -> str:
    reason = f"unknown stream {key!r}: the streams are {', '.join(STREAMS)}"
    if not key:
        return f"no stream name before '='; the streams are {', '.join(STREAMS)}"
    if key.lower() in KEY_HINTS:
        return f"{reason} ({KEY_HINTS[key.lower()]})"
    close = difflib.get_close_matches(key.lower(), STREAMS, n=1, cutoff=0.6)
    return f"{reason} (did you mean {close[0]}?)" if close else reason
