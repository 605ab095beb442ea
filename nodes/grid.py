"""The plan grid node: sample the model once per plan line, from the same noise, and show the results side by side."""

from __future__ import annotations

import time

import torch

import comfy.model_management
from comfy_api.latest import io, ui

from ..core.drawing import to_float_array
from ..core.experiments import grid_image
from ..core.experiments.plan_grid import caption, plan_variants, report, variant_record
from ..core.patching import family_of, layer_plan, with_rewrites
from ..core.preview import model_blocks_ui
from .reorder import MODEL_HELP
from .sampling import RunsProgress, decode, ksampler_inputs, sample

CATEGORY = "layer_lab"

DEFAULT_PLANS = """\
# One variant per line:  label: double_blocks=<plan>; single_blocks=<plan>
# The unchanged model ("baseline") always comes first. A stream left out runs as usual.
# These lines suit Flux.1 and Chroma (19 double, 38 single blocks).
skip middle double: double_blocks=0-2, 17-18
skip middle single: single_blocks=0-3, 34-37
reverse middle single: single_blocks=0-3, 33-4, 34-37
repeat centre single: single_blocks=0-3, 18*30, 34-37
parallel middle single: single_blocks=0-3, [4-33], 34-37
looped parallel x3: single_blocks=0-3, [4-33]*3, 34-37"""


class LayerLabPlanGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabPlanGrid",
            display_name="Layer Lab Plan Grid",
            category=CATEGORY,
            description="Sample the same prompt and noise once with the unchanged model and once per plan line, "
                        "then show all images in one captioned grid. Every line is checked before anything is "
                        "sampled; the model you connect is never changed.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_HELP + ". It runs "
                                                "as received for the baseline; each line's plan is applied on top "
                                                "of any plan it already carries."),
                io.Vae.Input("vae", tooltip="The VAE that decodes every variant's latent, as for VAE Decode."),
                io.Conditioning.Input("positive", tooltip="The prompt, as for KSampler; the same for every variant."),
                io.Conditioning.Input("negative", tooltip="The negative prompt, as for KSampler."),
                io.Latent.Input("latent_image", tooltip="The latent to start from, as for KSampler. With a batch of "
                                                        "several images, the grid gets one row per image."),
                *ksampler_inputs(seed="The random seed for the noise. Every variant starts from this same noise."),
                io.String.Input("plans", default=DEFAULT_PLANS, multiline=True,
                                tooltip="One variant per line: 'label: double_blocks=<plan>; single_blocks=<plan>'. "
                                        "A stream left out runs as usual; '#' starts a comment. Labels are "
                                        "unique; 'baseline' is the unchanged model and is always included. "
                                        "Plans use the plan language, e.g. '0-2, [3-15]*3, 16-18'."),
            ],
            outputs=[
                io.Image.Output(display_name="grid", tooltip="All variants in one picture, each image under its "
                                                             "label and effective block order, baseline first."),
                io.Image.Output(display_name="images", tooltip="Every variant's image as a batch: the baseline's "
                                                               "first, then one per plan line in order."),
                io.String.Output(display_name="report", tooltip="JSON: per variant its label, line, plans, "
                                                                "effective order per stream and timings; plus the "
                                                                "sampling settings and the grid layout."),
            ],
        )

    @classmethod
    def execute(cls, model, vae, positive, negative, latent_image, seed: int, steps: int, cfg: float,
                sampler_name: str, scheduler: str, denoise: float, plans: str) -> io.NodeOutput:
        base = layer_plan(model)
        variants = plan_variants(plans, base, family_of(base).check)  # every line checked before sampling
        progress = RunsProgress(len(variants), steps)
        images, records = None, []  # images: every variant's decoded batch, written in place (one copy in memory)
        for index, variant in enumerate(variants):
            comfy.model_management.throw_exception_if_processing_interrupted()
            started = time.perf_counter()
            variant_model = model if variant.is_baseline else with_rewrites(model, variant.line.rewrites)[0]
            latent = sample(variant_model, positive, negative, latent_image, seed, steps, cfg, sampler_name,
                            scheduler, denoise, progress=progress)
            del variant_model  # only decoded images are kept from one variant to the next
            sampled = time.perf_counter()
            image = decode(vae, latent)
            del latent
            batch = image.shape[0]
            if images is None:
                images = torch.empty((len(variants) * batch, *image.shape[1:]), dtype=image.dtype,
                                     device=image.device)
            images[index * batch:(index + 1) * batch] = image
            del image
            records.append(variant_record(variant, index, batch, sampled - started, time.perf_counter() - sampled))
            progress.run_done()

        pixels = images.cpu().numpy()
        picture = grid_image.render([pixels[v * batch:(v + 1) * batch] for v in range(len(variants))],
                                    [caption(v) for v in variants])
        columns, rows = grid_image.grid_shape(len(variants), batch)
        settings = {"seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler_name, "scheduler": scheduler,
                    "denoise": denoise, "batch_size": batch}
        arrangement = {"columns": columns, "rows": rows,
                       "cells": "one row per batch item, one column per variant" if batch > 1
                       else "variants row by row, baseline first"}
        grid = torch.from_numpy(to_float_array(picture))
        # the grid shows on the node, and the strip learns the model's real block counts
        shown = {**ui.PreviewImage(grid, cls=cls).as_dict(), **model_blocks_ui(base.family, base.counts)}
        return io.NodeOutput(grid, images, report(base.family, settings, arrangement, records), ui=shown)


GRID_NODES = [LayerLabPlanGrid]
