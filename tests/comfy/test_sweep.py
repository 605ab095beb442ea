"""The importance sweep node on ComfyUI's own models, sampler and VAE, against separately run skips."""

import json

import numpy as np
import pytest
import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
from dit_layer_lab.core.experiments import fast_sweep, sweep_memory
from dit_layer_lab.core.experiments.fast_sweep import FastSweep
from dit_layer_lab.core.experiments.sweep import SweepError
from dit_layer_lab.core.patching import layer_plan
from dit_layer_lab.core.plan import parse_steps
from dit_layer_lab.nodes.reorder import LayerLabPlan, LayerLabReverse, LayerLabSkip
from dit_layer_lab.nodes.sampling import decode
from dit_layer_lab.nodes.sweep import FastRuns, LayerLabImportanceSweep
from dit_layer_lab.tests.comfy import tiny_models as tm

SEED, STEPS, CFG, PERCENT = 5, 2, 2.0, 0.4
BUILDERS = {
    "flux": lambda: tm.tiny_flux(double=3, single=4),
    "sd3": lambda: tm.tiny_sd3(joint=4),
    "flux2": lambda: tm.tiny_flux2(double=2, single=3),
    "longcat": lambda: tm.tiny_longcat(double=2, single=3),
    "chroma": lambda: tm.tiny_chroma(double=3, single=3),  # 3: a double-stream resume mid-stream
    "chroma_radiance": lambda: tm.tiny_chroma_radiance(double=3, single=2),
    "auraflow": lambda: tm.tiny_auraflow(double=2, single=3),
    "qwen_image": lambda: tm.tiny_qwen_image(blocks=3),
    "hunyuan_image21": lambda: tm.tiny_hunyuan_image21(double=2, single=3),
    "hunyuan_video": lambda: tm.tiny_hunyuan_video(double=2, single=3),
    "hunyuan_video15": lambda: tm.tiny_hunyuan_video15(double=3),
    "ltxv": lambda: tm.tiny_ltxv(blocks=3),
    "ltx2": lambda: tm.tiny_ltx2(blocks=3),
    "cosmos_predict2": lambda: tm.tiny_cosmos_predict2(blocks=3),
    "anima": lambda: tm.tiny_anima(blocks=3),
    "kandinsky5": lambda: tm.tiny_kandinsky5(blocks=3),
    "lumina2": lambda: tm.tiny_lumina2(blocks=3),
    "z_image": lambda: tm.tiny_z_image(blocks=3),
    "hidream": lambda: tm.tiny_hidream(double=2, single=3),
    "pixart": lambda: tm.tiny_pixart(blocks=3),
    "omnigen2": lambda: tm.tiny_omnigen2(blocks=3),
    "boogu": lambda: tm.tiny_boogu(double=2, single=3),
    "krea2": lambda: tm.tiny_krea2(blocks=3),
    "ernie_image": lambda: tm.tiny_ernie_image(blocks=3),
    "ideogram4": lambda: tm.tiny_ideogram4(blocks=3),
    "wan": lambda: tm.tiny_wan(blocks=3),
    "wan22_5b": lambda: tm.tiny_wan22_5b(blocks=3),
}
STREAM_OF = {"double_blocks": "double_blocks", "single_blocks": "single_blocks"}


def setup(name, batch=1):
    model = BUILDERS[name]()
    positive, negative = tm.conditioning(model, seed=1, batch=batch)
    return model, positive, negative, tm.latent(model, batch=batch)


def sweep(model, positive, negative, latent, streams="both", width=1, mode="full", metric="latent_cosine",
          budget=2, max_distance=0.0, vae=None, granularity="block"):
    with torch.inference_mode():
        out = LayerLabImportanceSweep.execute(model, positive, negative, {"samples": latent}, SEED, STEPS, CFG,
                                              "euler", "simple", 1.0, streams, width, mode, PERCENT, metric, budget,
                                              max_distance, vae, granularity)
    chart, report, double, single = out.args
    return chart, json.loads(report), double, single


def skipped(model, stream, first, last):
    return LayerLabSkip.execute(model, stream, first, last, 0.0, 1.0).args[0]


def one_evaluation(model, positive, negative, latent):
    """The reference for fast mode, written here: ComfyUI's custom sampling with one model call at sigma."""
    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(PERCENT))

    def denoise_once(m, x, sigmas, extra_args=None, callback=None, disable=None):
        return m(x, sigmas[0] * torch.ones(x.shape[0]), **extra_args)

    with torch.inference_mode():
        latent = comfy.sample.fix_empty_latent_channels(model, latent)  # as KSampler does (Qwen-Image: 5-D)
        noise = comfy.sample.prepare_noise(latent, SEED)
        return tm.flat(comfy.sample.sample_custom(model, noise, CFG, comfy.samplers.KSAMPLER(denoise_once),
                                          torch.tensor([sigma, 0.0]), positive, negative, latent, seed=SEED,
                                          disable_pbar=True))


def numpy_distances(a, b):
    """Cosine distance and relative L2 per batch item in float64, then averaged: written with numpy."""
    a = a.double().numpy().reshape(a.shape[0], -1)
    b = b.double().numpy().reshape(b.shape[0], -1)
    cos = [1 - np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)) for x, y in zip(a, b)]
    rel = [np.linalg.norm(y - x) / np.linalg.norm(x) for x, y in zip(a, b)]
    return float(np.mean(cos)), float(np.mean(rel))


def windows_of(model, width=1, streams=("double_blocks", "single_blocks")):
    counts = {}
    dit = model.model.diffusion_model
    for stream, attr in (("double_blocks", ("double_blocks", "joint_blocks", "double_layers", "transformer_blocks")),
                         ("single_blocks", ("single_blocks", "single_layers", "layers", "blocks"))):
        counts[stream] = next((len(getattr(dit, a)) for a in attr if hasattr(dit, a)), 0)
    return [(s, f, f + width - 1) for s in streams for f in range(counts[s] - width + 1)]


def snapshot(model):
    return ({k: v.clone() for k, v in model.model.state_dict().items()}, repr(model.model_options),
            {name: list(getattr(model.model.diffusion_model, name))
             for name in ("double_blocks", "single_blocks", "joint_blocks", "double_layers", "single_layers",
                          "transformer_blocks", "layers", "blocks", "visual_transformer_blocks")
             if hasattr(model.model.diffusion_model, name)})


def assert_unchanged(model, before):
    weights, options, lists = before
    after_weights, after_options, after_lists = snapshot(model)
    assert after_options == options
    assert all(torch.equal(weights[k], after_weights[k]) for k in weights)
    assert all(all(a is b for a, b in zip(lists[n], after_lists[n])) for n in lists)


def by_window(report):
    return {(r["stream"], r["blocks"]): r for r in report["ranking"]}


def label(first, last):
    return str(first) if first == last else f"{first}-{last}"


# ------------------------------------------------------------------------------------------ full mode


@pytest.mark.parametrize("name, width", [("flux", 1), ("flux", 2), ("sd3", 1)])
def test_full_mode_distances_equal_separately_sampled_skips(name, width):
    model, positive, negative, latent = setup(name)
    before = snapshot(model)
    _, report, _, _ = sweep(model, positive, negative, latent, width=width)
    assert_unchanged(model, before)
    baseline = tm.sample(model, positive, negative, latent, seed=SEED, steps=STEPS, cfg=CFG)
    found = by_window(report)
    expected_windows = windows_of(model, width)
    assert sorted(found) == sorted((s, label(f, l)) for s, f, l in expected_windows)
    for stream, first, last in expected_windows:
        result = tm.sample(skipped(model, stream, first, last), positive, negative, latent, seed=SEED, steps=STEPS,
                           cfg=CFG)
        cos, rel = numpy_distances(baseline, result)
        got = found[(stream, label(first, last))]["distances"]
        assert got["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-15), (stream, first)
        assert got["latent_rel_l2"] == pytest.approx(rel, rel=1e-9), (stream, first)
        assert rel > 0
    ranks = [r["distances"]["latent_cosine"] for r in report["ranking"]]
    assert ranks == sorted(ranks)
    assert report["excluded"] == []


# ------------------------------------------------------------------------------------------ fast mode


def conditioning_tensors(*conditionings):
    return [v for c in conditionings for entry in c for v in (entry[0], *entry[1].values())
            if isinstance(v, torch.Tensor)]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_fast_mode_equals_one_evaluation_of_each_skip_bit_for_bit(name, monkeypatch):
    model, positive, negative, latent = setup(name)
    base = snapshot(model)
    given = [(v, v.clone()) for v in conditioning_tensors(positive, negative)]
    handed, copied = [], []  # how each resumed block got its recorded state (see fast_sweep's docstring)
    hand_over, copy = fast_sweep._hand_over, fast_sweep._copy

    def counted_hand_over(value, into):
        handed.append(into)
        return hand_over(value, into)

    def counted_copy(value, like=None):
        if isinstance(like, torch.Tensor):  # a copy in place of a block's input, not a recording
            copied.append(like)
        return copy(value, like)

    monkeypatch.setattr(fast_sweep, "_hand_over", counted_hand_over)
    monkeypatch.setattr(fast_sweep, "_copy", counted_copy)
    from dit_layer_lab.core.experiments.sweep import variants, windows
    from dit_layer_lab.core.patching import family_of, layer_plan

    plan = layer_plan(model)
    family = family_of(plan)
    runnable, excluded = variants(plan, family.check_order, windows(plan.counts, "both", 1))
    assert not excluded
    runs = FastRuns(model, family, plan, runnable, positive, negative, {"samples": latent}, SEED, CFG, PERCENT)
    reference_baseline = one_evaluation(model, positive, negative, latent)
    with torch.inference_mode(), runs:
        baseline = tm.flat(runs.baseline())
        assert torch.equal(baseline, reference_baseline)
        for v in runnable:
            w = v.window
            naive = one_evaluation(skipped(model, w.stream, w.first, w.last), positive, negative, latent)
            fast = tm.flat(runs.variant(v))
            assert torch.equal(fast, naive), (w, (fast - naive).abs().max())
            assert not torch.equal(fast, baseline)
    assert_unchanged(model, base)
    # every resumed block ran on the loop's own tensor: the model's device held no second copy of a state
    assert handed and not copied, (len(handed), len(copied))
    assert all(torch.equal(v, before) for v, before in given)

    _, report, _, _ = sweep(model, positive, negative, latent, mode="fast")
    found = by_window(report)
    for v in runnable:
        w = v.window
        naive = one_evaluation(skipped(model, w.stream, w.first, w.last), positive, negative, latent)
        cos, rel = numpy_distances(reference_baseline, naive)
        got = found[(w.stream, w.label)]["distances"]
        # 1 - cosine cancels: float64 summation order alone moves it by ~1e-14 (Flux.2's distances are ~1e-5)
        assert got["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-13)
        assert got["latent_rel_l2"] == pytest.approx(rel, rel=1e-9)
    assert report["settings"]["held_state_bytes"] > 0
    assert_unchanged(model, base)


@pytest.mark.parametrize("name, granularity, refused", [
    ("flux", "attention", "single_blocks"),
    ("qwen_image", "mlp", None),
    ("z_image", "attention", None),
    ("auraflow", "mlp", "both"),
])
def test_sub_layer_granularity_equals_one_evaluation_of_each_plan(name, granularity, refused):
    model, positive, negative, latent = setup(name)
    part = {"attention": "attn", "mlp": "mlp"}[granularity]
    _, report, double, single = sweep(model, positive, negative, latent, mode="fast", granularity=granularity)
    assert report["granularity"] == granularity
    found = by_window(report)
    excluded = {(e["stream"], e["blocks"]): e["reason"] for e in report["excluded"]}
    counts = layer_plan(model).counts
    reference_baseline = one_evaluation(model, positive, negative, latent)
    for stream, n in counts.items():
        for i in range(n):
            label = f"{i}:{part}"
            if refused in (stream, "both"):
                assert "cannot do" in excluded[(stream, label)] and (stream, label) not in found
                continue
            texts = {"double_blocks": "all", "single_blocks": "all",
                     stream: ", ".join(label if j == i else str(j) for j in range(n))}
            planned = LayerLabPlan.execute(model, texts["double_blocks"], texts["single_blocks"], 0.0, 1.0).args[0]
            naive = one_evaluation(planned, positive, negative, latent)
            cos, _ = numpy_distances(reference_baseline, naive)
            assert found[(stream, label)]["distances"]["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-13)
    for text in (double, single):
        assert text == "all" or f":{part}" in text


def test_fast_mode_with_a_batch_and_cfg_keeps_one_call_per_evaluation_in_step():
    model, positive, negative, latent = setup("flux", batch=2)
    _, report, _, _ = sweep(model, positive, negative, latent, mode="fast", streams="single_blocks")
    base = one_evaluation(model, positive, negative, latent)
    for r in report["ranking"]:
        variant = one_evaluation(skipped(model, r["stream"], r["first"], r["last"]), positive, negative, latent)
        for item in range(2):  # each batch row against the same row of a plain evaluation of the skip
            cos, rel = numpy_distances(base[item:item + 1], variant[item:item + 1])
            assert r["per_item"]["latent_cosine"][item] == pytest.approx(cos, rel=1e-9, abs=1e-15)
            assert r["per_item"]["latent_rel_l2"][item] == pytest.approx(rel, rel=1e-9)
        assert r["distances"]["latent_cosine"] == pytest.approx(np.mean(r["per_item"]["latent_cosine"]))


def test_fast_mode_follows_a_plan_the_model_already_carries():
    model, positive, negative, latent = setup("flux")
    planned = LayerLabPlan.execute(model, "0, 2-1", "0-3", 0.0, 1.0).args[0]
    _, report, double, _ = sweep(planned, positive, negative, latent, mode="fast", budget=1)
    assert [(e["stream"], e["blocks"]) for e in report["excluded"]] == []  # width 1 always runs in place
    base = one_evaluation(planned, positive, negative, latent)
    for r in report["ranking"]:
        variant = skipped(planned, r["stream"], r["first"], r["last"])
        cos, _ = numpy_distances(base, one_evaluation(variant, positive, negative, latent))
        assert r["distances"]["latent_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-15)
    # the suggestion is the model's whole planned order without the chosen block
    (chosen,) = report["suggestion"]["skip"]
    order = {"double_blocks": [0, 2, 1], "single_blocks": [0, 1, 2, 3]}
    order[chosen["stream"]].remove(int(chosen["blocks"]))
    texts = report["suggestion"]["plan"]
    assert parse_steps(texts["double_blocks"], 3) == tuple((i,) for i in order["double_blocks"])
    assert parse_steps(texts["single_blocks"], 4) == tuple((i,) for i in order["single_blocks"])
    assert double == texts["double_blocks"]


# --------------------------------------------------------------------------------- SD3 and exclusions


def test_sd3_last_joint_block_can_be_left_out_and_moved_blocks_are_reported():
    model, positive, negative, latent = setup("sd3")
    _, report, double, single = sweep(model, positive, negative, latent, streams="double_blocks", width=2,
                                      mode="fast")
    assert sorted(by_window(report)) == [("double_blocks", "0-1"), ("double_blocks", "1-2"), ("double_blocks", "2-3")]
    assert report["excluded"] == [] and single == "all"

    # with blocks 0-1 reversed first, the windows through them no longer run in place: reported, not dropped
    reversed_model = LayerLabReverse.execute(model, "double_blocks", 0, 1, 0.0, 1.0).args[0]
    chart, report, _, _ = sweep(reversed_model, positive, negative, latent, streams="double_blocks", width=2,
                                mode="fast")
    assert [(e["stream"], e["blocks"]) for e in report["excluded"]] == [("double_blocks", "0-1"),
                                                                         ("double_blocks", "1-2")]
    assert all("no longer run" in e["reason"] for e in report["excluded"])
    assert [r["blocks"] for r in report["ranking"]] == ["2-3"]
    assert chart.shape[0] == 1 and chart.shape[-1] == 3

    with pytest.raises(SweepError, match="no single_blocks"):
        sweep(model, positive, negative, latent, streams="single_blocks")


# ------------------------------------------------------------------------------- suggestion and plans


def test_the_suggestion_is_the_safest_non_overlapping_windows_as_plan_text():
    model, positive, negative, latent = setup("flux")
    _, report, double, single = sweep(model, positive, negative, latent, mode="fast", width=2, budget=4)
    chosen, used = [], 0
    for r in report["ranking"]:  # the rule, written out again
        window = (r["stream"], r["first"], r["last"])
        if used + 2 > 4:
            break
        if any(s == window[0] and f <= window[2] and window[1] <= l for s, f, l in chosen):
            continue
        chosen.append(window)
        used += 2
    assert [(s["stream"], s["blocks"]) for s in report["suggestion"]["skip"]] == [
        (s, f"{f}-{l}") for s, f, l in chosen]
    for stream, text, n in (("double_blocks", double, 3), ("single_blocks", single, 4)):
        kept = [i for i in range(n) if not any(s == stream and f <= i <= l for s, f, l in chosen)]
        assert parse_steps(text, n) == tuple((i,) for i in kept)
    assert report["suggestion"]["plan"] == {"double_blocks": double, "single_blocks": single}
    LayerLabPlan.execute(model, double, single, 0.0, 1.0)  # ready to paste


def test_max_distance_and_bad_inputs():
    model, positive, negative, latent = setup("flux")
    _, report, double, single = sweep(model, positive, negative, latent, mode="fast", budget=7, max_distance=1e-12)
    assert report["suggestion"]["skip"] == [] and (double, single) == ("all", "all")
    with pytest.raises(SweepError, match="needs a VAE"):
        sweep(model, positive, negative, latent, metric="image_cosine")
    with pytest.raises(SweepError, match="wider than double_blocks"):
        sweep(model, positive, negative, latent, width=4)
    with pytest.raises(SweepError, match="fast_percent"):
        with torch.inference_mode():
            LayerLabImportanceSweep.execute(model, positive, negative, {"samples": latent}, SEED, STEPS, CFG, "euler",
                                            "simple", 1.0, "both", 1, "fast", 1.0, "latent_cosine", 1, 0.0)


# ---------------------------------------------------------------------------------------------- VAE


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_image_distances_equal_decoded_separate_runs(mode):
    model, positive, negative, latent = setup("flux")
    vae = tm.tiny_vae()
    _, report, _, _ = sweep(model, positive, negative, latent, streams="single_blocks", mode=mode,
                            metric="image_rel_l2", vae=vae)
    run = (lambda m: tm.sample(m, positive, negative, latent, seed=SEED, steps=STEPS, cfg=CFG)) if mode == "full" \
        else (lambda m: one_evaluation(m, positive, negative, latent))
    with torch.inference_mode():
        base_image = decode(vae, {"samples": run(model)})
        found = by_window(report)
        for first in range(4):
            image = decode(vae, {"samples": run(skipped(model, "single_blocks", first, first))})
            cos, rel = numpy_distances(base_image, image)
            got = found[("single_blocks", str(first))]["distances"]
            assert got["image_cosine"] == pytest.approx(cos, rel=1e-9, abs=1e-15)
            assert got["image_rel_l2"] == pytest.approx(rel, rel=1e-9)
    ranks = [r["distances"]["image_rel_l2"] for r in report["ranking"]]
    assert ranks == sorted(ranks)


# ------------------------------------------------------------------------------ progress and interrupt


def ticks_per_run(mode):
    return STEPS if mode == "full" else 1  # full mode's bar also moves with every sampling step


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_progress_counts_the_variants(progress, mode):
    model, positive, negative, latent = setup("flux")
    sweep(model, positive, negative, latent, mode=mode)
    ticks = ticks_per_run(mode)
    progress.assert_one_bar_to_the_end(8 * ticks)  # baseline + 7 skips
    assert progress.run_ends(ticks) == [i * ticks for i in range(1, 9)]  # run i of 8 ends at i / 8, in order


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_an_interrupt_stops_the_sweep_and_leaves_the_model_clean(progress, mode):
    model, positive, negative, latent = setup("flux")
    before = snapshot(model)
    progress.interrupt_from = 3 * ticks_per_run(mode)  # at the end of variant 2 (the baseline is run 1)
    progress.count_model_calls(model)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sweep(model, positive, negative, latent, mode=mode)
    comfy.model_management.interrupt_current_processing(False)
    assert progress.interrupted_at == 3 * ticks_per_run(mode)
    assert max(v for v, _ in progress.asked) == progress.interrupted_at  # nothing ran after the interrupt
    # fast mode: the sweep's own check between variants stops it; the sampler's would only after one more call
    assert progress.model_calls_after_interrupt == 0
    progress.remove_hooks()
    assert_unchanged(model, before)
    # the model still samples exactly as before
    _, report, _, _ = sweep(model, positive, negative, latent, mode=mode, streams="double_blocks")
    assert len(report["ranking"]) == 3


def test_recorded_states_are_released():
    model, positive, negative, latent = setup("flux")
    from dit_layer_lab.core.experiments.sweep import variants, windows
    from dit_layer_lab.core.patching import family_of, layer_plan

    plan = layer_plan(model)
    runnable, _ = variants(plan, family_of(plan).check_order, windows(plan.counts, "both", 1))
    runs = FastRuns(model, family_of(plan), plan, runnable, positive, negative, {"samples": latent}, SEED, CFG, 0.5)
    with torch.inference_mode(), runs:
        runs.baseline()
        assert isinstance(runs.sweep, FastSweep) and runs.sweep.nbytes > 0
    assert runs.sweep.nbytes == 0
    assert runs.settings["held_state_bytes"] > 0


@pytest.mark.parametrize("batch", [1, 2])
def test_fast_mode_states_the_memory_it_will_hold_and_holds_that(batch):
    """Estimated at the first recorded state (cond and uncond rows, every conditioning entry), held at the end."""
    model, positive, negative, latent = setup("flux", batch)
    _, report, _, _ = sweep(model, positive, negative, latent, mode="fast")
    settings = report["settings"]
    assert settings["held_state_bytes_estimate"] == settings["held_state_bytes"] > 0
    assert settings["held_state_device"] == str(comfy.model_management.intermediate_device())
    assert settings["available_bytes"] > 0


def test_fast_mode_refuses_with_the_figure_when_the_machine_has_too_little_memory(monkeypatch):
    model, positive, negative, latent = setup("flux")
    weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    _, report, _, _ = sweep(model, positive, negative, latent, mode="fast")
    needed = report["settings"]["held_state_bytes"]
    monkeypatch.setattr(sweep_memory, "available_host_bytes", lambda: needed)  # 80% of it is usable
    with pytest.raises(SweepError) as refused:
        sweep(model, positive, negative, latent, mode="fast")
    message = str(refused.value)
    assert f"fast mode would hold {sweep_memory.gib(needed)} of recorded block inputs" in message
    assert f"but {sweep_memory.gib(needed)} is available" in message
    assert "- streams double_blocks alone" in message and "- mode full" in message
    # mode full holds no recorded state: it runs with the same memory, and the model is unchanged
    _, full, _, _ = sweep(model, positive, negative, latent, mode="full", streams="double_blocks")
    assert len(full["ranking"]) == 3 and "held_state_bytes_estimate" not in full["settings"]
    after = model.model.state_dict()
    assert all(torch.equal(after[k], weights[k]) for k in weights)
