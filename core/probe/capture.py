"""The probe's observer: records the hidden states of every executed step, conditional rows only.

ComfyUI-facing entry points, both on ``Probe``:

- ``wrap_step``: the executor's observer hook (``transformer_options[OBSERVER_KEY]``). Each executed
  step is replaced by a ``Recorder`` that calls it and records its output, and at position 0 also
  its input (row "in").
- ``around_call``: an ``APPLY_MODEL`` wrapper that marks one model evaluation: which batch rows are
  conditional (``cond_or_uncond``: 0 = cond, 1 = uncond, rows split equally among its entries) and
  where the evaluation ends, so that each accumulator can fold it in and drop its states.

A stream's rows follow its execution order. Labels name the original block(s) each row ran:
"in", "3", "[3-5]" (a parallel group), "4#2" (the second run of block 4 in one evaluation).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..families import Family
from ..plan import Step, format_steps
from ..rewrite import STREAMS, LayerPlan
from .similarity import ACCUMULATORS, AGGREGATES, EXACT, Keep, ProbeError, flat_copy, token_count, token_subset

INPUT = "in"
PART_ORDER = ("image", "text", "text+image")


def step_label(step: Step, occurrence: int) -> str:
    text = format_steps((step,))
    return text if occurrence == 1 else f"{text}#{occurrence}"


def cond_rows(batch: int, cond_or_uncond) -> list[int] | None:
    """The conditional rows of a batch; None when every row is conditional."""
    if not cond_or_uncond:
        return None
    chunks = len(cond_or_uncond)
    if batch % chunks:
        raise ProbeError(f"a batch of {batch} rows cannot be split among cond_or_uncond {list(cond_or_uncond)}")
    size = batch // chunks
    rows = [k * size + r for k, kind in enumerate(cond_or_uncond) if kind == 0 for r in range(size)]
    return None if len(rows) == batch else rows


def latent_frames(x: torch.Tensor) -> int:
    """Frames of the latent a model is called with: T of a video latent ``[B, C, T, H, W]``, else 1."""
    return x.shape[2] if x.ndim == 5 else 1


def check_single_order(plan: LayerPlan) -> None:
    """The probe compares one execution order; refuse a plan whose order changes during sampling."""
    if plan.order_changes_during_sampling:
        raise ProbeError("this model's plan changes the block order during sampling (a start/end window):\n"
                         f"{plan.summary()}\nthe probe needs one order for every step; probe the model "
                         "with windows spanning 0-1, or before the windowed node")


@dataclass(frozen=True)
class Measured:
    """One similarity matrix: one part of one stream's hidden states."""

    stream: str
    part: str
    key: str  # "double_blocks/image", "single_blocks": how the report names it
    labels: list[str]
    steps: list[Step | None]  # per row; None for the input row
    matrix: np.ndarray  # [rows, rows] float64
    tokens: int  # tokens per state the matrix is computed on
    total_tokens: int


@dataclass
class _Capture:
    """One evaluation being captured, in the thread that runs it."""

    rows: torch.Tensor | None  # the conditional rows; None: all
    frames: int = 1  # of the latent the model is called with
    seen: dict[str, list[Step]] = field(default_factory=dict)  # per stream, the steps recorded so far


class Track:
    """The rows of one part of one stream, and its accumulator."""

    def __init__(self, stream: str, part: str, key: str, aggregate: str, keep: Keep = EXACT):
        self.stream, self.part, self.key = stream, part, key
        self.accumulator = ACCUMULATORS[aggregate](keep)
        self.labels: list[str] | None = None  # fixed by the first evaluation
        self.steps: list[Step | None] | None = None
        self.tokens = self.total_tokens = 0
        self._labels: list[str] = []
        self._steps: list[Step | None] = []

    @property
    def recorded(self) -> bool:
        """Whether the current evaluation recorded rows."""
        return bool(self._labels)

    def add(self, label: str, step: Step | None, state: torch.Tensor) -> None:
        self.accumulator.add(state)
        self._labels.append(label)
        self._steps.append(step)

    def end(self) -> None:
        if self.labels is None:
            self.labels, self.steps = self._labels, self._steps
        elif self._labels != self.labels:
            raise ProbeError(f"{self.key}: the execution order changed between model evaluations "
                             f"({', '.join(self.labels)} then {', '.join(self._labels)}); the probe needs one order")
        self.accumulator.end()
        self._labels, self._steps = [], []

    def discard(self) -> None:
        self.accumulator.discard()
        self._labels, self._steps = [], []


class Recorder(nn.Module):
    """Runs one executed step and hands its hidden states to the probe."""

    def __init__(self, probe: "Probe", stream: str, position: int, step: Step, module: nn.Module):
        super().__init__()
        self.module = module
        self.probe, self.stream, self.position, self.step = probe, stream, position, step

    def forward(self, *args, **kwargs):
        probe = self.probe
        if not probe.capturing:
            return self.module(*args, **kwargs)
        if self.position == 0:
            probe.record_input(self.stream, args, kwargs)
        out = self.module(*args, **kwargs)
        probe.record_output(self.stream, self.position, self.step, out)
        return out


def _working_bytes(value: torch.Tensor, tokens: torch.Tensor | None, copy: torch.Tensor) -> int:
    """At most what ``flat_copy`` has alive at once on the state's device: the token subset of every row, the
    conditional rows of it, and the copy in the kept dtype."""
    per_value = value.element_size() * value.shape[-1]
    selected = 0 if tokens is None else value.shape[0] * len(tokens) * per_value
    rows = copy.shape[0] * (copy.shape[1] // value.shape[-1]) * per_value if copy.shape[0] != value.shape[0] else 0
    return selected + rows + (copy.nbytes if copy.dtype != value.dtype or not (selected or rows) else 0)


class Probe:
    """``keep``: where the states wait and how they are multiplied (``similarity.Keep``); the default is
    the exact way, on the model's device."""

    def __init__(self, family: Family, aggregate: str = "per_step", max_tokens: int = 0, seed: int = 0,
                 keep: Keep = EXACT):
        if aggregate not in ACCUMULATORS:
            raise ProbeError(f"unknown aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
        if max_tokens < 0:
            raise ProbeError(f"max_tokens = {max_tokens}: use 0 for every token or a positive count")
        self.family, self.aggregate, self.max_tokens, self.seed = family, aggregate, max_tokens, seed
        self.keep = keep
        self.tracks: dict[tuple[str, str], Track] = {}
        self.evaluations = 0
        self.peak_bytes = 0  # states held, wherever they are
        self.peak_device_bytes = 0  # on the model's device: states kept there and the working copy
        self.peak_working_bytes = 0  # the largest working copy (made on the model's device, then kept or moved)
        self._frames: set[int] = set()
        self._subsets: dict[tuple, torch.Tensor | None] = {}
        # ComfyUI 0.33 calls per-device clones of a model from threads, all with this one probe: what
        # one evaluation is capturing is the calling thread's own, and one evaluation is captured at a time
        self._local = threading.local()
        self._one_at_a_time = threading.Lock()

    def __deepcopy__(self, memo):
        # ModelPatcher.clone deep-copies model_options; every copy must feed this one probe.
        return self

    @property
    def capturing(self) -> bool:
        return self._capture is not None

    @property
    def _capture(self) -> "_Capture | None":
        return getattr(self._local, "capture", None)

    # ------------------------------------------------------------------ one model evaluation

    def around_call(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                    **kwargs):
        """``APPLY_MODEL`` wrapper: capture this evaluation when it has conditional rows."""
        rows = cond_rows(x.shape[0], transformer_options.get("cond_or_uncond"))
        if rows == [] or self.capturing:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        with self.evaluation(None if rows is None else torch.tensor(rows, device=x.device), latent_frames(x)):
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    @contextlib.contextmanager
    def evaluation(self, rows: torch.Tensor | None, frames: int = 1):
        """Around one model evaluation whose rows ``rows`` (None: all) are conditional, on a latent of ``frames``."""
        with self._one_at_a_time:
            self._local.capture = _Capture(rows, frames)
            completed = False
            try:
                yield self
                completed = True
            finally:
                self._end(completed, frames)

    def _end(self, completed: bool, frames: int) -> None:
        self._local.capture = None
        tracks = list(self.tracks.values())
        if not completed:
            for track in tracks:
                track.discard()
            return
        if any(track.recorded for track in tracks):
            for track in tracks:
                track.end()
            self.evaluations += 1
            self._frames.add(frames)

    @property
    def frames(self) -> int | list[int]:
        """The latent frames of the evaluations captured (a list where they differ, as with context windows)."""
        counts = sorted(self._frames) or [1]
        return counts[0] if len(counts) == 1 else counts

    # ------------------------------------------------------------------ the executor's hook

    def wrap_step(self, stream: str, position: int, step: Step, module: nn.Module) -> nn.Module:
        if stream not in self.family.hidden_states:
            raise ProbeError(f"{self.family.name} does not describe the hidden states of its {stream}; "
                             "the probe cannot read them")
        return Recorder(self, stream, position, step, module)

    def record_input(self, stream: str, args: tuple, kwargs: dict) -> None:
        try:
            values = self.family.hidden_states[stream].inputs(args, kwargs)
        except TypeError as error:
            raise ProbeError(f"{self.family.name} {stream}: {error}") from None
        self._capture.seen[stream] = []
        self._record(stream, INPUT, None, values)

    def record_output(self, stream: str, position: int, step: Step, out) -> None:
        seen = self._capture.seen.setdefault(stream, [])
        seen.append(step)
        try:
            values = self.family.hidden_states[stream].outputs(out)
        except TypeError as error:
            raise ProbeError(f"{self.family.name} {stream} block at position {position}: {error}") from None
        self._record(stream, step_label(step, seen.count(step)), step, values)

    def _record(self, stream: str, label: str, step: Step | None, values: dict) -> None:
        parts = self.family.hidden_states[stream].parts
        with torch.no_grad():
            for part in parts:
                value = values[part]
                if value is None:  # SD3's last joint block returns no text stream
                    continue
                track = self._track(stream, part, len(parts))
                total = token_count(value)
                tokens = self._subset(track.key, total, self._capture.frames, value.device)
                track.tokens, track.total_tokens = total if tokens is None else len(tokens), total
                copy = flat_copy(value, self._capture.rows, tokens, self.keep.dtype(value))
                track.add(label, step, copy)
                on_device = self.bytes_on(copy.device)
                self.peak_working_bytes = max(self.peak_working_bytes, _working_bytes(value, tokens, copy))
                kept_there = self.keep.device is None or torch.device(self.keep.device) == copy.device
                self.peak_device_bytes = max(self.peak_device_bytes, on_device + (0 if kept_there else copy.nbytes))
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def _track(self, stream: str, part: str, parts: int) -> Track:
        track = self.tracks.get((stream, part))
        if track is None:
            key = f"{stream}/{part}" if parts > 1 else stream
            track = self.tracks[(stream, part)] = Track(stream, part, key, self.aggregate, self.keep)
        return track

    def _subset(self, key: str, n_tokens: int, frames: int, device) -> torch.Tensor | None:
        cache_key = (key, n_tokens, frames, str(device))
        if cache_key not in self._subsets:
            tokens = token_subset(n_tokens, self.max_tokens, self.seed, frames)
            self._subsets[cache_key] = None if tokens is None else tokens.to(device)
        return self._subsets[cache_key]

    @property
    def nbytes(self) -> int:
        """Bytes of hidden states the probe holds now."""
        return sum(track.accumulator.nbytes for track in self.tracks.values())

    def bytes_on(self, device: torch.device) -> int:
        """Bytes of hidden states the probe holds now on ``device``."""
        return sum(state.nbytes for track in self.tracks.values() for state in track.accumulator.states
                   if state.device == device)

    # ------------------------------------------------------------------ results

    def results(self) -> list[Measured]:
        if not self.evaluations:
            raise ProbeError("the probe captured no model evaluation with conditional rows")
        ordered = sorted(self.tracks.values(),
                         key=lambda t: (STREAMS.index(t.stream), PART_ORDER.index(t.part)
                                        if t.part in PART_ORDER else len(PART_ORDER), t.part))
        return [Measured(t.stream, t.part, t.key, list(t.labels), list(t.steps),
                         t.accumulator.result().numpy(), t.tokens, t.total_tokens)
                for t in ordered if t.labels]

    def release(self) -> None:
        """Drop every captured state (results already taken stay valid)."""
        self.tracks = {}
        self._subsets = {}

