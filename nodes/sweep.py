"""The importance sweep node: skip each block (or window of blocks) alone and measure how far the result moves."""

from __future__ import annotations

import math

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
from comfy_api.latest import io, ui

from ..core.experiments.bar_chart import render, to_array
from ..core.experiments.fast_sweep import FastSweep, every_start, resume
from ..core.experiments.sweep import (GRANULARITIES, METRIC_NAMES, METRICS, MODES, STREAM_CHOICES, Measured,
                                      SweepError,
                                      build_report, chart_panels, check_metric, check_one_order, distances,
                                      plan_texts, skip_rewrite, suggest, swept_streams, to_json, variants, windows)
from ..core.patching import APPLY_MODEL, KEY, executed_orders, family_of, layer_plan, with_rewrites
from .reorder import MODEL_HELP
from .sampling import RunsProgress, decode, ksampler_inputs, latent_to_sample, sample

CATEGORY = "layer_lab"
FAST_WRAPPER_KEY = "dit_layer_lab_fast_sweep"
LATENT_METRICS = ("latent_cosine", "latent_rel_l2")


class LayerLabImportanceSweep(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabImportanceSweep",
            display_name="Layer Lab Importance Sweep",
            category=CATEGORY,
            description="Skip each block (or each window of consecutive blocks) on its own and measure how far the "
                        "result moves from the model as received (its baseline). Draws a bar chart per stream, ranks the blocks "
                        "from safest to skip to most important, and suggests a skip set for a budget, as plan text "
                        "ready for Layer Lab Plan.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_HELP + ". A model "
                                                "that already carries a Layer Lab plan is swept in its planned order."),
                io.Conditioning.Input("positive", tooltip="The prompt, as for KSampler."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as for KSampler."),
                io.Latent.Input("latent_image", tooltip="The latent to start from, as for KSampler."),
                *ksampler_inputs(
                    seed="The noise seed, as for KSampler: every variant gets the same noise.",
                    steps="Sampling steps of every run in full mode. Fast mode makes one model evaluation and "
                          "does not use it.",
                    cfg="Classifier-free guidance scale, as for KSampler; used in both modes.",
                    sampler_name="The sampler, as for KSampler (full mode only).",
                    scheduler="The noise schedule, as for KSampler (full mode only).",
                    denoise="How much of the schedule to run, as for KSampler (full mode only)."),
                io.Combo.Input("streams", options=list(STREAM_CHOICES), default="both",
                               tooltip="Which blocks to sweep: double_blocks (SD3: joint blocks), single_blocks, "
                                       "or both."),
                io.Int.Input("width", default=1, min=1, max=999,
                             tooltip="How many consecutive blocks each variant skips. 1 = every block alone; "
                                     "2 = blocks 0-1, 1-2, 2-3, ... (windows slide by one block)."),
                io.Combo.Input("mode", options=list(MODES), default="fast",
                               tooltip="full: sample every variant like KSampler and compare the final latents "
                                       "(exact, one sampling run per variant). fast: one model evaluation at "
                                       "noise level fast_percent, comparing the model's denoised prediction; it "
                                       "reuses the baseline's block inputs, so each variant only computes the "
                                       "blocks after its window."),
                io.Float.Input("fast_percent", default=0.5, min=0.0, max=0.99, step=0.01,
                               tooltip="Fast mode: where in the schedule to evaluate, as start_percent elsewhere "
                                       "in ComfyUI (0 = pure noise, near 1 = almost clean)."),
                io.Combo.Input("metric", options=list(METRICS), default="latent_cosine",
                               tooltip="What the ranking, chart and suggestion use. latent_*: on the latents; "
                                       "image_*: on the decoded images (needs a VAE). cosine: 1 - cosine similarity; "
                                       "rel_l2: size of the change relative to the baseline. All are reported."),
                io.Int.Input("budget", default=3, min=0, max=999,
                             tooltip="How many blocks the suggested skip set may remove in total, over the swept "
                                     "streams: the individually safest windows that do not overlap."),
                io.Float.Input("max_distance", default=0.0, min=0.0, max=1e6, step=0.001,
                               tooltip="0 = no limit. Otherwise a window whose own distance is above this is "
                                       "never suggested, even within the budget."),
                io.Combo.Input("granularity", options=list(GRANULARITIES), default="block",
                               tooltip="What each variant drops: block = the window's blocks are skipped; attention "
                                       "/ mlp = only that sub-layer of each block in the window (plan text '3:attn', "
                                       "'3:mlp'). Blocks that have no separate sub-layer (AuraFlow, Flux-style "
                                       "single blocks) are listed as excluded, with the reason."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional. With a VAE, every result is also decoded and the image distances "
                                     "are measured too."),
            ],
            outputs=[
                io.Image.Output(display_name="chart",
                                tooltip="One bar chart per stream: the distance each skip caused, the suggested "
                                        "skip set in orange."),
                io.String.Output(display_name="ranking",
                                 tooltip="JSON: every window from safest to most important with all its distances, "
                                         "the windows that cannot be skipped and why, and the suggestion."),
                io.String.Output(display_name="double_blocks",
                                 tooltip="The suggested double_blocks plan, the stream's whole order, for a Layer Lab "
                                         "Plan node applied to the model before any other Layer Lab node."),
                io.String.Output(display_name="single_blocks",
                                 tooltip="The suggested single_blocks plan, the stream's whole order, for a Layer Lab "
                                         "Plan node applied to the model before any other Layer Lab node."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed: int, steps: int, cfg: float, sampler_name: str,
                scheduler: str, denoise: float, streams: str, width: int, mode: str, fast_percent: float,
                metric: str, budget: int, max_distance: float, vae=None, granularity: str = "block") -> io.NodeOutput:
        base = layer_plan(model)
        check_one_order(base)
        family = family_of(base)
        if mode not in MODES:
            raise SweepError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        check_metric(metric, METRICS if vae is not None else LATENT_METRICS)
        suggest([], metric, budget, max_distance)  # checks budget and max_distance before any sampling
        swept = windows(base.counts, streams, width, granularity)
        runnable, excluded = variants(base, family.check, swept)

        # one bar for the whole sweep: run i of n (the baseline first) fills it up to i/n, step by step
        progress = RunsProgress(len(runnable) + 1, steps if mode == "full" else 1)
        if mode == "full":
            runs = FullRuns(model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler,
                            denoise, progress)
        else:
            runs = FastRuns(model, family, base, runnable, positive, negative, latent_image, seed, cfg, fast_percent)

        measured = []
        measure = Measure(vae)
        with runs:
            measure.baseline = runs.baseline()
            progress.run_done()
            for variant in runnable:
                comfy.model_management.throw_exception_if_processing_interrupted()
                measured.append(Measured(variant.window, *measure.with_items(runs.variant(variant))))
                progress.run_done()

        chosen = suggest(measured, metric, budget, max_distance)
        texts = plan_texts(base, chosen)
        streams_swept = swept_streams(base.counts, streams)
        settings = {"seed": seed, "cfg": cfg, **runs.settings, "order": base.summary()}
        report = build_report(family=base.family, counts=base.counts, streams=streams_swept, width=width, mode=mode,
                              metric=metric, budget=budget, max_distance=max_distance, measured=measured,
                              excluded=excluded, chosen=chosen, texts=texts, settings=settings,
                              granularity=granularity)
        subtitle = (f"{base.family}, {runs.describe}, width {width}, {granularity}, {len(measured)} variants; "
                    f"budget {budget} blocks")
        chart = render(chart_panels(streams_swept, swept, measured, chosen, metric, subtitle, max_distance))
        image = torch.from_numpy(to_array(chart))[None]
        return io.NodeOutput(image, to_json(report), texts.get("double_blocks", "all"),
                             texts.get("single_blocks", "all"), ui=ui.PreviewImage(image, cls=cls))


class Measure:
    """The distances of a result to the baseline; only the baseline (and its decoded image) is kept."""

    def __init__(self, vae):
        self.vae, self._baseline, self._image = vae, None, None

    @property
    def baseline(self):
        return self._baseline

    @baseline.setter
    def baseline(self, latent):
        self._baseline = latent
        self._image = None if self.vae is None else decode(self.vae, {"samples": latent})

    def with_items(self, result) -> tuple[dict, dict]:
        """The means over the batch and each item's value, latent distances and, with a VAE, image ones."""
        found, per_item = distances(self._baseline, result, "latent")
        if self.vae is not None:
            more, more_items = distances(self._image, decode(self.vae, {"samples": result}), "image")
            found, per_item = {**found, **more}, {**per_item, **more_items}
        return found, per_item

    def __call__(self, result) -> dict:
        return self.with_items(result)[0]


class FullRuns:
    """Every variant sampled like KSampler: the model as given, then one skip-plan clone per variant."""

    def __init__(self, model, positive, negative, latent, seed, steps, cfg, sampler_name, scheduler, denoise,
                 progress: RunsProgress):
        self.model = model
        self.run = lambda m: sample(m, positive, negative, latent, seed, steps, cfg, sampler_name, scheduler,
                                    denoise, progress=progress)["samples"]
        self.settings = {"steps": steps, "sampler_name": sampler_name, "scheduler": scheduler, "denoise": denoise}
        self.describe = f"full sampling, {steps} steps"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def baseline(self) -> torch.Tensor:
        return self.run(self.model)

    def variant(self, variant) -> torch.Tensor:
        skipped, _ = with_rewrites(self.model, lambda counts: [skip_rewrite(variant.plan, variant.window)])
        return self.run(skipped)

    def rewritten(self, rewrites) -> torch.Tensor:
        """The model with ``rewrites`` added (a search's combined skip), sampled."""
        planned, _ = with_rewrites(self.model, lambda counts: rewrites)
        return self.run(planned)


class FastRuns:
    """One model evaluation per variant at one noise level, resumed from the baseline's recorded block inputs.

    ``runnable`` None: the plans come later (``rewritten``), so the input of every block is recorded.
    """

    def __init__(self, model, family, base, runnable, positive, negative, latent, seed, cfg, percent):
        if not 0.0 <= percent < 1.0:
            raise SweepError(f"fast_percent = {percent}: choose 0 <= fast_percent < 1 (1 is the clean end of the "
                             "schedule, where there is nothing left to predict)")
        sigma = float(model.get_model_object("model_sampling").percent_to_sigma(percent))
        if not sigma > 0.0:
            raise SweepError(f"fast_percent = {percent} maps to noise level {sigma}; choose a smaller fast_percent")
        self.base, self.family = base, family
        self.base_orders = executed_orders(base, family)
        self.resumes = {v.window: resume(self.base_orders, executed_orders(v.plan, family)) for v in runnable or ()}
        needed = every_start(self.base_orders) if runnable is None else self.resumes.values()
        self.sweep = FastSweep(family, self.base_orders, needed,
                               store_device=comfy.model_management.intermediate_device(),
                               rows=evaluation_rows(latent, positive, negative, cfg, model.model_options))
        # a clone whose only block machinery is the sweep's wrapper (it runs the model's plan itself)
        self.model = model.clone()
        self.model.remove_wrappers_with_key(APPLY_MODEL, KEY)
        self.predict = lambda: predict_once(self.model, positive, negative, latent, seed, cfg, sigma)
        self.settings = {"fast_percent": percent, "sigma": sigma}
        self.describe = f"fast, one evaluation at {percent:.0%} of the schedule (sigma {sigma:.3g})"

    def __enter__(self):
        self.model.add_wrapper_with_key(APPLY_MODEL, FAST_WRAPPER_KEY, self.sweep.around_call)
        return self

    def __exit__(self, *exc):
        self.settings["held_state_bytes"] = self.sweep.nbytes  # the recorded block inputs, at their peak
        if self.sweep.estimate is not None:  # what the sweep said it would hold before it held it
            self.settings["held_state_bytes_estimate"] = self.sweep.estimate.total
            self.settings["held_state_device"] = str(self.sweep.store_device)
            self.settings["available_bytes"] = self.sweep.available
        self.sweep.release()
        self.model.remove_wrappers_with_key(APPLY_MODEL, FAST_WRAPPER_KEY)
        return False

    def baseline(self) -> torch.Tensor:
        with self.sweep.recording():
            return self.predict()

    def variant(self, variant) -> torch.Tensor:
        with self.sweep.running(self.resumes[variant.window]):
            return self.predict()

    def rewritten(self, rewrites) -> torch.Tensor:
        """The base plan with ``rewrites`` added (a search's combined skip), resumed where it first differs."""
        plan = self.base
        for rewrite in rewrites:
            plan = plan.with_rewrite(rewrite, self.family.check)
        with self.sweep.running(resume(self.base_orders, executed_orders(plan, self.family))):
            return self.predict()


def evaluation_rows(latent: dict, positive, negative, cfg: float, model_options: dict) -> int:
    """Batch rows of one model evaluation, every call together: the latent's batch for each conditioning
    entry ComfyUI evaluates (the negative ones only when cfg is not 1, as ComfyUI skips them then)."""
    skips_negative = math.isclose(cfg, 1.0) and not model_options.get("disable_cfg1_optimization", False)
    entries = len(positive) + (0 if skips_negative else len(negative))
    return latent["samples"].shape[0] * max(1, entries)


def predict_once(model, positive, negative, latent: dict, seed, cfg, sigma: float) -> torch.Tensor:
    """The model's denoised prediction from the latent noised to ``sigma``, as a sampler's first step sees it.

    ComfyUI's own sampling path (conditioning, CFG, noise scaling) with a sampler that evaluates the
    model once and returns its prediction.
    """
    samples = latent_to_sample(model, latent)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    sigmas = torch.tensor([sigma, 0.0])
    return comfy.sample.sample_custom(model, noise, cfg, comfy.samplers.KSAMPLER(_evaluate_once), sigmas, positive,
                                      negative, samples, noise_mask=latent.get("noise_mask"),
                                      callback=_interruptible, disable_pbar=True, seed=seed)


def _evaluate_once(model, x, sigmas, extra_args=None, callback=None, disable=None):
    denoised = model(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))
    if callback is not None:
        callback({"x": x, "i": 0, "sigma": sigmas[0], "sigma_hat": sigmas[0], "denoised": denoised})
    return denoised


def _interruptible(step, x0, x, total_steps):
    comfy.model_management.throw_exception_if_processing_interrupted()


SWEEP_NODES = [LayerLabImportanceSweep]
