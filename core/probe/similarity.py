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

A state of norm zero has cosine 0 with every state, itself included.
"""

from __future__ import annotations

import contextlib
import math

import torch

EPS = 1e-12


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


def flat_copy(state: torch.Tensor, rows: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
    """``state[rows][:, tokens]`` as a new float32 ``[samples, tokens * channels]`` tensor; the tokens of a
    ``[B, ..., channels]`` state are counted over every dimension between batch and channels.

    Always a copy: blocks update their inputs in place, so a kept view would change under us.
    """
    if state.ndim != 3:
        state = state.reshape(state.shape[0], token_count(state), state.shape[-1])
    copied = False
    if rows is not None:
        state = state.index_select(0, rows.to(state.device))
        copied = True
    if tokens is not None:
        state = state.index_select(1, tokens.to(state.device))
        copied = True
    flat = state.reshape(state.shape[0], -1)
    return flat.to(torch.float32, copy=not copied)


def cosine_matrix(states) -> torch.Tensor:
    """``[L, L]`` float64: the mean over samples of the cosine between rows i and j.

    ``states``: a list of ``[B, D]`` tensors, or one ``[L, B, D]`` tensor.
    """
    gram = _gram(states)
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
    def __init__(self):
        self.total: torch.Tensor | None = None
        self.count = 0
        self._first: list[torch.Tensor] = []  # the first evaluation's states
        self._rows: torch.Tensor | None = None  # [L, B, D], from the second evaluation on
        self._length = 0
        self._row = 0

    def add(self, state: torch.Tensor) -> None:
        if self.count == 0:
            if self._first:
                _check_size(state, self._first[0])
            self._first.append(state)
        else:
            if self._rows is None:
                self._rows = torch.empty((self._length, *state.shape), dtype=state.dtype, device=state.device)
            if self._row >= self._length:
                raise _rows_error(self._row + 1, self._length)
            _check_size(state, self._rows[0])
            with torch.inference_mode(self._rows.is_inference()):
                self._rows[self._row].copy_(state)
        self._row += 1

    def end(self) -> None:
        if self._row == 0:
            return
        if self.count == 0:
            matrix, self._length, self._first = cosine_matrix(self._first), len(self._first), []
        elif self._row != self._length:
            raise _rows_error(self._row, self._length)
        else:
            matrix = cosine_matrix(self._rows)
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


class StepMeanCosine:
    def __init__(self):
        self.sums: list[torch.Tensor] = []
        self.count = 0
        self._row = 0

    def add(self, state: torch.Tensor) -> None:
        if self.count == 0:
            if self.sums:
                _check_size(state, self.sums[0])
            self.sums.append(state)
        else:
            if self._row >= len(self.sums):
                raise _rows_error(self._row + 1, len(self.sums))
            total = self.sums[self._row]
            _check_size(state, total)
            with torch.inference_mode(total.is_inference()):
                total.add_(state)
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
        return cosine_matrix(self.sums)  # the cosine of a sum is that of the mean

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.sums)


ACCUMULATORS = {"per_step": PerStepCosine, "step_mean": StepMeanCosine}
AGGREGATES = tuple(ACCUMULATORS)
