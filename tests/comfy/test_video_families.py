"""What the video families' loops key by position, under a plan: LTXV / LTX-2 replace patches, LTX-2's
STG positions and its block prefetch queue.

References are twins of the model whose block list is rebuilt in the planned order
(``test_reorder.reference_model``).
"""

import pytest
import torch

from dit_layer_lab.core.plan import PlanError, parse_steps
from dit_layer_lab.nodes.reorder import LayerLabPlan
from dit_layer_lab.tests.comfy import tiny_models as tm
from dit_layer_lab.tests.comfy.test_reorder import reference_model, twin


def small_inputs(model):
    return (*tm.conditioning(model), tm.latent(model, h=4, w=4, frames=2))


def sample(model, inputs):
    return tm.sample(model, *inputs, steps=2)


def planned(model, text):
    return LayerLabPlan.execute(model, "all", text, 0.0, 1.0).args[0]


def with_replace_patch(model, position):
    """A block-replace patch (as another node sets one) at ``("double_block", position)`` that changes the block's output."""
    model = model.clone()

    def replace(args, extra):
        out = extra["original_block"](args)
        img = out["img"]
        out["img"] = tuple(1.1 * part for part in img) if isinstance(img, tuple) else 1.1 * img
        return out

    model.set_model_patch_replace(replace, "dit", "double_block", position)
    return model


@pytest.mark.parametrize("name", ["ltxv", "ltx2"])
def test_a_replace_patch_follows_its_block(name):
    model = twin(name)
    inputs = small_inputs(model)
    got = sample(planned(with_replace_patch(model, 1), "3-0"), inputs)
    steps = parse_steps("3-0", 4)
    expected = sample(with_replace_patch(reference_model(name, {"single_blocks": steps}), 2), inputs)  # block 1 runs third
    assert torch.equal(got, expected)
    assert not torch.equal(got, sample(with_replace_patch(reference_model(name, {"single_blocks": steps}), 1), inputs))


def with_stg(model, blocks):
    """The model as the LTXV Spatio-Temporal Guidance node runs its extra pass: these blocks' self-attention perturbed."""
    model = model.clone()
    model.model_options.setdefault("transformer_options", {})["stg_self_attn_blocks"] = frozenset(blocks)
    return model


def test_ltx2_stg_runs_where_the_plan_keeps_its_blocks_in_place_and_is_refused_elsewhere():
    import inspect

    import comfy.ldm.lightricks.av_model

    if "stg_self_attn_blocks" not in inspect.getsource(comfy.ldm.lightricks.av_model):
        pytest.skip("this ComfyUI's LTX-2 loop has no STG positions (0.33 added them)")
    model = twin("ltx2")
    inputs = small_inputs(model)
    steps = parse_steps("0-1, 3", 4)  # block 1 stays at position 1
    got = sample(planned(with_stg(model, {1}), "0-1, 3"), inputs)
    assert torch.equal(got, sample(with_stg(reference_model("ltx2", {"single_blocks": steps}), {1}), inputs))
    assert not torch.equal(got, sample(planned(model, "0-1, 3"), inputs))
    for text, where in (("1-0, 2-3", "runs 1 at position 0"), ("0, 2, 3", "runs 2 at position 1"),
                        ("[1-2], 3", "runs [1-2] at position 0")):
        with pytest.raises(PlanError, match=f"LTX-2: the LTXV Spatio-Temporal Guidance node perturbs the self-attention "
                                            rf"of transformer_blocks 1 .* this plan {where.replace('[', '.').replace(']', '.')}"):
            sample(planned(with_stg(model, {1}), text), inputs)


def test_ltx2_prefetch_queue_is_built_in_the_planned_order(monkeypatch):
    prefetch = pytest.importorskip("comfy.model_prefetch", reason="this ComfyUI has no block prefetch (0.33 added it)")
    model = twin("ltx2")
    blocks = list(model.model.diffusion_model.transformer_blocks)
    queues = []

    def make_prefetch_queue(queue, device, transformer_options):
        queues.append([getattr(entry, "block", entry) for entry in queue])  # a moved block runs as itself
        return None

    monkeypatch.setattr(prefetch, "make_prefetch_queue", make_prefetch_queue)
    sample(planned(model, "3-1, 1"), small_inputs(model))
    assert queues and all(queue == [blocks[i] for i in (3, 2, 1, 1)] for queue in queues)


def index_mlp_patch(args):
    """An MLP patch that reads the block index, as Anima's LLLite control does (ComfyUI 0.33)."""
    x = args["x"]
    return {**args, "x": x + 0.02 * (args["transformer_options"]["block_index"] + 1) * torch.sin(3 * x)}


@pytest.mark.parametrize("name", ["cosmos_predict2", "anima"])
@pytest.mark.parametrize("text", ["3-0", "0, 2*2, 1", "[0-1], 3"])
def test_a_patch_reading_block_index_sees_the_blocks_own(name, text):
    import inspect

    import comfy.ldm.cosmos.predict2

    if "mlp_patch" not in inspect.getsource(comfy.ldm.cosmos.predict2.Block):
        pytest.skip("this ComfyUI's Cosmos blocks take no MLP patches (0.33 added them)")
    model = twin(name)
    inputs = small_inputs(model)
    patched = model.clone()
    patched.set_model_patch(index_mlp_patch, "mlp_patch")
    got = sample(planned(patched, text), inputs)
    reference = reference_model(name, {"single_blocks": parse_steps(text, 4)})  # each block told its own index
    reference.set_model_patch(index_mlp_patch, "mlp_patch")
    expected = sample(reference, inputs)
    if "[" in text:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(got, expected)
    assert not torch.equal(got, sample(planned(model, text), inputs))


def test_kandinsky5_leaves_its_text_encoder_blocks_alone():
    model = twin("kandinsky5")
    dit = model.model.diffusion_model
    text_blocks = dit.text_transformer_blocks
    seen = []
    handles = [block.register_forward_hook(lambda m, a, o: seen.append(m)) for block in text_blocks]
    try:
        patched, summary = LayerLabPlan.execute(model, "all", "3-0", 0.0, 1.0).args
        sample(patched, small_inputs(model))
    finally:
        for handle in handles:
            handle.remove()
    assert "visual_transformer_blocks" in summary
    assert seen and all(m is text_blocks[i % len(text_blocks)] for i, m in enumerate(seen))
    assert dit.text_transformer_blocks is text_blocks
