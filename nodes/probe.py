"""The similarity probe node: sample like KSampler while the pack records every block's hidden states."""

from __future__ import annotations

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..core.patching import APPLY_MODEL, OBSERVER_KEY, family_of, with_rewrites
from ..core.probe import AGGREGATES, PROBE_WRAPPER_KEY, Probe, check_single_order
from ..core.probe.heatmap import render, to_float_array
from ..core.probe.report import build, to_json

CATEGORY = "layer_lab"


class LayerLabSimilarityProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabSimilarityProbe",
            display_name="Layer Lab Similarity Probe",
            category=CATEGORY,
            description="Sample like KSampler and measure how similar the hidden states after every block are "
                        "(cosine, conditional rows only). Draws one heatmap per stream, splits the blocks into "
                        "first / middle / last groups and reports the middle range as original block indices.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (Flux, Chroma, SD3/SD3.5 or AuraFlow); "
                                                "a model with a Layer Lab plan is probed in its planned order."),
                io.Conditioning.Input("positive", tooltip="The prompt to probe with, as for KSampler. Only its rows are captured."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as for KSampler; its half of the batch is never captured."),
                io.Latent.Input("latent_image", tooltip="The latent to start from, as for KSampler."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; also fixes which tokens max_tokens keeps."),
                io.Int.Input("steps", default=20, min=1, max=10000,
                             tooltip="Sampling steps; every step is captured."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, as for KSampler."),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, tooltip="The sampler, as for KSampler."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, tooltip="The noise schedule, as for KSampler."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much of the schedule to run, as for KSampler."),
                io.Combo.Input("aggregate", options=list(AGGREGATES), default="per_step",
                               tooltip="per_step: cosine at every step, then averaged (the paper's way). "
                                       "step_mean: hidden states averaged over the steps, then cosine."),
                io.Int.Input("max_tokens", default=1024, min=0, max=1 << 20,
                             tooltip="0 = every token. Otherwise a fixed random subset of token positions "
                                     "(the same for every block and step): less memory, a close estimate."),
            ],
            outputs=[
                io.Image.Output(display_name="heatmap", tooltip="One similarity heatmap per stream."),
                io.Latent.Output(display_name="LATENT", tooltip="What was sampled."),
                io.String.Output(display_name="report",
                                 tooltip="JSON: per stream labels, matrix, groups and the middle range."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed: int, steps: int, cfg: float, sampler_name: str,
                scheduler: str, denoise: float, aggregate: str, max_tokens: int) -> io.NodeOutput:
        probed, plan = with_rewrites(model, lambda counts: [])
        check_single_order(plan)
        probe = Probe(family_of(plan), aggregate, max_tokens, seed)
        options = probed.model_options["transformer_options"]
        options[OBSERVER_KEY] = probe
        probed.add_wrapper_with_key(APPLY_MODEL, PROBE_WRAPPER_KEY, probe.around_call)
        try:
            latent = sample(probed, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
                            denoise)
            measured = probe.results()
        finally:
            options.pop(OBSERVER_KEY, None)
            probed.remove_wrappers_with_key(APPLY_MODEL, PROBE_WRAPPER_KEY)
            probe.release()
        report, panels = build(measured, family=plan.family, steps=steps, evaluations=probe.evaluations,
                               aggregate=aggregate, max_tokens=max_tokens, seed=seed, cfg=cfg,
                               sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                               order=plan.summary(), held_bytes=probe.peak_bytes)
        image = torch.from_numpy(to_float_array(render(panels)))
        return io.NodeOutput(image, latent, to_json(report))


def sample(model, positive, negative, latent: dict, seed, steps, cfg, sampler_name, scheduler, denoise) -> dict:
    """What KSampler does (nodes.common_ksampler), with a preview callback that also honours interrupts."""
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    preview = latent_preview.prepare_callback(model, steps)

    def callback(step, x0, x, total_steps):
        preview(step, x0, x, total_steps)
        comfy.model_management.throw_exception_if_processing_interrupted()

    out = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, samples,
                              denoise=denoise, noise_mask=latent.get("noise_mask"), callback=callback,
                              disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    result = latent.copy()
    result["samples"] = out
    return result


PROBE_NODES = [LayerLabSimilarityProbe]
