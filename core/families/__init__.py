"""What is special about each model family, one module each; ``detect`` picks one for a loaded model."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Mapping

from torch import nn

from ..plan import PART_NAMES, STREAM_PARTS, SUBLAYERS, PlanError, Steps, format_steps, part_of
from .layout import Layout


@dataclass(frozen=True)
class SubLayers:
    """Where a block's attention and MLP contributions to its residual stream(s) come from.

    Each names the block's sub-modules (dotted paths) whose outputs are exactly that part's
    contribution before its gate: zeroing them drops the part, scaling them scales it. A path a
    block lacks (SD3's last joint block has no text-stream projection) contributes nothing there.
    """

    attn: tuple[str, ...]
    mlp: tuple[str, ...]

    def paths(self, part: str) -> tuple[str, ...]:
        return getattr(self, part)


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
    # stream -> where its blocks' attention and MLP contributions are (SubLayers), or why they cannot be
    # dropped separately (a sentence); a stream not listed refuses ':attn' and ':mlp'
    sublayers: dict[str, "SubLayers | str"] = field(default_factory=dict)

    def check(self, stream: str, steps: Steps, n_blocks: int) -> None:
        """Everything this family refuses in an order: its own rule (``check_order``) and parts it lacks."""
        self.check_order(stream, steps, n_blocks)
        for step in steps:
            part = part_of(step)
            if part:
                self.check_part(stream, part, step)

    def check_part(self, stream: str, part: str, step=None) -> None:
        shown = f" (in {format_steps((step,))})" if step is not None else ""
        kind = self.block_kind(stream)
        if part in STREAM_PARTS:
            layout = self.hidden_states.get(stream)
            if layout is None or not {"image", "text"} <= set(layout.parts):
                raise PlanError(f"':{part}'{shown} keeps one stream of a double block, but {kind} carry one "
                                "sequence of text and image tokens; use it on double_blocks")
        elif part in SUBLAYERS:
            declared = self.sublayers.get(stream)
            if isinstance(declared, SubLayers):
                return
            why = declared or (f"the {self.name} family does not declare where its {stream} blocks' attention "
                               "and MLP contributions are")
            raise PlanError(f"':{part}'{shown} drops the {PART_NAMES[part]} of a block, which {kind} cannot do: "
                            f"{why}; use a strength on the whole block instead (7@0.5)")

    def block_kind(self, stream: str) -> str:
        """"Flux single_blocks", "Qwen-Image double_blocks (transformer_blocks)": for messages."""
        name = self.block_lists.get(stream, stream)
        return f"{self.name} {stream}" + (f" ({name})" if name != stream else "")
    # "module.Class" of known subclasses refused -> (model name, why): they run their own loop
    refused: dict[str, tuple[str, str]] = field(default_factory=dict)
    models: str = ""  # the released models it covers, for users ("Flux.1, Flux.2, LongCat-Image"); "" is its name
    # why a diffusion-model file whose block lists hold a plan's order (a pruned or re-ordered model) would not
    # load in ComfyUI as that planned model: the loader fixes the depth or reads it from a width, or the loop
    # hands a block data by its position that the file cannot carry. "" where ComfyUI counts the blocks in the
    # file and nothing else depends on a block's position. A function is asked when saving (the answer may
    # depend on the running ComfyUI).
    pruned_file_refusal: "str | Callable[[], str]" = ""

    def pruned_file_problem(self) -> str:
        why = self.pruned_file_refusal
        return why() if callable(why) else why

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


def supported_models() -> str:
    """Every supported model, for tooltips and messages: "Flux.1, Flux.2, LongCat-Image, Chroma, ..."."""
    return ", ".join(family.models or family.name for family in all_families())


@functools.cache
def all_families() -> tuple[Family, ...]:
    # imported here because the family modules import Family from this one; cached because the
    # per-call wrapper looks its family up by name on every model call
    from .auraflow import AURAFLOW
    from .boogu import BOOGU
    from .chroma import CHROMA, CHROMA_RADIANCE
    from .cosmos import ANIMA, COSMOS_PREDICT2
    from .ernie import ERNIE_IMAGE
    from .flux import FLUX
    from .hidream import HIDREAM
    from .hunyuan_video import HUNYUAN_VIDEO
    from .ideogram4 import IDEOGRAM4
    from .kandinsky5 import KANDINSKY5
    from .krea2 import KREA2
    from .lightricks import LTX2, LTXV
    from .lumina import LUMINA2
    from .omnigen2 import OMNIGEN2
    from .pixart import PIXART
    from .qwen_image import QWEN_IMAGE
    from .sd3 import SD3
    from .wan import WAN

    return (FLUX, CHROMA, CHROMA_RADIANCE, SD3, AURAFLOW, QWEN_IMAGE, LUMINA2, HUNYUAN_VIDEO, HIDREAM,
            PIXART, OMNIGEN2, BOOGU, KREA2, ERNIE_IMAGE, IDEOGRAM4, LTXV, LTX2, COSMOS_PREDICT2, ANIMA, KANDINSKY5,
            WAN)


# Known diffusion-model classes the pack refuses, and why (a model not listed here is refused too).
NOT_SUPPORTED = {
    "comfy.ldm.hidream_o1.model.HiDreamO1Transformer": (
        "HiDream-O1", "its blocks are a language model's layers over text and pixel patches, a loop that has not "
                      "been checked; it is not HiDream-I1's class"),
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
