"""Fast sweep: one model evaluation per variant that recomputes only the blocks after the skipped window.

The baseline evaluation runs the model's own order and records the hidden states that enter the
blocks where variants will resume. A variant that skips a window then runs the real model forward
(embeddings, ComfyUI's own loop, the final layer) with a plan whose executed steps are only the
steps after the window; its first executed step ignores the hidden states it receives and gets the
recorded ones instead. Streams before that step run no block at all, so a single-stream skip runs
no double block.

Which state a variant resumes from: let the baseline's and the variant's executed steps be listed
double stream first, then single stream, and let p be the length of their common prefix.

- p = 0 (the window starts at the first step): nothing can be reused; the variant runs in full.
- the variant's step p is in the same stream as the baseline's step p: it receives exactly what the
  baseline's step p received (the state after the common prefix, ControlNet residuals included), so
  the variant starts there with that recorded input.
- otherwise (the window reaches the end of a stream, so the next state is built by the model between
  streams or by the final layer, outside any block): the variant starts one step earlier, at the
  prefix's last step, with its recorded input, and recomputes that one step.

The variant then equals the same skip run in full, evaluated on the same inputs, as long as the
blocks compute the same values on equal inputs (they do on one device; the test checks it
bit for bit). One difference is left on purpose: ``transformer_options["block_index"]`` counts the
steps that actually execute, so a patch that reads it sees other positions.

ControlNet residuals and Chroma's modulations follow their block through the executor as usual. A
block-replace patch from another node would see the hidden states before the substitution, so
fast mode refuses a model that has one on any of its streams.

Memory: the states wait on ComfyUI's intermediate device (host memory beside a GPU). A resumed block
gets its recorded state in the loop's own tensor (``Tensor.set_``): what that tensor held, a state the
variant never uses, is let go before the copy to the model's device is made, so a variant holds no
more there than a plain run (otherwise one more state for as long as the block runs: 320 MiB per
batch row for Wan 2.2 14B at 81 frames). The loop's tensor is re-pointed, not written into, so views
of its old storage keep their values; a tensor the model call was given is never re-pointed.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from ..executor import planned_order
from ..families import Family, Layout, unwrap
from ..plan import Step, Steps
from ..rewrite import STREAMS
from . import sweep_memory
from .sweep import SweepError

Position = tuple[str, int]  # (stream, position in that stream's executed order)
# one model call of an evaluation: (device, x shape, cond_or_uncond, how many such calls came before it)
CallKey = tuple[str, tuple, tuple, int]


@dataclass(frozen=True)
class Resume:
    """How to run one variant from the baseline's recorded states."""

    orders: dict[str, Steps]  # what the model runs, every stream the family has
    stream: str | None  # whose first executed step gets the recorded state; None: runs in full
    source: int  # the baseline position (in ``stream``) whose recorded input it gets

    @property
    def blocks_run(self) -> int:
        return sum(len(step) for steps in self.orders.values() for step in steps)


def _executed(orders: Mapping[str, Steps]) -> list[tuple[str, int, Step]]:
    return [(s, i, step) for s in STREAMS if s in orders for i, step in enumerate(orders[s])]


def resume(base: Mapping[str, Steps], variant: Mapping[str, Steps]) -> Resume:
    """The orders a variant runs when resumed from the baseline's states (see the module docstring)."""
    if set(base) != set(variant):
        raise ValueError(f"base streams {sorted(base)} and variant streams {sorted(variant)} differ")
    eb, ev = _executed(base), _executed(variant)
    p = 0
    while p < min(len(eb), len(ev)) and eb[p] == ev[p]:
        p += 1
    if p == 0:
        return Resume(dict(variant), None, 0)
    if p < len(ev) and p < len(eb) and ev[p][0] == eb[p][0]:
        stream, start, source = ev[p][0], ev[p][1], eb[p][1]
    else:
        stream, start, source = ev[p - 1][0], ev[p - 1][1], eb[p - 1][1]
    return Resume(_starting_at(variant, stream, start), stream, source)


def every_start(base: Mapping[str, Steps]) -> list[Resume]:
    """The baseline resumed at each of its executed steps: recording for these records every step's input,
    which is all that any plan on the baseline can need (a search does not know its plans in advance)."""
    return [Resume(_starting_at(base, s, i), s, i) for s in STREAMS if s in base for i in range(len(base[s]))]


def _starting_at(orders: Mapping[str, Steps], stream: str, start: int) -> dict[str, Steps]:
    """``orders`` from ``stream``'s step ``start`` on: the streams before it run nothing."""
    streams = [s for s in STREAMS if s in orders]
    at = streams.index(stream)
    return {s: () if k < at else orders[s][start:] if k == at else orders[s] for k, s in enumerate(streams)}


# ------------------------------------------------------------------------------- hidden states


def _replace(layout: Layout, args: tuple, kwargs: dict, values: dict, kept: set[int] | None):
    """The call's hidden-state arguments holding copies of ``values``, on the devices of those they replace:
    in the given tensors themselves (see the module docstring) unless ``kept`` is None or holds their id."""
    given = layout.inputs(args, kwargs)
    return layout.with_inputs(args, kwargs, {
        part: _hand_over(value, given[part]) if kept is not None and _may_hand_over(value, given[part], kept)
        else _copy(value, given[part]) for part, value in values.items()})


def _copy(value, like=None):
    # blocks update their inputs in place: a recorded state is always a copy, never one of them
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(like.device if isinstance(like, torch.Tensor) else value.device, copy=True)


def _may_hand_over(value, given, kept: set[int]) -> bool:
    return (isinstance(value, torch.Tensor) and type(given) is torch.Tensor and id(given) not in kept
            and given.shape == value.shape and given.dtype == value.dtype)


def _hand_over(value: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
    device = given.device
    given.set_()  # lets its storage go (unless another view of it lives on) before the copy is made
    return given.set_(value.to(device, copy=True))


def _tensor_ids(values, depth: int = 3) -> set[int]:
    """ids of the tensors in ``values`` and in the lists, tuples and dicts they hold, ``depth`` levels down."""
    found: set[int] = set()
    for value in values:
        if isinstance(value, torch.Tensor):
            found.add(id(value))
        elif depth and isinstance(value, (list, tuple)):
            found |= _tensor_ids(value, depth - 1)
        elif depth and isinstance(value, dict):
            found |= _tensor_ids(value.values(), depth - 1)
    return found


class RecordInput(nn.Module):
    def __init__(self, sweep: "FastSweep", into: dict, key: Position, module: nn.Module):
        super().__init__()
        self.module, self.sweep, self.into, self.key = module, sweep, into, key

    def forward(self, *args, **kwargs):
        values = self.sweep._layout(self.key[0]).inputs(args, kwargs)
        self.sweep._check_memory(self.key[0], values)
        self.into[self.key] = self.sweep._stored(values)
        return self.module(*args, **kwargs)


class StartFrom(nn.Module):
    """The first executed step of a resumed variant: runs on the recorded state, not on what it is given.

    ``call``: what the model call was given, whose tensors keep what they hold; the loop's other tensors are
    handed the recorded states (see the module docstring). None: the block gets new copies.
    """

    def __init__(self, layout: Layout, values: dict, module: nn.Module, call: tuple | None):
        super().__init__()
        self.module, self.layout, self.values, self.call = module, layout, values, call

    def forward(self, *args, **kwargs):
        kept = None if self.call is None else _tensor_ids(self.call)
        args, kwargs = _replace(self.layout, args, kwargs, self.values, kept)
        return self.module(*args, **kwargs)


class FastSweep:
    """``APPLY_MODEL`` wrapper that records the baseline (``recording()``) and resumes variants (``running()``).

    States are kept per model call of one evaluation, because ComfyUI may split an evaluation's
    cond and uncond rows into several calls; each variant call must match its baseline call. Calls
    are told apart by what they are (device, shape, cond_or_uncond, and how many alike came before),
    not by when they arrive: ComfyUI 0.33 makes the calls of per-device clones from threads.

    Host memory: at the first state it records in each stream, before holding it, the sweep estimates
    what all its recorded states will take (``sweep_memory``) and refuses with the figure and the
    settings that would fit when that is more than the store device can give. ``rows``: the batch rows
    of one evaluation, every call together (None: those of the first call); ``available``: bytes the
    store device can give now (None: asked of the system).
    """

    def __init__(self, family: Family, base: Mapping[str, Steps], resumes: Iterable[Resume],
                 store_device: torch.device | None = None, rows: int | None = None, available=None):
        missing = [s for s in base if s not in family.hidden_states]
        if missing:
            raise SweepError(f"{family.name} does not describe the hidden states of its {', '.join(missing)}; "
                             "fast mode cannot resume there (use mode full)")
        # where recorded states wait (None: where they were made); off the GPU they cannot crowd
        # the memory that ComfyUI's cond/uncond batching is sized by
        self.family, self.base, self.store_device = family, dict(base), store_device
        self.needed = {(r.stream, r.source) for r in resumes if r.stream is not None}
        self.rows, self._available = rows, available
        self.in_place = True  # False: a resumed block gets a new copy beside the loop's tensor (benchmarks compare)
        self.estimate: sweep_memory.Estimate | None = None  # of the last baseline, from its first states
        self.available: int | None = None  # what the store device could give when the estimate was made
        self._seen: dict[str, tuple[int, int]] = {}
        self.states: dict[CallKey, dict[Position, dict]] = {}  # per baseline call, the recorded inputs
        self._mode: str | None = None
        self._resume: Resume | None = None
        self._made: list[CallKey] = []  # the calls made in the current evaluation
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def recording(self):
        self.release()
        with self._as("record", None):
            yield self
        if not self.states:
            raise SweepError("the baseline evaluation made no model call")

    @contextlib.contextmanager
    def running(self, resume: Resume):
        with self._as("run", resume):
            yield self
        if sorted(self._made) != sorted(self.states):
            raise SweepError(f"the variant made the model calls {sorted(self._made)}, the baseline "
                             f"{sorted(self.states)}; they must be the same evaluation")

    @contextlib.contextmanager
    def _as(self, mode: str, resume: Resume | None):
        self._mode, self._resume, self._made = mode, resume, []
        try:
            yield
        finally:
            self._mode, self._resume = None, None

    def release(self) -> None:
        self.states, self._seen = {}, {}

    @property
    def nbytes(self) -> int:
        return sum(v.numel() * v.element_size() for call in self.states.values() for values in call.values()
                   for v in values.values() if isinstance(v, torch.Tensor))

    # ------------------------------------------------------------------ the wrapper

    def around_call(self, executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                    **kwargs):
        if self._mode is None:
            raise SweepError("the fast sweep's model was called outside the sweep")
        self._refuse_replace_patches(transformer_options)
        key = self._key(x, transformer_options)
        if self._mode == "record":
            recorded = self.states[key] = {}
            orders, wrap = self.base, functools.partial(self._record_step, recorded)
        else:
            if key not in self.states:
                raise SweepError(f"a variant's model call {key} has no baseline call to resume from (the baseline "
                                 f"made {sorted(self.states)}); ComfyUI batched the evaluation differently")
            call = (x, t, c_concat, c_crossattn, control, transformer_options, kwargs)
            orders, wrap = self._resume.orders, functools.partial(self._start_step, self.states[key], call)
        dit = unwrap(executor.class_obj.diffusion_model)
        with planned_order(dit, self.family, orders, transformer_options, control, wrap) as (options, control):
            return executor(x, t, c_concat, c_crossattn, control, options, **kwargs)

    def _refuse_replace_patches(self, transformer_options: dict) -> None:
        patches = transformer_options.get("patches_replace", {}).get("dit", {})
        kinds = {self.family.replace_kinds.get(s) for s in self.base}
        found = sorted(str(k) for k in patches if isinstance(k, tuple) and k and k[0] in kinds)
        if found:
            raise SweepError(f"the model carries block-replace patches from another node ({', '.join(found)}); "
                             "they would see the hidden states before fast mode substitutes them: use mode full")

    def _key(self, x: torch.Tensor, transformer_options: dict) -> CallKey:
        kind = (str(x.device), tuple(x.shape), tuple(transformer_options.get("cond_or_uncond") or ()))
        with self._lock:
            key = (*kind, sum(made[:3] == kind for made in self._made))
            self._made.append(key)
        return key

    def _record_step(self, recorded: dict, stream: str, position: int, step: Step, module: nn.Module) -> nn.Module:
        if (stream, position) not in self.needed:
            return module
        return RecordInput(self, recorded, (stream, position), module)

    def _start_step(self, recorded: dict, call: tuple, stream: str, position: int, step: Step,
                    module: nn.Module) -> nn.Module:
        r = self._resume
        if r.stream is None or stream != r.stream or position != 0:
            return module
        return StartFrom(self._layout(stream), recorded[(stream, r.source)], module, call if self.in_place else None)

    def _layout(self, stream: str) -> Layout:
        return self.family.hidden_states[stream]

    def _check_memory(self, stream: str, values: dict) -> None:
        """At a stream's first recorded state: the estimate of every state to record, refused if it cannot fit."""
        if stream in self._seen:
            return
        tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
        if not tensors:
            return
        with self._lock:
            self._seen[stream] = (sum(v.nbytes for v in tensors), tensors[0].shape[0])
            positions = collections.Counter(s for s, _ in self.needed)
            rows = self.rows or next(iter(self._seen.values()))[1]
            self.estimate = sweep_memory.estimate(self._seen, positions, rows, STREAMS)
            device = self.store_device or tensors[0].device
            self.available = (self._available or sweep_memory.available_bytes)(device)
            held = self.nbytes
        logging.info("Layer Lab fast sweep: the recorded block inputs will take about %s on %s (%s available)",
                     sweep_memory.gib(self.estimate.total), device,
                     "?" if self.available is None else sweep_memory.gib(self.available))
        reason = sweep_memory.refusal(self.estimate, self.available, held)
        if reason:
            self.release()
            raise SweepError(reason)

    def _stored(self, values: dict) -> dict:
        with torch.no_grad():
            return {part: v.to(self.store_device or v.device, copy=True) if isinstance(v, torch.Tensor) else v
                    for part, v in values.items()}
