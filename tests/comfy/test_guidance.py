"""Layer Lab Plan Guidance against ComfyUI's own Skip Layer Guidance (SkipLayerGuidanceDiT), through real sampling."""

import pytest
import torch

from comfy_extras.nodes_slg import SkipLayerGuidanceDiT
from dit_layer_lab.core.plan import PlanError
from dit_layer_lab.core.preview import UI_KEY
from dit_layer_lab.nodes.guidance import LayerLabPlanGuidance
from dit_layer_lab.nodes.reorder import LayerLabReverse, LayerLabSkip
from dit_layer_lab.tests.comfy import tiny_models as tm

# family -> (builder, the pack's plans that skip what SLG's layer lists skip)
MODELS = {
    "flux": (lambda: tm.tiny_flux(double=3, single=4), ("1", "2"), ("0, 2", "0-1, 3")),
    "sd3": (lambda: tm.tiny_sd3(joint=5), ("1, 2", ""), ("0, 3-4", "all")),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    build, slg_layers, plans = MODELS[request.param]
    patcher = build()
    return patcher, (*tm.conditioning(patcher), tm.latent(patcher)), slg_layers, plans


def slg(model, layers, scale, start, end, rescale):
    return SkipLayerGuidanceDiT.execute(model, scale, start, end, double_layers=layers[0], single_layers=layers[1],
                                        rescaling_scale=rescale)[0]


def ours(model, plans, scale, start, end, rescale):
    return LayerLabPlanGuidance.execute(model, plans[0], plans[1], scale, rescale, start, end).args[0]


def sample(model, inputs, **kwargs):
    return tm.sample(model, *inputs, steps=4, cfg=2.5, **kwargs)


@pytest.mark.parametrize("scale, start, end, rescale", [
    (3.0, 0.0, 1.0, 0.0),
    (2.0, 0.2, 0.7, 0.0),
    (3.0, 0.0, 0.5, 0.7),
])
def test_equals_skip_layer_guidance(model, scale, start, end, rescale):
    patcher, inputs, layers, plans = model
    expected = sample(slg(patcher, layers, scale, start, end, rescale), inputs)
    got = sample(ours(patcher, plans, scale, start, end, rescale), inputs)
    assert torch.equal(got, expected)
    assert not torch.equal(got, sample(patcher, inputs))


def test_a_step_exactly_at_end_percent_is_guided_as_slg_does(model):
    # start = end = 0: sigma(0) is 1.0, the first step's sigma exactly; SLG's closed window guides that
    # step (the pack's half-open plan windows would never apply)
    patcher, inputs, layers, plans = model
    assert patcher.get_model_object("model_sampling").percent_to_sigma(0.0) == 1.0
    expected = sample(slg(patcher, layers, 3.0, 0.0, 0.0, 0.0), inputs)
    got = sample(ours(patcher, plans, 3.0, 0.0, 0.0, 0.0), inputs)
    assert torch.equal(got, expected)
    assert not torch.equal(got, sample(patcher, inputs))


def test_composes_with_reorder_nodes_before_and_after(model):
    patcher, inputs, layers, plans = model
    reverse = dict(stream="double_blocks", first=3, last=4) if layers[1] == "" else dict(
        stream="single_blocks", first=0, last=1)
    if reverse["stream"] == "double_blocks":  # SD3: its last block must stay last; skip block 3 instead
        before = lambda m: LayerLabSkip.execute(m, stream="double_blocks", first=3, last=3,  # noqa: E731
                                                 start_percent=0.0, end_percent=1.0).args[0]
    else:
        before = lambda m: LayerLabReverse.execute(m, start_percent=0.0, end_percent=1.0, **reverse).args[0]  # noqa: E731
    expected = sample(slg(before(patcher), layers, 3.0, 0.0, 0.6, 0.3), inputs)
    assert torch.equal(sample(ours(before(patcher), plans, 3.0, 0.0, 0.6, 0.3), inputs), expected)
    after = before(ours(patcher, plans, 3.0, 0.0, 0.6, 0.3))
    assert torch.equal(sample(after, inputs), sample(before(slg(patcher, layers, 3.0, 0.0, 0.6, 0.3)), inputs))


def test_a_plan_that_changes_nothing_returns_the_model_and_the_input_model_is_unchanged():
    patcher = tm.tiny_flux(double=3, single=4)
    out, summary = LayerLabPlanGuidance.execute(patcher, "all", "0-3", 3.0, 0.0, 0.0, 1.0).args
    assert out is patcher and "unchanged" in summary
    guided, summary = LayerLabPlanGuidance.execute(patcher, "0, 1@0.5, 2", "all", 3.0, 0.0, 0.0, 1.0).args
    assert "double_blocks = 0, 1@0.5, 2" in summary
    assert LayerLabPlanGuidance.execute(patcher, "0, 2", "all", 3.0, 0.0, 0.0, 1.0).ui == {
        UI_KEY: [{"family": "Flux", "counts": {"double_blocks": 3, "single_blocks": 4}}]}
    assert guided is not patcher and not patcher.model_options.get("sampler_post_cfg_function")


def test_bad_plans_and_parts_are_refused_at_the_node():
    patcher = tm.tiny_auraflow(double=2, single=3)
    with pytest.raises(PlanError, match="AuraFlow double_blocks"):
        LayerLabPlanGuidance.execute(patcher, "0:attn, 1", "all", 3.0, 0.0, 0.0, 1.0)
    with pytest.raises(PlanError, match="position 4"):
        LayerLabPlanGuidance.execute(patcher, "0, 7", "all", 3.0, 0.0, 0.0, 1.0)
