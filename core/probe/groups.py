"""Split a similarity matrix's rows into contiguous groups: first, one or more middle, last.

Method (exact and deterministic). Each row of the matrix is that block's similarity profile: its
cosine to every block. For every number of groups k, dynamic programming finds the split of the
rows into k contiguous runs with the least within-run scatter (the sum of squared distances of the
profiles to their run's mean profile; Fisher's optimal partition of ordered data; ties go to the
earliest cut). Blocks that share a representation space have nearly equal profiles, so splitting
inside such a run gains almost nothing. The count starts at 3 (first / middle / last) and grows by
one while the extra group removes at least ``MIN_GAIN`` (5 %) of the scatter of the whole
matrix as one group.
"""

from __future__ import annotations

import numpy as np

MIN_GAIN = 0.05
MIN_GROUPS = 3


def run_costs(matrix: np.ndarray) -> np.ndarray:
    """``cost[a, b]`` (a <= b): the scatter of rows a..b around their mean profile; inf below the diagonal."""
    rows = np.asarray(matrix, dtype=np.float64)
    n = rows.shape[0]
    prefix = np.vstack([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0)])
    squares = np.concatenate([[0.0], np.cumsum((rows ** 2).sum(axis=1))])
    a, b = np.triu_indices(n)
    sums = prefix[b + 1] - prefix[a]
    cost = np.full((n, n), np.inf)
    cost[a, b] = np.maximum(squares[b + 1] - squares[a] - (sums ** 2).sum(axis=1) / (b - a + 1), 0.0)
    return cost


def optimal_splits(cost: np.ndarray, k_max: int):
    """Yield (k, scatter, runs) for k = 1..k_max: the best split into k runs, runs as (first, last) rows."""
    n = cost.shape[0]
    best = cost[0].copy()  # best[b]: rows 0..b in k runs
    back = []
    for k in range(1, k_max + 1):
        if k > 1:
            # candidate[a, b] = best split of rows 0..a-1 into k-1 runs, then the run a..b
            candidate = best[:-1, None] + cost[1:, :]
            cut = np.argmin(candidate, axis=0)  # first minimum: the earliest cut wins ties
            best = np.concatenate([[np.inf], candidate[cut[1:], np.arange(1, n)]])
            back.append(np.concatenate([[0], cut[1:] + 1]))
        yield k, float(best[n - 1]), _runs(back, n)


def _runs(back: list[np.ndarray], n: int) -> list[tuple[int, int]]:
    runs, end = [], n - 1
    for cuts in reversed(back):
        start = int(cuts[end])
        runs.append((start, end))
        end = start - 1
    runs.append((0, end))
    return runs[::-1]


def segment(matrix: np.ndarray, min_gain: float = MIN_GAIN, min_groups: int = MIN_GROUPS) -> list[tuple[int, int]]:
    """Contiguous runs of rows (first, last inclusive) as the module docstring describes."""
    n = np.asarray(matrix).shape[0]
    if n == 0:
        return []
    splits = optimal_splits(run_costs(matrix), n)
    _, whole, runs = next(splits)
    chosen, scatter = runs, whole
    for k, cost, runs in splits:
        if k <= min(min_groups, n):
            chosen, scatter = runs, cost
            continue
        if whole <= 0 or scatter - cost < min_gain * whole:
            break
        chosen, scatter = runs, cost
    return chosen


def group_names(count: int) -> list[str]:
    """first, middle (middle 1, middle 2, ... when there are several), last."""
    if count <= 2:
        return ["first", "last"][:count]
    middles = count - 2
    names = ["middle"] if middles == 1 else [f"middle {i + 1}" for i in range(middles)]
    return ["first", *names, "last"]
