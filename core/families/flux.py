"""Flux.1 (dev, schnell and fine-tunes) and Flux.2 (dev, Klein), LongCat-Image: ``comfy.ldm.flux.model.Flux``.

Core's Flux KV Cache node (ComfyUI 0.33) caches a reference image's keys and values under each
block's index on the block's first run, and adds them to every later run of that index. A block
told its own index (see the executor) finds its own cache wherever it runs, but a block that runs
twice in one model call would get the cache its first run just made on top of the live reference
tokens: refused.
"""

from typing import Mapping

from . import Family, Layout, SubLayers
from ..plan import PlanError, Steps, format_steps

# Flux's DoubleStreamBlock and SingleStreamBlock (Chroma and HunyuanVideo run the same classes)
FLUX_STYLE_SUBLAYERS = {
    "double_blocks": SubLayers(attn=("img_attn.proj", "txt_attn.proj"), mlp=("img_mlp", "txt_mlp")),
    "single_blocks": "a single-stream block concatenates its attention output and MLP activations and projects "
                     "both with one layer (linear2), so neither has an output of its own to drop",
}

KV_CACHE_PATCH = "KV_Attn_Input"  # comfy_extras.nodes_flux: the attention patch Flux KV Cache adds


def refuse_reruns_with_kv_cache(transformer_options: dict, orders: Mapping[str, Steps]) -> None:
    attention_patches = transformer_options.get("patches", {}).get("attn1_patch", ())
    if not any(type(patch).__name__ == KV_CACHE_PATCH for patch in attention_patches):
        return
    for stream, steps in orders.items():
        ran = [i for step in steps for i in step]
        again = next((i for i in ran if ran.count(i) > 1), None)
        if again is not None:
            raise PlanError(f"Flux KV Cache keeps one set of reference-image keys and values per block, but "
                            f"{stream} block {again} runs {ran.count(again)} times per model call in the order "
                            f"{format_steps(steps)}; use orders that run each block at most once with Flux KV Cache")


FLUX = Family(
    name="Flux",
    models="Flux.1, Flux.2, LongCat-Image",
    classes=("comfy.ldm.flux.model.Flux",),
    block_lists={"double_blocks": "double_blocks", "single_blocks": "single_blocks"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    control_keys={"double_blocks": "input", "single_blocks": "output"},
    check_patches=refuse_reruns_with_kv_cache,
    hidden_states={"double_blocks": Layout.of(img="image", txt="text"), "single_blocks": Layout.of(x="text+image")},
    sublayers=FLUX_STYLE_SUBLAYERS,
)
