"""Plan guidance's logic on plain torch: the narrow rewrite, the window, the formula, the post-CFG function."""

import pytest
import torch

from dit_layer_lab.core.guidance import PlanGuidance, guidance_rewrites, guided, in_window, trimmed_rewrite
from dit_layer_lab.core.patching import KEY
from dit_layer_lab.core.plan import Modified, PlanError, identity, parse_steps
from dit_layer_lab.core.rewrite import LayerPlan, apply_rewrite, plan_rewrite


@pytest.mark.parametrize("text, first, last, middle", [
    ("0-6, 8-18", 7, 7, ()),
    ("0-6, 7@0.5, 8-18", 7, 7, (Modified((7,), 0.5),)),
    ("0-3, 3, 4-18", 4, 4, ((3,), (4,))),
    ("all, 18", 18, 18, ((18,), (18,))),
    ("0-2, 5-3, 6-18", 3, 5, ((5,), (4,), (3,))),
    ("1-18", 0, 0, ()),
    ("none", 0, 18, ()),
])
def test_the_rewrite_covers_only_what_the_plan_changes(text, first, last, middle):
    steps = parse_steps(text, 19)
    rewrite = trimmed_rewrite("double_blocks", steps, 19, "guidance")
    assert (rewrite.first, rewrite.last, rewrite.steps) == (first, last, middle)
    assert apply_rewrite(identity(19), rewrite) == steps


def test_a_plan_that_changes_nothing_has_no_rewrite_and_composes_with_other_changes():
    assert guidance_rewrites({"double_blocks": 19, "single_blocks": 38}, {"double_blocks": "all",
                                                                          "single_blocks": "0-37"}) == []
    base = LayerPlan("Toy", (("double_blocks", 19), ("single_blocks", 38)))
    moved = base.with_rewrite(plan_rewrite(base.counts, "double_blocks", "0-9, 12-10, 13-18"))
    (rewrite,) = guidance_rewrites(base.counts, {"double_blocks": "0-6, 8-18"})
    weak = moved.with_rewrite(rewrite)
    assert weak.compose(weak.all_active)["double_blocks"] == parse_steps("0-6, 8-9, 12-10, 13-18", 19)
    (clash,) = guidance_rewrites(base.counts, {"double_blocks": "0-9, 11-10, 12-18"})
    with pytest.raises(PlanError, match="no longer run as an unbroken run"):
        moved.with_rewrite(clash)


def test_the_window_includes_both_ends():
    assert in_window(0.5, 1.0, 0.5) and in_window(1.0, 1.0, 0.5) and in_window(0.7, 0.7, 0.7)
    assert not in_window(0.49, 1.0, 0.5) and not in_window(1.01, 1.0, 0.5)


def test_the_formula_and_rescale():
    g = torch.Generator().manual_seed(0)
    cfg, cond, weak = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    assert torch.equal(guided(cfg, cond, weak, 3.0, 0.0), cfg + (cond - weak) * 3.0)
    plain = cfg + (cond - weak) * 2.0
    factor = 0.25 * (cond.std() / plain.std()) + 0.75
    torch.testing.assert_close(guided(cfg, cond, weak, 2.0, 0.25), plain * factor, rtol=0, atol=0)


def test_the_post_cfg_function_makes_one_extra_call_only_in_the_window_with_the_plan_added():
    base = LayerPlan("Toy", (("double_blocks", 5), ("single_blocks", 0)))
    carried = base.with_rewrite(plan_rewrite(base.counts, "double_blocks", "0-1, 3-2, 4"))
    calls = []

    def calc_cond_batch(model, conds, x, sigma, model_options):
        calls.append(model_options)
        return [torch.full_like(x, 0.25)]

    guidance = PlanGuidance(tuple(guidance_rewrites(base.counts, {"double_blocks": "0, 1@0.5, 2-4"})), base,
                            scale=2.0, rescale=0.0, sigma_start=0.8, sigma_end=0.4,
                            calc_cond_batch=calc_cond_batch, check=lambda *a: None)
    x = torch.zeros(1, 2)
    args = {"denoised": torch.ones(1, 2), "cond_denoised": torch.full((1, 2), 0.5), "cond": ["c"], "input": x,
            "model": "m", "model_options": {"transformer_options": {KEY: carried, "other": 1}}}
    for sigma in (0.9, 0.3):
        assert guidance({**args, "sigma": torch.tensor([sigma])}) is args["denoised"]
    assert not calls
    out = guidance({**args, "sigma": torch.tensor([0.4])})
    assert torch.equal(out, torch.ones(1, 2) + (0.5 - 0.25) * 2.0)
    (options,) = calls
    weak = options["transformer_options"][KEY]
    assert weak.compose(weak.all_active)["double_blocks"] == (
        (0,), Modified((1,), 0.5), (3,), (2,), (4,))
    assert options["transformer_options"]["other"] == 1
    assert args["model_options"]["transformer_options"][KEY] is carried  # the sampler's options untouched
    guidance({**args, "sigma": torch.tensor([0.6])})
    assert calls[1]["transformer_options"][KEY] is weak  # composed once per carried plan
