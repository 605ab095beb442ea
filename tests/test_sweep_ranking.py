"""The sweep's data side: windows, exclusions, distances, ranking, suggestion, plan text and report."""

import json
import math

import numpy as np
import pytest
import torch

from dit_layer_lab.core.experiments.sweep import (Measured, SweepError, Window, build_report, chart_panels,
                                                  check_metric, check_one_order, distances, plan_texts, ranking,
                                                  suggest, to_json, variants, windows)
from dit_layer_lab.core.families.sd3 import check_order as sd3_check
from dit_layer_lab.core.plan import PlanError, identity, parse_steps
from dit_layer_lab.core.rewrite import LayerPlan, plan_rewrite, strategy_rewrite

FLUX = LayerPlan("Flux", (("double_blocks", 4), ("single_blocks", 6)))
SD3 = LayerPlan("SD3", (("double_blocks", 5), ("single_blocks", 0)))


def no_check(stream, steps, n):
    return None


def test_windows_slide_by_one_block_over_the_chosen_streams():
    assert windows(FLUX.counts, "double_blocks", 1) == [Window("double_blocks", i, i) for i in range(4)]
    both = windows(FLUX.counts, "both", 3)
    assert [(w.stream, w.label) for w in both] == [
        ("double_blocks", "0-2"), ("double_blocks", "1-3"),
        ("single_blocks", "0-2"), ("single_blocks", "1-3"), ("single_blocks", "2-4"), ("single_blocks", "3-5")]
    assert [w.stream for w in windows(SD3.counts, "both", 1)] == ["double_blocks"] * 5


@pytest.mark.parametrize("streams, width, message", [
    ("single_blocks", 1, "has no single_blocks; its block lists are: double_blocks \\(5\\)"),
    ("everything", 1, "choose one of double_blocks, single_blocks, both"),
    ("both", 0, "at least one block"),
    ("both", 5, "width = 5 is wider than double_blocks, which has 4 blocks \\(indices 0-3\\)"),
])
def test_bad_stream_choices_and_widths_name_the_valid_ones(streams, width, message):
    counts = SD3.counts if streams == "single_blocks" else FLUX.counts
    with pytest.raises(SweepError, match=message):
        windows(counts, streams, width)


def test_every_sd3_skip_window_can_run_including_the_last_joint_block():
    runnable, excluded = variants(SD3, sd3_check, windows(SD3.counts, "double_blocks", 2))
    assert excluded == []
    last = runnable[-1]
    assert last.window == Window("double_blocks", 3, 4)
    assert last.plan.compose(last.plan.all_active)["double_blocks"] == identity(3)


def test_windows_that_an_earlier_plan_moved_are_excluded_with_the_reason():
    plan = SD3.with_rewrite(strategy_rewrite(SD3.counts, "reverse", "double_blocks", 1, 2), sd3_check)
    runnable, excluded = variants(plan, sd3_check, windows(plan.counts, "double_blocks", 2))
    assert [v.window.label for v in runnable] == ["3-4"]
    assert [e.window.label for e in excluded] == ["0-1", "1-2", "2-3"]
    assert all("no longer run as an unbroken run" in e.reason for e in excluded)


def test_a_family_check_that_refuses_an_order_excludes_the_window_with_its_message():
    def keep_block_2(stream, steps, n):
        if stream == "double_blocks" and (2,) not in steps:
            raise PlanError("block 2 must run")

    runnable, excluded = variants(FLUX, keep_block_2, windows(FLUX.counts, "double_blocks", 1))
    assert [v.window.label for v in runnable] == ["0", "1", "3"]
    assert [(e.window.label, e.reason) for e in excluded] == [("2", "block 2 must run")]


def test_only_plan_errors_mark_a_window_excluded():
    def broken(stream, steps, n):
        raise ValueError("not a PlanError")

    with pytest.raises(ValueError, match="not a PlanError"):  # anything else is a bug and must surface
        variants(FLUX, broken, windows(FLUX.counts, "double_blocks", 1))


def test_a_plan_whose_order_changes_during_sampling_is_refused():
    plan = FLUX.with_rewrite(strategy_rewrite(FLUX.counts, "skip", "single_blocks", 1, 2, 0.0, 0.5))
    with pytest.raises(SweepError, match="changes the block order during sampling"):
        check_one_order(plan)
    check_one_order(FLUX.with_rewrite(strategy_rewrite(FLUX.counts, "skip", "single_blocks", 1, 2)))


# ------------------------------------------------------------------------------------ distances


def test_distances_equal_a_numpy_reference_per_item_then_averaged():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, 5, 6, generator=g)
    v = a + 0.3 * torch.randn(3, 4, 5, 6, generator=g)
    means, items = distances(a, v, "latent")
    x, y = a.double().numpy().reshape(3, -1), v.double().numpy().reshape(3, -1)
    cos = [1 - x[i] @ y[i] / np.linalg.norm(x[i]) / np.linalg.norm(y[i]) for i in range(3)]
    rel = [np.linalg.norm(y[i] - x[i]) / np.linalg.norm(x[i]) for i in range(3)]
    assert items["latent_cosine"] == pytest.approx(cos, rel=1e-12)
    assert items["latent_rel_l2"] == pytest.approx(rel, rel=1e-12)
    assert means == pytest.approx({"latent_cosine": np.mean(cos), "latent_rel_l2": np.mean(rel)}, rel=1e-12)


def test_distances_of_equal_zero_and_mismatched_results():
    a = torch.randn(2, 8)
    assert distances(a, a.clone(), "image")[0] == {"image_cosine": pytest.approx(0, abs=1e-15), "image_rel_l2": 0.0}
    zero = torch.zeros(1, 8)
    assert distances(zero, zero, "latent")[0] == {"latent_cosine": 0.0, "latent_rel_l2": 0.0}
    moved = distances(zero, torch.ones(1, 8), "latent")[0]
    assert moved["latent_cosine"] == 1.0 and moved["latent_rel_l2"] == math.inf
    assert distances(a[:1], -a[:1], "latent")[0]["latent_cosine"] == pytest.approx(2.0)
    with pytest.raises(SweepError, match="cannot be compared"):
        distances(a, torch.randn(2, 9), "latent")


def test_distances_are_taken_in_float64():
    a = torch.full((1, 1000), 1.0, dtype=torch.bfloat16)
    v = a.clone()
    v[0, 0] = 1.0078125  # one bf16 step above 1
    means, _ = distances(a, v, "latent")
    assert means["latent_rel_l2"] == pytest.approx(0.0078125 / math.sqrt(1000), rel=1e-12)


# -------------------------------------------------------------------------------- ranking, suggestion


def measured(values):
    """{(stream, first, last): distance} -> Measured list in the given order."""
    return [Measured(Window(s, f, l), {"latent_cosine": d, "latent_rel_l2": 2 * d}) for (s, f, l), d in values.items()]


def test_ranking_is_safest_first_with_ties_in_block_order_and_nan_last():
    m = measured({("double_blocks", 0, 0): 0.5, ("double_blocks", 1, 1): 0.1, ("single_blocks", 0, 0): 0.1,
                  ("single_blocks", 1, 1): math.nan, ("single_blocks", 2, 2): 0.0})
    assert [(x.window.stream, x.window.first) for x in ranking(m, "latent_cosine")] == [
        ("single_blocks", 2), ("double_blocks", 1), ("single_blocks", 0), ("double_blocks", 0), ("single_blocks", 1)]


def test_the_suggestion_takes_the_safest_non_overlapping_windows_within_the_budget():
    m = measured({("single_blocks", 0, 1): 0.9, ("single_blocks", 1, 2): 0.1, ("single_blocks", 2, 3): 0.2,
                  ("single_blocks", 3, 4): 0.3, ("double_blocks", 0, 1): 0.25, ("double_blocks", 1, 2): 0.4})
    # 1-2 first; 2-3 overlaps it; then double 0-1; 3-4 would make 6 blocks > 5
    assert suggest(m, "latent_cosine", 5) == [Window("single_blocks", 1, 2), Window("double_blocks", 0, 1)]
    assert suggest(m, "latent_cosine", 6) == [Window("single_blocks", 1, 2), Window("double_blocks", 0, 1),
                                              Window("single_blocks", 3, 4)]
    assert suggest(m, "latent_cosine", 1) == []
    assert suggest(m, "latent_cosine", 0) == []
    assert suggest(m, "latent_cosine", 99, max_distance=0.25) == [Window("single_blocks", 1, 2),
                                                                  Window("double_blocks", 0, 1)]
    assert suggest(measured({("single_blocks", 0, 0): math.inf}), "latent_cosine", 5) == []
    with pytest.raises(SweepError, match="budget = -1"):
        suggest(m, "latent_cosine", -1)
    with pytest.raises(SweepError, match="max_distance = -0.5"):
        suggest(m, "latent_cosine", 1, -0.5)


def test_metrics_are_checked_against_what_was_measured():
    check_metric("image_cosine", ("latent_cosine", "latent_rel_l2", "image_cosine", "image_rel_l2"))
    with pytest.raises(SweepError, match="needs a VAE: connect one to 'vae', or rank by latent_cosine or latent_rel_l2"):
        check_metric("image_rel_l2", ("latent_cosine", "latent_rel_l2"))
    with pytest.raises(SweepError, match="unknown metric 'l1'"):
        check_metric("l1", ("latent_cosine",))


def test_plan_texts_are_the_whole_order_without_the_chosen_windows():
    chosen = [Window("single_blocks", 3, 4), Window("single_blocks", 0, 0)]
    texts = plan_texts(FLUX, chosen)
    assert texts == {"double_blocks": "all", "single_blocks": "1-2, 5"}
    assert parse_steps(texts["single_blocks"], 6) == ((1,), (2,), (5,))
    planned = FLUX.with_rewrite(plan_rewrite(FLUX.counts, "double_blocks", "3-0"))
    assert plan_texts(planned, [Window("double_blocks", 2, 2)])["double_blocks"] == "3, 1-0"
    assert plan_texts(SD3, [Window("double_blocks", 4, 4)]) == {"double_blocks": "0-3", "single_blocks": "all"}
    assert plan_texts(FLUX, []) == {"double_blocks": "all", "single_blocks": "all"}


# ------------------------------------------------------------------------------------------ report


def test_the_report_is_plain_json_with_ranks_exclusions_and_the_suggestion():
    m = measured({("double_blocks", 0, 0): 0.3, ("double_blocks", 1, 1): math.inf, ("single_blocks", 0, 0): 0.1})
    chosen = suggest(m, "latent_cosine", 1)
    report = build_report(family="Flux", counts=FLUX.counts, streams=["double_blocks", "single_blocks"], width=1,
                          mode="fast", metric="latent_cosine", budget=1, max_distance=0.0, measured=m,
                          excluded=[], chosen=chosen, texts=plan_texts(FLUX, chosen), settings={"seed": 3})
    parsed = json.loads(to_json(report))
    assert [(r["rank"], r["stream"], r["blocks"]) for r in parsed["ranking"]] == [
        (1, "single_blocks", "0"), (2, "double_blocks", "0"), (3, "double_blocks", "1")]
    assert parsed["ranking"][2]["distances"]["latent_cosine"] is None  # inf: no finite distance
    assert parsed["suggestion"]["skip"] == [{"stream": "single_blocks", "blocks": "0"}]
    assert parsed["suggestion"]["plan"] == {"double_blocks": "all", "single_blocks": "1-5"}
    assert "do not add up" in parsed["suggestion"]["note"]
    assert parsed["settings"] == {"seed": 3} and parsed["mode"] == "fast"


def test_chart_panels_follow_block_order_and_mark_exclusions_and_the_suggestion():
    swept = windows(FLUX.counts, "both", 1)
    m = measured({("double_blocks", 0, 0): 0.3, ("double_blocks", 2, 2): 0.1, ("double_blocks", 3, 3): 0.2,
                  **{("single_blocks", i, i): i / 10 for i in range(6)}})
    panels = chart_panels(["double_blocks", "single_blocks"], swept, m, [Window("double_blocks", 2, 2)],
                          "latent_cosine", "sub", 0.25)
    double, single = panels
    assert double.labels == ["0", "1", "2", "3"] and double.values == [0.3, None, 0.1, 0.2]
    assert double.highlighted == {2} and single.highlighted == frozenset()
    assert double.threshold == 0.25 and "latent cosine distance" in double.title
    assert single.values == [i / 10 for i in range(6)]
