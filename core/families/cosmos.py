"""Cosmos Predict2 (``MiniTrainDIT``) and Anima (its subclass): one list, ``blocks``, as the ``single_blocks`` stream.

The blocks run on the video tokens and cross-attend to the text, so the list is single stream.
Their states keep the latent's layout, ``[B, T, H, W, D]`` (frames, rows, columns of patches): the
probe counts every dimension between batch and channels as tokens. Anima only maps its text through
an LLM adapter before the same loop. By loop position: ComfyUI 0.33's loop tells each block its
``block_index`` (Anima's LLLite control reads it in its attention patches), which the executor
makes the block's own; nothing else.
"""

import dataclasses

from . import Family, Layout, SubLayers


def depth_fixed_by_width() -> str:
    """"" where the running ComfyUI counts a Cosmos Predict2 file's blocks (0.33 does), else why not (v0.8.0
    fixes 28 blocks for the 2B width and 36 for the 14B): asked of its own detection, on a one-block header."""
    import torch

    import comfy.model_detection

    header = {"blocks.0.mlp.layer1.weight": torch.empty(1, device="meta"),
              "x_embedder.proj.1.weight": torch.empty(2048, 68, device="meta")}
    try:
        depth = comfy.model_detection.detect_unet_config(header, "").get("num_blocks")
    except Exception:
        depth = None
    if depth == 1:
        return ""
    return ("this ComfyUI's loader fixes Cosmos Predict2's depth by its width (28 blocks for the 2B model, 36 for "
            "the 14B) instead of counting the blocks in the file; ComfyUI 0.33 counts them")

COSMOS_PREDICT2 = Family(
    name="Cosmos Predict2",
    classes=("comfy.ldm.cosmos.predict2.MiniTrainDIT",),
    block_lists={"single_blocks": "blocks"},
    hidden_states={"single_blocks": Layout.of(x_B_T_H_W_D="image")},
    # self-attention and cross-attention to the text (each gated) are both the attention part; a block's
    # extra positional embedding, where the model has one, is added before them and stays
    sublayers={"single_blocks": SubLayers(attn=("self_attn", "cross_attn"), mlp=("mlp",))},
    pruned_file_refusal=depth_fixed_by_width,
)

ANIMA = dataclasses.replace(COSMOS_PREDICT2, name="Anima", classes=("comfy.ldm.anima.model.Anima",))
