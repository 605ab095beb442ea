"""The reorder nodes on ComfyUI's own models, ModelPatcher and sampler.

Each planned run is compared with a reference built here without the pack's executor: a twin of
the model (built again from the same seed) whose block lists are physically rebuilt in the planned
order (parallel steps by a test-local averaging module), sampled the same way.
"""

import copy
import inspect

import pytest
import torch
from torch import nn

import comfy.model_management
from dit_layer_lab.core.plan import PlanError, parse_steps
from dit_layer_lab.nodes.reorder import (LayerLabParallel, LayerLabPlan, LayerLabRepeat, LayerLabReverse,
                                         LayerLabShuffle, LayerLabSkip)
from dit_layer_lab.core.rewrite import shuffle_steps
from dit_layer_lab.tests.comfy import tiny_models as tm

# family -> (builder, attribute of each stream)
FLUX_LISTS = {"double_blocks": "double_blocks", "single_blocks": "single_blocks"}
HIDREAM_LISTS = {"double_blocks": "double_stream_blocks", "single_blocks": "single_stream_blocks"}
FAMILIES = {
    "flux": (lambda: tm.tiny_flux(double=3, single=4), FLUX_LISTS),
    "flux2": (lambda: tm.tiny_flux2(double=3, single=4), FLUX_LISTS),
    "flux2_klein": (lambda: tm.tiny_flux2_klein(double=3, single=4), FLUX_LISTS),
    "longcat": (lambda: tm.tiny_longcat(double=3, single=4), FLUX_LISTS),
    "chroma": (lambda: tm.tiny_chroma(double=3, single=4), FLUX_LISTS),
    "chroma_radiance": (lambda: tm.tiny_chroma_radiance(double=3, single=4), FLUX_LISTS),
    "sd3": (lambda: tm.tiny_sd3(joint=5), {"double_blocks": "joint_blocks"}),
    "auraflow": (lambda: tm.tiny_auraflow(double=3, single=4), {"double_blocks": "double_layers", "single_blocks": "single_layers"}),
    "qwen_image": (lambda: tm.tiny_qwen_image(blocks=4), {"double_blocks": "transformer_blocks"}),
    "lumina2": (lambda: tm.tiny_lumina2(blocks=4), {"single_blocks": "layers"}),
    "z_image": (lambda: tm.tiny_z_image(blocks=4), {"single_blocks": "layers"}),
    "hunyuan_image21": (lambda: tm.tiny_hunyuan_image21(double=3, single=4), FLUX_LISTS),
    "hidream": (lambda: tm.tiny_hidream(double=3, single=4), HIDREAM_LISTS),
    "pixart": (lambda: tm.tiny_pixart(blocks=4), {"single_blocks": "blocks"}),
    "omnigen2": (lambda: tm.tiny_omnigen2(blocks=4), {"single_blocks": "layers"}),
    "boogu": (lambda: tm.tiny_boogu(double=3, single=4),
              {"double_blocks": "double_stream_layers", "single_blocks": "single_stream_layers"}),
    "krea2": (lambda: tm.tiny_krea2(blocks=4), {"single_blocks": "blocks"}),
    "ernie_image": (lambda: tm.tiny_ernie_image(blocks=4), {"single_blocks": "layers"}),
    "ideogram4": (lambda: tm.tiny_ideogram4(blocks=4), {"single_blocks": "layers"}),
    "hunyuan_video": (lambda: tm.tiny_hunyuan_video(double=3, single=4), FLUX_LISTS),
    "hunyuan_video15": (lambda: tm.tiny_hunyuan_video15(double=4), {"double_blocks": "double_blocks"}),
    "ltxv": (lambda: tm.tiny_ltxv(blocks=4), {"single_blocks": "transformer_blocks"}),
    "ltx2": (lambda: tm.tiny_ltx2(blocks=4), {"single_blocks": "transformer_blocks"}),
    "cosmos_predict2": (lambda: tm.tiny_cosmos_predict2(blocks=4), {"single_blocks": "blocks"}),
    "anima": (lambda: tm.tiny_anima(blocks=4), {"single_blocks": "blocks"}),
    "kandinsky5": (lambda: tm.tiny_kandinsky5(blocks=4), {"single_blocks": "visual_transformer_blocks"}),
    "wan": (lambda: tm.tiny_wan(blocks=4), {"single_blocks": "blocks"}),
    "wan_i2v": (lambda: tm.tiny_wan_i2v(blocks=4), {"single_blocks": "blocks"}),
    "wan22_5b": (lambda: tm.tiny_wan22_5b(blocks=4), {"single_blocks": "blocks"}),
}

# (node, stream, first, last, extra inputs, what replaces first..last, exact?)
STRATEGIES = {
    "skip": (LayerLabSkip, "double_blocks", 1, 2, {}, (), True),
    "repeat": (LayerLabRepeat, "double_blocks", 0, 2, {"layer": -1, "count": -1}, ((1,),) * 3, True),
    "reverse": (LayerLabReverse, "double_blocks", 0, 2, {}, ((2,), (1,), (0,)), True),
    "parallel": (LayerLabParallel, "double_blocks", 0, 2, {"loops": 1}, ((0, 1, 2),), False),
    "looped parallel": (LayerLabParallel, "single_blocks", 1, 3, {"loops": 3}, ((1, 2, 3),) * 3, False),
    "shuffle": (LayerLabShuffle, "single_blocks", 0, 3, {"seed": 5}, shuffle_steps(0, 3, seed=5), True),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    build, streams = FAMILIES[request.param]
    model = build()
    positive, negative = tm.conditioning(model)
    return request.param, model, streams, (positive, negative, tm.latent(model))


def twin(name):
    return FAMILIES[name][0]()


def run(model, inputs, **kwargs):
    positive, negative, latent = inputs
    return tm.sample(model, positive, negative, latent, **kwargs)


class Average(nn.Module):
    """The paper's parallel step, written independently of the pack: mean of each block on the same input
    (its own copy of every state, also of those passed as a tuple, as LTX-2's (video, audio))."""

    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, *args, **kwargs):
        def fresh(v):
            if isinstance(v, tuple):
                return tuple(fresh(p) for p in v)
            return v.clone() if torch.is_tensor(v) else v
        outs = [b(*map(fresh, args), **{k: fresh(v) for k, v in kwargs.items()}) for b in self.blocks]
        if isinstance(outs[0], tuple):
            return tuple(sum(o[i] for o in outs) / len(outs) for i in range(len(outs[0])))
        return sum(outs) / len(outs)


class TellsOwnIndex(nn.Module):
    """Block ``index`` as the reference runs it: whatever its position, it sees its own ``block_index``."""

    def __init__(self, block, index):
        super().__init__()
        self.block, self.index = block, index

    def forward(self, *args, **kwargs):
        options = kwargs.get("transformer_options")  # not every loop passes it (Ernie-Image, PixArt)
        if options is not None and "block_index" in options:
            kwargs["transformer_options"] = {**options, "block_index": self.index}
        return self.block(*args, **kwargs)


class OwnLLMState(nn.Module):
    """HiDream block ``index`` as the reference runs it: whatever its position, the LLM tokens at the end of
    its input are its own (LLM layer ``llama_layers[index]`` through ``caption_projection[index]``), made here
    from the model's input."""

    def __init__(self, block, index, dit, given):
        super().__init__()
        self.block, self.index, self.given = block, index, given
        self.projection, self.layer = dit.caption_projection[index], dit.llama_layers[index]

    def forward(self, image_tokens, image_tokens_masks=None, text_tokens=None, adaln_input=None, rope=None,
                transformer_options={}):
        llm = self.given["encoder_hidden_states_llama3"][:, self.layer]
        own = self.projection(llm)
        if text_tokens is None:
            image_tokens = torch.cat([image_tokens[:, :-own.shape[1]], own], dim=1)
        else:
            text_tokens = torch.cat([text_tokens[:, :-own.shape[1]], own], dim=1)
        return self.block(image_tokens=image_tokens, image_tokens_masks=image_tokens_masks, text_tokens=text_tokens,
                          adaln_input=adaln_input, rope=rope, transformer_options=transformer_options)


def own_llm_states(dit):
    """Wrap every HiDream block in ``OwnLLMState``; the model's input is kept for them by a pre-hook."""
    given = {}
    dit.register_forward_pre_hook(lambda module, args, kwargs: given.update(kwargs), with_kwargs=True)
    double = len(dit.double_stream_blocks)
    dit.double_stream_blocks = nn.ModuleList(OwnLLMState(b, i, dit, given) for i, b in enumerate(dit.double_stream_blocks))
    dit.single_stream_blocks = nn.ModuleList(OwnLLMState(b, double + i, dit, given)
                                             for i, b in enumerate(dit.single_stream_blocks))


def reference_model(name, orders, model=None, move_llm_states=True):
    """A twin of the model of family ``name`` (or ``model``, a twin already built) whose block lists are
    rebuilt in the planned order; every block sees its own index, as state keyed by block expects, and a
    HiDream block its own LLM state (unless ``move_llm_states`` is False)."""
    model, streams = model or twin(name), FAMILIES[name][1]
    dit = model.model.diffusion_model
    if name == "hidream" and move_llm_states:
        own_llm_states(dit)
    for stream, steps in orders.items():
        blocks = [TellsOwnIndex(b, i) for i, b in enumerate(getattr(dit, streams[stream]))]
        setattr(dit, streams[stream], nn.ModuleList(
            blocks[s[0]] if len(s) == 1 else Average([blocks[i] for i in s]) for s in steps))
    if hasattr(dit, "get_modulations") and orders:  # Chroma slices modulations by loop position
        original = dit.get_modulations
        where = {kind: orders.get(stream) for kind, stream in
                 (("double_img", "double_blocks"), ("double_txt", "double_blocks"), ("single", "single_blocks"))}

        def get_modulations(tensor, block_type, *, idx=0):
            steps = where.get(block_type)
            if steps is None:
                return original(tensor, block_type, idx=idx)
            assert len(steps[idx]) == 1, "the Chroma reference covers sequential orders only"
            return original(tensor, block_type, idx=steps[idx][0])

        dit.get_modulations = get_modulations
    return model


def test_all_plan_is_bit_identical_to_the_unpatched_model(family):
    _, model, _, inputs = family
    patched, summary = LayerLabPlan.execute(model, "all", "all", 0.0, 1.0).args
    with tm.BlockCalls(model) as unpatched:
        expected = run(model, inputs)
    with tm.BlockCalls(model) as seen:
        got = run(patched, inputs)
    assert torch.equal(got, expected)
    # no cost: every block ran as often as unpatched, from the model's own lists (the executor never entered)
    assert seen.calls == unpatched.calls and seen.planned == 0 and sum(seen.calls.values()) > 0
    assert "= all" in summary


def test_identity_order_through_the_executor_is_bit_identical(family):
    _, model, streams, inputs = family
    counts = {s: len(getattr(model.model.diffusion_model, a)) for s, a in streams.items()}
    # "(0-N)" expands to the original order; the observer hook forces the swap path for every stream
    from dit_layer_lab.core.patching import OBSERVER_KEY, with_rewrites

    class PassThrough:
        def wrap_step(self, stream, position, step, module):
            return module

    patched, _ = with_rewrites(model, lambda c: [])
    patched.model_options["transformer_options"][OBSERVER_KEY] = PassThrough()
    assert counts
    assert torch.equal(run(patched, inputs), run(model, inputs))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_strategy_equals_independent_reference(family, name):
    family_name, model, streams, inputs = family
    node, stream, first, last, extra, middle, exact = STRATEGIES[name]
    if stream not in streams:  # a model with one list gets every strategy on it
        stream = next(iter(streams))
    if family_name.startswith("chroma") and not exact:
        pytest.skip("covered by test_chroma_parallel_gives_each_member_its_modulation")
    n = len(getattr(model.model.diffusion_model, streams[stream]))
    if family_name == "sd3" and last >= n - 1:
        pytest.skip("SD3's last block must stay last")
    patched, summary = node.execute(model, stream=stream, first=first, last=last,
                                    start_percent=0.0, end_percent=1.0, **extra).args
    order = tuple((i,) for i in range(first)) + middle + tuple((i,) for i in range(last + 1, n))
    expected = run(reference_model(family_name, {stream: order}), inputs)
    got = run(patched, inputs)
    assert not torch.equal(got, run(model, inputs))
    if exact:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["chroma", "chroma_radiance"])
def test_chroma_parallel_gives_each_member_its_modulation(name):
    model = twin(name)
    inputs = (*tm.conditioning(model), tm.latent(model))
    patched, _ = LayerLabParallel.execute(model, stream="single_blocks", first=1, last=2, loops=1,
                                          start_percent=0.0, end_percent=1.0).args
    dit = model.model.diffusion_model
    reference = twin(name)
    ref = reference.model.diffusion_model
    blocks = ref.single_blocks
    original = ref.get_modulations

    class ChromaAverage(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([blocks[1], blocks[2]])

        def forward(self, x, vec, pe, attn_mask=None, transformer_options={}):
            outs = [b(x.clone(), vec=original(self.mods, "single", idx=i), pe=pe, attn_mask=attn_mask,
                      transformer_options=transformer_options) for b, i in zip(self.blocks, (1, 2))]
            return sum(outs) / 2

    average = ChromaAverage()

    def get_modulations(tensor, block_type, *, idx=0):
        if block_type == "single":
            average.mods = tensor
            idx = (0, None, 3)[idx]
            if idx is None:
                return None
        return original(tensor, block_type, idx=idx)

    ref.single_blocks = nn.ModuleList([blocks[0], average, blocks[3]])
    ref.get_modulations = get_modulations
    expected = run(reference, inputs)
    torch.testing.assert_close(run(patched, inputs), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(dit.single_blocks[1], type(dit.single_blocks[0]))


def test_lora_patch_stays_on_its_block_and_weights_restore_after_unload():
    model = tm.tiny_flux(double=3, single=4)
    inputs = (*tm.conditioning(model), tm.latent(model))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    key = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    delta = torch.randn(before[key].shape, generator=torch.Generator().manual_seed(3)) * 0.2
    lora = model.clone()
    lora.add_patches({key: (delta,)}, 1.0)
    patched, _ = LayerLabPlan.execute(lora, "2-0", "3, [0-2]*2", 0.0, 1.0).args
    got = run(patched, inputs)

    reference = reference_model("flux", {
        "double_blocks": parse_steps("2-0", 3), "single_blocks": parse_steps("3, [0-2]*2", 4)})
    with torch.inference_mode():
        reference.model.diffusion_model.double_blocks[2].block.img_attn.qkv.weight += delta  # position 2 runs block 0
    torch.testing.assert_close(got, run(reference, inputs), rtol=1e-5, atol=1e-5)

    comfy.model_management.unload_all_models()
    after = model.model.state_dict()
    assert [k for k in before if not torch.equal(after[k], before[k])] == []
    assert list(after) == list(before)


def test_the_input_model_is_unchanged(family):
    _, model, streams, inputs = family
    before = run(model, inputs)
    lists = {a: getattr(model.model.diffusion_model, a) for a in streams.values()}
    options = copy.deepcopy(model.model_options)
    patched, _ = LayerLabSkip.execute(model, stream=next(iter(streams)), first=0, last=1,
                                      start_percent=0.0, end_percent=1.0).args
    assert not torch.equal(run(patched, inputs), before)
    assert torch.equal(run(model, inputs), before)
    assert {a: getattr(model.model.diffusion_model, a) for a in streams.values()} == lists
    assert model.model_options == options


def test_lists_are_restored_when_sampling_fails_midway():
    model = tm.tiny_flux(double=3, single=4)
    inputs = (*tm.conditioning(model), tm.latent(model))
    dit = model.model.diffusion_model
    lists = (dit.double_blocks, dit.single_blocks)
    patched, _ = LayerLabPlan.execute(model, "2-0", "[0-3]*2", 0.0, 1.0).args
    calls = []

    def fail_on_second_call(args, extra):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted mid-sampling")
        return extra["original_block"](args)

    patched.set_model_patch_replace(fail_on_second_call, "dit", "double_block", 1)
    with pytest.raises(RuntimeError, match="interrupted mid-sampling"):
        run(patched, inputs)
    assert (dit.double_blocks, dit.single_blocks) == lists
    assert all(type(b).__name__ == "DoubleStreamBlock" for b in dit.double_blocks)


def test_window_outside_the_schedule_changes_nothing_and_a_half_window_changes_something():
    model = tm.tiny_flux(double=3, single=4)
    inputs = (*tm.conditioning(model), tm.latent(model))
    plain = run(model, inputs, steps=4)
    never, _ = LayerLabSkip.execute(model, stream="single_blocks", first=0, last=3,
                                    start_percent=1.0, end_percent=1.0).args
    assert torch.equal(run(never, inputs, steps=4), plain)
    always, _ = LayerLabSkip.execute(model, stream="single_blocks", first=0, last=3,
                                     start_percent=0.0, end_percent=1.0).args
    half, summary = LayerLabSkip.execute(model, stream="single_blocks", first=0, last=3,
                                         start_percent=0.5, end_percent=1.0).args
    got = run(half, inputs, steps=4)
    assert not torch.equal(got, plain) and not torch.equal(got, run(always, inputs, steps=4))
    assert "sampling 50%-100%: single_blocks = none" in summary


def test_errors_are_raised_at_the_node():
    model = tm.tiny_sd3(joint=5)
    with pytest.raises(PlanError, match="valid double_blocks indices are 0-4"):
        LayerLabPlan.execute(model, "0-5", "all", 0.0, 1.0)
    with pytest.raises(PlanError, match="SD3 joint block 4 is the last block"):
        LayerLabReverse.execute(model, stream="double_blocks", first=2, last=4, start_percent=0.0, end_percent=1.0)
    with pytest.raises(PlanError, match="valid single_blocks indices are none"):
        LayerLabSkip.execute(model, stream="single_blocks", first=0, last=0, start_percent=0.0, end_percent=1.0)
    reversed_model, _ = LayerLabReverse.execute(model, stream="double_blocks", first=0, last=2,
                                                start_percent=0.0, end_percent=1.0).args
    with pytest.raises(PlanError, match="order so far: 2-0, 3-4"):
        LayerLabSkip.execute(reversed_model, stream="double_blocks", first=1, last=2, start_percent=0.0, end_percent=1.0)


def test_unsupported_model_names_the_supported_families():
    model = tm.tiny_flux()
    other = model.clone()
    other.add_object_patch("diffusion_model", nn.Linear(2, 2))
    with pytest.raises(PlanError, match="supports Flux, Chroma, .*AuraFlow.*; .* torch.nn.modules.linear.Linear"):
        LayerLabPlan.execute(other, "all", "all", 0.0, 1.0)


@pytest.mark.parametrize("double, single", [("2-0", "all"), ("all", "3, 0, 2, 1"), ("[0-1], 2", "[1-3]*2, 0")])
def test_hidream_llm_states_follow_their_block(double, single):
    model = twin("hidream")
    inputs = (*tm.conditioning(model), tm.latent(model))
    patched, _ = LayerLabPlan.execute(model, double, single, 0.0, 1.0).args
    orders = {s: parse_steps(t, n) for s, t, n in (("double_blocks", double, 3), ("single_blocks", single, 4))
              if t != "all"}
    got = run(patched, inputs)
    torch.testing.assert_close(got, run(reference_model("hidream", orders), inputs), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, run(reference_model("hidream", orders, move_llm_states=False), inputs))


def test_hidream_plan_longer_than_the_model_equals_a_model_built_with_those_blocks():
    """Positions past the last block: the reference is a bigger HiDream whose blocks, LLM layers and caption
    projections are copies of the ones each position runs. Its first text takes the LLM state of its last
    block, so the plan ends with the model's last block, whose state the loop takes there."""
    model = twin("hidream")
    inputs = (*tm.conditioning(model), tm.latent(model))
    patched, _ = LayerLabPlan.execute(model, "0-2, 1, 0", "2, 0-3", 0.0, 1.0).args
    sources = [0, 1, 2, 1, 0] + [3 + i for i in (2, 0, 1, 2, 3)]
    built = tm.tiny_hidream(double=5, single=5)
    dit, big = model.model.diffusion_model, built.model.diffusion_model
    blocks = list(dit.double_stream_blocks) + list(dit.single_stream_blocks)
    with torch.inference_mode():
        for k, block in enumerate(list(big.double_stream_blocks) + list(big.single_stream_blocks)):
            block.load_state_dict(blocks[sources[k]].state_dict())
            big.caption_projection[k].load_state_dict(dit.caption_projection[sources[k]].state_dict())
        big.caption_projection[-1].load_state_dict(dit.caption_projection[-1].state_dict())
        big.load_state_dict({k: v for k, v in dit.state_dict().items() if not k.startswith(
            ("double_stream_blocks", "single_stream_blocks", "caption_projection"))}, strict=False)
    big.llama_layers = [dit.llama_layers[i] for i in sources]
    torch.testing.assert_close(run(patched, inputs), run(built, inputs), rtol=1e-5, atol=1e-5)


def test_a_known_unsupported_class_is_refused_with_the_reason():
    hidream_o1 = pytest.importorskip("comfy.ldm.hidream_o1.model", reason="this ComfyUI has no HiDream-O1")
    model = tm.tiny_flux(double=2, single=2)
    other = model.clone()
    dit = hidream_o1.HiDreamO1Transformer.__new__(hidream_o1.HiDreamO1Transformer)
    nn.Module.__init__(dit)
    other.add_object_patch("diffusion_model", dit)
    with pytest.raises(PlanError, match=r"HiDream-O1 \(comfy.ldm.hidream_o1.model.HiDreamO1Transformer\) is not "
                                        "supported: its blocks are a language model's layers"):
        LayerLabPlan.execute(other, "all", "all", 0.0, 1.0)


def test_an_unchecked_subclass_of_a_supported_class_is_refused_by_name():
    model = tm.tiny_flux(double=2, single=2)
    dit = model.model.diffusion_model
    subclass = type("FluxVariant", (type(dit),), {"__module__": "some_pack.models"})
    other = model.clone()
    other.add_object_patch("diffusion_model", copy.copy(dit))
    other.get_model_object("diffusion_model").__class__ = subclass
    with pytest.raises(PlanError, match="some_pack.models.FluxVariant, a subclass of Flux's comfy.ldm.flux.model.Flux; "
                                        "DiT Layer Lab has not checked"):
        LayerLabPlan.execute(other, "all", "all", 0.0, 1.0)


def test_stacked_nodes_compose_and_summarize():
    model = tm.tiny_flux(double=3, single=4)
    first, _ = LayerLabParallel.execute(model, stream="single_blocks", first=0, last=1, loops=2,
                                        start_percent=0.0, end_percent=1.0).args
    second, summary = LayerLabReverse.execute(first, stream="single_blocks", first=2, last=3,
                                              start_percent=0.0, end_percent=1.0).args
    assert "single_blocks = [0-1]*2, 3-2" in summary
    inputs = (*tm.conditioning(model), tm.latent(model))
    expected = run(reference_model("flux", {"single_blocks": parse_steps("[0-1]*2, 3-2", 4)}), inputs)
    torch.testing.assert_close(run(second, inputs), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------- data the loop hands out by position

# family -> (stream, block-index patch kind or None, ControlNet residual key or None)
PER_POSITION = {"qwen_image": ("double_blocks", "double_block", "input"),
                "z_image": ("single_blocks", "double_block", None),
                "wan": ("single_blocks", "double_block", None)}


def index_patch(args):
    """A block-index patch (as DiffSynth / Fun ControlNet): changes the image tokens by the index it is told."""
    img = args["img"]
    return {**args, "img": img + 0.02 * (args["block_index"] + 1) * torch.sin(3 * img)}


def residual(x, i, hidden=tm.HIDDEN):  # Qwen-Image's residuals: image tokens of 2x2 patches
    tokens = (x.shape[-2] // 2) * (x.shape[-1] // 2)
    return torch.randn(1, tokens, hidden, generator=torch.Generator().manual_seed(100 + i)) * 0.05


def with_per_position_data(model, kind, control_key, count, positions=None):
    """``model`` with a block-index patch and ControlNet residuals; ``positions`` (position -> block) is
    how the reference hands them to the block that runs at each position."""
    model = model.clone()
    if kind is not None:
        model.set_model_patch(index_patch if positions is None else
                              lambda args: index_patch({**args, "block_index": positions[args["block_index"]]}), kind)
    if control_key is not None:
        def control(executor, x, t, c_concat, c_crossattn, control, transformer_options, **kwargs):
            blocks = range(count) if positions is None else positions
            return executor(x, t, c_concat, c_crossattn, {control_key: [residual(x, i) for i in blocks]},
                            transformer_options, **kwargs)
        model.add_wrapper_with_key("apply_model", "test_control", control)
    return model


@pytest.mark.parametrize("name", list(PER_POSITION))
def test_per_position_data_follows_its_block(name):
    stream, kind, control_key = PER_POSITION[name]
    model = twin(name)
    if kind is not None and f'"{kind}" in patches' not in inspect.getsource(type(model.model.diffusion_model)):
        pytest.skip(f"this ComfyUI's {name} loop calls no block-index patches")  # Wan before ComfyUI 0.33
    inputs = (*tm.conditioning(model), tm.latent(model))
    count = len(getattr(model.model.diffusion_model, FAMILIES[name][1][stream]))
    text = f"{count - 1}, 1-0, 0"
    steps = parse_steps(text, count)
    given = with_per_position_data(model, kind, control_key, count)
    plans = {"double_blocks": "all", "single_blocks": "all", stream: text}
    patched, _ = LayerLabPlan.execute(given, plans["double_blocks"], plans["single_blocks"], 0.0, 1.0).args
    reference = with_per_position_data(reference_model(name, {stream: steps}), kind, control_key, count,
                                       [step[0] for step in steps])
    got = run(patched, inputs)
    assert torch.equal(got, run(reference, inputs))
    assert not torch.equal(got, run(with_per_position_data(reference_model(name, {stream: steps}), kind,
                                                           control_key, len(steps)), inputs))
    if kind is not None:
        grouped, _ = LayerLabParallel.execute(given, stream=stream, first=0, last=1, loops=1,
                                              start_percent=0.0, end_percent=1.0).args
        with pytest.raises(PlanError, match=f"patches every {stream} block by its index"):
            run(grouped, inputs)


def test_krea2_attention_patches_see_each_block_s_own_index():
    """Krea2's loop tells each block its index, which attention patches read (as Flux KV Cache does by its
    block); a moved block is told its own, as in the reference, and not its position."""
    def by_index(q, k, v, extra_options, **kwargs):
        return {"q": q * (1.0 + 0.3 * extra_options["block_index"])}

    def patched(model):
        model = model.clone()
        model.set_model_attn1_patch(by_index)
        return model

    model = twin("krea2")
    inputs = (*tm.conditioning(model), tm.latent(model))
    planned, _ = LayerLabPlan.execute(patched(model), "all", "3-0", 0.0, 1.0).args
    got = run(planned, inputs)
    steps = parse_steps("3-0", 4)
    assert torch.equal(got, run(patched(reference_model("krea2", {"single_blocks": steps})), inputs))
    by_position = twin("krea2")
    dit = by_position.model.diffusion_model
    dit.blocks = nn.ModuleList(dit.blocks[i] for i in (3, 2, 1, 0))
    assert not torch.equal(got, run(patched(by_position), inputs))
