"""What a plan, strategy, plan-lines or block-selection node will do, as JSON-ready data for the node's strip.

The frontend never parses a plan: it sends the node's widget values here (through the pack's
server route) and draws what comes back. Every answer is built by the same functions the nodes run
(``parse_steps``, ``strategy_rewrite``, ``check_lines``, ``parse_selection``), so the strip and the node agree.

Block counts come from the model the node last ran on, or, before a run, from the header of the
model file its MODEL input is loaded from (core.model_blocks); the frontend sends them. Where they are
not known (``unknown``: the reason), nothing is invented: each text is checked by the same parser
with enough blocks for every index it names (so only errors that no block count would cure are
shown), and cells are drawn only for an order that does not depend on the block count (explicit
indices, no ``all``; a strategy's range always does); the answer says why counts are unknown.
Called with neither, the functions use Flux.1's counts (19 double, 38 single) and say so; the route
never does that.
"""

from __future__ import annotations

from collections import Counter
from typing import Mapping

from .experiments.variant_lines import LineError, PlanLinesError, check_lines, scan_lines
from .plan import (MAX_STEPS, PART_NAMES, SUBLAYERS, Block, Group, Modified, Modifier, Parallel, PlanError, Repeat,
                   Steps, format_steps, format_strength, identity, parse_plan, parse_steps)
from .rewrite import STREAMS, LayerPlan, apply_rewrite, check_window, strategy_rewrite
from .selection import format_selection, parse_selection

DEFAULT_FAMILY = "Flux"
DEFAULT_COUNTS = {"double_blocks": 19, "single_blocks": 38}
DEFAULT_NOTE = ("block counts of Flux.1 (19 double, 38 single) until the graph runs; "
                "then the counts of the model the node ran on")
# Bounds that keep every answer quick (the route serves ComfyUI's server): block counts (beyond them
# a ValueError), plan lines and the steps of all orders of one answer together (two streams at the
# plan limit fit; beyond them the answer says so in "refused").
MAX_BLOCKS = 1000
MAX_LINES = 64
MAX_PREVIEW_STEPS = 2 * MAX_STEPS
UNKNOWN_NOTE = "block counts unknown until the graph runs"
CHECK_BLOCKS = 64  # with unknown counts, texts are checked against max(this, their largest index + 1) blocks
MAX_CELLS = 256  # the strip shows at most this many cells per stream; the rest is counted in "more_cells"


class PreviewLimit(ValueError):
    """Beyond what one preview computes; the message names the limit."""


def preview_plan(texts: Mapping[str, str], counts: Mapping[str, int] | None = None,
                 family: str | None = None, unknown: str | None = None) -> dict:
    """A Plan node: one typed plan per stream (streams not in ``texts`` are not shown)."""
    context = _Context(counts, family, unknown)
    streams = [_order_stream(context, stream, text, lambda n, s=stream, t=text: parse_steps(t, n, s),
                             lambda s=stream, t=text: _largest_index(t))
               for stream, text in texts.items() if _known_stream(stream)]
    return context.answer(streams, _unknown_streams(texts))


def preview_strategy(strategy: str, stream: str, first: int, last: int, params: Mapping[str, int] | None = None,
                     counts: Mapping[str, int] | None = None, family: str | None = None,
                     start_percent: float = 0.0, end_percent: float = 1.0, unknown: str | None = None) -> dict:
    """A strategy node (skip, repeat, reverse, parallel, shuffle) over first..last of one stream."""
    context = _Context(counts, family, unknown)
    if stream not in STREAMS:
        return context.answer([], [stream])
    params = dict(params or {})

    def order(n_blocks: int) -> Steps:
        check_window(start_percent, end_percent)
        rewrite = strategy_rewrite({stream: n_blocks}, strategy, stream, first, last, start_percent, end_percent,
                                   **params)
        return apply_rewrite(identity(n_blocks), rewrite)

    def largest() -> int:
        return max([first, last] + [v for k, v in params.items() if k == "layer"])

    answer = context.answer([_order_stream(context, stream, None, order, largest)], [])
    if not (start_percent <= 0.0 and end_percent >= 1.0):
        answer["window"] = [start_percent, end_percent]
        answer["window_note"] = ("never applies: start_percent = end_percent" if start_percent >= end_percent else
                                 f"from {start_percent:.0%} of sampling up to {end_percent:.0%}")
    return answer


def preview_lines(text: str, counts: Mapping[str, int] | None = None, family: str | None = None,
                  unknown: str | None = None) -> dict:
    """A Plan Grid node: per variant line, its label and the order of every stream, or the line's error.

    Lines are read and checked by ``variant_lines``, as the node does, on a model that carries no
    plan yet; so an error names the node's own line, column (1-based) and token. A stream the line
    leaves out runs in the original order. The baseline is not listed: it is always the model as
    received. Comment and blank lines have no entry. Beyond ``MAX_LINES`` plan lines, or lines that
    run more than ``MAX_PREVIEW_STEPS`` steps together, the answer lists no line and says why in
    ``refused`` (the node itself takes them).
    """
    context = _Context(counts, family, unknown)
    answer = context.answer([], [])
    try:
        answer["lines"] = _lines(context, text)
    except PreviewLimit as limit:
        answer.update(ok=False, lines=[], refused=str(limit))
        return answer
    answer["ok"] = all(entry["ok"] for entry in answer["lines"])
    return answer


def _lines(context: _Context, text: str) -> list[dict]:
    lines, errors = scan_lines(text)
    if len(lines) + len(errors) > MAX_LINES:
        raise PreviewLimit(f"plans has {len(lines) + len(errors)} plan lines; the preview checks at most {MAX_LINES}")
    answers = [_line_error(error, None) for error in errors]
    for line in lines:
        if context.known:
            counts = context.counts
        else:  # enough blocks for every index the line names, in both streams
            n_blocks = max([context.check_blocks(_largest_or_none(part.text)) for part in line.plans] or [CHECK_BLOCKS])
            counts = {stream: n_blocks for stream in STREAMS}

        def orders(counts):
            base = LayerPlan(context.family or DEFAULT_FAMILY, tuple(counts.items()))
            (plan,) = check_lines([line], base, context.check_order)
            return plan.compose(plan.all_active)

        try:
            checked = orders(counts)
        except PlanLinesError as bad:
            answers.extend(_line_error(error, line.label) for error in bad.errors)
            continue
        typed = {part.stream: part.text.strip() for part in line.plans}

        def order(n_blocks, stream, counts=counts, checked=checked):
            if n_blocks == counts[stream]:
                return checked[stream]
            try:  # unknown counts: the same line on one more block, to see whether its order depends on them
                return orders({s: n_blocks if s == stream else c for s, c in counts.items()})[stream]
            except PlanLinesError:
                return None

        streams = [_order_stream(context, stream, typed.get(stream), lambda n, s=stream: order(n, s),
                                 lambda c=counts[stream]: c - 1)
                   for stream in STREAMS if not context.known or context.counts[stream] or stream in typed]
        for entry in streams:
            if not context.known and entry["stream"] not in typed:  # left out: the original order, any count
                entry.update(changed=False, depends_on_counts=False)
        answers.append({"number": line.number, "label": line.label, "ok": True, "error": None, "streams": streams})
    return sorted(answers, key=lambda entry: entry["number"])


def preview_selection(texts: Mapping[str, str], counts: Mapping[str, int] | None = None,
                      family: str | None = None, unknown: str | None = None) -> dict:
    """A LoRA block-selection node: which original blocks of each stream are selected."""
    context = _Context(counts, family, unknown)
    streams = []
    for stream, text in texts.items():
        if not _known_stream(stream):
            continue
        n_blocks = context.counts[stream] if context.known else context.check_blocks(_largest_or_none(text))
        base = {"stream": stream, "list_name": context.list_name(stream), "blocks": context.counts[stream],
                "text": text, "kind": "selection"}
        try:
            selected = parse_selection(text, n_blocks, stream)
        except PlanError as error:
            streams.append({**base, "ok": False, "error": context.error(error, stream, lambda t=text: _largest_index(t))})
            continue
        if not context.known:
            streams.append({**base, **_unknown_selection(text, selected, n_blocks, stream)})
            continue
        chosen = set(selected)
        cells = [{"blocks": [i], "kind": "selected" if i in chosen else "unselected", "count": 1,
                  "label": str(i)} for i in range(n_blocks)]
        streams.append({**base, "ok": True, "error": None, "cells": cells, "more_cells": 0,
                        "selected": list(selected), "plan": format_selection(selected, n_blocks)})
    return context.answer(streams, _unknown_streams(texts))


def _unknown_selection(text: str, selected: tuple[int, ...], n_blocks: int, stream: str) -> dict:
    """A valid selection on a model of unknown counts: its blocks as cells when no count changes them."""
    try:
        fixed = parse_selection(text, n_blocks + 1, stream) == selected
    except PlanError:
        fixed = False
    cells = [{"blocks": [i], "kind": "selected", "count": 1, "label": str(i)} for i in selected] if fixed else []
    return {"ok": True, "error": None, "cells": cells, "more_cells": 0, "selected": list(selected) if fixed else None,
            "plan": format_selection(selected, n_blocks) if fixed else None, "depends_on_counts": not fixed}


def cells_of(steps: Steps, limit: int | None = None) -> list[dict]:
    """The executed steps as strip cells, runs of one repeated step folded into one cell (the first
    ``limit`` cells when given).

    kind: ``parallel`` (several blocks on one input, ``count`` = loops), ``repeated`` (the block
    runs more than once in this order), ``reversed`` (part of a descending run such as 6-3),
    ``moved`` (runs after a higher block, not as part of a descending run), ``run`` (otherwise:
    in the original direction).
    """
    runs = _runs(steps)
    times = Counter()
    for step, count in runs:
        for i in step:
            times[i] += count
    singles = [step[0] if len(step) == 1 else None for step, _ in runs]
    cells = []
    for j, (step, count) in enumerate(runs[:limit]):
        block = singles[j]
        before = singles[j - 1] if j > 0 else None
        after = singles[j + 1] if j + 1 < len(runs) else None
        if block is None:
            kind = "parallel"
        elif times[block] > 1:
            kind = "repeated"
        elif before == block + 1 or after == block - 1:
            kind = "reversed"
        elif before is not None and block < before:
            kind = "moved"
        else:
            kind = "run"
        cells.append({"blocks": list(step), "kind": kind, "count": count, "label": format_steps((step,) * count),
                      "modifier": modifier_of(step)})
    return cells


def modifier_of(step) -> dict | None:
    """What a modified step keeps, for the strip: part, strength, words, and whether it is outside 0..1."""
    if not isinstance(step, Modified):
        return None
    part, strength = step.part, step.strength
    s = format_strength(strength)
    if part in SUBLAYERS:
        words = f"without its {PART_NAMES[part]}" if strength == 0 else f"its {PART_NAMES[part]} at {s}"
    elif part:
        words = f"updates the {PART_NAMES[part]} only" + ("" if strength == 1 else f", at {s}")
    else:
        words = f"keeps {s} of its update"
    outside = not 0.0 <= strength <= 1.0
    return {"part": part or None, "strength": strength, "outside": outside,
            "words": words + (" (strength outside 0..1)" if outside else "")}


def _runs(steps: Steps) -> list[list]:
    """[step, how many times in a row] for each run of one repeated step."""
    runs: list[list] = []
    for step in steps:
        if runs and runs[-1][0] == step:
            runs[-1][1] += 1
        else:
            runs.append([step, 1])
    return runs


# ------------------------------------------------------------------------------------- machinery


class _Context:
    """Block counts (from the model, or the defaults) and how to word errors with them."""

    def __init__(self, counts: Mapping[str, int] | None, family: str | None, unknown: str | None = None):
        self.steps = 0  # of all the orders in this answer, against MAX_PREVIEW_STEPS
        self.from_model = counts is not None and unknown is None
        self.known, self.unknown = unknown is None, unknown
        if unknown is not None:
            self.counts, self.family = {s: None for s in STREAMS}, None
        elif counts is None:
            self.counts, self.family = dict(DEFAULT_COUNTS), DEFAULT_FAMILY
        else:
            for stream in STREAMS:
                value = counts.get(stream, 0)
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_BLOCKS:
                    raise ValueError(f"counts[{stream!r}] = {value!r:.60}: a block count is a whole number "
                                     f"from 0 to {MAX_BLOCKS}")
            self.counts, self.family = {s: counts.get(s, 0) for s in STREAMS}, family

    def check_blocks(self, largest: int | None) -> int:
        """With unknown counts: the blocks a text is checked against, enough for every index it names up to
        the preview's MAX_BLOCKS (a larger index is out of range on any model the preview takes)."""
        return min(MAX_BLOCKS, max(CHECK_BLOCKS, (largest or 0) + 1))

    def _family(self):
        """The model's family once a run has named it (None before, or for a name this pack does not know)."""
        if not (self.from_model and self.family):
            return None
        from .families import by_name  # imports torch; only needed once a model has reported

        try:
            return by_name(self.family)
        except KeyError:
            return None

    def check_order(self, stream: str, steps: Steps, n_blocks: int) -> None:
        """The model family's own rule (SD3's last joint block), once the family is known from a run."""
        family = self._family()
        if family is not None:
            family.check(stream, steps, n_blocks)

    def list_name(self, stream: str) -> str | None:
        """The model's own name of a stream's list where it differs ("transformer_blocks"), once known."""
        family = self._family()
        return dict(family.list_names()).get(stream) if family is not None else None

    def spend(self, steps: Steps) -> None:
        self.steps += len(steps)
        if self.steps > MAX_PREVIEW_STEPS:
            raise PreviewLimit(f"these plans run more than {MAX_PREVIEW_STEPS} steps in all; the preview computes "
                               f"at most {MAX_PREVIEW_STEPS}")

    def error(self, error: PlanError, stream: str, largest) -> dict:
        data = {"message": str(error), "reason": error.reason, "position": error.position, "token": error.token,
                "needs_blocks": None}
        try:
            index = largest()
        except (PlanError, ValueError):
            index = None
        n_blocks = self.counts[stream]
        if self.known and index is not None and index >= n_blocks:
            data["needs_blocks"] = index + 1
            source = (f"this {self.family} model has {n_blocks}" if self.from_model
                      else f"Flux.1 has {n_blocks}; these are default counts until the graph runs")
            data["hint"] = f"valid only for a model with at least {index + 1} {stream} ({source})"
        return data

    def answer(self, streams: list[dict], unknown: list[str]) -> dict:
        for stream in unknown:
            streams.append({"stream": stream, "blocks": 0, "text": None, "kind": "order", "ok": False,
                            "error": {"message": f"unknown stream {stream!r:.60}: choose one of {', '.join(STREAMS)}",
                                      "reason": "unknown stream", "position": None, "token": stream,
                                      "needs_blocks": None}})
        if not self.known:
            return {"ok": all(s["ok"] for s in streams), "counts": None, "family": None, "counts_source": "unknown",
                    "note": self.unknown, "refused": None, "streams": streams}
        return {"ok": all(s["ok"] for s in streams), "counts": dict(self.counts), "family": self.family,
                "counts_source": "model" if self.from_model else "default",
                "note": None if self.from_model else DEFAULT_NOTE, "refused": None, "streams": streams}


def _order_stream(context: _Context, stream: str, text: str | None, order, largest) -> dict:
    n_blocks = context.counts[stream]
    base = {"stream": stream, "list_name": context.list_name(stream), "blocks": n_blocks, "text": text,
            "kind": "order"}
    if not context.known:
        return _unknown_order_stream(context, base, order, largest)
    try:
        steps = order(n_blocks)
        context.check_order(stream, steps, n_blocks)
    except PlanError as error:
        return {**base, "ok": False, "error": context.error(error, stream, largest)}
    context.spend(steps)
    ran = {i for step in steps for i in step}
    return {**base, "ok": True, "error": None, "cells": cells_of(steps, MAX_CELLS),
            "more_cells": max(0, len(_runs(steps)) - MAX_CELLS),
            "skipped": [i for i in range(n_blocks) if i not in ran], "plan": format_steps(steps, n_blocks),
            "changed": steps != identity(n_blocks), "steps": len(steps)}


def _unknown_order_stream(context: _Context, base: dict, order, largest) -> dict:
    """An order on a model of unknown counts: checked against enough blocks for every index it names; its
    cells only when one more block gives the same order (nothing in it depends on the count)."""
    stream = base["stream"]
    try:
        index = largest() if largest is not None else None
    except (PlanError, ValueError):
        index = None
    n_blocks = context.check_blocks(index)
    try:
        steps = order(n_blocks)
    except PlanError as error:
        return {**base, "ok": False, "error": context.error(error, stream, largest)}
    try:
        fixed = order(n_blocks + 1) == steps
    except PlanError:
        fixed = False
    if fixed:
        context.spend(steps)
    return {**base, "ok": True, "error": None, "cells": cells_of(steps, MAX_CELLS) if fixed else [],
            "more_cells": max(0, len(_runs(steps)) - MAX_CELLS) if fixed else 0, "skipped": None,
            "plan": format_steps(steps) if fixed else None, "changed": None, "steps": len(steps) if fixed else None,
            "depends_on_counts": not fixed}


def _largest_or_none(text: str) -> int | None:
    try:
        return _largest_index(text)
    except (PlanError, ValueError):
        return None


def _line_error(error: LineError, label: str | None) -> dict:
    return {"number": error.number, "label": label, "ok": False, "streams": [],
            "error": {"line": error.number, "column": error.column, "token": error.token, "reason": error.reason,
                      "message": str(error), "text": error.text}}


def _largest_index(text: str) -> int | None:
    """The largest block index a plan's text names (it parses without any model), or None."""
    expr = parse_plan(text)
    return _largest(expr.items or ())


def _largest(items) -> int | None:
    found = []
    for item in items:
        if isinstance(item, Block):
            if item.first is not None:
                found.append(max(item.first, item.last))
        elif isinstance(item, (Group, Parallel)):
            found.append(_largest(item.items if isinstance(item, Group) else item.members))
        elif isinstance(item, (Repeat, Modifier)):
            found.append(_largest((item.item,)))
    found = [i for i in found if i is not None]
    return max(found) if found else None


def _known_stream(stream: str) -> bool:
    return stream in STREAMS


def _unknown_streams(texts: Mapping[str, str]) -> list[str]:
    return [s for s in texts if not _known_stream(s)]


UI_KEY = "dit_layer_lab_blocks"


def model_blocks_ui(family: str, counts: Mapping[str, int]) -> dict:
    """The ``ui`` a node returns after a run so that its strip switches to the model's real block counts."""
    return {UI_KEY: [{"family": family, "counts": {s: int(counts.get(s, 0)) for s in STREAMS}}]}
