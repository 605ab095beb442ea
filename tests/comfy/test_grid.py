"""The plan grid node on ComfyUI's own models, KSampler, VAE and VAEDecode."""

import gc
import json
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import comfy.model_management
import comfy.sample
import comfy.utils
import folder_paths
import nodes
from dit_layer_lab.core.experiments import grid_image
from dit_layer_lab.core.experiments.variant_lines import PlanLinesError
from dit_layer_lab.nodes import grid as grid_node
from dit_layer_lab.nodes.grid import DEFAULT_PLANS, LayerLabPlanGrid
from dit_layer_lab.nodes.reorder import LayerLabPlan, LayerLabSkip
from dit_layer_lab.tests.comfy import tiny_models as tm

SEED, STEPS, CFG, SAMPLER, SCHEDULER, DENOISE = 7, 2, 2.0, "euler", "simple", 1.0

# family -> (builder, plan lines, {label: (double_blocks, single_blocks)} for the Layer Lab Plan node)
FAMILIES = {
    "flux": (lambda: tm.tiny_flux(double=3, single=4),
             "# tiny Flux: 3 double, 4 single blocks\n"
             "skip: double_blocks=0, 2; single_blocks=0-1, 3\n"
             "\n"
             "parallel: single_blocks=[0-3]*2   # looped parallel\n"
             "reverse: double_blocks=2-0",
             {"skip": ("0, 2", "0-1, 3"), "parallel": ("all", "[0-3]*2"), "reverse": ("2-0", "all")}),
    "sd3": (lambda: tm.tiny_sd3(joint=4),
            "skip: double_blocks=0, 3\n"
            "repeat: double_blocks=1*3, 3\n"
            "parallel: double_blocks=[0-2], 3",
            {"skip": ("0, 3", "all"), "repeat": ("1*3, 3", "all"), "parallel": ("[0-2], 3", "all")}),
}


@pytest.fixture(scope="module")
def vae():
    return tm.tiny_vae()


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, lines, plans = FAMILIES[request.param]
    model = build()
    positive, negative = tm.conditioning(model)
    return request.param, model, (positive, negative, {"samples": tm.latent(model)}), lines, plans


def grid_output(model, vae, inputs, plans, seed=SEED):
    positive, negative, latent = inputs
    with torch.inference_mode():
        return LayerLabPlanGrid.execute(model, vae, positive, negative, latent, seed, STEPS, CFG, SAMPLER, SCHEDULER,
                                        DENOISE, plans)


def run_grid(model, vae, inputs, plans, seed=SEED):
    grid, images, report = grid_output(model, vae, inputs, plans, seed).args
    return grid, images, json.loads(report)


def ksampler_decode(model, vae, inputs, seed=SEED):
    """The independent reference: ComfyUI's own KSampler node, then its VAEDecode node."""
    positive, negative, latent = inputs
    with torch.inference_mode():
        (sampled,) = nodes.KSampler().sample(model, seed, STEPS, CFG, SAMPLER, SCHEDULER, positive, negative, latent,
                                             denoise=DENOISE)
        (image,) = nodes.VAEDecode().decode(vae, sampled)
    return image


def through_plan_node(model, double_blocks, single_blocks):
    with torch.inference_mode():
        return LayerLabPlan.execute(model, double_blocks, single_blocks, 0.0, 1.0).args[0]


def model_state(model):
    dit = model.model.diffusion_model
    lists = {name: (getattr(dit, name), list(getattr(dit, name))) for name in ("double_blocks", "single_blocks",
                                                                               "joint_blocks") if hasattr(dit, name)}
    return repr(model.model_options), lists


def assert_unchanged(model, state, weights):
    options, lists = state
    assert repr(model.model_options) == options
    dit = model.model.diffusion_model
    for name, (module_list, blocks) in lists.items():
        assert getattr(dit, name) is module_list and list(module_list) == blocks
    assert all(torch.equal(v, weights[k]) for k, v in model.model.state_dict().items())


def grid_cell(grid, layout, variant, item=0):
    left, top, right, bottom = layout.image_box(variant, item)
    return grid[0, top:bottom, left:right].numpy()


def test_every_cell_equals_ksampler_and_the_plan_node(family, vae, progress):
    name, model, inputs, lines, plans = family
    weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    state = model_state(model)

    grid, images, report = run_grid(model, vae, inputs, lines)
    total = (len(plans) + 1) * STEPS
    progress.assert_one_bar_to_the_end(total)  # before the reference runs below add their own bars
    # one bar of variants x steps, run i of n ending exactly at i / n, in order
    assert progress.run_ends(STEPS) == [i * STEPS for i in range(1, len(plans) + 2)]

    labels = ["baseline", *plans]
    assert [v["label"] for v in report["variants"]] == labels
    assert images.shape == (len(labels), 128, 128, 3)
    baseline = ksampler_decode(model, vae, inputs)
    assert torch.equal(images[0], baseline[0])  # bit-identical to KSampler + VAEDecode
    for index, (double_blocks, single_blocks) in enumerate(plans.values(), start=1):
        reference = ksampler_decode(through_plan_node(model, double_blocks, single_blocks), vae, inputs)
        assert torch.equal(images[index], reference[0]), labels[index]
        assert not torch.equal(images[index], baseline[0]), f"{labels[index]} changed nothing: a weak test"

    layout = grid_image.layout(len(labels), 1, 128, 128, {"flux": 2, "sd3": 1}[name])  # caption: one line per stream
    assert tuple(grid.shape) == (1, layout.size[1], layout.size[0], 3)
    for index in range(len(labels)):
        cell = grid_cell(grid, layout, index)
        assert np.array_equal(np.round(cell * 255).astype(np.uint8), grid_image.to_uint8(images[index].numpy()))

    assert_unchanged(model, state, weights)
    assert torch.equal(ksampler_decode(model, vae, inputs), baseline)


def test_report_and_the_grid_shown_on_the_node(family, vae, tmp_path, monkeypatch):
    name, model, inputs, lines, plans = family
    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path))
    output = grid_output(model, vae, inputs, lines)
    grid, images, report = output.args
    report = json.loads(report)
    (shown,) = output.ui["images"]
    assert output.ui["dit_layer_lab_blocks"][0]["counts"]["double_blocks"] > 0  # the strip learns the counts
    assert shown["type"] == "temp"
    assert np.array_equal(np.asarray(Image.open(tmp_path / shown["subfolder"] / shown["filename"]).convert("RGB")),
                          grid_image.to_uint8(grid[0].numpy()))
    assert report["family"] == {"flux": "Flux", "sd3": "SD3"}[name]
    assert (report["seed"], report["steps"], report["cfg"], report["sampler_name"], report["scheduler"],
            report["denoise"], report["batch_size"]) == (SEED, STEPS, CFG, SAMPLER, SCHEDULER, DENOISE, 1)
    assert report["layout"] == {"columns": 2, "rows": 2, "cells": "variants row by row, baseline first"}
    baseline, *variants = report["variants"]
    streams = ["double_blocks", "single_blocks"] if name == "flux" else ["double_blocks"]
    assert baseline["line"] is None and baseline["plans"] == {}
    assert baseline["order"] == {stream: "all" for stream in streams}
    line_numbers = {"flux": [2, 4, 5], "sd3": [1, 2, 3]}[name]
    for index, (variant, (label, (double_blocks, single_blocks))) in enumerate(zip(variants, plans.items()), 1):
        assert (variant["label"], variant["line"], variant["images"]) == (label, line_numbers[index - 1], [index])
        expected = {"double_blocks": double_blocks, "single_blocks": single_blocks}
        assert variant["plans"] == {s: p for s, p in expected.items() if p != "all" or s in variant["plans"]}
        assert set(variant["order"]) == set(streams)
        for stream in streams:  # the report's order is the canonical text of what runs
            summary = through_plan_node_summary(model, double_blocks, single_blocks)
            assert f"{stream} = {variant['order'][stream]}" in summary
    for variant in report["variants"]:
        assert variant["seconds"]["sample"] > 0 and variant["seconds"]["decode"] > 0


def through_plan_node_summary(model, double_blocks, single_blocks):
    with torch.inference_mode():
        return LayerLabPlan.execute(model, double_blocks, single_blocks, 0.0, 1.0).args[1]


def test_baseline_is_the_model_as_received_and_lines_compose_on_its_plan(vae):
    model = tm.tiny_flux(double=3, single=4)
    positive, negative = tm.conditioning(model)
    inputs = (positive, negative, {"samples": tm.latent(model)})
    with torch.inference_mode():
        skipped = LayerLabSkip.execute(model, "single_blocks", 1, 1, 0.0, 1.0).args[0]

    _, images, report = run_grid(skipped, vae, inputs, "rev: double_blocks=2-0")

    assert torch.equal(images[0], ksampler_decode(skipped, vae, inputs)[0])
    assert torch.equal(images[1], ksampler_decode(through_plan_node(skipped, "2-0", "all"), vae, inputs)[0])
    assert report["variants"][0]["order"] == {"double_blocks": "all", "single_blocks": "0, 2-3"}
    assert report["variants"][1]["order"] == {"double_blocks": "2-0", "single_blocks": "0, 2-3"}


def test_a_batch_gives_one_row_per_image_with_the_same_noise_per_row(vae):
    model = tm.tiny_flux(double=3, single=4)
    positive, negative = tm.conditioning(model)
    inputs = (positive, negative, {"samples": tm.latent(model, batch=2)})

    grid, images, report = run_grid(model, vae, inputs, "rev: double_blocks=2-0")

    baseline = ksampler_decode(model, vae, inputs)
    variant = ksampler_decode(through_plan_node(model, "2-0", "all"), vae, inputs)
    assert torch.equal(images, torch.cat([baseline, variant]))  # variant-major: baseline's batch first
    assert [v["images"] for v in report["variants"]] == [[0, 1], [2, 3]]
    assert report["layout"] == {"columns": 2, "rows": 2, "cells": "one row per batch item, one column per variant"}
    layout = grid_image.layout(2, 2, 128, 128, 2)
    for v, reference in enumerate((baseline, variant)):
        for item in range(2):
            cell = grid_cell(grid, layout, v, item)
            assert np.array_equal(np.round(cell * 255).astype(np.uint8), grid_image.to_uint8(reference[item].numpy()))


def test_invalid_lines_fail_before_any_sampling(monkeypatch, vae):
    model = tm.tiny_sd3(joint=4)
    positive, negative = tm.conditioning(model)
    calls = []
    monkeypatch.setattr(comfy.sample, "sample", lambda *a, **k: calls.append(1))
    plans = ("ok: double_blocks=0-2, 3\n"
             "typo: doubel_blocks=1\n"
             "range: double_blocks=0-4\n"
             "no single stream: single_blocks=0\n"
             "last not last: double_blocks=3, 0-2\n")
    with pytest.raises(PlanLinesError) as caught:
        run_grid(model, vae, (positive, negative, {"samples": tm.latent(model)}), plans)
    assert calls == []
    errors = {e.number: e for e in caught.value.errors}
    assert sorted(errors) == [2, 3, 4, 5]
    assert "did you mean double_blocks?" in errors[2].reason
    assert (errors[3].column, errors[3].token) == (22, "0-4")
    assert "valid double_blocks indices are 0-3" in errors[3].reason
    assert "this model has no such blocks" in errors[4].reason
    assert "block 3" in errors[5].reason and "last" in errors[5].reason  # SD3's pre_only block
    assert "line 5, column 30: SD3 joint block 3 is the last block" in str(caught.value)


def test_a_plan_that_conflicts_with_the_models_plan_fails_before_sampling(monkeypatch, vae):
    model = tm.tiny_flux(double=3, single=4)
    positive, negative = tm.conditioning(model)
    with torch.inference_mode():
        skipped = LayerLabSkip.execute(model, "single_blocks", 1, 1, 0.0, 1.0).args[0]
    calls = []
    monkeypatch.setattr(comfy.sample, "sample", lambda *a, **k: calls.append(1))
    with pytest.raises(PlanLinesError, match=r"line 1, column 18: .*no longer run as an unbroken run"):
        run_grid(skipped, vae, (positive, negative, {"samples": tm.latent(model)}), "a: single_blocks=3-0")
    assert calls == []


def test_interrupt_stops_between_steps_and_leaves_the_model_as_it_was(family, vae, progress):
    name, model, inputs, lines, plans = family
    weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    state = model_state(model)
    before = ksampler_decode(model, vae, inputs)
    progress.clear()
    progress.interrupt_from = STEPS + 1  # during the second variant
    progress.count_model_calls(model)

    with pytest.raises(comfy.model_management.InterruptProcessingException):
        run_grid(model, vae, inputs, lines)

    assert progress.interrupted_at == STEPS + 1  # the first step of the second variant
    assert max(v for v, _ in progress.asked) == progress.interrupted_at  # nothing ran after the step that saw it
    assert progress.model_calls_after_interrupt == 0
    progress.remove_hooks()
    assert not comfy.model_management.processing_interrupted()
    assert_unchanged(model, state, weights)
    assert torch.equal(ksampler_decode(model, vae, inputs), before)


def test_memory_stays_flat_only_decoded_images_are_kept(monkeypatch, vae):
    model = tm.tiny_flux(double=3, single=4)
    positive, negative = tm.conditioning(model)
    inputs = (positive, negative, {"samples": tm.latent(model)})
    earlier = []  # weak references to the variant models and latents of earlier variants
    real_sample = grid_node.sample

    def recording_sample(variant_model, *args, **kwargs):
        gc.collect()
        alive = [kind for kind, ref in earlier if ref() is not None]
        assert alive == [], f"still held while the next variant samples: {alive}"
        result = real_sample(variant_model, *args, **kwargs)
        if variant_model is not model:
            earlier.append(("model", weakref.ref(variant_model)))
        earlier.append(("latent", weakref.ref(result["samples"])))
        return result

    monkeypatch.setattr(grid_node, "sample", recording_sample)
    _, images, _ = run_grid(model, vae, inputs, "a: double_blocks=2-0\nb: single_blocks=3-0\nc: double_blocks=1")
    assert images.shape[0] == 4 and len(earlier) == 7


def test_default_plans_are_valid_for_flux_and_every_input_and_output_has_a_tooltip():
    from dit_layer_lab.core.experiments.plan_grid import plan_variants
    from dit_layer_lab.core.rewrite import LayerPlan

    flux = LayerPlan("Flux", (("double_blocks", 19), ("single_blocks", 38)))
    assert [v.label for v in plan_variants(DEFAULT_PLANS, flux)][:2] == ["baseline", "skip middle double"]
    info = LayerLabPlanGrid.GET_NODE_INFO_V1()
    assert all(spec[1].get("tooltip") for spec in info["input"]["required"].values())
    assert len(info["output_tooltips"]) == 3 and all(info["output_tooltips"])
    assert info["output_name"] == ["grid", "images", "report"]


def test_tiny_vae_decodes_through_comfyui(vae):
    with torch.inference_mode():
        (image,) = nodes.VAEDecode().decode(vae, {"samples": torch.randn(2, 16, 16, 16)})
    assert image.shape == (2, 128, 128, 3) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0


def test_ksampler_inputs_match_comfyuis_ksampler():
    ours = LayerLabPlanGrid.GET_NODE_INFO_V1()["input"]["required"]
    theirs = nodes.KSampler.INPUT_TYPES()["required"]
    for name in ("seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"):
        kind, options = theirs[name][0], theirs[name][1]
        if isinstance(kind, list):  # a combo: the same choices in the same order
            assert list(ours[name][1].get("options", ours[name][0])) == kind, name
            continue
        assert ours[name][0] == kind, name
        for key in ("default", "min", "max", "step", "round", "control_after_generate"):
            assert ours[name][1].get(key) == options.get(key), (name, key)
