"""Every node that samples reads a LATENT as KSampler does: the probe, the plan grid's baseline and the
importance sweep's baseline (both modes) against ComfyUI's own KSampler node, on Flux.2 fed by
ComfyUI's own empty-latent nodes (which, from ComfyUI 0.33, say which size they meant), and on a
latent with a noise mask and batch indices."""

import importlib
import json

import pytest
import torch

import nodes
from dit_layer_lab.nodes import sweep as sweep_node
from dit_layer_lab.nodes.grid import LayerLabPlanGrid
from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe
from dit_layer_lab.nodes.sweep import LayerLabImportanceSweep
from dit_layer_lab.tests.comfy import tiny_models as tm

SEED, STEPS, CFG, SAMPLER, SCHEDULER, DENOISE = 3, 2, 2.0, "euler", "simple", 1.0


def empty_latent(module, node_id, width=128, height=128):
    """The LATENT of ComfyUI's own empty-latent node ``node_id``, as the graph would hand it on."""
    node = getattr(importlib.import_module(module), node_id, None)
    if node is None:
        pytest.skip(f"this ComfyUI has no {node_id} node")
    if hasattr(node, "define_schema"):  # a V3 node
        return node.execute(width=width, height=height, batch_size=1).args[0]
    return node().generate(width, height, 1)[0]


def masked_latent(model):
    """A non-empty latent with a noise mask and batch indices: what KSampler reads besides the samples."""
    samples = torch.randn(2, model.get_model_object("latent_format").latent_channels, 8, 8,
                          generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1.0
    return {"samples": samples, "noise_mask": mask, "batch_index": [4, 9]}


LATENTS = {
    "EmptyLatentImage": lambda model: empty_latent("nodes", "EmptyLatentImage"),
    "EmptySD3LatentImage": lambda model: empty_latent("comfy_extras.nodes_sd3", "EmptySD3LatentImage"),
    "EmptyFlux2LatentImage": lambda model: empty_latent("comfy_extras.nodes_flux", "EmptyFlux2LatentImage"),
    "masked, batch_index": masked_latent,
}


@pytest.fixture(scope="module")
def flux2():
    model = tm.tiny_flux2(double=2, single=3)
    return model, tm.conditioning(model, batch=1)


def ksampler(model, positive, negative, latent):
    with torch.inference_mode():
        return nodes.KSampler().sample(model, SEED, STEPS, CFG, SAMPLER, SCHEDULER, positive, negative, latent,
                                       denoise=DENOISE)[0]


@pytest.mark.parametrize("which", list(LATENTS))
def test_the_probe_samples_what_ksampler_samples(flux2, which):
    model, (positive, negative) = flux2
    latent = LATENTS[which](model)
    expected = ksampler(model, positive, negative, latent)
    with torch.inference_mode():
        _, sampled, _ = LayerLabSimilarityProbe.execute(model, positive, negative, latent, SEED, STEPS, CFG, SAMPLER,
                                                        SCHEDULER, DENOISE, "per_step", 16).args
    assert sampled.keys() == expected.keys()
    assert torch.equal(sampled["samples"], expected["samples"])


@pytest.mark.parametrize("which", list(LATENTS))
def test_the_grid_baseline_is_ksampler_and_vae_decode(flux2, which):
    model, (positive, negative) = flux2
    latent = LATENTS[which](model)
    vae = tm.tiny_vae(latent_channels=128)
    with torch.inference_mode():
        expected = nodes.VAEDecode().decode(vae, ksampler(model, positive, negative, latent))[0]
        _, images, report = LayerLabPlanGrid.execute(model, vae, positive, negative, latent, SEED, STEPS, CFG,
                                                     SAMPLER, SCHEDULER, DENOISE, "skip: single_blocks=0, 2").args
    batch = expected.shape[0]
    assert torch.equal(images[:batch], expected)
    assert json.loads(report)["variants"][0]["label"] == "baseline"


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize("which", list(LATENTS))
def test_the_sweep_baseline_is_what_ksampler_samples(flux2, which, mode, monkeypatch):
    model, (positive, negative) = flux2
    latent = LATENTS[which](model)
    expected = ksampler(model, positive, negative, latent)["samples"]
    seen = {}
    runs = sweep_node.FullRuns if mode == "full" else sweep_node.FastRuns
    real_baseline = runs.baseline

    def baseline(self):
        seen["baseline"] = real_baseline(self)
        return seen["baseline"]

    monkeypatch.setattr(runs, "baseline", baseline)
    with torch.inference_mode():
        LayerLabImportanceSweep.execute(model, positive, negative, latent, SEED, STEPS, CFG, SAMPLER, SCHEDULER,
                                        DENOISE, "single_blocks", 1, mode, 0.5, "latent_cosine", 1, 0.0, None)
    if mode == "full":
        assert torch.equal(seen["baseline"], expected)
    else:  # one evaluation, not a whole sampling run: the same latent size, batch and noise
        assert seen["baseline"].shape == expected.shape
