"""The fast sweep's host-memory estimate and its refusal: pure functions, then on the toy DiT."""

import pytest

from dit_layer_lab.core.experiments import sweep_memory
from dit_layer_lab.core.experiments.fast_sweep import FastSweep, resume
from dit_layer_lab.core.experiments.sweep import SweepError, variants, windows
from dit_layer_lab.core.experiments.sweep_memory import GIB, Estimate, estimate, refusal
from dit_layer_lab.core.rewrite import LayerPlan

from dit_layer_lab.tests.test_sweep_fast import COUNTS, FAMILY, Executor, evaluate, orders_of
from dit_layer_lab.tests.toy_dit import ToyDiT, inputs

ORDER = ("double_blocks", "single_blocks")


def test_a_resume_point_is_the_first_state_per_row_times_the_rows_of_an_evaluation():
    # a call of 2 rows gave a 1000-byte state; an evaluation has 4 rows (cond and uncond in two calls)
    found = estimate({"double_blocks": (1000, 2)}, {"double_blocks": 3, "single_blocks": 5}, 4, ORDER)
    assert found.state_bytes == {"double_blocks": 2000, "single_blocks": 2000}  # single: as the last seen
    assert found.total == 8 * 2000
    later = estimate({"double_blocks": (1000, 2), "single_blocks": (600, 2)}, {"double_blocks": 3, "single_blocks": 5},
                     4, ORDER)
    assert later.state_bytes == {"double_blocks": 2000, "single_blocks": 1200}
    assert later.total == 3 * 2000 + 5 * 1200
    with pytest.raises(ValueError):
        estimate({}, {"single_blocks": 1}, 1, ORDER)


def test_the_estimate_fits_within_the_usable_share_and_unknown_memory_never_refuses():
    found = Estimate({"single_blocks": GIB}, {"single_blocks": 4}, 1)
    assert refusal(found, available=5 * GIB) is None  # 4 GiB <= 80% of 5 GiB
    assert refusal(found, available=None) is None
    assert refusal(found, available=4 * GIB) is not None  # 4 GiB > 3.2 GiB
    # a state already held is no longer in what is available: 3 GiB still to take from 3.75 GiB
    assert refusal(found, available=int(3.75 * GIB), held=GIB) is None


def test_a_refusal_gives_the_figure_and_the_settings_that_fit():
    found = Estimate({"double_blocks": GIB, "single_blocks": GIB // 2}, {"double_blocks": 2, "single_blocks": 10}, 2)
    message = refusal(found, available=4 * GIB)  # 7 GiB against 3.2 GiB usable
    assert "7.00 GiB of recorded block inputs" in message and "4.00 GiB is available" in message
    assert "3.20 GiB" in message
    assert "2 for double_blocks, 10 for single_blocks" in message and "2 batch rows" in message
    assert "- streams double_blocks alone: 2.00 GiB" in message
    assert "single_blocks alone" not in message  # 5 GiB does not fit
    assert "at most 46% of this one's tokens (each side x 0.68" in message
    assert "- 1 batch row per evaluation instead of 2 (3.50 GiB per row" not in message  # 3.5 GiB > 3.2 GiB
    assert message.rstrip().endswith("- mode full (no recorded states: one sampling run per variant)")
    fits_one_row = refusal(found, available=5 * GIB)  # 4 GiB usable: one row of 3.5 GiB fits
    assert "- 1 batch row per evaluation instead of 2 (3.50 GiB per row" in fits_one_row


def test_the_machine_reports_available_memory():
    available = sweep_memory.available_host_bytes()
    assert available is None or available > 0
    assert sweep_memory.available_bytes("cpu") == available or sweep_memory.available_bytes("cpu") > 0


def toy_sweep(available):
    plan = LayerPlan("Toy", COUNTS)
    runnable, _ = variants(plan, FAMILY.check_order, windows(plan.counts, "both", 1))
    base = orders_of(plan)
    return FastSweep(FAMILY, base, [resume(base, orders_of(v.plan)) for v in runnable], available=lambda d: available)


def test_the_toy_sweep_estimates_exactly_what_it_then_holds():
    fast = toy_sweep(available=1 << 40)
    with fast.recording():
        evaluate(fast.around_call, Executor(ToyDiT(), *inputs()))
    assert fast.estimate.total == fast.nbytes > 0  # both streams carry the same tokens on the toy
    assert fast.available == 1 << 40


def test_the_toy_sweep_refuses_before_holding_more_than_one_state():
    fast = toy_sweep(available=1000)
    with pytest.raises(SweepError, match=r"fast mode would hold [0-9.]+ MiB .* but 0\.00 MiB is available"):
        with fast.recording():
            evaluate(fast.around_call, Executor(ToyDiT(), *inputs()))
    assert fast.nbytes == 0 and fast.estimate.total > 1000
