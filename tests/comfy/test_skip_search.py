"""The skip search node on ComfyUI's own models and sampler, against separately run plans."""

import itertools
import json

import numpy as np
import pytest
import torch

import comfy.model_management
from dit_layer_lab.core.experiments.skip_search import SearchError, combined_plan, skip_rewrites
from dit_layer_lab.core.experiments.sweep import Window, distances, variants, windows
from dit_layer_lab.core.patching import family_of, layer_plan
from dit_layer_lab.nodes.reorder import LayerLabPlan
from dit_layer_lab.nodes.skip_search import LayerLabSkipSearch
from dit_layer_lab.nodes.sweep import FastRuns
from dit_layer_lab.tests.comfy import tiny_models as tm
from dit_layer_lab.tests.comfy.test_sweep import (CFG, PERCENT, SEED, STEPS, assert_unchanged, numpy_distances,
                                                  one_evaluation, snapshot)

BUILDERS = {
    "flux": lambda: tm.tiny_flux(double=3, single=4),
    "wan": lambda: tm.tiny_wan(blocks=4),
}


def setup(name):
    model = BUILDERS[name]()
    positive, negative = tm.conditioning(model, seed=1)
    return model, positive, negative, tm.latent(model)


def search(model, positive, negative, latent, mode="fast", blocks=3, max_distance=0.0, strategy="greedy",
           beam_width=2, budget=400, metric="latent_cosine", streams="both", granularity="block", vae=None):
    with torch.inference_mode():
        out = LayerLabSkipSearch.execute(model, positive, negative, {"samples": latent}, SEED, STEPS, CFG, "euler",
                                         "simple", 1.0, streams, granularity, mode, PERCENT, metric, blocks,
                                         max_distance, strategy, beam_width, budget, vae)
    chart, report, double, single = out.args
    return chart, json.loads(report), double, single


def through_plan_node(model, texts):
    return LayerLabPlan.execute(model, texts.get("double_blocks", "all"), texts.get("single_blocks", "all"),
                                0.0, 1.0).args[0]


def sampled(model, positive, negative, latent):
    return tm.sample(model, positive, negative, latent, seed=SEED, steps=STEPS, cfg=CFG)


# ------------------------------------------------------------------------------------- the final plan


@pytest.mark.parametrize("mode", ["fast", "full"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_the_final_distance_equals_a_separate_sampling_of_the_plan(name, mode):
    model, positive, negative, latent = setup(name)
    before = snapshot(model)
    chart, report, double, single = search(model, positive, negative, latent, mode=mode)
    assert_unchanged(model, before)
    result = report["result"]
    assert result["blocks_removed"] == 3 and report["stop"]["reason"] == "target"
    assert result["plan"]["single_blocks"] == single
    assert result["plan"].get("double_blocks", "all") == double
    baseline = sampled(model, positive, negative, latent)
    planned = sampled(through_plan_node(model, result["plan"]), positive, negative, latent)
    exact, _ = distances(baseline, planned, "latent")
    assert result["full"]["distances"] == exact  # the same latents, bit for bit, give the same float64 distances
    cos, rel = numpy_distances(baseline, planned)
    assert exact["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-15) and exact["latent_rel_l2"] > 0
    assert exact["latent_rel_l2"] == pytest.approx(rel, rel=1e-9)
    if mode == "full":
        assert result["distances"] == exact and result["full"]["evaluation"] == result["evaluation"]
    else:  # the fast distance beside it: one evaluation of the same plan
        fast = one_evaluation(through_plan_node(model, result["plan"]), positive, negative, latent)
        cos, _ = numpy_distances(one_evaluation(model, positive, negative, latent), fast)
        assert result["distances"]["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-13)
    assert chart.shape[0] == 1 and chart.shape[-1] == 3


# ------------------------------------------------------------------------------------ fast evaluations


@pytest.mark.parametrize("name", list(BUILDERS))
def test_resumed_evaluations_of_combined_plans_equal_full_model_evaluations_bit_for_bit(name):
    model, positive, negative, latent = setup(name)
    before = snapshot(model)
    plan = layer_plan(model)
    family = family_of(plan)
    runnable, _ = variants(plan, family.check, windows(plan.counts, "both", 1))
    units = [v.window for v in runnable]
    runs = FastRuns(model, family, plan, None, positive, negative, {"samples": latent}, SEED, CFG, PERCENT)
    sets = [list(c) for k in (2, 3) for c in itertools.combinations(units, k)]
    with torch.inference_mode(), runs:
        baseline = tm.flat(runs.baseline())
        assert torch.equal(baseline, one_evaluation(model, positive, negative, latent))
        for chosen in sets:
            resumed = tm.flat(runs.rewritten(skip_rewrites(plan, chosen)))
            whole = combined_plan(plan, chosen, family.check)
            orders = whole.compose(whole.all_active)
            texts = {s: ", ".join(str(i[0]) for i in orders[s]) or "none" for s in orders if plan.counts[s]}
            naive = one_evaluation(through_plan_node(model, texts), positive, negative, latent)
            assert torch.equal(resumed, naive), (chosen, (resumed - naive).abs().max())
    assert runs.settings["held_state_bytes"] > 0 and runs.sweep.nbytes == 0
    assert_unchanged(model, before)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_reported_evaluation_is_its_combined_plan_and_the_top_k_never_wins_unseen(name, strategy):
    model, positive, negative, latent = setup(name)
    _, report, _, _ = search(model, positive, negative, latent, blocks=3, strategy=strategy)
    evaluations = report["evaluations"]
    base = one_evaluation(model, positive, negative, latent)
    for e in evaluations:
        naive = one_evaluation(through_plan_node(model, e["plan"]), positive, negative, latent)
        cos, rel = numpy_distances(base, naive)
        assert e["distances"]["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-13), e["skip"]
        assert e["distances"]["latent_rel_l2"] == pytest.approx(rel, rel=1e-9), e["skip"]
        assert e["mode"] == "fast" and e["blocks_removed"] == len(e["skip"]) == e["step"]
    # the top-k suggestion, written out: the k safest single skips of size 1, measured together
    singles = sorted((e for e in evaluations if e["step"] == 1), key=lambda e: (e["distances"]["latent_cosine"],
                                                                                 e["index"]))
    assert len(singles) == sum(layer_plan(model).counts.values())
    by_index = {e["index"]: e for e in evaluations}
    assert [p["blocks_removed"] for p in report["path"]] == [1, 2, 3]
    for p in report["path"]:
        k = p["blocks_removed"]
        top = by_index[p["top_k"]]
        expected = sorted((s["skip"][0]["stream"], s["skip"][0]["blocks"]) for s in singles[:k])
        assert sorted((s["stream"], s["blocks"]) for s in top["skip"]) == expected
        kept = by_index[p["kept"]]
        assert kept["distances"]["latent_cosine"] <= top["distances"]["latent_cosine"]
        assert kept["distances"]["latent_cosine"] <= by_index[p["search"]]["distances"]["latent_cosine"]
        assert p["won"] in ("search", "top_k", "same")
    # greedy: every size-k candidate grows the plan kept at size k-1
    if strategy == "greedy":
        for p, q in zip(report["path"], report["path"][1:]):
            grown = [e for e in evaluations if e["step"] == q["blocks_removed"] and e["role"] == "candidate"]
            assert all(e["parent"] == p["kept"] for e in grown)
    final = report["result"]
    assert final["evaluation"] == report["path"][-1]["kept"]


# ------------------------------------------------------------------------------------ stopping and bad inputs


def test_max_distance_and_budget_stop_the_search_and_say_so():
    model, positive, negative, latent = setup("flux")
    _, free, _, _ = search(model, positive, negative, latent, blocks=2)
    kept = [free["evaluations"][p["kept"]]["distances"]["latent_cosine"] for p in free["path"]]
    assert kept[0] < kept[1]
    limit = (kept[0] + kept[1]) / 2
    _, report, _, _ = search(model, positive, negative, latent, blocks=0, max_distance=limit)
    assert report["stop"]["reason"] == "max_distance" and report["result"]["blocks_removed"] == 1
    assert [p["accepted"] for p in report["path"]] == [True, False]
    assert report["result"]["skip"] == free["evaluations"][free["path"][0]["kept"]]["skip"]
    _, report, double, single = search(model, positive, negative, latent, blocks=4, budget=5)
    assert report["stop"]["reason"] == "budget" and "budget of 5 evaluations" in report["stop"]["message"]
    assert len(report["evaluations"]) == 5 and report["result"]["blocks_removed"] == 0
    assert (double, single) == ("all", "all") and report["result"]["full"]["distances"] is None


def test_bad_inputs_are_refused_before_any_sampling(progress):
    model, positive, negative, latent = setup("flux")
    with pytest.raises(SearchError, match="blocks = 8, but only 7 can be removed"):
        search(model, positive, negative, latent, blocks=8)
    with pytest.raises(SearchError, match="blocks = 0 and max_distance = 0"):
        search(model, positive, negative, latent, blocks=0)
    with pytest.raises(SearchError, match="unknown strategy 'best'"):
        search(model, positive, negative, latent, strategy="best")
    with pytest.raises(ValueError, match="needs a VAE"):
        search(model, positive, negative, latent, metric="image_cosine")
    assert progress.asked == []


def test_attention_granularity_drops_sub_layers_and_excludes_the_rest():
    model, positive, negative, latent = setup("flux")
    _, report, double, single = search(model, positive, negative, latent, blocks=2, granularity="attention")
    assert {e["stream"] for e in report["excluded"]} == {"single_blocks"}
    assert single == "all" and double.count(":attn") == 2
    base = one_evaluation(model, positive, negative, latent)
    for e in report["evaluations"]:
        cos, _ = numpy_distances(base, one_evaluation(through_plan_node(model, e["plan"]), positive, negative, latent))
        assert e["distances"]["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-13)


# ------------------------------------------------------------------------------ progress and interrupt


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_one_bar_over_the_evaluations_to_the_end(progress, mode):
    model, positive, negative, latent = setup("flux")
    _, report, _, _ = search(model, positive, negative, latent, mode=mode, blocks=2)
    bound = 7 + 6 + 1  # greedy on 7 blocks to size 2, the top-2 set at size 2
    runs = 1 + bound + (2 if mode == "fast" else 0)
    progress.assert_one_bar_to_the_end(runs * STEPS)
    ends = progress.run_ends(STEPS)
    evaluated = len(report["evaluations"])
    assert ends[:1 + evaluated] == [i * STEPS for i in range(1, 2 + evaluated)]


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_an_interrupt_stops_between_evaluations_and_leaves_the_model_clean(progress, mode):
    model, positive, negative, latent = setup("flux")
    before = snapshot(model)
    progress.interrupt_from = 3 * STEPS  # at the end of evaluation 2 (the baseline is run 1)
    progress.count_model_calls(model)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        search(model, positive, negative, latent, mode=mode)
    comfy.model_management.interrupt_current_processing(False)
    assert progress.interrupted_at == 3 * STEPS
    assert max(v for v, _ in progress.asked) == progress.interrupted_at
    assert progress.model_calls_after_interrupt == 0
    progress.remove_hooks()
    assert_unchanged(model, before)
    _, report, _, _ = search(model, positive, negative, latent, mode=mode, blocks=1)
    assert report["result"]["blocks_removed"] == 1


def test_image_distances_with_a_vae_equal_decoded_separate_runs():
    from dit_layer_lab.nodes.sampling import decode

    model, positive, negative, latent = setup("flux")
    vae = tm.tiny_vae()
    _, report, _, _ = search(model, positive, negative, latent, blocks=1, streams="single_blocks",
                             metric="image_rel_l2", vae=vae)
    with torch.inference_mode():
        base = decode(vae, {"samples": one_evaluation(model, positive, negative, latent)})
        for e in report["evaluations"]:
            image = decode(vae, {"samples": one_evaluation(through_plan_node(model, e["plan"]), positive, negative,
                                                           latent)})
            cos, rel = numpy_distances(base, image)
            assert e["distances"]["image_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-13)
            assert e["distances"]["image_rel_l2"] == pytest.approx(rel, rel=1e-9)
        full_base = decode(vae, {"samples": sampled(model, positive, negative, latent)})
        planned = decode(vae, {"samples": sampled(through_plan_node(model, report["result"]["plan"]), positive,
                                                  negative, latent)})
    exact, _ = distances(full_base, planned, "image")
    assert {k: report["result"]["full"]["distances"][k] for k in exact} == exact
    best = min(report["evaluations"], key=lambda e: e["distances"]["image_rel_l2"])
    assert report["result"]["evaluation"] == best["index"]
