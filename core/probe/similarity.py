"""Cosine similarity between hidden states, accumulated over model evaluations.

A hidden state is one sample's ``[tokens, channels]`` flattened to a vector, as in the paper. Each
accumulator sees the states of one evaluation in row order (``add``), then ``end``; it holds at
most one evaluation's worth of states, however many evaluations it sees:

- ``PerStepCosine`` (``per_step``, the paper's way): the cosine matrix of each evaluation, averaged
  over the batch, then over the evaluations. It keeps the current evaluation's states (normalised)
  and a running sum of matrices.
- ``StepMeanCosine`` (``step_mean``, the seed experiment's way): each row's state averaged over the
  evaluations, then the cosine matrix of those means, averaged over the batch. It keeps a running
  sum per row.

A state of norm zero has cosine 0 with every state, itself included.
"""

from __future__ import annotations

import torch

EPS = 1e-12


class ProbeError(ValueError):
    """A probe that cannot measure what it was asked to, with the reason."""


def token_subset(n_tokens: int, max_tokens: int, seed: int) -> torch.Tensor | None:
    """Sorted positions of ``max_tokens`` tokens out of ``n_tokens``, fixed by ``seed``; None for all."""
    if max_tokens <= 0 or max_tokens >= n_tokens:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_tokens, generator=generator)[:max_tokens].sort().values


def flat_copy(state: torch.Tensor, rows: torch.Tensor | None, tokens: torch.Tensor | None) -> torch.Tensor:
    """``state[rows][:, tokens]`` as a new float32 ``[samples, tokens * channels]`` tensor.

    Always a copy: blocks update their inputs in place, so a kept view would change under us.
    """
    copied = False
    if rows is not None:
        state = state.index_select(0, rows.to(state.device))
        copied = True
    if tokens is not None:
        state = state.index_select(1, tokens.to(state.device))
        copied = True
    flat = state.reshape(state.shape[0], -1)
    return flat.to(torch.float32, copy=not copied)


def cosine_matrix(states: list[torch.Tensor]) -> torch.Tensor:
    """``[L, L]`` float64: the mean over samples of the cosine between rows i and j (states ``[B, D]``)."""
    gram = _gram(states)
    norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
    return (gram / (norms[:, :, None] * norms[:, None, :]).clamp_min(EPS)).mean(0)


def _gram(states: list[torch.Tensor]) -> torch.Tensor:
    """``[B, L, L]`` float64 dot products, one pair at a time so that no state is copied."""
    n, batch = len(states), states[0].shape[0]
    gram = torch.zeros(batch, n, n, dtype=torch.float64, device=states[0].device)
    for j, state in enumerate(states):
        for i in range(j + 1):
            dots = torch.linalg.vecdot(states[i], state).double()
            gram[:, i, j] = dots
            gram[:, j, i] = dots
    return gram.cpu()


class PerStepCosine:
    def __init__(self):
        self.total: torch.Tensor | None = None
        self.count = 0
        self._states: list[torch.Tensor] = []

    def add(self, state: torch.Tensor) -> None:
        if self._states and state.shape != self._states[0].shape:
            raise ProbeError(f"hidden states of one evaluation differ in size ({tuple(state.shape)} after "
                             f"{tuple(self._states[0].shape)}); the probe compares states of one size only")
        self._states.append(state)

    def end(self) -> None:
        if not self._states:
            return
        matrix = cosine_matrix(self._states)
        if self.total is not None and matrix.shape != self.total.shape:
            raise ProbeError(f"this evaluation ran {matrix.shape[0]} rows after {self.total.shape[0]} before")
        self.total = matrix if self.total is None else self.total + matrix
        self.count += 1
        self._states = []

    def discard(self) -> None:
        self._states = []

    def result(self) -> torch.Tensor:
        if not self.count:
            raise ProbeError("no evaluation was captured")
        return self.total / self.count

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self._states)


class StepMeanCosine:
    def __init__(self):
        self.sums: list[torch.Tensor] = []
        self.count = 0
        self._row = 0

    def add(self, state: torch.Tensor) -> None:
        if self.count == 0:
            if self.sums and state.shape != self.sums[0].shape:
                raise ProbeError(f"hidden states of one evaluation differ in size ({tuple(state.shape)} after "
                                 f"{tuple(self.sums[0].shape)}); the probe compares states of one size only")
            self.sums.append(state)
        else:
            if self._row >= len(self.sums) or state.shape != self.sums[self._row].shape:
                raise ProbeError("an evaluation's hidden states differ in number or size from the first "
                                 "evaluation's; step_mean can only average states of one layout")
            self.sums[self._row] = self.sums[self._row] + state
        self._row += 1

    def end(self) -> None:
        if self._row == 0:
            return
        if self._row != len(self.sums):
            raise ProbeError(f"this evaluation ran {self._row} rows after {len(self.sums)} before")
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
