import pytest
import torch
import torch.nn.functional as F

from dit_layer_lab.core.probe import similarity
from dit_layer_lab.core.probe.capture import cond_rows
from dit_layer_lab.core.probe.similarity import (EXACT, Keep, PerStepCosine, ProbeError, StepMeanCosine,
                                                 cosine_matrix, flat_copy, token_count, token_subset)


def states(seed, rows=5, batch=3, dim=40):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, dim, generator=g)
    return [base + 0.7 * i * torch.randn(batch, dim, generator=g) for i in range(rows)]


def reference(rows):
    """Per-sample cosine of every pair, averaged over the batch, written out pair by pair."""
    n = len(rows)
    return torch.tensor([[F.cosine_similarity(rows[i].double(), rows[j].double(), dim=1).mean().item()
                          for j in range(n)] for i in range(n)], dtype=torch.float64)


def test_cosine_matrix_matches_the_pairwise_reference():
    rows = states(0)
    assert torch.allclose(cosine_matrix(rows), reference(rows), atol=1e-6)


def test_one_block_of_rows_gives_the_same_matrix_as_a_list():
    rows = states(2)
    assert torch.allclose(cosine_matrix(torch.stack(rows)), cosine_matrix(rows), atol=1e-6)


def test_per_step_averages_each_evaluations_matrix():
    evaluations = [states(s) for s in range(4)]
    accumulator = PerStepCosine()
    for rows in evaluations:
        for state in rows:
            accumulator.add(state.clone())
        accumulator.end()
    expected = sum(reference(rows) for rows in evaluations) / len(evaluations)
    assert accumulator.count == 4
    assert torch.allclose(accumulator.result(), expected, atol=1e-6)


def test_step_mean_takes_the_cosine_of_the_mean_states():
    evaluations = [states(s) for s in range(4)]
    accumulator = StepMeanCosine()
    for rows in evaluations:
        for state in rows:
            accumulator.add(state.clone())
        accumulator.end()
    means = [torch.stack([rows[i] for rows in evaluations]).mean(0) for i in range(5)]
    assert torch.allclose(accumulator.result(), reference(means), atol=1e-6)
    per_step = PerStepCosine()
    for rows in evaluations:
        for state in rows:
            per_step.add(state.clone())
        per_step.end()
    assert not torch.allclose(per_step.result(), accumulator.result(), atol=1e-3)  # the two ways differ


@pytest.mark.parametrize("kind", [PerStepCosine, StepMeanCosine])
def test_memory_is_one_evaluation_whatever_the_count(kind):
    accumulator = kind()
    held = []
    for s in range(6):
        for state in states(s):
            accumulator.add(state.clone())
            held.append(accumulator.nbytes)
        accumulator.end()
    one_evaluation = sum(s.nbytes for s in states(0))
    assert max(held) == one_evaluation


def test_a_zero_state_has_cosine_zero_and_no_nan():
    rows = states(1, rows=3)
    rows[1] = torch.zeros_like(rows[1])
    matrix = cosine_matrix(rows)
    assert torch.isfinite(matrix).all()
    assert matrix[1].abs().max() == 0 and matrix[:, 1].abs().max() == 0
    assert matrix[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("kind", [PerStepCosine, StepMeanCosine])
@pytest.mark.parametrize("rows, message", [(2, "ran 2 rows after 3"), (4, "ran 4 rows after 3")])
def test_an_evaluation_with_other_rows_is_refused(kind, rows, message):
    accumulator = kind()
    for evaluation in range(2):
        for state in states(evaluation, rows=3):
            accumulator.add(state)
        accumulator.end()
    with pytest.raises(ProbeError, match=message):
        for state in states(5, rows=rows):
            accumulator.add(state)
        accumulator.end()


def test_results_need_an_evaluation():
    with pytest.raises(ProbeError, match="no evaluation"):
        PerStepCosine().result()


def test_token_subset_is_seeded_sorted_and_bounded():
    subset = token_subset(100, 10, seed=3)
    assert subset.tolist() == sorted(set(subset.tolist())) and len(subset) == 10
    assert torch.equal(subset, token_subset(100, 10, seed=3))
    assert not torch.equal(subset, token_subset(100, 10, seed=4))
    assert token_subset(100, 0, seed=3) is None
    assert token_subset(100, 100, seed=3) is None and token_subset(100, 500, seed=3) is None


def test_flat_copy_selects_rows_and_tokens_and_never_aliases():
    state = torch.arange(2 * 4 * 3, dtype=torch.float16).reshape(2, 4, 3)
    flat = flat_copy(state, torch.tensor([1]), torch.tensor([0, 2]))
    assert flat.dtype == torch.float32
    assert flat.tolist() == [[12, 13, 14, 18, 19, 20]]
    whole = torch.randn(2, 4, 3)
    copy = flat_copy(whole, None, None)
    whole += 1
    assert not torch.equal(copy, whole.reshape(2, -1))


def test_a_state_with_frames_has_a_token_for_every_frame_row_and_column():
    """Cosmos passes [B, T, H, W, D]: tokens run over T, H and W in that order, as a flattened sequence would."""
    state = torch.randn(2, 3, 4, 5, 6)
    assert token_count(state) == 3 * 4 * 5
    tokens = torch.tensor([0, 7, 59])
    sequence = state.reshape(2, 60, 6)
    assert torch.equal(flat_copy(state, torch.tensor([1]), tokens), flat_copy(sequence, torch.tensor([1]), tokens))
    assert torch.equal(flat_copy(state, None, None), sequence.reshape(2, -1))
    assert flat_copy(state, None, tokens)[0, 6:12].tolist() == state[0, 0, 1, 2].tolist()  # token 7: frame 0, row 1, column 2
    copy = flat_copy(state, None, None)
    state += 1
    assert not torch.equal(copy, state.reshape(2, -1))


def test_cond_rows_split_the_batch_equally_among_entries():
    assert cond_rows(4, [1, 0]) == [2, 3]
    assert cond_rows(6, [0, 1, 0]) == [0, 1, 4, 5]
    assert cond_rows(2, [0, 0]) is None and cond_rows(3, None) is None
    assert cond_rows(2, [1]) == []
    with pytest.raises(ProbeError, match="cannot be split"):
        cond_rows(3, [0, 1])


def test_token_subset_gives_every_frame_an_equal_share():
    frames, per_frame = 16, 60
    subset = token_subset(frames * per_frame, 100, seed=3, frames=frames)
    assert subset.tolist() == sorted(set(subset.tolist())) and len(subset) == 100
    shares = torch.bincount(subset // per_frame, minlength=frames)
    assert sorted(shares.tolist()) == [6] * 12 + [7] * 4  # 100 = 16 * 6 + 4
    assert torch.equal(subset, token_subset(frames * per_frame, 100, seed=3, frames=frames))
    assert not torch.equal(subset, token_subset(frames * per_frame, 100, seed=4, frames=frames))
    # 3 tokens per frame, 32 kept: 2 of each frame's
    assert token_subset(48, 32, seed=0, frames=16).div(3, rounding_mode="floor").bincount().tolist() == [2] * 16


def test_token_subset_draws_from_all_tokens_when_they_do_not_divide_into_frames():
    subset = token_subset(101, 10, seed=3, frames=4)
    assert len(subset) == 10 and subset.max() < 101
    assert torch.equal(subset, token_subset(101, 10, seed=3))


@pytest.mark.parametrize("kind", [PerStepCosine, StepMeanCosine])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_states_kept_elsewhere_in_their_dtype_give_the_exact_matrices(kind, dtype, monkeypatch):
    """The chunked way (slices of a few columns here, so that there are many) against the exact one."""
    monkeypatch.setattr(similarity, "CHUNK_BYTES", 4 * 5 * 3 * 7)  # 7 columns of 5 rows x 3 samples
    keep = Keep("cpu")
    exact, chunked = kind(), kind(keep)
    for s in range(3):
        for state in states(s):
            state = state.to(dtype)
            exact.add(flat_copy(state[:, None], None, None, EXACT.dtype(state)))
            chunked.add(flat_copy(state[:, None], None, None, keep.dtype(state)))
        exact.end()
        chunked.end()
    assert torch.allclose(chunked.result(), exact.result(), atol=1e-6)
    if kind is PerStepCosine:  # kept in the states' own dtype: bf16 is half the bytes, with the same matrix
        assert {s.dtype for s in chunked.states} == {dtype}
        assert chunked.nbytes * (4 // dtype.itemsize) == exact.nbytes


def test_the_kept_dtype_is_the_states_own_unless_exact():
    assert Keep("cpu").dtype(torch.zeros(1, dtype=torch.bfloat16)) == torch.bfloat16
    assert Keep("cpu").dtype(torch.zeros(1, dtype=torch.float64)) == torch.float32
    assert EXACT.dtype(torch.zeros(1, dtype=torch.bfloat16)) == torch.float32
