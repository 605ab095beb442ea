"""The similarity probe node: sample like KSampler while the pack records every block's hidden states."""

from __future__ import annotations

import torch

import comfy.model_management
from comfy_api.latest import io, ui

from ..core.patching import APPLY_MODEL, OBSERVER_KEY, family_of, with_rewrites
from ..core.probe import AGGREGATES, PROBE_WRAPPER_KEY, Probe, check_single_order
from ..core.probe.heatmap import render, to_float_array
from ..core.probe.report import build, to_json
from ..core.probe.similarity import Keep
from .reorder import MODEL_HELP
from .sampling import ksampler_inputs, sample

CATEGORY = "layer_lab"


def keep_states() -> Keep:
    """Where the probe keeps its states: ComfyUI's intermediate device (host memory beside a GPU), products in
    slices on the model's device. Tests swap in ``similarity.EXACT`` (float32 on the model's device, one
    product) as the reference."""
    return Keep(comfy.model_management.intermediate_device())


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
                io.Model.Input("model", tooltip=MODEL_HELP + "; "
                                                "a model with a Layer Lab plan is probed in its planned order."),
                io.Conditioning.Input("positive", tooltip="The prompt to probe with, as for KSampler. Only its rows are captured."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as for KSampler; its half of the batch is never captured."),
                io.Latent.Input("latent_image", tooltip="The latent to start from, as for KSampler."),
                *ksampler_inputs(seed="Noise seed; also fixes which tokens max_tokens keeps.",
                                 steps="Sampling steps; every step is captured."),
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
        keep = keep_states()
        probe = Probe(family_of(plan), aggregate, max_tokens, seed, keep)
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
                               frames=probe.frames, aggregate=aggregate, max_tokens=max_tokens, seed=seed, cfg=cfg,
                               sampler_name=sampler_name, scheduler=scheduler, denoise=denoise,
                               order=plan.summary(), held_bytes=probe.peak_bytes,
                               held_device_bytes=probe.peak_device_bytes, working_bytes=probe.peak_working_bytes,
                               held_on="model device" if keep.exact or keep.device is None else str(keep.device))
        image = torch.from_numpy(to_float_array(render(panels)))
        return io.NodeOutput(image, latent, to_json(report), ui=ui.PreviewImage(image, cls=cls))


PROBE_NODES = [LayerLabSimilarityProbe]
