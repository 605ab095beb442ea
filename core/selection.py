"""Block selections: which original blocks of one stream a node acts on, written in the plan language.

A selection is a set, so only the plan language's index syntax applies: ``all``, ``none``, ``3``,
``3-9`` (``9-3`` is the same set), ``0-2, 17-18``; ``( )`` may group items. Parallel groups
``[...]``, repeats ``*n`` and a block listed twice are refused: each would mean "run this block
differently", which a selection cannot express.
"""

from __future__ import annotations

from .plan import (Block, Group, Parallel, PlanError, Repeat, _indices, format_steps, index_range, parse_plan,
                   parse_steps)


def parse_selection(text: str, n_blocks: int, stream: str = "blocks") -> tuple[int, ...]:
    """The selected original block indices of ``stream``, ascending; raises ``PlanError`` for bad text."""
    if isinstance(text, str) and not text.strip():
        raise PlanError(f"{stream}: empty selection: write 'all', 'none', or block indices like 3-9; "
                        f"valid {stream} indices are {index_range(n_blocks)}", text, 0, "")
    parse_steps(text, n_blocks, stream)  # every syntax and range error, with the valid range
    expr = parse_plan(text)
    seen: set[int] = set()
    for block in _blocks(expr.items or (), text, n_blocks, stream):
        for i in _indices(block, n_blocks, stream, text):
            if i in seen:
                raise PlanError(f"block {i} is selected twice; list each block once",
                                text, block.span.start, block.span.token).for_stream(stream, n_blocks)
            seen.add(i)
    return tuple(sorted(seen))


def format_selection(indices, n_blocks: int) -> str:
    """The shortest selection text for ``indices``: ``all``, ``none`` or ranges like ``0-2, 7``."""
    return format_steps(tuple((i,) for i in sorted(indices)), n_blocks)


def _blocks(items, text: str, n_blocks: int, stream: str) -> list[Block]:
    blocks: list[Block] = []
    for item in items:
        if isinstance(item, Block):
            blocks.append(item)
        elif isinstance(item, Group):
            blocks.extend(_blocks(item.items, text, n_blocks, stream))
        elif isinstance(item, Parallel):
            raise PlanError("a selection lists blocks; parallel groups '[...]' only mean something in a plan",
                            text, item.span.start, item.span.token).for_stream(stream, n_blocks)
        elif isinstance(item, Repeat):
            _blocks((item.item,), text, n_blocks, stream)  # a parallel group inside is named first
            raise PlanError("a selection lists each block once; repeats '*n' only mean something in a plan",
                            text, item.span.start, item.span.token).for_stream(stream, n_blocks)
        else:  # a syntax node this module does not know: refuse rather than guess
            raise PlanError(f"unexpected item {item!r} in a selection", text)
    return blocks
