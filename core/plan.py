"""The execution plan language: which original blocks of one stream run, and in what order.

    all            the original order          none        no block of this stream
    7              block 7                     3-6 / 6-3   a range, descending runs reversed
    8*4            block 8 four times          (3-5)*2     3,4,5,3,4,5
    [4-7]          4..7 on the same input, outputs averaged
    [4-7]*3        looped parallel: the average fed back three times

Items are comma separated; whitespace is free. Parsing needs no model: ``parse_plan`` returns a
``PlanExpr`` whose ``expand`` checks every index against one stream's block count and returns
``Steps``, the plain data the executor runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A step runs one block (a 1-tuple) or several blocks on the same input, averaging their outputs.
Step = tuple[int, ...]
Steps = tuple[Step, ...]

MAX_STEPS = 10_000
MAX_DEPTH = 32

_TOKEN = re.compile(r"\s*(?:(?P<int>[0-9]+)|(?P<word>[A-Za-z_]+)|(?P<sym>[-*,()\[\]])|(?P<bad>[^\s0-9A-Za-z_\-*,()\[\]]+))")


class PlanError(ValueError):
    """A plan that cannot run, with the offending token and its 0-based offset in the text."""

    def __init__(self, message: str, text: str = "", position: int | None = None, token: str = ""):
        self.reason, self.text, self.position, self.token = message, text, position, token
        if position is not None:
            message = f"{message} (at position {position + 1} in {text!r})"
        super().__init__(message)

    def with_note(self, note: str) -> "PlanError":
        """The same error with ``note`` (what the streams are on this model) added to its reason."""
        return PlanError(f"{self.reason}; {note}", self.text, self.position, self.token) if note else self

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
                                "'all', 'none', '(...)' or '[...]'", text, start, value)
            if kind == "word" and value.lower() not in ("all", "none"):
                raise PlanError(f"unknown word {value!r}: the only words are 'all' and 'none'", text, start, value)
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
        atom = self.atom()
        kind, value, start = self.peek()
        if kind == "sym" and value == "*":
            self.take()
            count, at, raw = self.integer("a repeat count after '*'")
            if count < 1:
                raise PlanError(f"repeat count {raw} must be at least 1", self.text, at, raw)
            return Repeat(atom, count, Span(start, "*"))
        return atom

    def integer(self, what):
        kind, value, start = self.peek()
        if kind != "int":
            self.fail(f"expected {what}")
        self.take()
        return int(value), start, value

    def atom(self):
        kind, value, start = self.peek()
        if kind == "int":
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
            if kind == "int":
                members.append(self.block())
            elif kind == "word" and value == "all":
                self.take()
                members.append(Block(None, None, Span(start, "all")))
            else:
                self.fail("a parallel group '[...]' holds block indices and ranges only; expected one")
            kind, value, _ = self.peek()
            if kind == "sym" and value == "*":
                self.fail("repeats are not allowed inside '[...]'; repeat the whole group: [4-7]*3")
            if not (kind == "sym" and value == ","):
                return tuple(members)
            self.take()


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
    singles: list[int] = []
    for step, count in runs:
        if len(step) == 1 and count == 1:
            singles.append(step[0])
            continue
        parts.extend(_format_indices(singles))
        singles = []
        body = f"[{', '.join(_format_indices(list(step)))}]" if len(step) > 1 else str(step[0])
        parts.append(f"{body}*{count}" if count > 1 else body)
    parts.extend(_format_indices(singles))
    return ", ".join(parts)


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
