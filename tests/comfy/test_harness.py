"""The ComfyUI test harness itself: tiny models build, sample deterministically, patch and restore."""

import pytest
import torch

import comfy.model_management
from dit_layer_lab.tests.comfy import tiny_models as tm

# Sizes differ from the builders' defaults so that a size that does not reach the model shows.
CASES = {
    "flux": (tm.tiny_flux, {"double": 2, "single": 3}, {"double_blocks": 2, "single_blocks": 3}),
    "chroma": (tm.tiny_chroma, {"double": 3, "single": 2}, {"double_blocks": 3, "single_blocks": 2}),
    "sd3": (tm.tiny_sd3, {"joint": 5}, {"joint_blocks": 5}),
    "auraflow": (tm.tiny_auraflow, {"double": 3, "single": 2}, {"double_layers": 3, "single_layers": 2}),
}


@pytest.fixture(params=list(CASES), scope="module")
def family(request):
    build, kwargs, sizes = CASES[request.param]
    return request.param, build(**kwargs), sizes


def test_block_lists_have_requested_sizes(family):
    name, model, sizes = family
    dit = model.model.diffusion_model
    assert {attr: len(getattr(dit, attr)) for attr in sizes} == sizes
    if name == "sd3":
        assert [block.context_block.pre_only for block in dit.joint_blocks] == [False] * 4 + [True]


def test_weights_are_finite_and_follow_the_seed(family):
    name, model, _ = family
    build, kwargs, _ = CASES[name]
    weights = model.model.diffusion_model.state_dict()
    assert all(torch.isfinite(w).all() for w in weights.values())
    same = build(**kwargs, seed=0).model.diffusion_model.state_dict()
    assert all(torch.equal(weights[k], same[k]) for k in weights)
    other = build(**kwargs, seed=1).model.diffusion_model.state_dict()
    assert [k for k in weights if torch.equal(weights[k], other[k])] == []


def test_sampling_is_finite_nontrivial_and_deterministic(family):
    _, model, _ = family
    positive, negative = tm.conditioning(model, seed=0)
    latent = tm.latent(model, 16, 12)
    out = tm.sample(model, positive, negative, latent)
    assert out.shape == latent.shape
    assert torch.isfinite(out).all()
    assert not torch.equal(out, latent)
    assert torch.equal(out, tm.sample(model, positive, negative, latent))
    other_positive, _ = tm.conditioning(model, seed=1)
    assert not torch.equal(out, tm.sample(model, other_positive, negative, latent))


def test_weight_patch_changes_output_and_unload_restores_every_weight():
    base = tm.tiny_flux()
    positive, negative = tm.conditioning(base)
    latent = tm.latent(base)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    reference = tm.sample(base, positive, negative, latent)

    key = "diffusion_model.double_blocks.0.img_attn.qkv.weight"
    delta = torch.randn(before[key].shape, generator=torch.Generator().manual_seed(1)) * 0.1
    lora = base.clone()
    assert lora.add_patches({key: (delta,)}, 1.0) == [key]
    patched = tm.sample(lora, positive, negative, latent)
    assert not torch.equal(patched, reference)
    # the patch is live in the shared module while the clone stays loaded
    assert torch.allclose(base.model.state_dict()[key], before[key] + delta)

    comfy.model_management.unload_all_models()
    after = base.model.state_dict()
    assert after.keys() == before.keys()
    assert [k for k in before if not torch.equal(after[k], before[k])] == []
    assert torch.equal(tm.sample(base, positive, negative, latent), reference)


def test_comfyui_runs_on_cpu_with_stand_ins_that_fail_loudly():
    assert comfy.model_management.get_torch_device().type == "cpu"
    import torchvision.transforms.functional as TF

    if "stand-in" not in (TF.__doc__ or ""):
        pytest.skip("the real torchvision is installed")
    with pytest.raises(RuntimeError, match="stand-in"):
        TF.resize(torch.zeros(1, 3, 4, 4), [2, 2])
