"""Strengths, sub-layer parts and one-stream steps on ComfyUI's own models, against references built here.

The references never use the pack's executor: the strength and one-stream ones wrap a block of a twin
model in a test-local module that applies ``in + s * (block(in) - in)`` to the states this file names
for each family; the sub-layer ones scale the weights of the layers this file names as each block's
attention and MLP outputs (zero drops the part), in the twin.
"""

import pytest
import torch
from torch import nn

from dit_layer_lab.core.plan import PlanError
from dit_layer_lab.nodes.reorder import LayerLabPlan
from dit_layer_lab.tests.comfy import tiny_models as tm
from dit_layer_lab.tests.comfy.test_reorder import FAMILIES, run, twin

FLUX_STATES = {"double_blocks": (("img", "image"), ("txt", "text")), "single_blocks": (("x", "both"),)}
# family -> stream -> the block's state parameters in call order (name, which stream), and the return order
STATES = {
    **{name: (FLUX_STATES, {"double_blocks": ("img", "txt"), "single_blocks": ("x",)})
       for name in ("flux", "flux2", "flux2_klein", "longcat", "chroma", "chroma_radiance", "hunyuan_image21",
                     "hunyuan_video", "hunyuan_video15")},
    "sd3": ({"double_blocks": (("context", "text"), ("x", "image"))}, {"double_blocks": ("context", "x")}),
    "auraflow": ({"double_blocks": (("c", "text"), ("x", "image")), "single_blocks": (("cx", "both"),)},
                 {"double_blocks": ("c", "x"), "single_blocks": ("cx",)}),
    "qwen_image": ({"double_blocks": (("hidden_states", "image"), ("encoder_hidden_states", "text"))},
                   {"double_blocks": ("encoder_hidden_states", "hidden_states")}),
    "lumina2": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),
    "z_image": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),
    "hidream": ({"double_blocks": (("image_tokens", "image"), ("text_tokens", "text")),
                 "single_blocks": (("image_tokens", "both"),)},
                {"double_blocks": ("image_tokens", "text_tokens"), "single_blocks": ("image_tokens",)}),
    "pixart": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),
    "omnigen2": ({"single_blocks": (("hidden_states", "both"),)}, {"single_blocks": ("hidden_states",)}),
    "boogu": ({"double_blocks": (("img_hidden_states", "image"), ("instruct_hidden_states", "text")),
               "single_blocks": (("hidden_states", "both"),)},
              {"double_blocks": ("img_hidden_states", "instruct_hidden_states"), "single_blocks": ("hidden_states",)}),
    "krea2": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),
    "ernie_image": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),
    "ideogram4": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),
    "ltxv": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),
    **{name: ({"single_blocks": (("x_B_T_H_W_D", "both"),)}, {"single_blocks": ("x_B_T_H_W_D",)})
       for name in ("cosmos_predict2", "anima")},
    "kandinsky5": ({"single_blocks": (("visual_embed", "both"),)}, {"single_blocks": ("visual_embed",)}),
    **{name: ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}) for name in ("wan", "wan_i2v", "wan22_5b")},
    "ltx2": ({"single_blocks": (("x", "both"),)}, {"single_blocks": ("x",)}),  # x is (video, audio)
}
# the tiny HiDream's image MLP: a shared expert and 4 routed ones, their outputs weighted and summed
HIDREAM_MOE = ("block.ff_i.shared_experts.w2", *(f"block.ff_i.experts.{i}.w2" for i in range(4)))
FLUX_LAYERS = {"double_blocks": {"attn": ("img_attn.proj", "txt_attn.proj"), "mlp": ("img_mlp.2", "txt_mlp.2")}}
# family -> stream -> part -> the linear layers whose outputs are that part's contribution (before its gate)
LAYERS = {
    **{name: FLUX_LAYERS for name in ("flux", "flux2", "flux2_klein", "longcat", "chroma", "chroma_radiance",
                                      "hunyuan_image21", "hunyuan_video", "hunyuan_video15")},
    "sd3": {"double_blocks": {"attn": ("context_block.attn.proj", "x_block.attn.proj"),
                              "mlp": ("context_block.mlp.fc2", "x_block.mlp.fc2")}},
    "qwen_image": {"double_blocks": {"attn": ("attn.to_out.0", "attn.to_add_out"),
                                     "mlp": ("img_mlp.net.2", "txt_mlp.net.2")}},
    "lumina2": {"single_blocks": {"attn": ("attention_norm2",), "mlp": ("ffn_norm2",)}},
    "z_image": {"single_blocks": {"attn": ("attention_norm2",), "mlp": ("ffn_norm2",)}},
    "hidream": {"double_blocks": {"attn": ("block.attn1.to_out", "block.attn1.to_out_t"),
                                  "mlp": (*HIDREAM_MOE, "block.ff_t.w2")},
                "single_blocks": {"attn": ("block.attn1.to_out",), "mlp": HIDREAM_MOE}},
    "pixart": {"single_blocks": {"attn": ("attn.proj", "cross_attn.proj"), "mlp": ("mlp.fc2",)}},
    # the norms after attention and MLP (RMSNorm: scaling its weight scales its output)
    "omnigen2": {"single_blocks": {"attn": ("norm2",), "mlp": ("ffn_norm2",)}},
    "boogu": {"double_blocks": {"attn": ("img_attn_norm", "instruct_attn_norm", "img_self_attn_norm"),
                                "mlp": ("img_ffn_norm2", "instruct_ffn_norm2")},
              "single_blocks": {"attn": ("norm2",), "mlp": ("ffn_norm2",)}},
    "krea2": {"single_blocks": {"attn": ("attn.wo",), "mlp": ("mlp.down",)}},
    "ernie_image": {"single_blocks": {"attn": ("self_attention.to_out.0",), "mlp": ("mlp.linear_fc2",)}},
    "ideogram4": {"single_blocks": {"attn": ("attention_norm2",), "mlp": ("ffn_norm2",)}},
    "ltxv": {"single_blocks": {"attn": ("attn1.to_out.0", "attn2.to_out.0"), "mlp": ("ff.net.2",)}},
    **{name: {"single_blocks": {"attn": ("self_attn.output_proj", "cross_attn.output_proj"), "mlp": ("mlp.layer2",)}}
       for name in ("cosmos_predict2", "anima")},
    "kandinsky5": {"single_blocks": {"attn": ("self_attention.out_layer", "cross_attention.out_layer"),
                                     "mlp": ("feed_forward.out_layer",)}},
    **{name: {"single_blocks": {"attn": ("self_attn.o", "cross_attn.o"), "mlp": ("ffn.2",)}}
       for name in ("wan", "wan_i2v", "wan22_5b")},
    "ltx2": {"single_blocks": {
        "attn": tuple(f"{a}.to_out.0" for a in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn",
                                                "video_to_audio_attn")),
        "mlp": ("ff.net.2", "audio_ff.net.2")}},
}
# what the pack refuses, and a fragment of why
REFUSED = {
    "flux": ("single_blocks", "Flux single_blocks cannot do: a single-stream block concatenates"),
    "chroma": ("single_blocks", "Chroma single_blocks cannot do"),
    "hunyuan_image21": ("single_blocks", "HunyuanVideo single_blocks cannot do"),
    "hunyuan_video": ("single_blocks", "HunyuanVideo single_blocks cannot do"),
    "auraflow": ("double_blocks", "AuraFlow double_blocks \\(double_layers\\) cannot do: its blocks add only the MLP"),
}
BLOCK = 1  # the block every test modifies (never SD3's last)


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    if request.param not in STATES:  # a family added to test_reorder's matrix without its rows here
        pytest.skip(f"{request.param}: no state and sub-layer rows in test_modified.py (STATES, LAYERS, REFUSED) yet")
    build, streams = FAMILIES[request.param]
    model = build()
    inputs = (*tm.conditioning(model), tm.latent(model))
    BASELINES[request.param] = run(model, inputs)
    return request.param, model, streams, inputs


BASELINES = {}


class KeepUpdate(nn.Module):
    """``block`` keeping ``keep[stream]`` of its update to each state ("image", "text" or "both")."""

    def __init__(self, block, takes, returns, keep):
        super().__init__()
        self.block, self.takes, self.returns, self.keep = block, takes, returns, keep

    def forward(self, *args, **kwargs):
        before = {}
        for j, (name, which) in enumerate(self.takes):
            value = kwargs[name] if name in kwargs else args[j]
            before[name] = (_each(torch.clone, value), self.keep[which])
        out = self.block(*args, **kwargs)
        # one state may itself be a tuple (LTX-2's (video, audio)): then the block returns that tuple
        outs = dict(zip(self.returns, out)) if len(self.returns) > 1 else {self.returns[0]: out}
        for name, (old, s) in before.items():
            if outs[name] is not None and s != 1.0:  # all of the update is the block's own output
                outs[name] = old if s == 0.0 else _each(lambda o, n: o + s * (n - o), old, outs[name])
        values = tuple(outs[name] for name in self.returns)
        return values if len(values) > 1 else values[0]


def _each(fn, *values):
    """``fn`` on tensors, or on each member of tuples of tensors."""
    if isinstance(values[0], tuple):
        return tuple(fn(*members) for members in zip(*values))
    return fn(*values)


def reference_keep(name, stream, keep):
    model, streams = twin(name), FAMILIES[name][1]
    blocks = getattr(model.model.diffusion_model, streams[stream])
    takes, returns = STATES[name][0][stream], STATES[name][1][stream]
    blocks[BLOCK] = KeepUpdate(blocks[BLOCK], takes, returns, keep)
    return model


def reference_scaled_layers(name, stream, part, strength):
    model, streams = twin(name), FAMILIES[name][1]
    block = getattr(model.model.diffusion_model, streams[stream])[BLOCK]
    with torch.inference_mode():
        for path in LAYERS[name][stream][part]:
            layer = block.get_submodule(path)
            layer.weight.mul_(strength)
            if layer.bias is not None:
                layer.bias.mul_(strength)
    return model


def plan(model, stream, text):
    texts = {"double_blocks": "all", "single_blocks": "all", stream: text}
    return LayerLabPlan.execute(model, texts["double_blocks"], texts["single_blocks"], 0.0, 1.0).args


def streams_of(streams):
    return [s for s in ("double_blocks", "single_blocks") if s in streams]


def test_strength_one_is_bit_identical_and_zero_equals_skipping(family):
    name, model, streams, inputs = family
    for stream in streams_of(streams):
        n = len(getattr(model.model.diffusion_model, streams[stream]))
        others = [str(i) for i in range(n) if i != BLOCK]
        one, summary = plan(model, stream, ", ".join(f"{i}@1" if i == BLOCK else str(i) for i in range(n)))
        assert f"{stream} = all" in summary
        assert torch.equal(run(one, inputs), BASELINES[name])
        zero, summary = plan(model, stream, ", ".join(f"{i}@0" if i == BLOCK else str(i) for i in range(n)))
        skip, skip_summary = plan(model, stream, ", ".join(others))
        assert summary == skip_summary and "@" not in summary
        with tm.BlockCalls(model) as seen:
            skipped = run(zero, inputs)
        assert seen.calls[streams[stream], BLOCK] == 0 and seen.calls[streams[stream], 0] > 0  # never ran
        assert torch.equal(skipped, run(skip, inputs))


@pytest.mark.parametrize("strength", [1.5])
def test_strength_equals_reference(family, strength):
    name, model, streams, inputs = family
    for stream in streams_of(streams):
        n = len(getattr(model.model.diffusion_model, streams[stream]))
        text = ", ".join(f"{i}@{strength}" if i == BLOCK else str(i) for i in range(n))
        patched, summary = plan(model, stream, text)
        assert f"{BLOCK}@{strength}" in summary
        keep = {"image": strength, "text": strength, "both": strength}
        expected = run(reference_keep(name, stream, keep), inputs)
        got = run(patched, inputs)
        assert not torch.equal(got, BASELINES[name])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("part, strength", [("img", 1.0), ("txt", 0.5)])
def test_one_stream_equals_reference(family, part, strength):
    name, model, streams, inputs = family
    if "double_blocks" not in streams:
        pytest.skip("no double blocks")
    n = len(getattr(model.model.diffusion_model, streams["double_blocks"]))
    suffix = f":{part}" + ("" if strength == 1.0 else f"@{strength}")
    text = ", ".join(f"{i}{suffix}" if i == BLOCK else str(i) for i in range(n))
    patched, summary = plan(model, "double_blocks", text)
    assert f"{BLOCK}{suffix}" in summary
    mine = "image" if part == "img" else "text"
    keep = {"image": 0.0, "text": 0.0, mine: strength}
    expected = run(reference_keep(name, "double_blocks", keep), inputs)
    got = run(patched, inputs)
    assert not torch.equal(got, BASELINES[name])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("part, strength", [("attn", 0.0), ("mlp", 0.0), ("attn", 0.5)])
def test_sublayer_equals_reference_with_scaled_weights(family, part, strength):
    name, model, streams, inputs = family
    if name not in LAYERS:
        pytest.skip(f"{name} refuses sub-layer parts (test_sublayers_are_refused_where_blocks_lack_them)")
    for stream in LAYERS[name]:
        n = len(getattr(model.model.diffusion_model, streams[stream]))
        suffix = f":{part}" + ("" if strength == 0.0 else f"@{strength}")
        text = ", ".join(f"{i}{suffix}" if i == BLOCK else str(i) for i in range(n))
        patched, summary = plan(model, stream, text)
        assert f"{BLOCK}{suffix}" in summary
        expected = run(reference_scaled_layers(name, stream, part, strength), inputs)
        got = run(patched, inputs)
        assert not torch.equal(got, BASELINES[name])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_sublayers_are_refused_where_blocks_lack_them(family):
    name, model, streams, _ = family
    refused = REFUSED.get(name.split("_")[0] if name.startswith("chroma") else name)
    if name in ("flux2", "flux2_klein", "longcat", "chroma_radiance"):
        refused = ("single_blocks", "single_blocks cannot do: a single-stream block concatenates")
    if refused is None:
        pytest.skip(f"{name} takes ':attn' and ':mlp' on every stream it has")
    stream, fragment = refused
    with pytest.raises(PlanError, match=fragment):
        plan(model, stream, f"{BLOCK}:attn")
    if "single_blocks" in streams and stream == "single_blocks":
        with pytest.raises(PlanError, match="keeps one stream of a double block"):
            plan(model, "single_blocks", f"{BLOCK}:img")


def test_weights_unchanged_and_no_hooks_left(family):
    name, model, streams, inputs = family
    state = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
    stream = next(iter(LAYERS.get(name, {})), streams_of(streams)[0])
    part = ":attn" if name in LAYERS else "@0.5"
    patched, _ = plan(model, stream, f"{BLOCK}{part}, {BLOCK}@0.25")
    run(patched, inputs)
    dit = model.model.diffusion_model
    assert all(torch.equal(v, state[k]) for k, v in dit.state_dict().items())
    assert not any(m._forward_hooks for m in dit.modules())


def test_sd3_last_joint_block_at_a_strength_equals_reference():
    model = twin("sd3")
    inputs = (*tm.conditioning(model), tm.latent(model))
    n = len(model.model.diffusion_model.joint_blocks)
    patched, summary = plan(model, "double_blocks", f"0-{n - 2}, {n - 1}@0.5")
    reference = twin("sd3")
    blocks = reference.model.diffusion_model.joint_blocks
    blocks[n - 1] = KeepUpdate(blocks[n - 1], STATES["sd3"][0]["double_blocks"], STATES["sd3"][1]["double_blocks"],
                               {"image": 0.5, "text": 0.5})
    torch.testing.assert_close(run(patched, inputs), run(reference, inputs), rtol=1e-5, atol=1e-6)
