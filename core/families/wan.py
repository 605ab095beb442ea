"""Wan 2.1 / 2.2 text- and image-to-video (``WanModel``): one list of 30-40 single-stream blocks.

``blocks`` is the ``single_blocks`` stream: video tokens that self-attend and cross-attend to the
text (and, for I2V, CLIP image) context, which is not a stream of its own. Wan 2.2 14B (two such
models, high and low noise), Wan 2.2 TI2V 5B, Wan 2.1 Fun Control/InP and FlowRVS load as this same
class. By loop position, each following its block although the stream is single:
``patches_replace["dit"][("double_block", i)]``, block-index patches (``patches["double_block"]``
with ``"block_index": i``) and ``transformer_options["block_index"]`` (MultiTalk's audio
cross-attention picks its layer by it).

Uni3C's ControlNet is a block-index patch that runs its own control layers one after another, each
on the previous one's output, starting over at index 0: in another order its layers would be fed
each other's states, so it is refused with any order but the model's own.

Wan's other classes keep more data by loop position and are refused, each with its reason.
"""

from typing import Mapping

from . import Family, Layout, SubLayers
from ..plan import PlanError, Steps

UNI3C_PATCH = "WanUni3CCnetPatch"  # comfy_extras.nodes_model_patch: the block-index patch Uni3C adds


def refuse_reorders_with_uni3c(transformer_options: dict, orders: Mapping[str, Steps]) -> None:
    index_patches = transformer_options.get("patches", {}).get("double_block", ())
    if not any(type(patch).__name__ == UNI3C_PATCH for patch in index_patches):
        return
    for stream, steps in orders.items():
        if tuple(steps) != tuple((i,) for i in range(len(steps))):
            raise PlanError(f"Uni3C ControlNet runs its control layers one after another in the order the {stream} "
                            "run, each on the previous layer's output; with another order its layers would get each "
                            "other's states. Use the model's own order with Uni3C, or apply Uni3C after probing")


def _why(what: str) -> str:
    return f"{what}; moving that data with its block is not implemented"


WAN_VARIANTS = {
    "comfy.ldm.wan.model.VaceWanModel": ("Wan VACE", _why(
        "after the block at every (blocks / VACE layers)-th loop position it runs the next VACE block, each on the "
        "previous VACE block's output, and adds its hint (a layer mapping by position)")),
    "comfy.ldm.wan.model.WanModel_S2V": ("Wan 2.2 S2V", _why(
        "its audio injector adds audio after the blocks whose loop position is in its list of injected block ids")),
    "comfy.ldm.wan.model_animate.AnimateWanModel": ("Wan 2.2 Animate", _why(
        "its face adapter adds motion after every fifth loop position, with fuser block position // 5")),
    "comfy.ldm.wan.model_animate2.WanAnimate2Model": ("Wan Animate 2", _why(
        "its pose branch runs alongside the blocks, carrying its state from one loop position to the next, and "
        "caches and prefetches it by position")),
    "comfy.ldm.wan.ar_model.CausalWanModel": ("Causal Wan (autoregressive)", _why(
        "each block gets the key/value cache and cross-attention cache at its loop position, filled frame by "
        "frame across calls")),
    "comfy.ldm.wan.model_wandancer.WanDancerModel": ("WanDancer", _why(
        "its music injector adds music after the blocks whose loop position is in its list of injected block ids")),
    "comfy.ldm.wan.model.CameraWanModel": ("Wan Fun Camera", "its loop has not been checked and tested yet"),
    "comfy.ldm.wan.model.HumoWanModel": ("Wan HuMo", "its loop has not been checked and tested yet"),
    "comfy.ldm.wan.model.SCAILWanModel": ("Wan SCAIL", "its loop has not been checked and tested yet"),
    "comfy.ldm.wan.model.SCAIL2WanModel": ("Wan SCAIL-2", "its loop has not been checked and tested yet"),
}

WAN = Family(
    name="Wan",
    models="Wan 2.1 / 2.2",
    classes=("comfy.ldm.wan.model.WanModel",),
    block_lists={"single_blocks": "blocks"},
    replace_kinds={"single_blocks": "double_block"},
    index_patches={"single_blocks": "double_block"},
    check_patches=refuse_reorders_with_uni3c,
    hidden_states={"single_blocks": Layout.of(x="image")},
    # self-attention (gated) and cross-attention to the text (and image, for I2V; added as it is) are both
    # the attention part
    sublayers={"single_blocks": SubLayers(attn=("self_attn", "cross_attn"), mlp=("ffn",))},
    refused=WAN_VARIANTS,
)
