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

COSMOS_PREDICT2 = Family(
    name="Cosmos Predict2",
    classes=("comfy.ldm.cosmos.predict2.MiniTrainDIT",),
    block_lists={"single_blocks": "blocks"},
    hidden_states={"single_blocks": Layout.of(x_B_T_H_W_D="image")},
    # self-attention and cross-attention to the text (each gated) are both the attention part; a block's
    # extra positional embedding, where the model has one, is added before them and stays
    sublayers={"single_blocks": SubLayers(attn=("self_attn", "cross_attn"), mlp=("mlp",))},
)

ANIMA = dataclasses.replace(COSMOS_PREDICT2, name="Anima", classes=("comfy.ldm.anima.model.Anima",))
