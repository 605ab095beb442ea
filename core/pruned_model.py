"""A planned model as a plain diffusion-model file: each block list written in the planned order.

A plan of plain steps (every step one whole block: skips, repeats, reverses, shuffles) is the same
model as one whose block lists hold those blocks in that order, numbered from 0. This module decides
whether a plan can be written so (``pruned_orders``), renames the state dict's keys to the new
numbering (``renamed_keys``), and describes the file (metadata, report). It needs no ComfyUI: the
node bakes the weight patches and writes the file.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Iterable, Mapping

from .families import Family
from .plan import format_steps
from .rewrite import LayerPlan

SUFFIX = ".safetensors"
METADATA_PREFIX = "dit_layer_lab_"
ROOT = pathlib.Path(__file__).resolve().parents[1]


class SaveRefused(ValueError):
    """Why the file is not written; raised before anything is written."""


def pruned_orders(plan: LayerPlan, family: Family) -> dict[str, tuple[int, ...]]:
    """Per stream of the model, the original block at each position of the saved list.

    Refused: a plan whose order changes during sampling (windows), a step that is not one whole
    block (a parallel group, ``@``, ``:attn`` ...), a stream left without blocks, a plan that changes
    nothing, and a family whose saved file would not load as the planned model.
    """
    counts = plan.counts
    if not plan.rewrites:
        raise SaveRefused("the model carries no Layer Lab plan: nothing to prune. Connect the MODEL of a Layer Lab "
                          "Plan, Skip, Repeat, Reverse or Shuffle node (core's Save Model writes a model unchanged)")
    if plan.order_changes_during_sampling:
        windowed = "; ".join(f"{r.label} ({r.start_percent:g}-{r.end_percent:g})" for r in plan.rewrites if not r.always)
        raise SaveRefused(f"the plan changes the order during sampling ({windowed}); a file holds one order: "
                          "set start_percent 0 and end_percent 1")
    active = plan.possible_active_sets()[0]
    composed = plan.compose(active)
    orders: dict[str, tuple[int, ...]] = {}
    for stream, n_blocks in counts.items():
        if stream not in family.block_lists:
            continue
        steps = composed[stream]
        for position, step in enumerate(steps):
            if len(step) != 1 or type(step) is not tuple:  # a Modified step is a tuple subclass
                kind = "a parallel group" if len(step) > 1 else "a block keeping part of its update"
                raise SaveRefused(
                    f"{stream}: step {position + 1} of the order {format_steps(steps)}, {format_steps((step,))}, is "
                    f"{kind}; a saved file holds whole blocks only: skips, repeats, reverses and shuffles")
        if n_blocks and not steps:
            raise SaveRefused(f"the plan leaves no {family.block_kind(stream)} block; ComfyUI recognises a "
                              "model file by its first block's tensors, so the file would not load as this model")
        orders[stream] = tuple(step[0] for step in steps)
    if all(order == tuple(range(counts[stream])) for stream, order in orders.items()):
        raise SaveRefused("the plan runs every block in its original order: nothing to prune (core's Save Model "
                          "writes a model unchanged)")
    why = family.pruned_file_problem()
    if why:
        raise SaveRefused(f"{family.name} cannot be saved pruned or re-ordered: {why}")
    return orders


_BLOCK_KEY = re.compile(r"(?P<index>[0-9]+)\.(?P<rest>.+)")


def renamed_keys(keys: Iterable[str], block_lists: Mapping[str, str],
                 orders: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    """New key -> source key, in file order: every block list's blocks in the planned order, numbered 0..n-1.

    ``block_lists`` maps stream -> the model's attribute of that list (its key prefix); a stream
    without an order keeps its blocks as they are. A block the order repeats appears once per
    position; a block it leaves out is not written. Every other key is kept.
    """
    prefixes = {block_lists[stream] + ".": order for stream, order in orders.items()}
    keys = list(keys)
    blocks: dict[str, dict[int, list[tuple[str, str]]]] = {prefix: {} for prefix in prefixes}
    for key in keys:
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        match = _BLOCK_KEY.fullmatch(key[len(prefix):]) if prefix else None
        if match:
            blocks[prefix].setdefault(int(match["index"]), []).append((match["rest"], key))
    result: dict[str, str] = {}
    written: set[str] = set()
    for key in keys:
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None or not _BLOCK_KEY.fullmatch(key[len(prefix):]):
            result[key] = key
        elif prefix not in written:  # the whole list, where its first key was
            written.add(prefix)
            for position, block in enumerate(prefixes[prefix]):
                if block not in blocks[prefix]:
                    raise SaveRefused(f"the model has no tensors for {prefix}{block} (its {prefix[:-1]} holds blocks "
                                      f"{format_steps(tuple((i,) for i in sorted(blocks[prefix])))})")
                for rest, source in blocks[prefix][block]:
                    result[f"{prefix}{position}.{rest}"] = source
    return result


def output_path(folder: str, name: str) -> str:
    """The file ``name`` (``.safetensors`` added when missing) inside ``folder``; refused when it leaves it."""
    shown = name
    name = name.strip().replace("\\", "/")
    if not name or name.endswith("/"):
        raise SaveRefused(f"filename {shown!r} names no file: type a name such as 'layer_lab/flux_pruned'")
    if os.path.isabs(name) or re.match(r"^[A-Za-z]:", name) or any(part in ("..", ".") for part in name.split("/")):
        raise SaveRefused(f"filename {shown!r} leaves the diffusion_models folder: use a name inside it, "
                          "without '..' or a leading '/' ('layer_lab/flux_pruned' makes a subfolder)")
    if not name.endswith(SUFFIX):
        name += SUFFIX
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    if os.path.commonpath([root, path]) != root:
        raise SaveRefused(f"filename {shown!r} leaves the diffusion_models folder (it resolves to a path outside it)")
    return path


def pack_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    return match.group(1) if match else "unknown"


def plan_texts(plan: LayerPlan, family: Family, orders: Mapping[str, tuple[int, ...]]) -> dict[str, str]:
    return {stream: format_steps(tuple((i,) for i in order), plan.counts[stream]) for stream, order in orders.items()
            if stream in family.block_lists}


def metadata(plan: LayerPlan, family: Family, orders: Mapping[str, tuple[int, ...]], source: str) -> dict[str, str]:
    """What the file says about itself: the plan per stream, the original block at each new position, the
    source model, the family and the pack's version (safetensors metadata values are strings)."""
    return {
        METADATA_PREFIX + "plan": json.dumps(plan_texts(plan, family, orders)),
        METADATA_PREFIX + "blocks": json.dumps({stream: list(order) for stream, order in orders.items()}),
        METADATA_PREFIX + "source": source,
        METADATA_PREFIX + "family": family.name,
        METADATA_PREFIX + "version": pack_version(),
    }


def report(plan: LayerPlan, family: Family, orders: Mapping[str, tuple[int, ...]], saved: str, n_bytes: int,
           source_bytes: int, source: str) -> str:
    lines = [f"saved {saved!r} in the diffusion_models folder: {n_bytes / 2**20:.1f} MiB, "
             f"{n_bytes / source_bytes:.1%} of the source's {source_bytes / 2**20:.1f} MiB of weights",
             f"source: {source} ({family.name})"]
    texts = plan_texts(plan, family, orders)
    for stream, order in orders.items():
        kind = family.block_kind(stream)
        n = plan.counts[stream]
        lines.append(f"{kind}: {n} -> {len(order)} blocks, plan {texts[stream]}")
        if order != tuple(range(n)):
            mapping = ", ".join(f"{old}->{new}" for new, old in enumerate(order))
            lines.append(f"  original -> new: {mapping}")
            dropped = sorted(set(range(n)) - set(order))
            if dropped:
                lines.append(f"  not written: {format_steps(tuple((i,) for i in dropped))}")
    lines.append("Load it with core's Load Diffusion Model (UNETLoader); the pack is not needed to run it.")
    return "\n".join(lines)
