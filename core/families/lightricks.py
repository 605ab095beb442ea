"""LTXV and LTX-2 (Lightricks): one list, ``transformer_blocks``, as the ``single_blocks`` stream.

LTXV's blocks run on the video tokens alone and cross-attend to the text, so the list is single
stream. LTX-2's blocks take and return one ``(video, audio)`` tuple (each stream self-attends,
cross-attends to its text and to the other stream); it is single stream too, with two parts.
By loop position: ``patches_replace["dit"][("double_block", i)]`` (so named in both loops), which
follows its block.

LTX-2 (ComfyUI 0.33) also builds its block prefetch queue from ``list(transformer_blocks)``, which
is the planned order, so blocks are prefetched in the order they run (a parallel group's members
are loaded as they run instead). Its STG positions (``transformer_options["stg_self_attn_blocks"]``,
set by the LTXV Spatio-Temporal Guidance node) are read by loop position; a plan that would put a
perturbed position on another block, or split a parallel group across it, is refused.
"""

from typing import Mapping

from . import Family, Layout, SubLayers
from ..plan import PlanError, Steps, format_steps

STG = "stg_self_attn_blocks"


def check_stg(transformer_options: dict, orders: Mapping[str, Steps]) -> None:
    perturbed = transformer_options.get(STG)
    steps = orders.get("single_blocks")
    if not perturbed or steps is None:
        return
    for position, step in enumerate(steps):
        wanted = [i in perturbed for i in step]
        if any(wanted) and not all(wanted) or any(wanted) != (position in perturbed):
            blocks = ", ".join(map(str, sorted(perturbed)))
            raise PlanError(
                f"LTX-2: the LTXV Spatio-Temporal Guidance node perturbs the self-attention of transformer_blocks "
                f"{blocks} by their position in the loop, and this plan runs {format_steps((step,))} at position "
                f"{position}, so the perturbation would land on another block (moving it with its block is not "
                "implemented); perturb blocks the plan leaves at their own position, or leave STG out")


LTXV = Family(
    name="LTXV",
    classes=("comfy.ldm.lightricks.model.LTXVModel",),
    block_lists={"single_blocks": "transformer_blocks"},
    replace_kinds={"single_blocks": "double_block"},
    hidden_states={"single_blocks": Layout.of(x="image")},
    # self-attention (gated) and cross-attention to the text (gated or not) are both the attention part
    sublayers={"single_blocks": SubLayers(attn=("attn1", "attn2"), mlp=("ff",))},
)

LTX2 = Family(
    name="LTX-2",
    classes=("comfy.ldm.lightricks.av_model.LTXAVModel",),
    block_lists={"single_blocks": "transformer_blocks"},
    replace_kinds={"single_blocks": "double_block"},
    check_patches=check_stg,
    hidden_states={"single_blocks": Layout.of(x=("video", "audio"))},
    # in each stream: self-attention, cross-attention to its text and to the other stream (all gated)
    sublayers={"single_blocks": SubLayers(
        attn=("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"),
        mlp=("ff", "audio_ff"))},
)
