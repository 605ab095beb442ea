"""Keep only the LoRA patches that land in selected blocks; plain data in, plain data out.

ComfyUI's own loader (``comfy.lora.load_lora`` with the key map of ``comfy.lora.model_lora_keys_unet``)
turns a LoRA file of any format it knows into patches keyed by the model's state-dict names:
``"diffusion_model.double_blocks.7.img_attn.qkv.weight"``, or a tuple whose first item is that name
(one part of a fused weight, e.g. a diffusers-format ``to_q``). The block a patch lands in is read
from that name, so every key format ComfyUI understands is handled by ComfyUI's own mapping.

Indices are the model's original block indices: the pack's plans never rename state-dict keys.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

from .plan import PlanError
from .rewrite import STREAMS
from .selection import format_selection, parse_selection

MODEL_PREFIX = "diffusion_model."
OTHER_TENSORS = ("keep", "drop")


def target_name(key) -> str:
    """The model state-dict name a patch key changes (a tuple key is (name, offset[, function]))."""
    return key[0] if isinstance(key, tuple) else key


def block_of(target: str, block_lists: Mapping[str, str], prefix: str = MODEL_PREFIX) -> tuple[str, int] | None:
    """(stream, original index) of the block holding ``target``, or None outside every block."""
    for stream, attribute in block_lists.items():
        head = f"{prefix}{attribute}."
        if target.startswith(head):
            index, dot, _ = target[len(head):].partition(".")
            if dot and index.isascii() and index.isdigit():
                return stream, int(index)
    return None


@dataclass(frozen=True)
class BlockSelection:
    """Which original blocks of each stream are selected, and what happens to tensors outside blocks."""

    family: str
    block_lists: Mapping[str, str]  # stream -> attribute of the diffusion model
    counts: Mapping[str, int]  # stream -> number of blocks
    blocks: Mapping[str, frozenset]  # stream -> selected indices
    other_tensors: str

    @classmethod
    def parse(cls, family: str, block_lists: Mapping[str, str], counts: Mapping[str, int],
              texts: Mapping[str, str], other_tensors: str) -> "BlockSelection":
        if other_tensors not in OTHER_TENSORS:
            raise PlanError(f"other_tensors = {other_tensors!r}: choose one of {', '.join(OTHER_TENSORS)}")
        unknown = sorted(set(texts) - set(STREAMS))
        if unknown:
            raise PlanError(f"unknown stream {unknown[0]!r}: choose one of {', '.join(STREAMS)}")
        blocks = {stream: frozenset(parse_selection(texts.get(stream, "all"), counts.get(stream, 0), stream))
                  for stream in STREAMS}
        return cls(family, dict(block_lists), {s: counts.get(s, 0) for s in STREAMS}, blocks, other_tensors)

    def keeps(self, key) -> bool:
        where = block_of(target_name(key), self.block_lists)
        if where is None:
            return self.other_tensors == "keep"
        stream, index = where
        return index in self.blocks[stream]

    def as_metadata(self) -> dict:
        """The selection as JSON-ready data (the saved LoRA's metadata note)."""
        return {"family": self.family,
                **{s: format_selection(self.blocks[s], self.counts[s]) for s in STREAMS if self.counts[s]},
                "other_tensors": self.other_tensors}


@dataclass
class LoraReport:
    """What a selection did to one LoRA: counts of patches per block, kept and left out."""

    selection: BlockSelection
    applied: dict = field(default_factory=lambda: {s: Counter() for s in STREAMS})
    left_out: dict = field(default_factory=lambda: {s: Counter() for s in STREAMS})
    other_applied: list = field(default_factory=list)
    other_left_out: list = field(default_factory=list)
    ignored: list = field(default_factory=list)  # file tensors ComfyUI's loader does not use for this model

    def add(self, key, kept: bool) -> None:
        target = target_name(key)
        where = block_of(target, self.selection.block_lists)
        if where is None:
            (self.other_applied if kept else self.other_left_out).append(target)
        else:
            (self.applied if kept else self.left_out)[where[0]][where[1]] += 1

    @property
    def total_applied(self) -> int:
        return sum(sum(c.values()) for c in self.applied.values()) + len(self.other_applied)

    @property
    def total(self) -> int:
        return self.total_applied + sum(sum(c.values()) for c in self.left_out.values()) + len(self.other_left_out)

    def missing(self, stream: str) -> tuple[int, ...]:
        """Selected blocks of ``stream`` the LoRA has no patch for."""
        return tuple(i for i in sorted(self.selection.blocks[stream]) if i not in self.applied[stream])


def filter_patches(patches: Mapping, selection: BlockSelection) -> tuple[dict, LoraReport]:
    """The patches ``selection`` keeps, in their original order, and the report of what it did."""
    report = LoraReport(selection)
    kept = {}
    for key, patch in patches.items():
        keep = selection.keeps(key)
        report.add(key, keep)
        if keep:
            kept[key] = patch
    return kept, report


# ------------------------------------------------------------- which file tensors feed which patch


@dataclass(frozen=True)
class LoraGroup:
    """One LoRA module: its name in the file's own key format, the file tensors read for it, its patches."""

    stem: str
    tensors: tuple[str, ...]
    patches: dict


class _ReadRecorder(dict):
    """The LoRA state dict, recording which tensors the loader reads."""

    read: list

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.read.append(key)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default


def group_lora(lora: Mapping, key_map: Mapping,
               load: Callable[[Mapping, Mapping], Mapping]) -> tuple[list[LoraGroup], list[str]]:
    """Run ``load`` (ComfyUI's ``load_lora``) once per key-map entry and note what each one read.

    Returns the groups in key-map order (merging their patches gives what one ``load(lora, key_map)``
    call gives) and the file tensors no group used. ComfyUI's loader only reads names that start
    with the key-map entry ("{stem}.lora_up.weight", "{stem}_lora.up.weight", "{stem}.alpha" ...), so
    entries no tensor name starts with are skipped without calling it.
    """
    names = sorted(lora)
    recorder = _ReadRecorder(lora)
    groups, used = [], set()
    for stem, target in key_map.items():
        i = bisect.bisect_left(names, stem)
        if i == len(names) or not names[i].startswith(stem):
            continue
        recorder.read = []
        patches = load(recorder, {stem: target})
        if patches:
            tensors = tuple(dict.fromkeys(recorder.read))
            groups.append(LoraGroup(stem, tensors, dict(patches)))
            used.update(tensors)
    return groups, [name for name in lora if name not in used]


def merged_patches(groups: list[LoraGroup]) -> dict:
    patches = {}
    for group in groups:
        patches.update(group.patches)
    return patches


def filter_groups(groups: list[LoraGroup], unused: list[str],
                  selection: BlockSelection) -> tuple[list[str], dict, LoraReport]:
    """The file tensors and the patches ``selection`` keeps, and the report.

    A module's patches (its weight, and its bias from a ``diff_b``) share the module's path, hence
    its block, so a group is kept or left out whole.
    """
    kept_patches, report = filter_patches(merged_patches(groups), selection)
    report.ignored = list(unused)
    tensors = {}
    for group in groups:
        if any(selection.keeps(key) for key in group.patches):
            tensors.update(dict.fromkeys(group.tensors))
    return list(tensors), kept_patches, report


# ---------------------------------------------------------------------------------------- report

SHOWN_NAMES = 8


def render_report(report: LoraReport, title: str, verb: str = "applied") -> str:
    """The report as text, one section per stream; ``title`` starts the first line, ``verb`` says
    what happened to the selected patches ("applied" by the loader, "kept" in a saved file)."""
    selection = report.selection
    lines = [f"{title}: {report.total_applied} of {report.total} patches {verb} "
             "(a patch is one LoRA module's change to one model weight)"]
    for stream in STREAMS:
        n = selection.counts[stream]
        if not n:
            continue
        attribute = selection.block_lists.get(stream, stream)
        named = stream if attribute == stream else f"{stream} ({attribute})"
        lines.append(f"{named}, {n} blocks, selected {format_selection(selection.blocks[stream], n)}:")
        applied = report.applied[stream]
        lines.append(f"  {verb} per block: " + (", ".join(f"{i}: {applied[i]}" for i in sorted(applied)) or "none"))
        missing = report.missing(stream)
        if missing:
            lines.append(f"  selected but not in the LoRA: {format_selection(missing, n)}")
        left_out = report.left_out[stream]
        if left_out:
            lines.append(f"  left out (in the LoRA, not selected): {format_selection(left_out, n)} "
                         f"({sum(left_out.values())} patches)")
    other = report.other_applied if selection.other_tensors == "keep" else report.other_left_out
    if other:
        done = verb if selection.other_tensors == "keep" else "left out"
        lines.append(f"outside the blocks (other_tensors = {selection.other_tensors}): {len(other)} patches {done}: "
                     + _names([name.removeprefix(MODEL_PREFIX) for name in other]))
    else:
        lines.append(f"outside the blocks (other_tensors = {selection.other_tensors}): the LoRA has none")
    if report.ignored:
        lines.append(f"not for this diffusion model (ComfyUI's loader does not use them; never saved): "
                     f"{len(report.ignored)} file tensors: {_names(report.ignored)}")
    return "\n".join(lines)


def _names(names: list[str]) -> str:
    counts = Counter(names)
    shown = [name if count == 1 else f"{name} x{count}" for name, count in counts.items()]
    more = len(shown) - SHOWN_NAMES
    return ", ".join(shown[:SHOWN_NAMES]) + (f" and {more} more" if more > 0 else "")
