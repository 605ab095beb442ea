"""Run a diffusion transformer's blocks in a planned order, for the duration of one call.

The model's own forward loop stays in charge: for the call, each planned stream's block list is
replaced by a ``PlannedBlocks`` whose iteration yields the planned steps (the original block
modules, or a ``ParallelBlocks`` for an averaged group) and put back in ``finally``. No weight
moves and no name changes: looked up by name ("double_blocks.3.img_attn"), in ``named_modules()``
or ``state_dict()``, the list is still the original one, so LoRA, merges, hooks, saving, and
anything that loads or unloads weights in the middle of a call see the model they expect.

A ``Modified`` step (``7@0.5``, ``7:attn``, ``7:img``) runs its block through ``core.modified``; plain
steps never do, so a plan without modifiers runs exactly as before.

What the loop does by position is moved along with the blocks: ControlNet residuals,
``patches_replace["dit"]`` entries and block-index patches follow the block they belong to, and a
block that the loop tells its index (``transformer_options["block_index"]``) is told its own.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from .families import Family
from .modified import modified_module
from .planned_blocks import PlannedBlocks
from .plan import Modified, PlanError, Step, Steps, format_steps

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

    def __init__(self, members: list, select_member: SelectMember | None = None):
        super().__init__()
        self.members = tuple(members)  # the blocks (or OwnIndex callables); not registered: names stay the model's
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
    if isinstance(value, torch.Tensor):
        return value.clone()
    if type(value) in (tuple, list):  # also inside: LTX-2's blocks take their streams as one (video, audio) tuple
        return type(value)(_copy(v) for v in value)
    return value


def _tell_index(transformer_options: dict | None, index: int) -> None:
    """Where the loop tells blocks their index, make it ``index``."""
    if transformer_options is not None and "block_index" in transformer_options:
        transformer_options["block_index"] = index


class OwnIndex:
    """Runs block ``index`` with ``transformer_options["block_index"]`` set to ``index``, wherever it runs.

    Loops write the loop position there just before calling the block; state keyed by it (attention
    patches, ``FluxKVCache``) belongs to the block, so the block is told its own index. The loop's
    dict is updated in place, so patches the loop calls after the block see the same index. A plain
    callable, not a module: one is made per moved block on every planned call, and an ``nn.Module``
    costs a hundred times more to make. Attributes the loop reads are the block's.
    """

    __slots__ = ("block", "index")

    def __init__(self, block: nn.Module, index: int):
        self.block, self.index = block, index

    def __call__(self, *args, **kwargs):
        _tell_index(kwargs.get("transformer_options"), self.index)
        return self.block(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.block, name)


def build_steps(blocks: nn.ModuleList, stream: str, steps: Steps, select_member: SelectMember | None,
                wrap_step: WrapStep | None, family: Family | None = None) -> PlannedBlocks:
    modules = []
    for position, step in enumerate(steps):
        if len(step) == 1:
            i = step[0]
            module = blocks[i] if i == position else OwnIndex(blocks[i], i)
        else:
            module = ParallelBlocks([OwnIndex(blocks[i], i) for i in step], select_member)
        if isinstance(step, Modified):
            module = modified_module(family, stream, [blocks[i] for i in step], step, module)
        if wrap_step is not None:
            module = wrap_step(stream, position, step, module)
        modules.append(module)
    return PlannedBlocks(blocks, modules)


@contextlib.contextmanager
def planned_order(dit: nn.Module, family: Family, orders: Mapping[str, Steps], transformer_options: dict,
                  control: dict | None = None, wrap_step: WrapStep | None = None) -> Iterator[tuple[dict, dict | None]]:
    """Within the block, ``dit`` runs ``orders`` (stream -> steps; streams not named run as they are).

    Yields the ``transformer_options`` and ``control`` to pass to the model for this call.
    """
    family.check_patches(transformer_options, orders)
    originals = {stream: getattr(dit, family.block_lists[stream]) for stream in orders}
    with family.per_call(dit, orders) as select_member:
        try:
            for stream, steps in orders.items():
                setattr(dit, family.block_lists[stream],
                        build_steps(originals[stream], stream, steps, select_member, wrap_step, family))
            yield (remap_index_patches(remap_replace_patches(transformer_options, family, orders), family, orders),
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
            remapped[(kind, position)] = _told_own_index(patches[(kind, owned[0])], owned[0])
    options = dict(transformer_options)
    options["patches_replace"] = {**transformer_options["patches_replace"], "dit": remapped}
    return options


def _told_own_index(patch, index: int):
    def run(args, extra):
        _tell_index(args.get("transformer_options"), index)
        return patch(args, extra)
    return run


def remap_index_patches(transformer_options: dict, family: Family, orders: Mapping[str, Steps]) -> dict:
    """Patches the loop calls after each block with ``"block_index": position`` get the block's own index.

    A parallel group has no one index, so a block-index patch on a stream with one is refused.
    """
    patches = transformer_options.get("patches")
    kinds = {family.index_patches[stream]: stream for stream in orders if stream in family.index_patches}
    if not patches or not any(patches.get(kind) for kind in kinds):
        return transformer_options
    remapped = dict(patches)
    for kind, stream in kinds.items():
        if not patches.get(kind):
            continue
        steps = orders[stream]
        grouped = next((step for step in steps if len(step) > 1), None)
        if grouped is not None:
            raise PlanError(f"another node patches every {stream} block by its index (transformer_options "
                            f"patches[{kind!r}]), and the plan runs blocks {format_steps((grouped,))} as a parallel "
                            "group, which has no single index; run that model without parallel groups")
        remapped[kind] = [_by_own_index(patch, steps) for patch in patches[kind]]
    options = dict(transformer_options)
    options["patches"] = remapped
    return options


def _by_own_index(patch, steps: Steps):
    def run(args):
        return patch({**args, "block_index": steps[args["block_index"]][0]})
    return run


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
