"""Chroma and Chroma Radiance: Flux blocks, but each block's modulation is sliced from one tensor by loop position.

The loop asks ``get_modulations(tensor, kind, idx=i)`` for position i. For a planned call that
method is shadowed on the instance so that position i gets the modulation of the block that runs
there, and a parallel step gets one modulation per member, handed to each member by
``select_member``.

Chroma Radiance (a subclass, pixel space) runs Chroma's own loop, then a NeRF head (``nerf_blocks``)
that decodes pixels from the last hidden state; the head is not a block list of the stack and is
left alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Mapping

from torch import nn

from . import Family, Layout
from .flux import FLUX_STYLE_SUBLAYERS
from ..plan import Steps

_STREAM_OF_KIND = {"double_img": "double_blocks", "double_txt": "double_blocks", "single": "single_blocks"}


class PerMember(tuple):
    """The modulations of a parallel step's members, in member order."""


def _pick(value, j: int):
    if isinstance(value, PerMember):
        return value[j]
    if type(value) is tuple and any(isinstance(v, PerMember) for v in value):
        return tuple(_pick(v, j) for v in value)
    return value


def select_member(args: tuple, kwargs: dict, j: int) -> tuple[tuple, dict]:
    return tuple(_pick(a, j) for a in args), {k: _pick(v, j) for k, v in kwargs.items()}


@contextlib.contextmanager
def follow_modulations(dit: nn.Module, orders: Mapping[str, Steps]):
    original = dit.get_modulations

    def get_modulations(tensor, block_type, *, idx=0):
        steps = orders.get(_STREAM_OF_KIND.get(block_type))
        if steps is None:
            return original(tensor, block_type, idx=idx)
        step = steps[idx]
        if len(step) == 1:
            return original(tensor, block_type, idx=step[0])
        return PerMember(original(tensor, block_type, idx=i) for i in step)

    dit.get_modulations = get_modulations
    try:
        yield select_member
    finally:
        del dit.get_modulations


CHROMA = Family(
    name="Chroma",
    classes=("comfy.ldm.chroma.model.Chroma",),
    block_lists={"double_blocks": "double_blocks", "single_blocks": "single_blocks"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    control_keys={"double_blocks": "input", "single_blocks": "output"},
    per_call=follow_modulations,
    pruned_file_refusal=(
        "Chroma's approximator makes each block's modulation from its position (a fixed sinusoidal index, offset by "
        "both lists' lengths), not from weights of the block, so a block written at another position, or after a "
        "shorter list, would get another block's modulation"),
    hidden_states={"double_blocks": Layout.of(img="image", txt="text"), "single_blocks": Layout.of(x="text+image")},
    sublayers=FLUX_STYLE_SUBLAYERS,
)

CHROMA_RADIANCE = dataclasses.replace(
    CHROMA,
    name="Chroma Radiance",
    classes=("comfy.ldm.chroma_radiance.model.ChromaRadiance",),
)
