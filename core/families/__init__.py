"""What is special about each model family, one module each; ``detect`` picks one for a loaded model."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Mapping

from torch import nn

from ..plan import PlanError, Steps


def no_check(stream: str, steps: Steps, n_blocks: int) -> None:
    return None


def no_patch_check(transformer_options: dict, orders: Mapping[str, Steps]) -> None:
    return None


@contextlib.contextmanager
def no_per_call(dit: nn.Module, orders: Mapping[str, Steps]):
    yield None


@dataclass(frozen=True)
class Family:
    name: str
    classes: tuple[str, ...]  # "module.Class" of the diffusion models it covers, matched exactly
    block_lists: dict[str, str]  # stream -> attribute of the diffusion model holding its blocks
    replace_kinds: dict[str, str] = field(default_factory=dict)  # stream -> patches_replace["dit"] kind
    control_keys: dict[str, str] = field(default_factory=dict)  # stream -> ControlNet residual list
    # stream -> transformer_options["patches"] kind the loop calls after each block with "block_index"
    index_patches: dict[str, str] = field(default_factory=dict)
    check_order: Callable[[str, Steps, int], None] = no_check  # raises PlanError for an order it cannot run
    # check_patches(transformer_options, orders) raises PlanError for another node's patch that cannot
    # run with these orders; called on every planned model call
    check_patches: Callable[[dict, Mapping[str, Steps]], None] = no_patch_check
    # per_call(dit, orders) -> context manager, entered around each planned call; yields the
    # select_member hook of parallel steps, or None
    per_call: Callable[[nn.Module, Mapping[str, Steps]], ContextManager] = no_per_call
    # stream -> ((parameter, part), ...): the block's leading parameters that carry hidden states,
    # in the order the block also returns them (a tensor for one, a tuple for several); ``part``
    # names the tokens ("image", "text", "text+image"). The probe reads states through it.
    hidden_states: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def hidden_inputs(self, stream: str, args: tuple, kwargs: dict) -> tuple:
        """The hidden states a block of ``stream`` was called with, in ``hidden_states`` order."""
        values = []
        for index, (parameter, _) in enumerate(self.hidden_states[stream]):
            if parameter in kwargs:
                values.append(kwargs[parameter])
            elif index < len(args):
                values.append(args[index])
            else:
                raise TypeError(f"{self.name} {stream}: the block was called without its '{parameter}' input")
        return tuple(values)

    def block_counts(self, dit: nn.Module) -> dict[str, int]:
        return {stream: len(getattr(dit, self.block_lists[stream])) if stream in self.block_lists else 0
                for stream in ("double_blocks", "single_blocks")}


def unwrap(diffusion_model: nn.Module) -> nn.Module:
    """The module itself, also under torch.compile."""
    return getattr(diffusion_model, "_orig_mod", diffusion_model)


@functools.cache
def all_families() -> tuple[Family, ...]:
    # imported here because the family modules import Family from this one; cached because the
    # per-call wrapper looks its family up by name on every model call
    from .auraflow import AURAFLOW
    from .chroma import CHROMA
    from .flux import FLUX
    from .sd3 import SD3

    return FLUX, CHROMA, SD3, AURAFLOW


def by_name(name: str) -> Family:
    for family in all_families():
        if family.name == name:
            return family
    raise KeyError(name)


def detect(diffusion_model: nn.Module) -> Family:
    cls = type(unwrap(diffusion_model))
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    for family in all_families():
        if qualified in family.classes:
            return family
    names = ", ".join(f.name for f in all_families())
    raise PlanError(f"DiT Layer Lab supports {names}; this model's diffusion model is {qualified}")
