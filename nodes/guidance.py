"""Guidance away from the model under a plan (Skip Layer Guidance for any plan)."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from ..core.guidance import with_plan_guidance
from ..core.preview import model_blocks_ui
from ..core.patching import layer_plan
from .reorder import CATEGORY, MODEL_HELP, PLAN_HELP

GUIDANCE_HELP = ("In the window, the prediction becomes the CFG result + scale * (cond - cond under the plan), "
                 "one extra model pass per step; outside it, plain sampling. With a plan that skips blocks this is "
                 "ComfyUI's Skip Layer Guidance (SkipLayerGuidanceDiT), window and rescale included.")


class LayerLabPlanGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabPlanGuidance",
            display_name="Layer Lab Plan Guidance",
            category=CATEGORY,
            description="Guide sampling away from the model weakened by a plan. " + GUIDANCE_HELP,
            inputs=[
                io.Model.Input("model", tooltip=MODEL_HELP + "; reorder nodes before or after this one apply "
                                                "to both the normal and the plan's pass."),
                io.String.Input("double_blocks", default="all", multiline=False,
                                tooltip="Plan of the weakened pass for the double-stream blocks, e.g. '0-6, 8-18' "
                                        "or '0-6, 7@0.5, 8-18' or '0-6, 7:attn, 8-18'. " + PLAN_HELP),
                io.String.Input("single_blocks", default="all", multiline=False,
                                tooltip="Plan of the weakened pass for the single-stream blocks. " + PLAN_HELP),
                io.Float.Input("scale", default=3.0, min=0.0, max=100.0, step=0.1,
                               tooltip="How far to move away from the plan's prediction (0: no guidance)."),
                io.Float.Input("rescale", default=0.0, min=0.0, max=10.0, step=0.01,
                               tooltip="Mix of the result and the result rescaled to the standard deviation of the "
                                       "cond prediction (as SLG's rescaling_scale): 0 none, 1 full."),
                io.Float.Input("start_percent", default=0.01, min=0.0, max=1.0, step=0.001,
                               tooltip="Where in the schedule guidance starts."),
                io.Float.Input("end_percent", default=0.15, min=0.0, max=1.0, step=0.001,
                               tooltip="Where it ends. As in Skip Layer Guidance, a step exactly at end_percent is "
                                       "still guided (the pack's plan windows leave it out)."),
            ],
            outputs=[
                io.Model.Output(tooltip="A copy of the model that adds the guidance; the input model is unchanged."),
                io.String.Output(display_name="summary", tooltip="The guidance and what the plan's pass runs."),
            ],
        )

    @classmethod
    def execute(cls, model, double_blocks: str, single_blocks: str, scale: float, rescale: float,
                start_percent: float, end_percent: float) -> io.NodeOutput:
        guided, summary = with_plan_guidance(
            model, {"double_blocks": double_blocks, "single_blocks": single_blocks}, scale, rescale,
            start_percent, end_percent, comfy.samplers.calc_cond_batch)
        plan = layer_plan(model)
        return io.NodeOutput(guided, summary, ui=model_blocks_ui(plan.family, plan.counts))


GUIDANCE_NODES = [LayerLabPlanGuidance]
