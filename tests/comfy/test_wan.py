"""Wan (``WanModel``): what its loop hands out by position follows the block, its variants are refused by name,
and the tiny models are configured as ComfyUI's detection reads a Wan checkpoint."""

import inspect
import json
import re

import pytest
import torch
from torch import nn

import comfy.ldm.wan.model
import comfy.model_detection
import comfy.supported_models
from dit_layer_lab.core.families.wan import UNI3C_PATCH, WAN_VARIANTS
from dit_layer_lab.core.plan import PlanError, parse_steps
from dit_layer_lab.nodes.reorder import LayerLabPlan
from dit_layer_lab.tests.comfy import tiny_models as tm
from dit_layer_lab.tests.comfy.test_reorder import reference_model, twin

PLAN = "3, 1-0, 0"  # over 4 blocks: every block moves, block 0 runs twice


def inputs_of(model):
    return (*tm.conditioning(model), tm.latent(model))


def run(model, inputs):
    return tm.sample(model, *inputs)


def planned(model, text=PLAN):
    return LayerLabPlan.execute(model, "all", text, 0.0, 1.0).args[0]


def replace_patch(i):
    """A ``("double_block", i)`` replace patch (as Skip Layer Guidance): runs the block, then scales by its key."""
    def replace(args, extra):
        out = extra["original_block"](args)
        return {**out, "img": out["img"] * (1.0 + 0.1 * (i + 1))}
    return replace


def test_a_replace_patch_follows_its_block():
    model = twin("wan")
    inputs = inputs_of(model)
    given = model.clone()
    given.set_model_patch_replace(replace_patch(1), "dit", "double_block", 1)
    steps = parse_steps(PLAN, 4)
    reference = reference_model("wan", {"single_blocks": steps}).clone()
    for position, step in enumerate(steps):
        if step == (1,):
            reference.set_model_patch_replace(replace_patch(1), "dit", "double_block", position)
    got = run(planned(given), inputs)
    assert torch.equal(got, run(reference, inputs))
    assert not torch.equal(got, run(planned(model), inputs)), "the patch changed nothing: a weak test"


def audio_by_block_index(args):
    """A cross-attention patch that, as MultiTalk's, picks its layer by ``transformer_options["block_index"]``."""
    x = args["x"]
    return x + 0.05 * (args["transformer_options"]["block_index"] + 1) * torch.cos(2 * x)


@pytest.mark.skipif("attn2_patch" not in inspect.getsource(comfy.ldm.wan.model.WanAttentionBlock.forward),
                    reason="this ComfyUI's Wan blocks take no cross-attention patches")
def test_a_patch_that_reads_block_index_gets_its_blocks_own():
    model = twin("wan")
    inputs = inputs_of(model)
    given = model.clone()
    given.set_model_attn2_patch(audio_by_block_index)
    reference = reference_model("wan", {"single_blocks": parse_steps(PLAN, 4)}).clone()
    reference.set_model_attn2_patch(audio_by_block_index)
    got = run(planned(given), inputs)
    assert torch.equal(got, run(reference, inputs))
    assert not torch.equal(got, run(planned(model), inputs)), "the patch changed nothing: a weak test"


def test_uni3c_is_refused_with_a_changed_order_and_runs_with_the_models_own():
    model = twin("wan")
    inputs = inputs_of(model)
    uni3c = type(UNI3C_PATCH, (), {"__call__": lambda self, kwargs: kwargs})()
    given = model.clone()
    given.set_model_double_block_patch(uni3c)
    assert torch.equal(run(planned(given, "0-3"), inputs), run(given, inputs))
    with pytest.raises(PlanError, match="Uni3C ControlNet runs its control layers one after another"):
        run(planned(given, "0, 2-3"), inputs)


@pytest.mark.parametrize("qualified", sorted(WAN_VARIANTS))
def test_each_wan_variant_is_refused_by_name_with_its_reason(qualified):
    import importlib

    module_name, class_name = qualified.rsplit(".", 1)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        pytest.skip(f"this ComfyUI has no {qualified}")
    model = tm.tiny_wan(blocks=2)
    variant = cls.__new__(cls)
    nn.Module.__init__(variant)
    other = model.clone()
    other.add_object_patch("diffusion_model", variant)
    name, why = WAN_VARIANTS[qualified]
    with pytest.raises(PlanError, match="^" + re.escape(f"{name} ({qualified}) is not supported: {why} (supported: ")):
        LayerLabPlan.execute(other, "all", "all", 0.0, 1.0)


def test_a_lora_patch_stays_on_its_block_and_weights_restore_after_unload():
    import comfy.model_management

    model = twin("wan")
    inputs = inputs_of(model)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    key = "diffusion_model.blocks.1.self_attn.q.weight"
    delta = torch.randn(before[key].shape, generator=torch.Generator().manual_seed(3)) * 0.2
    lora = model.clone()
    lora.add_patches({key: (delta,)}, 1.0)
    got = run(planned(lora), inputs)

    steps = parse_steps(PLAN, 4)
    reference = reference_model("wan", {"single_blocks": steps})
    with torch.inference_mode():  # position 1 runs block 1
        reference.model.diffusion_model.blocks[1].block.self_attn.q.weight += delta
    assert torch.equal(got, run(reference, inputs))

    comfy.model_management.unload_all_models()
    after = model.model.state_dict()
    assert [k for k in before if not torch.equal(after[k], before[k])] == []
    assert list(after) == list(before)


# kind -> the config class ComfyUI picks for a checkpoint of that shape
DETECTED = {"t2v": "WAN21_T2V", "i2v": "WAN21_I2V", "ti2v_5b": "WAN22_T2V"}


@pytest.mark.parametrize("kind", list(DETECTED))
def test_the_tiny_config_is_what_comfyui_detects_from_its_weights(kind):
    model = tm.tiny_wan(blocks=3, kind=kind)
    state_dict = model.model.diffusion_model.state_dict()
    detected = comfy.model_detection.detect_unet_config(state_dict, "")
    assert detected == tm.wan_config(3, kind)
    config = comfy.model_detection.model_config_from_unet(state_dict, "")
    assert type(config).__name__ == DETECTED[kind]
    assert type(model.model.model_config).__name__ == DETECTED[kind]
    assert type(model.model.diffusion_model).__qualname__ == "WanModel"


# ------------------------------------------------------------------ the probe over video frames


def probe_report(model, frames, max_tokens, size=8):
    from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe

    positive, negative = tm.conditioning(model)
    latent = tm.latent(model, size, size, frames=frames)
    with torch.inference_mode():
        out = LayerLabSimilarityProbe.execute(model, positive, negative, {"samples": latent}, 3, 2, 2.0, "euler",
                                              "simple", 1.0, "per_step", max_tokens)
    return json.loads(out.args[2])


def test_the_probe_reports_the_frames_and_holds_one_steps_states_at_max_tokens_whatever_the_clip_length():
    model = tm.tiny_wan(blocks=3)
    short, long = probe_report(model, 1, 16), probe_report(model, 16, 16)
    assert (short["frames"], long["frames"]) == (1, 16)
    tokens_per_frame = (8 // 2) * (8 // 2)
    for report, frames in ((short, 1), (long, 16)):
        entry = report["streams"]["single_blocks"]
        assert (entry["tokens"], entry["total_tokens"]) == (16, frames * tokens_per_frame)
    rows, samples, channels = 4, 1, tm.WAN_DIM  # "in" + 3 blocks, the conditional row, float32
    assert short["held_bytes"] == long["held_bytes"] == rows * samples * 16 * channels * 4
    every = probe_report(model, 16, 0)
    assert every["held_bytes"] == 16 * long["held_bytes"]  # every token of 16 frames: 16 times as many
