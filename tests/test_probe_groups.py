import itertools

import numpy as np
import pytest

from dit_layer_lab.core.probe.groups import group_names, optimal_splits, run_costs, segment


def block_matrix(sizes, within=0.9, between=0.4, noise=0.0, seed=0, pairs=None):
    """Groups of the given sizes: ``within`` inside a group, ``between`` across (``pairs`` overrides)."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    matrix = np.where(group[:, None] == group[None, :], within, between).astype(float)
    for (a, b), value in (pairs or {}).items():
        mask = (group[:, None] == a) & (group[None, :] == b)
        matrix[mask | mask.T] = value
    jitter = np.random.default_rng(seed).normal(0.0, noise, matrix.shape)
    matrix += (jitter + jitter.T) / 2
    np.fill_diagonal(matrix, 1.0)
    return matrix


def runs_of(sizes):
    ends = np.cumsum(sizes)
    return [(int(end - size), int(end - 1)) for size, end in zip(sizes, ends)]


@pytest.mark.parametrize("noise", [0.0, 0.03])
@pytest.mark.parametrize("sizes, pairs", [
    ([3, 14, 2], None),  # the seed's Flux double blocks: first 0-2, middle 3-16, last 17-18
    ([4, 13, 17, 4], {(1, 2): 0.7}),  # Flux single blocks: a middle made of two related sub-groups
    ([2, 20, 2], None),
    ([5, 5, 5, 5, 5], None),
])
def test_known_groups_are_recovered(sizes, pairs, noise):
    assert segment(block_matrix(sizes, noise=noise, pairs=pairs)) == runs_of(sizes)


def test_at_least_first_middle_last_even_without_structure():
    runs = segment(np.ones((6, 6)))
    assert len(runs) == 3
    assert runs[0][0] == 0 and runs[-1][1] == 5
    assert all(b + 1 == a for (_, b), (a, _) in zip(runs, runs[1:]))


@pytest.mark.parametrize("n", [0, 1, 2, 3])
def test_small_matrices(n):
    assert segment(np.eye(n)) == [(i, i) for i in range(n)]


def test_dynamic_programming_is_the_exhaustive_optimum():
    rng = np.random.default_rng(3)
    raw = rng.uniform(-1, 1, (7, 7))
    matrix = (raw + raw.T) / 2
    cost = run_costs(matrix)
    for k, best, runs in optimal_splits(cost, 7):
        exhaustive = min(
            sum(cost[a, b] for a, b in zip((0, *cuts), (*(c - 1 for c in cuts), 6)))
            for cuts in itertools.combinations(range(1, 7), k - 1))
        assert best == pytest.approx(exhaustive, abs=1e-12)
        assert sum(cost[a, b] for a, b in runs) == pytest.approx(best, abs=1e-12)


def test_run_cost_is_the_scatter_around_the_mean_profile():
    matrix = block_matrix([2, 3], noise=0.1, seed=1)
    rows = matrix[1:4]
    assert run_costs(matrix)[1, 3] == pytest.approx(((rows - rows.mean(0)) ** 2).sum())


def test_grouping_is_deterministic():
    matrix = block_matrix([3, 8, 3], noise=0.05, seed=2)
    assert segment(matrix) == segment(matrix.copy())


def test_group_names():
    assert group_names(2) == ["first", "last"]
    assert group_names(3) == ["first", "middle", "last"]
    assert group_names(5) == ["first", "middle 1", "middle 2", "middle 3", "last"]
