"""The skip search node: grow a skip set block by block, measuring every candidate as the plan it becomes."""

from __future__ import annotations

import torch

import comfy.model_management
from comfy_api.latest import io, ui

from ..core.experiments import line_chart
from ..core.experiments.bar_chart import to_array
from ..core.experiments.skip_search import (STRATEGIES, Refused, Target, build_report, chart_panel, check_target,
                                            evaluation_bound, search, skip_rewrites, to_json)
from ..core.experiments.sweep import (GRANULARITIES, METRICS, MODES, STREAM_CHOICES, SweepError,
                                      check_metric, check_one_order, swept_streams, variants, windows)
from ..core.patching import family_of, layer_plan
from ..core.plan import PlanError
from .reorder import MODEL_HELP
from .sampling import RunsProgress, ksampler_inputs
from .sweep import CATEGORY, LATENT_METRICS, FastRuns, FullRuns, Measure


class LayerLabSkipSearch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabSkipSearch",
            display_name="Layer Lab Skip Search",
            category=CATEGORY,
            description="Find blocks to remove together: grow a skip set one block at a time (greedy, or a beam of "
                        "plans), measuring every candidate as the combined plan it would become, never as a sum of "
                        "single scores. At every size it also measures the sweep's top-k suggestion as a whole and "
                        "keeps the closer. Returns the plan text for Layer Lab Plan, a chart of distance against "
                        "blocks removed, the JSON of every evaluation, and the final plan re-run in full.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_HELP + ". A model that already carries a Layer Lab plan "
                                                             "is searched in its planned order."),
                io.Conditioning.Input("positive", tooltip="The prompt, as for KSampler."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as for KSampler."),
                io.Latent.Input("latent_image", tooltip="The latent to start from, as for KSampler."),
                *ksampler_inputs(
                    seed="The noise seed, as for KSampler: every evaluation gets the same noise.",
                    steps="Sampling steps of every run in full mode, and of the final plan's full re-run in fast "
                          "mode.",
                    cfg="Classifier-free guidance scale, as for KSampler; used in both modes.",
                    sampler_name="The sampler, as for KSampler (full mode, and the final full re-run).",
                    scheduler="The noise schedule, as for KSampler (full mode, and the final full re-run).",
                    denoise="How much of the schedule to run, as for KSampler (full mode, and the final full "
                            "re-run)."),
                io.Combo.Input("streams", options=list(STREAM_CHOICES), default="both",
                               tooltip="Which blocks may be removed: double_blocks (SD3: joint blocks), "
                                       "single_blocks, or both."),
                io.Combo.Input("granularity", options=list(GRANULARITIES), default="block",
                               tooltip="What one removal drops: block = the whole block is skipped; attention / "
                                       "mlp = only that sub-layer of the block (plan text '3:attn'). Blocks without "
                                       "that sub-layer are listed as excluded, with the reason."),
                io.Combo.Input("mode", options=list(MODES), default="fast",
                               tooltip="full: sample every candidate like KSampler and compare the final latents. "
                                       "fast: one model evaluation at fast_percent per candidate, resumed from the "
                                       "baseline's recorded state before the earliest block it changes; the final "
                                       "plan is then re-run in full."),
                io.Float.Input("fast_percent", default=0.5, min=0.0, max=0.99, step=0.01,
                               tooltip="Fast mode: where in the schedule to evaluate (0 = pure noise, near 1 = "
                                       "almost clean)."),
                io.Combo.Input("metric", options=list(METRICS), default="latent_cosine",
                               tooltip="What the search minimises. latent_*: on the latents; image_*: on the "
                                       "decoded images (needs a VAE). All are reported."),
                io.Int.Input("blocks", default=6, min=0, max=999,
                             tooltip="How many blocks (or sub-layers) to remove. 0 = no count: remove as many "
                                     "as max_distance allows."),
                io.Float.Input("max_distance", default=0.0, min=0.0, max=1e6, step=0.001,
                               tooltip="0 = no limit. Otherwise the search stops before the first size whose "
                                       "closest plan is farther than this."),
                io.Combo.Input("strategy", options=list(STRATEGIES), default="greedy",
                               tooltip="greedy: keep the closest plan at each size and grow it. beam: keep the "
                                       "beam_width closest plans and grow each."),
                io.Int.Input("beam_width", default=3, min=1, max=999,
                             tooltip="Beam only: how many plans are kept and grown at each size."),
                io.Int.Input("budget", default=400, min=1, max=100000,
                             tooltip="The most evaluations (candidates and top-k plans) the search may make; the "
                                     "baseline and the final full re-run are not counted. When it is spent the "
                                     "result is the last size measured completely, and the report says so."),
                io.Vae.Input("vae", optional=True,
                             tooltip="Optional. With a VAE, every result is also decoded and the image distances "
                                     "are measured too."),
            ],
            outputs=[
                io.Image.Output(display_name="chart",
                                tooltip="Measured distance against blocks removed: the search's kept plan and the "
                                        "top-k singles at each size, and the final plan's full re-run."),
                io.String.Output(display_name="report",
                                 tooltip="JSON: every evaluation (plan, blocks removed, distances, fast or full, "
                                         "size), the path per size with which plan won, why the search stopped, "
                                         "and the result with its full-mode distance."),
                io.String.Output(display_name="double_blocks",
                                 tooltip="The found double_blocks plan, the stream's whole order, for a Layer Lab "
                                         "Plan node applied to the model before any other Layer Lab node."),
                io.String.Output(display_name="single_blocks",
                                 tooltip="The found single_blocks plan, the stream's whole order, for a Layer Lab "
                                         "Plan node applied to the model before any other Layer Lab node."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed: int, steps: int, cfg: float, sampler_name: str,
                scheduler: str, denoise: float, streams: str, granularity: str, mode: str, fast_percent: float,
                metric: str, blocks: int, max_distance: float, strategy: str, beam_width: int, budget: int,
                vae=None) -> io.NodeOutput:
        base = layer_plan(model)
        check_one_order(base)
        family = family_of(base)
        if mode not in MODES:
            raise SweepError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
        check_metric(metric, METRICS if vae is not None else LATENT_METRICS)
        runnable, excluded = variants(base, family.check, windows(base.counts, streams, 1, granularity))
        units = [v.window for v in runnable]
        target = Target(blocks, max_distance, budget, strategy, beam_width)
        check_target(target, len(units))

        # one bar: the baseline, at most `bound` evaluations, and in fast mode the two full runs of the re-run
        bound = evaluation_bound(len(units), target)
        progress = RunsProgress(1 + bound + (2 if mode == "fast" else 0), steps)
        full = FullRuns(model, positive, negative, latent_image, seed, steps, cfg, sampler_name, scheduler, denoise,
                        progress)
        runs = full if mode == "full" else FastRuns(model, family, base, None, positive, negative, latent_image, seed,
                                                    cfg, fast_percent)
        measure = Measure(vae)

        def evaluate(chosen):
            comfy.model_management.throw_exception_if_processing_interrupted()
            try:  # the combined plan is checked before it runs
                rewrites = skip_rewrites(base, chosen)
                plan = base
                for rewrite in rewrites:
                    plan = plan.with_rewrite(rewrite, family.check)
            except PlanError as error:
                raise Refused(str(error)) from None
            found = measure(runs.rewritten(rewrites))
            progress.run_done()
            return found

        with runs:
            measure.baseline = runs.baseline()
            progress.run_done()
            result = search(units, metric, target, evaluate)
        settings = {"seed": seed, "cfg": cfg, **runs.settings, "order": base.summary()}
        if mode == "fast":
            settings["full_rerun"] = dict(full.settings)

        measure = None  # the fast baseline is not needed any more
        progress.skip_to(1 + bound)
        final_full = full_distances(result, mode, full, vae, base, progress)
        progress.skip_to(progress.runs)

        streams_searched = swept_streams(base.counts, streams)
        report = build_report(family=base.family, counts=base.counts, streams=streams_searched,
                              granularity=granularity, mode=mode, metric=metric, target=target, result=result,
                              base=base, excluded=excluded, full=final_full, settings=settings)
        chart = line_chart.render(chart_panel(result, metric, mode, final_full, target, base.family, runs.describe))
        image = torch.from_numpy(to_array(chart))[None]
        texts = report["result"]["plan"]
        return io.NodeOutput(image, to_json(report), texts.get("double_blocks", "all"),
                             texts.get("single_blocks", "all"), ui=ui.PreviewImage(image, cls=cls))


def full_distances(result, mode: str, full: FullRuns, vae, base, progress: RunsProgress) -> dict:
    """The final plan sampled in full like KSampler and compared with the model as received sampled the same way."""
    if result.final is None:
        return {"distances": None, "evaluation": None,
                "note": "nothing was removed: the plan is the model as received"}
    if mode == "full":
        return {"distances": result.final.distances, "evaluation": result.final.index,
                "note": "full mode: the search's own evaluation of this plan is that sampling"}
    measure = Measure(vae)
    comfy.model_management.throw_exception_if_processing_interrupted()
    measure.baseline = full.baseline()
    progress.run_done()
    comfy.model_management.throw_exception_if_processing_interrupted()
    found = measure(full.rewritten(skip_rewrites(base, result.final.skip)))
    progress.run_done()
    return {"distances": found, "evaluation": None,
            "note": "the final plan sampled in full like KSampler, against the model as received sampled the "
                    "same way"}


SKIP_SEARCH_NODES = [LayerLabSkipSearch]
