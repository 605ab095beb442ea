"""The similarity probe node on ComfyUI's own models, ModelPatcher and sampler."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import comfy.model_management
from dit_layer_lab.core.probe import ProbeError, similarity
from dit_layer_lab.nodes import probe as probe_node
from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe
from dit_layer_lab.nodes.reorder import LayerLabPlan
from dit_layer_lab.tests.comfy import tiny_models as tm

STEPS, CFG, SEED = 2, 2.0, 7

# family -> (builder, {report key: rows}) for the original order (rows = "in" + one per block)
FAMILIES = {
    "flux": (lambda: tm.tiny_flux(double=3, single=4),
             {"double_blocks/image": 4, "double_blocks/text": 4, "single_blocks": 5}),
    "longcat": (lambda: tm.tiny_longcat(double=2, single=3),
                {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 4}),
    "chroma": (lambda: tm.tiny_chroma(double=2, single=2),
               {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 3}),
    "chroma_radiance": (lambda: tm.tiny_chroma_radiance(double=2, single=2),
                        {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 3}),
    # the last joint block is pre_only: no text output, so the text matrix has one row less
    "sd3": (lambda: tm.tiny_sd3(joint=4), {"double_blocks/image": 5, "double_blocks/text": 4}),
    "auraflow": (lambda: tm.tiny_auraflow(double=2, single=3),
                 {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 4}),
    "qwen_image": (lambda: tm.tiny_qwen_image(blocks=3), {"double_blocks/image": 4, "double_blocks/text": 4}),
    "hunyuan_image21": (lambda: tm.tiny_hunyuan_image21(double=2, single=2),
                        {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 3}),
    "hunyuan_video": (lambda: tm.tiny_hunyuan_video(double=2, single=2),
                      {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 3}),
    "hunyuan_video15": (lambda: tm.tiny_hunyuan_video15(double=3), {"double_blocks/image": 4, "double_blocks/text": 4}),
    "ltxv": (lambda: tm.tiny_ltxv(blocks=3), {"single_blocks": 4}),
    "ltx2": (lambda: tm.tiny_ltx2(blocks=3), {"single_blocks/video": 4, "single_blocks/audio": 4}),
    "cosmos_predict2": (lambda: tm.tiny_cosmos_predict2(blocks=3), {"single_blocks": 4}),
    "anima": (lambda: tm.tiny_anima(blocks=3), {"single_blocks": 4}),
    "kandinsky5": (lambda: tm.tiny_kandinsky5(blocks=3), {"single_blocks": 4}),
    "lumina2": (lambda: tm.tiny_lumina2(blocks=3), {"single_blocks": 4}),
    "z_image": (lambda: tm.tiny_z_image(blocks=3), {"single_blocks": 4}),
    "hidream": (lambda: tm.tiny_hidream(double=2, single=2),
                {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 3}),
    "pixart": (lambda: tm.tiny_pixart(blocks=3), {"single_blocks": 4}),
    "omnigen2": (lambda: tm.tiny_omnigen2(blocks=3), {"single_blocks": 4}),
    "boogu": (lambda: tm.tiny_boogu(double=2, single=2),
              {"double_blocks/image": 3, "double_blocks/text": 3, "single_blocks": 3}),
    "krea2": (lambda: tm.tiny_krea2(blocks=3), {"single_blocks": 4}),
    "ernie_image": (lambda: tm.tiny_ernie_image(blocks=3), {"single_blocks": 4}),
    "ideogram4": (lambda: tm.tiny_ideogram4(blocks=3), {"single_blocks": 4}),
    "wan": (lambda: tm.tiny_wan(blocks=3), {"single_blocks": 4}),
    "wan22_5b": (lambda: tm.tiny_wan22_5b(blocks=3), {"single_blocks": 4}),
}


FAMILY_NAMES = {"flux": "Flux", "flux2": "Flux", "longcat": "Flux", "chroma": "Chroma",
                "chroma_radiance": "Chroma Radiance", "sd3": "SD3", "auraflow": "AuraFlow", "qwen_image": "Qwen-Image",
                "lumina2": "Lumina2", "z_image": "Lumina2", "hunyuan_image21": "HunyuanVideo",
                "hidream": "HiDream", "pixart": "PixArt", "omnigen2": "OmniGen2", "boogu": "Boogu", "krea2": "Krea2",
                "ernie_image": "Ernie-Image", "ideogram4": "Ideogram4",
                "hunyuan_video": "HunyuanVideo", "hunyuan_video15": "HunyuanVideo", "ltxv": "LTXV", "ltx2": "LTX-2",
                "cosmos_predict2": "Cosmos Predict2", "anima": "Anima", "kandinsky5": "Kandinsky 5",
                "wan": "Wan", "wan_i2v": "Wan", "wan22_5b": "Wan"}


def state(parameter, position):
    """A block's input state from its call, by keyword or by position (how each loop passes it, read here)."""
    return lambda args, kwargs: kwargs[parameter] if parameter in kwargs else args[position]


def output(index=None):
    return lambda out: out if index is None else out[index]


FLUX_STATES = {
    "double_blocks": {"double_blocks/image": (state("img", 0), output(0)),
                      "double_blocks/text": (state("txt", 1), output(1))},
    "single_blocks": {"single_blocks": (state("x", 0), output())},
}
# family -> (builder, {attribute: {report key: (input state from the call, output state from the return)}});
# Flux.2 pads its text to 512 tokens of zeros, so only the test with every token covers it
HOOKED = {
    "flux2": (lambda: tm.tiny_flux2(double=2, single=3), FLUX_STATES),
    "flux2_klein": (lambda: tm.tiny_flux2_klein(double=2, single=3), FLUX_STATES),
    "longcat": (lambda: tm.tiny_longcat(double=2, single=3), FLUX_STATES),
    "chroma_radiance": (lambda: tm.tiny_chroma_radiance(double=2, single=2), FLUX_STATES),
    "qwen_image": (lambda: tm.tiny_qwen_image(blocks=3), {"transformer_blocks": {
        "double_blocks/image": (state("hidden_states", 0), output(1)),
        "double_blocks/text": (state("encoder_hidden_states", 1), output(0))}}),
    "hunyuan_image21": (lambda: tm.tiny_hunyuan_image21(double=2, single=3), FLUX_STATES),
    "hunyuan_video": (lambda: tm.tiny_hunyuan_video(double=2, single=3), FLUX_STATES),
    "hunyuan_video15": (lambda: tm.tiny_hunyuan_video15(double=3), {"double_blocks": FLUX_STATES["double_blocks"]}),
    "ltxv": (lambda: tm.tiny_ltxv(blocks=3), {"transformer_blocks": {"single_blocks": (state("x", 0), output())}}),
    "ltx2": (lambda: tm.tiny_ltx2(blocks=3), {"transformer_blocks": {  # one (video, audio) tuple in and out
        "single_blocks/video": (lambda args, kwargs: state("x", 0)(args, kwargs)[0], output(0)),
        "single_blocks/audio": (lambda args, kwargs: state("x", 0)(args, kwargs)[1], output(1))}}),
    # [B, T, H, W, D] states: the reference flattens each whole, as the paper flattens [tokens, channels]
    "cosmos_predict2": (lambda: tm.tiny_cosmos_predict2(blocks=3), {"blocks": {
        "single_blocks": (state("x_B_T_H_W_D", 0), output())}}),
    "anima": (lambda: tm.tiny_anima(blocks=3), {"blocks": {"single_blocks": (state("x_B_T_H_W_D", 0), output())}}),
    "kandinsky5": (lambda: tm.tiny_kandinsky5(blocks=3), {"visual_transformer_blocks": {
        "single_blocks": (state("visual_embed", 0), output())}}),
    "lumina2": (lambda: tm.tiny_lumina2(blocks=3), {"layers": {"single_blocks": (state("x", 0), output())}}),
    "z_image": (lambda: tm.tiny_z_image(blocks=3), {"layers": {"single_blocks": (state("x", 0), output())}}),
    "hidream": (lambda: tm.tiny_hidream(double=2, single=3), {
        "double_stream_blocks": {"double_blocks/image": (state("image_tokens", 0), output(0)),
                                 "double_blocks/text": (state("text_tokens", 2), output(1))},
        "single_stream_blocks": {"single_blocks": (state("image_tokens", 0), output())}}),
    "pixart": (lambda: tm.tiny_pixart(blocks=3), {"blocks": {"single_blocks": (state("x", 0), output())}}),
    "omnigen2": (lambda: tm.tiny_omnigen2(blocks=3),
                 {"layers": {"single_blocks": (state("hidden_states", 0), output())}}),
    "boogu": (lambda: tm.tiny_boogu(double=2, single=2), {
        "double_stream_layers": {"double_blocks/image": (state("img_hidden_states", 0), output(0)),
                                 "double_blocks/text": (state("instruct_hidden_states", 1), output(1))},
        "single_stream_layers": {"single_blocks": (state("hidden_states", 0), output())}}),
    "krea2": (lambda: tm.tiny_krea2(blocks=3), {"blocks": {"single_blocks": (state("x", 0), output())}}),
    "ernie_image": (lambda: tm.tiny_ernie_image(blocks=3), {"layers": {"single_blocks": (state("x", 0), output())}}),
    "ideogram4": (lambda: tm.tiny_ideogram4(blocks=3), {"layers": {"single_blocks": (state("x", 0), output())}}),
    "wan": (lambda: tm.tiny_wan(blocks=3), {"blocks": {"single_blocks": (state("x", 0), output())}}),
    "wan_i2v": (lambda: tm.tiny_wan_i2v(blocks=3), {"blocks": {"single_blocks": (state("x", 0), output())}}),
}


def probe(model, inputs, aggregate="per_step", max_tokens=16, cfg=CFG):
    positive, negative, latent = inputs
    with torch.inference_mode():
        output = LayerLabSimilarityProbe.execute(model, positive, negative, {"samples": latent}, SEED, STEPS, cfg,
                                                 "euler", "simple", 1.0, aggregate, max_tokens)
    image, sampled, report = output.args
    return image, sampled, json.loads(report)


def plain(model, inputs):
    positive, negative, latent = inputs
    return tm.sample(model, positive, negative, latent, seed=SEED, steps=STEPS, cfg=CFG)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, rows = FAMILIES[request.param]
    model = build()
    positive, negative = tm.conditioning(model)
    return request.param, model, rows, (positive, negative, tm.latent(model))


def test_end_to_end_and_the_model_is_unchanged(family):
    name, model, rows, inputs = family
    weights = {k: v.clone() for k, v in model.model.state_dict().items()}
    options = repr(model.model_options)
    dit = model.model.diffusion_model
    lists = {attr: getattr(dit, attr) for attr in ("double_blocks", "single_blocks", "joint_blocks", "double_layers",
                                                     "single_layers", "transformer_blocks", "layers", "double_stream_blocks",
                                                     "single_stream_blocks", "blocks", "double_stream_layers",
                                                     "single_stream_layers", "visual_transformer_blocks") if hasattr(dit, attr)}
    before = plain(model, inputs)

    image, sampled, report = probe(model, inputs)

    assert image.dtype == torch.float32 and image.ndim == 4 and image.shape[0] == 1 and image.shape[3] == 3
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert torch.equal(tm.flat(sampled["samples"]), before)  # probing does not change what is sampled
    assert report["family"] == FAMILY_NAMES[name]
    assert (report["steps"], report["evaluations"], report["aggregate"], report["max_tokens"]) == (
        STEPS, STEPS, "per_step", 16)
    assert {key: len(entry["labels"]) for key, entry in report["streams"].items()} == rows
    for key, entry in report["streams"].items():
        matrix = np.array(entry["matrix"])
        assert matrix.shape == (rows[key], rows[key])
        assert np.allclose(matrix, matrix.T) and np.allclose(np.diag(matrix), 1.0, atol=1e-5)
        assert entry["labels"] == ["in", *map(str, range(rows[key] - 1))]
        covered = [r for g in entry["groups"] for r in range(g["rows"][0], g["rows"][1] + 1)]
        assert covered == list(range(1, rows[key]))
        assert entry["tokens"] == min(16, entry["total_tokens"])

    assert torch.equal(plain(model, inputs), before)
    assert repr(model.model_options) == options
    assert all(getattr(dit, attr) is blocks for attr, blocks in lists.items())
    after = model.model.state_dict()
    assert after.keys() == weights.keys() and all(torch.equal(after[k], weights[k]) for k in weights)


@pytest.mark.parametrize("aggregate", ["per_step", "step_mean"])
def test_states_kept_on_the_intermediate_device_give_the_exact_matrices(family, aggregate, monkeypatch):
    """The node's way (states on ComfyUI's intermediate device in their own dtype, products in slices: a few
    hundred bytes here, so that there are many) against the exact way (float32 on the model's device, one
    product), with CFG (the conditional half of each batch) and without."""
    name, model, rows, inputs = family
    monkeypatch.setattr(similarity, "CHUNK_BYTES", 512)
    for cfg in (CFG, 1.0):
        _, _, kept = probe(model, inputs, aggregate, cfg=cfg)
        with monkeypatch.context() as exact:
            exact.setattr(probe_node, "keep_states", lambda: similarity.EXACT)
            _, _, reference = probe(model, inputs, aggregate, cfg=cfg)
        assert kept["held_on"] == str(comfy.model_management.intermediate_device())
        assert reference["held_on"] == "model device"
        assert kept["streams"].keys() == reference["streams"].keys() == rows.keys()
        for key, entry in kept["streams"].items():
            difference = np.abs(np.array(entry["matrix"]) - np.array(reference["streams"][key]["matrix"])).max()
            assert difference <= 1e-3, (key, cfg, difference)


class Recording:
    """Records every Flux block's input and output through ComfyUI's own block-replace patches."""

    def __init__(self, model):
        self.states = {"double_blocks/image": [], "double_blocks/text": [], "single_blocks": []}
        self.model = model.clone()
        dit = model.model.diffusion_model
        for kind, count in (("double_block", len(dit.double_blocks)), ("single_block", len(dit.single_blocks))):
            for i in range(count):
                self.model.set_model_patch_replace(self.patch(kind, i), "dit", kind, i)

    def keep(self, key, tensor, options):
        chunks = options["cond_or_uncond"]
        size = tensor.shape[0] // len(chunks)
        rows = [k * size + r for k, c in enumerate(chunks) if c == 0 for r in range(size)]
        self.states[key].append(tensor[rows].float().clone())

    def patch(self, kind, i):
        def replace(args, extra):
            options = args["transformer_options"]
            if kind == "double_block":
                if i == 0:
                    self.keep("double_blocks/image", args["img"], options)
                    self.keep("double_blocks/text", args["txt"], options)
                out = extra["original_block"](args)
                self.keep("double_blocks/image", out["img"], options)
                self.keep("double_blocks/text", out["txt"], options)
            else:
                if i == 0:
                    self.keep("single_blocks", args["img"], options)
                out = extra["original_block"](args)
                self.keep("single_blocks", out["img"], options)
            return out
        return replace


def cosine(rows):
    flat = [r.reshape(r.shape[0], -1).double() for r in rows]
    return np.array([[F.cosine_similarity(a, b, dim=1).mean().item() for b in flat] for a in flat])


@pytest.mark.parametrize("aggregate", ["per_step", "step_mean"])
def test_flux_matrices_equal_states_recorded_with_comfyui_patches(aggregate):
    model = tm.tiny_flux(double=3, single=4)
    positive, negative = tm.conditioning(model)
    inputs = (positive, negative, tm.latent(model))
    recording = Recording(model)
    plain(recording.model, inputs)
    _, _, report = probe(model, inputs, aggregate, max_tokens=0)
    for key, states in recording.states.items():
        rows = len(report["streams"][key]["labels"])
        per_step = [states[s * rows:(s + 1) * rows] for s in range(STEPS)]
        if aggregate == "per_step":
            expected = sum(cosine(rows) for rows in per_step) / STEPS
        else:
            expected = cosine([torch.stack(column).mean(0) for column in zip(*per_step)])
        assert np.allclose(report["streams"][key]["matrix"], expected, atol=1e-5), key


@pytest.mark.parametrize("name", list(HOOKED))
def test_matrices_equal_states_recorded_with_forward_hooks(name):
    """With cfg 1 every row is conditional; each block's input (first block) and outputs, as the
    model's own loop passes them, recorded by torch hooks on the original blocks."""
    build, layout = HOOKED[name]
    model = build()
    inputs = (*tm.conditioning(model), tm.latent(model))
    dit = model.model.diffusion_model
    states, handles = {}, []
    for attribute, keys in layout.items():
        for i, block in enumerate(getattr(dit, attribute)):
            def before(module, args, kwargs, keys=keys, first=i == 0):
                for key, (take, _) in keys.items():
                    if first:
                        states.setdefault(key, []).append(take(args, kwargs).float().clone())

            def after(module, args, kwargs, out, keys=keys):
                for key, (_, give) in keys.items():
                    states[key].append(give(out).float().clone())
            handles += [block.register_forward_pre_hook(before, with_kwargs=True),
                        block.register_forward_hook(after, with_kwargs=True)]
    try:
        tm.sample(model, *inputs, seed=SEED, steps=STEPS, cfg=1.0)
    finally:
        for handle in handles:
            handle.remove()
    _, _, report = probe(model, inputs, max_tokens=0, cfg=1.0)
    assert sorted(report["streams"]) == sorted(states)
    for key, recorded in states.items():
        rows = len(report["streams"][key]["labels"])
        assert len(recorded) == rows * STEPS
        expected = sum(cosine(recorded[s * rows:(s + 1) * rows]) for s in range(STEPS)) / STEPS
        assert np.allclose(report["streams"][key]["matrix"], expected, atol=1e-5), key


@pytest.mark.parametrize("build", [tm.tiny_flux, tm.tiny_chroma], ids=["flux", "chroma"])
def test_a_planned_model_is_probed_in_its_execution_order(build):
    model = build(double=3, single=4)
    planned = LayerLabPlan.execute(model, "2, 0-1, 1", "[0-1], 3", 0.0, 1.0).args[0]
    positive, negative = tm.conditioning(model)
    image, sampled, report = probe(planned, (positive, negative, tm.latent(model)))
    streams = report["streams"]
    assert streams["double_blocks/image"]["labels"] == ["in", "2", "0", "1", "1#2"]
    assert streams["double_blocks/text"]["labels"] == ["in", "2", "0", "1", "1#2"]
    assert streams["single_blocks"]["labels"] == ["in", "[0-1]", "3"]
    groups = streams["double_blocks/image"]["groups"]
    assert [i for g in groups for i in range(g["rows"][0], g["rows"][1] + 1)] == [1, 2, 3, 4]
    assert "double_blocks = 2, 0, 1*2" in report["order"]
    assert torch.equal(sampled["samples"], plain(planned, (positive, negative, tm.latent(model))))


def test_bad_inputs_fail_before_sampling_and_name_the_choices():
    model = tm.tiny_flux(double=2, single=2)
    positive, negative = tm.conditioning(model)
    inputs = (positive, negative, tm.latent(model))
    with pytest.raises(ProbeError, match="choose one of per_step, step_mean"):
        probe(model, inputs, aggregate="average")
    windowed = LayerLabPlan.execute(model, "1, 0", "all", 0.0, 0.5).args[0]
    with pytest.raises(ProbeError, match="changes the block order during sampling"):
        probe(windowed, inputs)


def test_an_interrupt_stops_the_probe_in_the_middle_and_leaves_the_model_clean(progress):
    model = tm.tiny_flux(double=2, single=2)
    positive, negative = tm.conditioning(model)
    inputs = (positive, negative, tm.latent(model))
    before = plain(model, inputs)
    dit = model.model.diffusion_model
    lists = dit.double_blocks, dit.single_blocks
    progress.clear()
    progress.interrupt_from = 1  # after the first step
    progress.count_model_calls(model)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        probe(model, inputs)
    assert progress.interrupted_at == 1 and max(v for v, _ in progress.asked) == 1
    assert progress.model_calls_after_interrupt == 0
    progress.remove_hooks()
    comfy.model_management.interrupt_current_processing(False)
    assert (dit.double_blocks, dit.single_blocks) == lists
    assert torch.equal(plain(model, inputs), before)


def test_schema_takes_ksampler_inputs_and_gives_image_latent_report():
    info = LayerLabSimilarityProbe.GET_NODE_INFO_V1()
    assert (info["display_name"], info["category"]) == ("Layer Lab Similarity Probe", "layer_lab")
    assert list(info["input"]["required"]) == ["model", "positive", "negative", "latent_image", "seed", "steps", "cfg",
                                               "sampler_name", "scheduler", "denoise", "aggregate", "max_tokens"]
    aggregate = info["input"]["required"]["aggregate"]
    assert aggregate[1].get("options", aggregate[0]) == ["per_step", "step_mean"]
    assert info["output"] == ["IMAGE", "LATENT", "STRING"]


def test_a_video_models_image_tokens_cover_every_frame():
    model = tm.tiny_hunyuan_video(double=2, single=2)
    latent = tm.latent(model, h=8, w=12, frames=3)
    assert latent.ndim == 5
    _, sampled, report = probe(model, (*tm.conditioning(model), latent), max_tokens=0)
    assert sampled["samples"].shape == latent.shape
    assert report["streams"]["double_blocks/image"]["total_tokens"] == 3 * (8 // 2) * (12 // 2)
    assert report["streams"]["single_blocks"]["total_tokens"] == 3 * (8 // 2) * (12 // 2) + 8  # + text tokens
