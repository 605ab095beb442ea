"""What is special about each model family, one module each; ``detect`` picks one for a loaded model."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Mapping

from torch import nn

from ..plan import PlanError, Steps
from .layout import Layout


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
    # stream -> where a block of that stream takes and returns its hidden states (the probe, parallel
    # steps and the fast sweep read states only through it)
    hidden_states: dict[str, Layout] = field(default_factory=dict)
    # "module.Class" of known subclasses refused -> (model name, why): they run their own loop
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)

    def block_counts(self, dit: nn.Module) -> dict[str, int]:
        return {stream: len(getattr(dit, self.block_lists[stream])) if stream in self.block_lists else 0
                for stream in ("double_blocks", "single_blocks")}

    def list_names(self) -> tuple[tuple[str, str], ...]:
        """(stream, the model's own name of its list) where the two differ: ("double_blocks", "transformer_blocks")."""
        return tuple((stream, name) for stream, name in self.block_lists.items() if name != stream)

    def list_note(self, counts: Mapping[str, int]) -> str:
        """What the pack's streams are on this model, for error messages; "" where the names are the model's own."""
        named = [f"{stream} are its {name} ({counts.get(stream, 0)} blocks)" for stream, name in self.list_names()]
        return f"on this {self.name} model, {' and '.join(named)}" if named else ""


def unwrap(diffusion_model: nn.Module) -> nn.Module:
    """The module itself, also under torch.compile."""
    return getattr(diffusion_model, "_orig_mod", diffusion_model)


@functools.cache
def all_families() -> tuple[Family, ...]:
    # imported here because the family modules import Family from this one; cached because the
    # per-call wrapper looks its family up by name on every model call
    from .auraflow import AURAFLOW
    from .chroma import CHROMA, CHROMA_RADIANCE
    from .flux import FLUX
    from .hunyuan_video import HUNYUAN_VIDEO
    from .lumina import LUMINA2
    from .qwen_image import QWEN_IMAGE
    from .sd3 import SD3
    from .wan import WAN

    return FLUX, CHROMA, CHROMA_RADIANCE, SD3, AURAFLOW, QWEN_IMAGE, LUMINA2, HUNYUAN_VIDEO, WAN


# Known diffusion-model classes the pack refuses, and why (a model not listed here is refused too).
NOT_SUPPORTED = {
    "comfy.ldm.hidream.model.HiDreamImageTransformer2DModel": (
        "HiDream", "its loop gives the block at position i the i-th LLM hidden state (through the i-th caption "
        "projection), counted across both lists; a moved block would get another block's text, and moving that "
        "data with its block is not implemented"),
    "comfy.ldm.pixart.pixartms.PixArtMS": ("PixArt", "its loop has not been checked and tested yet"),
    "comfy.ldm.omnigen.omnigen2.OmniGen2Transformer2DModel": (
        "OmniGen2", "its loop has not been checked and tested yet"),
    "comfy.ldm.krea2.model.SingleStreamDiT": ("Krea2", "its loop has not been checked and tested yet"),
    "comfy.ldm.ernie.model.ErnieImageModel": ("Ernie-Image", "its loop has not been checked and tested yet"),
}


def by_name(name: str) -> Family:
    for family in all_families():
        if family.name == name:
            return family
    raise KeyError(name)


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def detect(diffusion_model: nn.Module) -> Family:
    """The family of exactly this diffusion model class.

    A subclass of a supported class is refused: it may run another loop (other lists, other data
    by position), and each class is only supported once its loop has been read.
    """
    cls = type(unwrap(diffusion_model))
    qualified = _qualified(cls)
    for family in all_families():
        if qualified in family.classes:
            return family
    names = ", ".join(f.name for f in all_families())
    refused = {**NOT_SUPPORTED, **{k: v for f in all_families() for k, v in f.refused.items()}}
    if qualified in refused:
        model, why = refused[qualified]
        raise PlanError(f"{model} ({qualified}) is not supported: {why} (supported: {names})")
    for base in cls.__mro__[1:]:
        family = next((f for f in all_families() if _qualified(base) in f.classes), None)
        if family is not None:
            raise PlanError(f"this model's diffusion model is {qualified}, a subclass of {family.name}'s "
                            f"{_qualified(base)}; DiT Layer Lab has not checked that its forward loop runs "
                            f"{family.name}'s blocks the same way, so it is not supported (supported: {names})")
    raise PlanError(f"DiT Layer Lab supports {names}; this model's diffusion model is {qualified}")
