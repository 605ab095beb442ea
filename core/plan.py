"""The execution plan language: which original blocks of one stream run, and in what order.

    all            the original order          none        no block of this stream
    7              block 7                     3-6 / 6-3   a range, descending runs reversed
    8*4            block 8 four times          (3-5)*2     3,4,5,3,4,5
    [4-7]          4..7 on the same input, outputs averaged
    [4-7]*3        looped parallel: the average fed back three times

Modifiers follow an item, before any repeat count (``8@0.5*4``), at most one part and one strength:

    7@0.5          block 7 keeps half of its update: out = in + 0.5 * (block(in) - in) on every stream;
                   @0 is a skip (the block does not run), @1 the block itself, other values are allowed
    7:attn 7:mlp   block 7 without its attention (its MLP) contribution to the residual stream;
                   7:attn@0.5 keeps half of it
    7:img  7:txt   block 7's update on the image (text) stream only, the other passing through; 7:img@0.5
                   keeps half of that update

A modifier on a range, ``all`` or ``( )`` applies to every step inside (``3-5:attn``); on ``[ ]`` it
applies to the group's averaged update (``[4-7]@0.5``); the members of a group, and the items inside
a modified ``( )``, carry none of their own.

Items are comma separated; whitespace is free. Parsing needs no model: ``parse_plan`` returns a
``PlanExpr`` whose ``expand`` checks every index against one stream's block count and returns
``Steps``, the plain data the executor runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

# A step runs one block (a 1-tuple) or several blocks on the same input, averaging their outputs;
# a ``Modified`` step is such a tuple that also keeps only part of its update.
Step = tuple[int, ...]
Steps = tuple[Step, ...]

SUBLAYERS = ("attn", "mlp")  # a modifier on them scales that sub-layer's contribution (default 0: dropped)
STREAM_PARTS = ("img", "txt")  # a modifier on them scales that stream's update only (default 1)
PARTS = SUBLAYERS + STREAM_PARTS
PART_NAMES = {"attn": "attention", "mlp": "MLP", "img": "image stream", "txt": "text stream"}


def default_strength(part: str) -> float:
    return 0.0 if part in SUBLAYERS else 1.0


class Modified(tuple):
    """A step (its block indices, as a plain step) that keeps ``strength`` of its update on ``part``.

    part "": the whole update of every stream; "attn"/"mlp": that sub-layer's contribution to the
    residual stream; "img"/"txt": that stream's update, the other stream passing through unchanged.
    Never equal to a plain step or to a step with another modifier; never the plain block
    (``modified`` returns a plain step or nothing for those).
    """

    def __new__(cls, blocks, strength: float, part: str = ""):
        self = super().__new__(cls, blocks)
        self.strength, self.part = float(strength), part
        return self

    def __getnewargs__(self):
        return tuple(self), self.strength, self.part

    def _key(self):
        return tuple(self), self.strength, self.part

    def __eq__(self, other):
        if not isinstance(other, tuple):
            return NotImplemented
        return isinstance(other, Modified) and self._key() == other._key()

    def __ne__(self, other):
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"Modified({tuple(self)!r}, {self.strength!r}, {self.part!r})"


def modified(step: Step, strength: float, part: str = "") -> Step | None:
    """``step`` keeping ``strength`` of ``part``: the plain step where that is the block itself, None
    where nothing of it would apply (it need not run)."""
    if part not in ("",) + PARTS:
        raise ValueError(f"unknown part {part!r}")
    if strength == 1.0 and part in ("",) + SUBLAYERS:
        return tuple(step)
    if strength == 0.0 and part in ("",) + STREAM_PARTS:
        return None
    return Modified(step, strength, part)


def strength_of(step: Step) -> float:
    return getattr(step, "strength", 1.0)


def part_of(step: Step) -> str:
    return getattr(step, "part", "")

MAX_STEPS = 10_000
MAX_DEPTH = 32

_TOKEN = re.compile(r"\s*(?:(?P<num>[0-9]+\.[0-9]*|\.[0-9]+)|(?P<int>[0-9]+)|(?P<word>[A-Za-z_]+)"
                    r"|(?P<sym>[-*,()\[\]:@])|(?P<bad>[^\s0-9A-Za-z_\-*,()\[\]:@.]+|\.))")
WORDS = ("all", "none") + PARTS


class PlanError(ValueError):
    """A plan that cannot run, with the offending token and its 0-based offset in the text."""

    def __init__(self, message: str, text: str = "", position: int | None = None, token: str = ""):
        self.reason, self.text, self.position, self.token = message, text, position, token
        if position is not None:
            message = f"{message} (at position {position + 1} in {text!r})"
        super().__init__(message)

    def with_note(self, note: str) -> "PlanError":
        """The same error with ``note`` (what the streams are on this model) added to its reason."""
        return PlanError(f"{self.reason.rstrip('.')}; {note}", self.text, self.position, self.token) if note else self

    def for_stream(self, stream: str, n_blocks: int) -> "PlanError":
        """The same error, also naming the valid indices of the stream it was meant for."""
        if "valid" in self.reason:
            return self
        return PlanError(f"{stream}: {self.reason}; valid {stream} indices are {index_range(n_blocks)}",
                         self.text, self.position, self.token)


def identity(n_blocks: int) -> Steps:
    return tuple((i,) for i in range(n_blocks))


def index_range(n_blocks: int) -> str:
    return f"0-{n_blocks - 1}" if n_blocks > 0 else "none: this model has no such blocks"


# ---------------------------------------------------------------------------------------- syntax


@dataclass(frozen=True)
class Span:
    start: int
    token: str


@dataclass(frozen=True)
class Block:
    """``7`` or ``3-6`` or ``all``: a run of single blocks."""

    first: int | None  # None means the whole stream ("all")
    last: int | None
    span: Span


@dataclass(frozen=True)
class Group:
    """``(...)``: a sequence of items."""

    items: tuple
    span: Span


@dataclass(frozen=True)
class Parallel:
    """``[...]``: one step whose members run on the same input."""

    members: tuple[Block, ...]
    span: Span


@dataclass(frozen=True)
class Repeat:
    item: object
    count: int
    span: Span


@dataclass(frozen=True)
class Modifier:
    """``7:attn@0.5``: ``item`` keeping ``strength`` of its ``part`` ("" for the whole update)."""

    item: object
    strength: float
    part: str
    span: Span  # the first ':' or '@'


@dataclass(frozen=True)
class PlanExpr:
    """A parsed plan, independent of any model until ``expand``."""

    text: str
    items: tuple | None  # None for "none"

    def expand(self, n_blocks: int, stream: str = "blocks") -> Steps:
        if self.items is None:
            return ()
        size = _size(self.items, n_blocks)
        if size > MAX_STEPS:
            raise PlanError(f"this plan runs {size} steps of {stream}; the limit is {MAX_STEPS}", self.text, 0, self.text)
        return tuple(_expand(self.items, n_blocks, stream, self.text))


def parse_plan(text: str) -> PlanExpr:
    return _Parser(text).parse()


def parse_steps(text: str, n_blocks: int, stream: str = "blocks") -> Steps:
    try:
        return parse_plan(text).expand(n_blocks, stream)
    except PlanError as error:
        raise error.for_stream(stream, n_blocks) from None


class _Parser:
    def __init__(self, text: str):
        if not isinstance(text, str):
            raise PlanError(f"a plan is text, got {type(text).__name__}")
        self.text = text
        self.tokens = list(self._tokenize(text))
        self.i = 0
        self.depth = 0

    def _tokenize(self, text):
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:  # only trailing whitespace is left
                break
            kind = m.lastgroup
            value = m.group(kind)
            start = m.start(kind)
            if kind == "bad":
                raise PlanError(f"unknown token {value!r}: expected a block index, a range like 3-6, "
                                "'all', 'none', '(...)', '[...]', ':part' or '@strength'", text, start, value)
            if kind == "word" and value.lower() not in WORDS:
                raise PlanError(f"unknown word {value!r}: the words are 'all', 'none' and, after ':', the parts "
                                f"{', '.join(PARTS)}", text, start, value)
            yield kind, (value.lower() if kind == "word" else value), start
            pos = m.end()

    # -- token helpers
    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, "", len(self.text))

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def fail(self, message, tok=None):
        kind, value, start = tok or self.peek()
        shown = repr(value) if kind else "the end of the text"
        raise PlanError(f"{message}, found {shown}", self.text, start, value)

    def expect(self, symbol, what):
        kind, value, start = self.peek()
        if kind != "sym" or value != symbol:
            self.fail(f"expected {what}")
        return self.take()

    # -- grammar
    def parse(self) -> PlanExpr:
        if not self.tokens:
            raise PlanError("empty plan: write 'all' for the original order or 'none' to run no block",
                            self.text, 0, "")
        kind, value, start = self.peek()
        if kind == "word" and value == "none":
            self.take()
            if self.peek()[0] is not None:
                self.fail("'none' stands alone")
            return PlanExpr(self.text, None)
        items = self.sequence(closing=None)
        return PlanExpr(self.text, items)

    def sequence(self, closing):
        items = [self.item()]
        while True:
            kind, value, _ = self.peek()
            if kind is None and closing is None:
                return tuple(items)
            if kind == "sym" and value == closing:
                return tuple(items)
            if kind == "sym" and value == ",":
                self.take()
                items.append(self.item())
                continue
            self.fail(f"expected ',' or {closing!r}" if closing else "expected ',' between items")

    def item(self):
        atom = self.modifiers(self.atom())
        kind, value, start = self.peek()
        if kind == "sym" and value == "*":
            self.take()
            count, at, raw = self.integer("a repeat count after '*'")
            if count < 1:
                raise PlanError(f"repeat count {raw} must be at least 1", self.text, at, raw)
            kind, value, _ = self.peek()
            if kind == "sym" and value in ":@":
                self.fail(f"a modifier goes before the repeat count: write it as {_shown(atom)}{value}...*{raw}")
            return Repeat(atom, count, Span(start, "*"))
        return atom

    def modifiers(self, atom):
        part, strength, span = "", None, None
        while True:
            kind, value, start = self.peek()
            if kind != "sym" or value not in ":@":
                break
            if span is None:
                span = Span(start, value)
            if value == ":":
                if part:
                    self.fail(f"one part per item (this one already has ':{part}')")
                self.take()
                kind, word, _ = self.peek()
                if kind != "word" or word not in PARTS:
                    self.fail(f"expected a part after ':' ({', '.join(PARTS)})")
                self.take()
                part = word
            else:
                if strength is not None:
                    self.fail("one strength per item")
                self.take()
                strength = self.number()
        if span is None:
            return atom
        inner = _first_modifier(atom)
        if inner is not None:
            raise PlanError("an item inside a modified '( )' carries a modifier of its own; modify either the "
                            "items or the group", self.text, inner.span.start, inner.span.token)
        return Modifier(atom, default_strength(part) if strength is None else strength, part, span)

    def number(self) -> float:
        kind, value, start = self.peek()
        sign = 1.0
        if kind == "sym" and value == "-":
            self.take()
            sign = -1.0
            kind, value, _ = self.peek()
        if kind not in ("int", "num"):
            self.fail("expected a strength after '@' (a number such as 0.5)")
        self.take()
        return sign * float(value)

    def integer(self, what):
        kind, value, start = self.peek()
        if kind != "int":
            self.fail(f"expected {what}")
        self.take()
        return int(value), start, value

    def atom(self):
        kind, value, start = self.peek()
        if kind in ("int", "num"):
            return self.block()
        if kind == "word" and value == "all":
            self.take()
            return Block(None, None, Span(start, "all"))
        if kind == "word" and value == "none":
            self.fail("'none' stands alone; to drop blocks, leave them out")
        if kind == "sym" and value in "([":
            if self.depth >= MAX_DEPTH:
                self.fail(f"brackets nested deeper than {MAX_DEPTH}")
            self.take()
            self.depth += 1
            try:
                if value == "(":
                    if self.peek()[:2] == ("sym", ")"):
                        self.fail("expected a block inside '( )'")
                    items = self.sequence(closing=")")
                    self.expect(")", "')'")
                    return Group(items, Span(start, "("))
                members = self.members()
                self.expect("]", "']'")
                return Parallel(members, Span(start, "["))
            finally:
                self.depth -= 1
        self.fail("expected a block index, a range like 3-6, 'all', '(...)' or '[...]'")

    def block(self):
        if self.peek()[0] == "num":
            self.fail("a block index is a whole number")
        first, start, raw = self.integer("a block index")
        kind, value, _ = self.peek()
        if kind == "sym" and value == "-":
            self.take()
            last, end, raw_last = self.integer("the end of the range after '-'")
            return Block(first, last, Span(start, self.text[start:end + len(raw_last)]))
        return Block(first, first, Span(start, raw))

    def members(self):
        members = []
        while True:
            kind, value, start = self.peek()
            if kind in ("int", "num"):
                members.append(self.block())
            elif kind == "word" and value == "all":
                self.take()
                members.append(Block(None, None, Span(start, "all")))
            else:
                self.fail("a parallel group '[...]' holds block indices and ranges only; expected one")
            kind, value, _ = self.peek()
            if kind == "sym" and value == "*":
                self.fail("repeats are not allowed inside '[...]'; repeat the whole group: [4-7]*3")
            if kind == "sym" and value in ":@":
                self.fail("the members of '[...]' carry no modifier; modify the whole group: [4-7]@0.5")
            if not (kind == "sym" and value == ","):
                return tuple(members)
            self.take()


def _first_modifier(item):
    if isinstance(item, Modifier):
        return item
    if isinstance(item, Group):
        return next((m for m in map(_first_modifier, item.items) if m is not None), None)
    if isinstance(item, Repeat):
        return _first_modifier(item.item)
    return None


def _shown(atom) -> str:
    return atom.span.token if isinstance(atom, Block) else "(...)" if isinstance(atom, Group) else "[...]"


# ------------------------------------------------------------------------------------- expansion


def _indices(block: Block, n_blocks: int, stream: str, text: str) -> range:
    if block.first is None:
        return range(n_blocks)
    for value in (block.first, block.last):
        if value >= n_blocks:
            raise PlanError(f"block {value} is out of range: valid {stream} indices are "
                            f"{index_range(n_blocks)}", text, block.span.start, block.span.token)
    step = 1 if block.last >= block.first else -1
    return range(block.first, block.last + step, step)


def _size(items, n_blocks: int) -> int:
    total = 0
    for item in items:
        if isinstance(item, Block):
            total += n_blocks if item.first is None else abs(item.last - item.first) + 1
        elif isinstance(item, Modifier):
            total += _size((item.item,), n_blocks)
        elif isinstance(item, Parallel):
            total += 1
        elif isinstance(item, Group):
            total += _size(item.items, n_blocks)
        else:
            total += item.count * _size((item.item,), n_blocks)
        if total > MAX_STEPS:
            return total
    return total


def _expand(items, n_blocks: int, stream: str, text: str):
    for item in items:
        if isinstance(item, Block):
            yield from ((i,) for i in _indices(item, n_blocks, stream, text))
        elif isinstance(item, Parallel):
            members: list[int] = []
            for block in item.members:
                for i in _indices(block, n_blocks, stream, text):
                    if i in members:
                        raise PlanError(f"block {i} appears twice in one parallel group", text,
                                        block.span.start, block.span.token)
                    members.append(i)
            yield tuple(members)
        elif isinstance(item, Group):
            yield from _expand(item.items, n_blocks, stream, text)
        elif isinstance(item, Modifier):
            for step in _expand((item.item,), n_blocks, stream, text):
                step = modified(step, item.strength, item.part)
                if step is not None:
                    yield step
        else:
            once = tuple(_expand((item.item,), n_blocks, stream, text))
            for _ in range(item.count):
                yield from once


# ------------------------------------------------------------------------------------ formatting


def format_steps(steps: Steps, n_blocks: int | None = None) -> str:
    """The shortest plan text that expands back to ``steps`` (``all`` when it is the original order)."""
    if not steps:
        return "none"
    if n_blocks is not None and tuple(steps) == identity(n_blocks):
        return "all"
    runs: list[tuple[Step, int]] = []
    for step in steps:
        if runs and runs[-1][0] == step:
            runs[-1] = (step, runs[-1][1] + 1)
        else:
            runs.append((step, 1))
    parts: list[str] = []
    singles: list[int] = []  # a run of single-block steps with the same modifier
    suffix = ""
    for step, count in runs:
        if len(step) == 1 and count == 1:
            mine = modifier_text(step) if type(step) is not tuple else ""
            if not singles or mine == suffix:
                singles.append(step[0])
                suffix = mine
                continue
            parts.extend(p + suffix for p in _format_indices(singles))
            singles, suffix = [step[0]], mine
            continue
        parts.extend(p + suffix for p in _format_indices(singles))
        singles = []
        body = f"[{', '.join(_format_indices(list(step)))}]" if len(step) > 1 else str(step[0])
        body += modifier_text(step)
        parts.append(f"{body}*{count}" if count > 1 else body)
    parts.extend(p + suffix for p in _format_indices(singles))
    return ", ".join(parts)


def modifier_text(step: Step) -> str:
    """``:attn``, ``@0.5``, ``:img@0.5``... as written after a step ("" for a plain step)."""
    if not isinstance(step, Modified):
        return ""
    part, strength = part_of(step), strength_of(step)
    shown = f":{part}" if part else ""
    if strength != default_strength(part):
        shown += f"@{format_strength(strength)}"
    return shown


def format_strength(value: float) -> str:
    """Positional, shortest text that reads back as ``value`` (the plan language has no exponents)."""
    text = format(Decimal(repr(float(value))), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _format_indices(indices: list[int]) -> list[str]:
    """Consecutive ascending or descending runs become ranges: 0,1,2,7,6 -> '0-2', '7-6'."""
    parts: list[str] = []
    i = 0
    while i < len(indices):
        j = i
        direction = 0
        while j + 1 < len(indices):
            delta = indices[j + 1] - indices[j]
            if abs(delta) != 1 or (direction and delta != direction):
                break
            direction = delta
            j += 1
        parts.append(str(indices[i]) if j == i else f"{indices[i]}-{indices[j]}")
        i = j + 1
    return parts
