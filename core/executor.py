"""Run a diffusion transformer's blocks in a planned order, for the duration of one call.

The model's own forward loop stays in charge: for the call, each planned stream's block list is
replaced by a list of the planned steps (the original block modules, or a ``ParallelBlocks`` for
an averaged group) and put back in ``finally``. No weight moves and no state-dict name changes, so
LoRA, merges, hooks and saving see the model they expect.

What the loop does by position is moved along with the blocks: ControlNet residuals and
``patches_replace["dit"]`` entries follow the block they belong to.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from .families import Family
from .plan import PlanError, Step, Steps

# select_member(args, kwargs, j) -> (args, kwargs) for the j-th member of a parallel step
SelectMember = Callable[[tuple, dict, int], tuple[tuple, dict]]
# wrap_step(stream, position, step, module) -> module that runs in its place (probes use it)
WrapStep = Callable[[str, int, Step, nn.Module], nn.Module]


class ParallelBlocks(nn.Module):
    """Runs every member on its own copy of the same input and returns the mean of their outputs.

    Blocks modify their inputs in place, so all members but the last get cloned tensors. Outputs
    may be a tensor or a tuple of tensors (both streams of a double block); each is averaged, summed
    in float32 in member order.
    """

    def __init__(self, members: list[nn.Module], select_member: SelectMember | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.select_member = select_member

    def forward(self, *args, **kwargs):
        sums = dtypes = None
        count = len(self.members)
        for j, block in enumerate(self.members):
            last = j == count - 1
            member_args = args if last else tuple(_copy(a) for a in args)
            member_kwargs = kwargs if last else {k: _copy(v) for k, v in kwargs.items()}
            if self.select_member is not None:
                member_args, member_kwargs = self.select_member(member_args, member_kwargs, j)
            out = block(*member_args, **member_kwargs)
            parts = out if isinstance(out, tuple) else (out,)
            if any(p is None for p in parts):
                raise PlanError("a block in a parallel group returned nothing for one of its streams; "
                                "it cannot be averaged")
            if sums is None:
                sums, dtypes = [p.float() for p in parts], [p.dtype for p in parts]
            else:
                sums = [s + p.float() for s, p in zip(sums, parts)]
        means = tuple((s / count).to(d) for s, d in zip(sums, dtypes))
        return means if isinstance(out, tuple) else means[0]


def _copy(value):
    return value.clone() if isinstance(value, torch.Tensor) else value


def build_steps(blocks: nn.ModuleList, stream: str, steps: Steps, select_member: SelectMember | None,
                wrap_step: WrapStep | None) -> nn.ModuleList:
    modules = []
    for position, step in enumerate(steps):
        module = blocks[step[0]] if len(step) == 1 else ParallelBlocks([blocks[i] for i in step], select_member)
        if wrap_step is not None:
            module = wrap_step(stream, position, step, module)
        modules.append(module)
    return nn.ModuleList(modules)


@contextlib.contextmanager
def planned_order(dit: nn.Module, family: Family, orders: Mapping[str, Steps], transformer_options: dict,
                  control: dict | None = None, wrap_step: WrapStep | None = None) -> Iterator[tuple[dict, dict | None]]:
    """Within the block, ``dit`` runs ``orders`` (stream -> steps; streams not named run as they are).

    Yields the ``transformer_options`` and ``control`` to pass to the model for this call.
    """
    originals = {stream: getattr(dit, family.block_lists[stream]) for stream in orders}
    with family.per_call(dit, orders) as select_member:
        try:
            for stream, steps in orders.items():
                setattr(dit, family.block_lists[stream],
                        build_steps(originals[stream], stream, steps, select_member, wrap_step))
            yield (remap_replace_patches(transformer_options, family, orders),
                   remap_control(control, family, orders))
        finally:
            for stream, blocks in originals.items():
                setattr(dit, family.block_lists[stream], blocks)


def remap_replace_patches(transformer_options: dict, family: Family, orders: Mapping[str, Steps]) -> dict:
    """``patches_replace["dit"][(kind, i)]`` is looked up by loop position; move each to where block i runs."""
    patches = transformer_options.get("patches_replace", {}).get("dit")
    kinds = {family.replace_kinds[stream]: stream for stream in orders if stream in family.replace_kinds}
    if not patches or not any(isinstance(k, tuple) and k and k[0] in kinds for k in patches):
        return transformer_options
    remapped = {k: v for k, v in patches.items() if not (isinstance(k, tuple) and k and k[0] in kinds)}
    for kind, stream in kinds.items():
        for position, step in enumerate(orders[stream]):
            owned = [i for i in step if (kind, i) in patches]
            if not owned:
                continue
            if len(step) > 1:
                raise PlanError(f"{stream} block {owned[0]} carries a block-replace patch from another node "
                                "and runs in a parallel group; such a patch can only follow a block that runs alone")
            remapped[(kind, position)] = patches[(kind, owned[0])]
    options = dict(transformer_options)
    options["patches_replace"] = {**transformer_options["patches_replace"], "dit": remapped}
    return options


def remap_control(control: dict | None, family: Family, orders: Mapping[str, Steps]) -> dict | None:
    """ControlNet adds residual i after loop position i; make it follow block i instead.

    A repeated block gets its residual after every run; a parallel group adds the mean of its members'
    residuals (a missing one counts as zero), which is the mean of what each member would output.
    """
    if not control:
        return control
    remapped = dict(control)
    for stream, steps in orders.items():
        key = family.control_keys.get(stream)
        residuals = control.get(key) if key else None
        if residuals is None:
            continue
        remapped[key] = [_residual(residuals, step) for step in steps]
    return remapped


def _residual(residuals: list, step: Step):
    present = [residuals[i] for i in step if i < len(residuals) and residuals[i] is not None]
    if not present:
        return None
    if len(step) == 1:
        return present[0]
    return sum(present[1:], present[0]) / len(step)
