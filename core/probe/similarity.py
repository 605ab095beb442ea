"""Cosine similarity between hidden states, accumulated over model evaluations.

A hidden state is one sample's ``[tokens, channels]`` flattened to a vector, as in the paper; a state
with more dimensions between the batch and the channels (Cosmos: ``[B, T, H, W, D]``) has as many
tokens as those dimensions hold, in their order. Each
accumulator sees the states of one evaluation in row order (``add``), then ``end``; it holds at
most one evaluation's worth of states, however many evaluations it sees:

- ``PerStepCosine`` (``per_step``, the paper's way): the cosine matrix of each evaluation, averaged
  over the batch, then over the evaluations. It keeps the current evaluation's states and a running
  sum of matrices. From the second evaluation on, when the row count is known, the states go into
  one preallocated ``[rows, samples, features]`` tensor, so that each evaluation's Gram matrix is
  one matrix product per sample rather than a Python loop over pairs.
- ``StepMeanCosine`` (``step_mean``, the seed experiment's way): each row's state averaged over the
  evaluations, then the cosine matrix of those means, averaged over the batch. It keeps a running
  sum per row, updated in place.

Where the states wait and how the products are made (``Keep``): the exact way (``EXACT``) keeps
float32 copies where the states are made and takes each Gram matrix in one float32 product there.
``Keep(device)`` keeps them on ``device`` instead (ComfyUI's intermediate device: host memory beside
a GPU) in their own dtype (a float32 copy of a bf16 state adds nothing), and takes the Gram matrix
on the device the states came from, a slice of columns at a time (at most ``CHUNK_BYTES`` of
float32), summing the slices in float64. The model's device then holds one state's working copy and
one slice, whatever the number of blocks, steps or frames.

A state of norm zero has cosine 0 with every state, itself included.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

EPS = 1e-12
CHUNK_BYTES = 32 << 20  # float32 bytes of one slice of a Gram product on the model's device
STORED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Keep:
    """Where an accumulator keeps its states and how it multiplies them (see the module docstring)."""

    device: torch.device | str | None = None  # None: where they are made
    exact: bool = False  # float32 copies, one product: the reference the chunked way is tested against

    def dtype(self, state: torch.Tensor) -> torch.dtype:
        if self.exact or state.dtype not in STORED_DTYPES:
            return torch.float32
        return state.dtype


EXACT = Keep(exact=True)


class ProbeError(ValueError):
    """A probe that cannot measure what it was asked to, with the reason."""


def token_subset(n_tokens: int, max_tokens: int, seed: int, frames: int = 1) -> torch.Tensor | None:
    """Sorted positions of ``max_tokens`` tokens out of ``n_tokens``, fixed by ``seed``; None for all.

    With ``frames`` > 1 and tokens that divide evenly into them (a video's frame-major sequence), every
    frame gets an equal share of the positions (one more for ``max_tokens % frames`` frames drawn at
    random), so a clip's last frames weigh as much as its first; otherwise positions are drawn from all.
    """
    if max_tokens <= 0 or max_tokens >= n_tokens:
        return None
    generator = torch.Generator().manual_seed(seed)
    if frames <= 1 or n_tokens % frames:
        return torch.randperm(n_tokens, generator=generator)[:max_tokens].sort().values
    per_frame = n_tokens // frames
    counts = torch.full((frames,), max_tokens // frames)
    counts[torch.randperm(frames, generator=generator)[:max_tokens % frames]] += 1
    return torch.cat([frame * per_frame + torch.randperm(per_frame, generator=generator)[:count]
                      for frame, count in enumerate(counts.tolist())]).sort().values


def token_count(state: torch.Tensor) -> int:
    """How many tokens a ``[B, ..., channels]`` state holds: every dimension between batch and channels."""
    return math.prod(state.shape[1:-1])


def flat_copy(state: torch.Tensor, rows: torch.Tensor | None, tokens: torch.Tensor | None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``state[rows][:, tokens]`` as a new ``dtype`` ``[samples, tokens * channels]`` tensor; the tokens of a
    ``[B, ..., channels]`` state are counted over every dimension between batch and channels.

    Always a copy: blocks update their inputs in place, so a kept view would change under us.
    """
    if state.ndim != 3:
        state = state.reshape(state.shape[0], token_count(state), state.shape[-1])
    copied = False
    if tokens is not None:  # tokens first: the smaller working copy
        state = state.index_select(1, tokens.to(state.device))
        copied = True
    if rows is not None:
        state = state.index_select(0, rows.to(state.device))
        copied = True
    flat = state.reshape(state.shape[0], -1)
    return flat.to(dtype, copy=not copied)


def _moved(state: torch.Tensor, device) -> torch.Tensor:
    """``state`` on ``device`` (None: where it is), a copy when it moves; from a GPU into pinned host memory."""
    if device is None or torch.device(device) == state.device:
        return state
    device = torch.device(device)
    if device.type == "cpu" and state.device.type == "cuda":
        # stream-ordered: only work queued later on the same stream (the Gram slices) reads it
        return torch.empty(state.shape, dtype=state.dtype, pin_memory=True).copy_(state, non_blocking=True)
    return state.to(device)


def cosine_matrix(states, compute=None) -> torch.Tensor:
    """``[L, L]`` float64: the mean over samples of the cosine between rows i and j.

    ``states``: a list of ``[B, D]`` tensors, or one ``[L, B, D]`` tensor. ``compute``: None for the exact way
    (the states' own device, float32, one product); a device for the chunked way (see the module docstring).
    """
    gram = _gram(states) if compute is None else _gram_chunked(states, torch.device(compute))
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    return (gram / (norms[:, :, None] * norms[:, None, :]).clamp_min(EPS)).mean(0)


def _gram(states) -> torch.Tensor:
    """``[B, L, L]`` float64 dot products, without copying a state."""
    if isinstance(states, torch.Tensor):
        with _full_float32():
            gram = torch.stack([states[:, b] @ states[:, b].T for b in range(states.shape[1])]).double().cpu()
        return (gram + gram.transpose(1, 2)) / 2  # a matrix product need not round (i, j) as (j, i)
    n, batch = len(states), states[0].shape[0]
    gram = torch.zeros(batch, n, n, dtype=torch.float64, device=states[0].device)
    for j, state in enumerate(states):
        for i in range(j + 1):
            dots = torch.linalg.vecdot(states[i], state).double()
            gram[:, i, j] = dots
            gram[:, j, i] = dots
    return gram.cpu()


def _gram_chunked(states, compute: torch.device) -> torch.Tensor:
    """``[B, L, L]`` float64 dot products, a slice of columns at a time in float32 on ``compute``."""
    first = states[0]
    rows, (batch, width) = len(states), first.shape
    if first.device.type == "cpu" and compute.type == "cuda":
        torch.cuda.current_stream(compute).synchronize()  # the non-blocking copies into host memory
    columns = max(1, CHUNK_BYTES // (4 * rows * batch))
    gram = torch.zeros(batch, rows, rows, dtype=torch.float64, device=compute)
    with _full_float32():
        for start in range(0, width, columns):
            if isinstance(states, torch.Tensor):
                part = states[:, :, start:start + columns]
            else:
                part = torch.stack([state[:, start:start + columns] for state in states])
            part = part.to(compute, torch.float32, non_blocking=True).transpose(0, 1)  # [B, L, columns]
            gram += torch.bmm(part, part.transpose(1, 2)).double()
    gram = gram.cpu()
    return (gram + gram.transpose(1, 2)) / 2


@contextlib.contextmanager
def _full_float32():
    """float32 matrix products without TF32 (which ComfyUI may enable), for the Gram matrix only."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _check_size(state: torch.Tensor, first: torch.Tensor) -> None:
    if state.shape != first.shape:
        raise ProbeError(f"hidden states of one evaluation differ in size ({tuple(state.shape)} after "
                         f"{tuple(first.shape)}); the probe compares states of one size only")


def _rows_error(rows: int, before: int) -> ProbeError:
    return ProbeError(f"this evaluation ran {rows} rows after {before} before; the probe needs the same rows "
                      "in every evaluation")


class PerStepCosine:
    def __init__(self, keep: Keep = EXACT):
        self.keep = keep
        self.total: torch.Tensor | None = None
        self.count = 0
        self._first: list[torch.Tensor] = []  # the first evaluation's states
        self._rows: torch.Tensor | None = None  # [L, B, D], from the second evaluation on
        self._length = 0
        self._row = 0
        self._compute: torch.device | None = None  # where the states are made

    def add(self, state: torch.Tensor) -> None:
        self._compute = state.device
        if self.count == 0:
            if self._first:
                _check_size(state, self._first[0])
            self._first.append(_moved(state, self.keep.device))
        else:
            if self._rows is None:
                device = state.device if self.keep.device is None else torch.device(self.keep.device)
                pin = device.type == "cpu" and state.device.type == "cuda"
                self._rows = torch.empty((self._length, *state.shape), dtype=state.dtype, device=device,
                                         pin_memory=pin)
            if self._row >= self._length:
                raise _rows_error(self._row + 1, self._length)
            _check_size(state, self._rows[0])
            with torch.inference_mode(self._rows.is_inference()):
                self._rows[self._row].copy_(state, non_blocking=True)
        self._row += 1

    def end(self) -> None:
        if self._row == 0:
            return
        compute = None if self.keep.exact else self._compute
        if self.count == 0:
            matrix, self._length, self._first = cosine_matrix(self._first, compute), len(self._first), []
        elif self._row != self._length:
            raise _rows_error(self._row, self._length)
        else:
            matrix = cosine_matrix(self._rows, compute)
        self.total = matrix if self.total is None else self.total + matrix
        self.count += 1
        self._row = 0

    def discard(self) -> None:
        self._first, self._row = [], 0  # rows written into the buffer are overwritten next time

    def result(self) -> torch.Tensor:
        if not self.count:
            raise ProbeError("no evaluation was captured")
        return self.total / self.count

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._first) + (0 if self._rows is None else self._rows.nbytes)

    @property
    def states(self) -> list[torch.Tensor]:
        """The tensors it holds now (to tell which device holds what)."""
        return [*self._first, *([] if self._rows is None else [self._rows])]


class StepMeanCosine:
    def __init__(self, keep: Keep = EXACT):
        self.keep = keep
        self.sums: list[torch.Tensor] = []  # float32 whatever the states' dtype: they are sums
        self.count = 0
        self._row = 0
        self._compute: torch.device | None = None

    def add(self, state: torch.Tensor) -> None:
        self._compute = state.device
        if self.count == 0:
            if self.sums:
                _check_size(state, self.sums[0])
            self.sums.append(state.to(self.keep.device or state.device, torch.float32, copy=True))
        else:
            if self._row >= len(self.sums):
                raise _rows_error(self._row + 1, len(self.sums))
            total = self.sums[self._row]
            _check_size(state, total)
            with torch.inference_mode(total.is_inference()):
                total.add_(state.to(total.device))
        self._row += 1

    def end(self) -> None:
        if self._row == 0:
            return
        if self._row != len(self.sums):
            raise _rows_error(self._row, len(self.sums))
        self.count += 1
        self._row = 0

    def discard(self) -> None:
        # Part of the evaluation is already in the sums: nothing consistent is left to report.
        if self._row:
            self.sums, self.count, self._row = [], 0, 0

    def result(self) -> torch.Tensor:
        if not self.count:
            raise ProbeError("no evaluation was captured")
        # the cosine of a sum is that of the mean
        return cosine_matrix(self.sums, None if self.keep.exact else self._compute)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.sums)

    @property
    def states(self) -> list[torch.Tensor]:
        return list(self.sums)


ACCUMULATORS = {"per_step": PerStepCosine, "step_mean": StepMeanCosine}
AGGREGATES = tuple(ACCUMULATORS)
