"""From measured matrices to the probe's JSON report and its heatmap panels.

Groups are found among a matrix's block rows; the input row ("in") is drawn but not grouped. A
group's ``first``/``last`` are the smallest and largest ORIGINAL block indices it runs, and
``blocks`` is its rows as plan text. ``middle`` spans every middle group; ``in_order`` says whether
those rows are exactly blocks first..last run once each in ascending order, which is what a
strategy node's first/last refer to on a model that already carries a plan.
"""

from __future__ import annotations

import json

import numpy as np

from ..plan import format_steps
from .capture import INPUT, Measured
from .groups import group_names, segment
from .heatmap import Panel

DECIMALS = 6


def analyse(measured: Measured) -> list[dict]:
    """The groups of one matrix, in row order."""
    offset = 1 if measured.labels and measured.labels[0] == INPUT else 0
    block_rows = measured.matrix[offset:, offset:]
    runs = [(a + offset, b + offset) for a, b in segment(block_rows)]
    return [_group(measured, name, a, b) for name, (a, b) in zip(group_names(len(runs)), runs)]


def _group(measured: Measured, name: str, first_row: int, last_row: int) -> dict:
    steps = measured.steps[first_row:last_row + 1]
    indices = [i for step in steps for i in step]
    block = measured.matrix[first_row:last_row + 1, first_row:last_row + 1]
    size = block.shape[0]
    mean = 1.0 if size == 1 else float((block.sum() - np.trace(block)) / (size * (size - 1)))
    return {
        "name": name,
        "rows": [first_row, last_row],
        "labels": measured.labels[first_row:last_row + 1],
        "blocks": format_steps(tuple(steps)),
        "first": min(indices),
        "last": max(indices),
        "mean_similarity": round(mean, DECIMALS),
    }


def middle_range(measured: Measured, groups: list[dict]) -> dict | None:
    middles = [g for g in groups if g["name"].startswith("middle")]
    if not middles:
        return None
    first_row, last_row = middles[0]["rows"][0], middles[-1]["rows"][1]
    steps = tuple(measured.steps[first_row:last_row + 1])
    first, last = min(g["first"] for g in middles), max(g["last"] for g in middles)
    return {
        "stream": measured.stream,
        "first": first,
        "last": last,
        "rows": [first_row, last_row],
        "blocks": format_steps(steps),
        "in_order": steps == tuple((i,) for i in range(first, last + 1)),
    }


def build(measured: list[Measured], **meta) -> tuple[dict, list[Panel]]:
    """The report (``meta`` first: family, steps, aggregate, ...) and one heatmap panel per matrix."""
    streams, panels = {}, []
    for m in measured:
        groups = analyse(m)
        middle = middle_range(m, groups)
        streams[m.key] = {
            "stream": m.stream,
            "part": m.part,
            "tokens": m.tokens,
            "total_tokens": m.total_tokens,
            "labels": m.labels,
            "matrix": np.round(m.matrix, DECIMALS).tolist(),
            "groups": groups,
            "middle": middle,
        }
        panels.append(Panel(_title(meta, m), _subtitle(groups, middle), m.labels, m.matrix,
                            [tuple(g["rows"]) for g in groups]))
    return {**meta, "streams": streams}, panels


def _title(meta: dict, m: Measured) -> str:
    aggregate = f" ({meta['aggregate']})" if meta.get("aggregate") else ""
    return f"{meta.get('family', '')} {m.stream} - {m.part}{aggregate}, {_frames(meta.get('frames', 1))}, " \
           f"{m.tokens}/{m.total_tokens} tokens".lstrip()


def _frames(frames) -> str:
    if isinstance(frames, list):
        return f"{'/'.join(map(str, frames))} frames"
    return f"{frames} frame" + ("" if frames == 1 else "s")


def _subtitle(groups: list[dict], middle: dict | None) -> str:
    runs = " | ".join(g["blocks"] for g in groups)
    head = f"middle {middle['first']}-{middle['last']}" if middle else "no middle group"
    return f"{head}   groups: {runs}"


def to_json(value, indent: int = 0) -> str:
    """JSON with one line per matrix row, label list or small flat object (a group); the rest indented."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict) and value and not _flat(value):
        items = [f"{inner}{json.dumps(str(k))}: {to_json(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [f"{inner}{to_json(v, indent + 2)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)


def _flat(value: dict) -> bool:
    nested = (v for v in value.values() if isinstance(v, (dict, list)))
    return all(isinstance(v, list) and not any(isinstance(x, (dict, list)) for x in v) for v in nested) \
        and len(json.dumps(value)) <= 160
