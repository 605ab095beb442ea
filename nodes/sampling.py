"""What KSampler and VAEDecode do, shared by the nodes that sample (probe, plan grid, importance sweep)."""

from __future__ import annotations

import inspect

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io


KSAMPLER_TOOLTIPS = {
    "seed": "The random seed for the noise, as for KSampler.",
    "steps": "Sampling steps, as for KSampler.",
    "cfg": "Classifier-free guidance scale, as for KSampler.",
    "sampler_name": "The sampler, as for KSampler.",
    "scheduler": "The noise schedule, as for KSampler.",
    "denoise": "How much of the schedule to run, as for KSampler (below 1 keeps part of the input latent).",
}


def ksampler_inputs(**tooltips: str) -> list:
    """KSampler's own settings with its names, defaults and ranges (model, conditioning and latent excluded).

    A keyword replaces one input's tooltip, e.g. ``ksampler_inputs(seed="... the same noise for every variant")``.
    """
    unknown = set(tooltips) - set(KSAMPLER_TOOLTIPS)
    if unknown:
        raise TypeError(f"no KSampler input named {sorted(unknown)}; the inputs are {list(KSAMPLER_TOOLTIPS)}")
    tip = {**KSAMPLER_TOOLTIPS, **tooltips}
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip=tip["seed"]),
        io.Int.Input("steps", default=20, min=1, max=10000, tooltip=tip["steps"]),
        io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=tip["cfg"]),
        io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, tooltip=tip["sampler_name"]),
        io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, tooltip=tip["scheduler"]),
        io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=tip["denoise"]),
    ]


class RunsProgress:
    """One progress bar for a node that samples several times: ``steps`` ticks per run, with previews.

    KSampler's own bar restarts at 0 for every call, which on one node reads as a bar jumping back.
    Here run i of n fills the bar from (i-1)/n to exactly i/n, step by step.
    """

    def __init__(self, runs: int, steps: int):
        self.runs, self.steps, self.done = runs, steps, 0
        self.bar = comfy.utils.ProgressBar(runs * steps)

    def at_step(self, step: int, total_steps: int, preview=None) -> None:
        within = min(self.steps, (step + 1) * self.steps // max(1, total_steps))
        self.bar.update_absolute(self.done * self.steps + within, preview=preview)

    def run_done(self) -> None:
        self.done += 1
        self.bar.update_absolute(self.done * self.steps)

    def skip_to(self, runs_done: int) -> None:
        """Go on from run ``runs_done`` + 1: a node that needed fewer runs than it counted on (a search that
        stopped early) still ends with a full bar."""
        self.done = max(self.done, runs_done)
        self.bar.update_absolute(self.done * self.steps)


def sample(model, positive, negative, latent: dict, seed, steps, cfg, sampler_name, scheduler, denoise,
           progress: RunsProgress | None = None) -> dict:
    """What KSampler does (nodes.common_ksampler), with a preview callback that also honours interrupts.

    With ``progress``, steps and previews go to that shared bar instead of a new bar for this call.
    """
    samples = latent_to_sample(model, latent)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    if progress is None:
        preview = latent_preview.prepare_callback(model, steps)
    else:
        previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

        def preview(step, x0, x, total_steps):
            image = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
            progress.at_step(step, total_steps, image)

    def callback(step, x0, x, total_steps):
        preview(step, x0, x, total_steps)
        comfy.model_management.throw_exception_if_processing_interrupted()

    out = comfy.sample.sample(model, noise, steps, cfg, sampler_name, scheduler, positive, negative, samples,
                              denoise=denoise, noise_mask=latent.get("noise_mask"), callback=callback,
                              disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return sampled_latent(latent, out)


# what an empty-latent node says about the size it meant; ComfyUI 0.33 reads them, v0.8.0 has none
_LATENT_RATIOS = ("downscale_ratio_spacial", "downscale_ratio_temporal")
_FIX_READS_RATIOS = all(name in inspect.signature(comfy.sample.fix_empty_latent_channels).parameters
                        for name in _LATENT_RATIOS)


def latent_to_sample(model, latent: dict) -> torch.Tensor:
    """The tensor KSampler samples from a LATENT: channels, and in ComfyUI 0.33 the size its empty-latent node meant."""
    ratios = [latent.get(name) for name in _LATENT_RATIOS] if _FIX_READS_RATIOS else []
    return comfy.sample.fix_empty_latent_channels(model, latent["samples"], *ratios)


def sampled_latent(latent: dict, samples: torch.Tensor) -> dict:
    """The LATENT KSampler returns: the input's keys with the new samples, less the ratios it has applied."""
    result = {k: v for k, v in latent.items() if not (_FIX_READS_RATIOS and k in _LATENT_RATIOS)}
    result["samples"] = samples
    return result


def decode(vae, latent: dict) -> torch.Tensor:
    """What VAEDecode does: IMAGE [B, H, W, C]; a video VAE's 5-D output is folded into the batch."""
    samples = latent["samples"]
    if samples.is_nested:
        samples = samples.unbind()[0]
    images = vae.decode(samples)
    if images.ndim == 5:
        images = images.reshape(-1, images.shape[-3], images.shape[-2], images.shape[-1])
    return images
