"""Run a ``Modified`` step: a block (or parallel group) that keeps only part of its update.

A strength ``s`` on the whole step, or on one stream of a double block, is applied to what the step
returns, through the family's ``Layout``: ``out = in + s * (step(in) - in)`` per stream (a stream the
modifier leaves out gets ``s = 0``: it passes through unchanged). A strength on a sub-layer scales the
outputs of the sub-modules the family declares as that part (``SubLayers``) while the step runs;
``s = 0`` replaces them by zeros, so that part adds nothing to the residual stream.
"""

from __future__ import annotations

import torch
from torch import nn

from .families import Family, SubLayers
from .plan import STREAM_PARTS, SUBLAYERS, PlanError, Step, format_steps

_STREAM_OF_PART = {"img": "image", "txt": "text"}


def modified_module(family: Family, stream: str, blocks: list[nn.Module], step: Step, module) -> object:
    """What runs in place of ``module`` (the step's plain runner) for the ``Modified`` step ``step``."""
    part, strength = step.part, step.strength
    if part in SUBLAYERS:
        family.check_part(stream, part, step)
        declared: SubLayers = family.sublayers[stream]
        return ScaledSublayer(module, _submodules(family, stream, blocks, step, declared.paths(part)), strength)
    layout = family.hidden_states.get(stream)
    if layout is None:
        raise PlanError(f"{family.block_kind(stream)}: the family declares no hidden-state layout, so "
                        f"{format_steps((step,))} cannot keep part of a block's update")
    if part in STREAM_PARTS:
        family.check_part(stream, part, step)
        kept = {p: (strength if p == _STREAM_OF_PART[part] else 0.0) for p in layout.parts}
    else:
        kept = {p: strength for p in layout.parts}
    return ScaledUpdate(module, layout, kept)


def _submodules(family: Family, stream: str, blocks: list[nn.Module], step: Step, paths: tuple[str, ...]) -> list:
    found = []
    for block, i in zip(blocks, step):
        mine = []
        for path in paths:
            try:
                mine.append(block.get_submodule(path))
            except AttributeError:
                continue  # this block has no such part (SD3's last context block): it contributes nothing
        if not mine:
            raise PlanError(f"{family.block_kind(stream)} block {i} has none of the sub-modules "
                            f"{', '.join(paths)} that {format_steps((step,))} scales")
        found.extend(mine)
    return found


class ScaledUpdate:
    """Runs ``module`` and keeps ``kept[part]`` of its update to each hidden state (1: all, 0: none)."""

    __slots__ = ("module", "layout", "kept")

    def __init__(self, module, layout, kept: dict[str, float]):
        self.module, self.layout, self.kept = module, layout, kept

    def __call__(self, *args, **kwargs):
        # blocks update their inputs in place: keep copies of the states whose update is scaled
        before = {part: value.clone() for part, value in self.layout.inputs(args, kwargs).items()
                  if self.kept[part] != 1.0 and isinstance(value, torch.Tensor)}
        out = self.module(*args, **kwargs)
        states = self.layout.outputs(out)
        for part, old in before.items():
            new, s = states[part], self.kept[part]
            if new is not None:
                states[part] = old if s == 0.0 else old + s * (new - old)
        values = tuple(states[part] for part in self.layout.returns)
        return values if isinstance(out, tuple) else values[0]

    def __getattr__(self, name):
        return getattr(self.module, name)


class ScaledSublayer:
    """Runs ``module`` with the outputs of ``submodules`` scaled by ``strength`` (0: replaced by zeros)."""

    __slots__ = ("module", "submodules", "strength")

    def __init__(self, module, submodules: list[nn.Module], strength: float):
        self.module, self.submodules, self.strength = module, submodules, strength

    def __call__(self, *args, **kwargs):
        handles = [m.register_forward_hook(self._scale) for m in self.submodules]
        try:
            return self.module(*args, **kwargs)
        finally:
            for handle in handles:
                handle.remove()

    def _scale(self, submodule, inputs, output):
        if isinstance(output, tuple):
            return tuple(self._scaled(o) for o in output)
        return self._scaled(output)

    def _scaled(self, value):
        if not isinstance(value, torch.Tensor):
            return value
        return torch.zeros_like(value) if self.strength == 0.0 else value * self.strength

    def __getattr__(self, name):
        return getattr(self.module, name)
