"""Kandinsky 5 (video, and its image model, the same class): ``visual_transformer_blocks`` as the ``single_blocks`` stream.

Each visual block runs on the video tokens, self-attends, and cross-attends to the text, which it
does not update: one token stream, so ``single_blocks`` by the stream rule (a ``double_blocks``
list updates text and image tokens in every block). The text is prepared before the stack by
``text_transformer_blocks``, an encoder of its own that runs as it is. By loop position: the loop
tells each block its ``block_index`` (made the block's own by the executor) and looks up
``patches_replace["dit"][("double_block", i)]`` (so named), which follows its block. (ComfyUI's
own ``original_block`` for such a patch calls the block with parameter names it does not take, so
a patch that calls it fails, with or without a plan.)
"""

from . import Family, Layout, SubLayers

KANDINSKY5 = Family(
    name="Kandinsky 5",
    classes=("comfy.ldm.kandinsky5.model.Kandinsky5",),
    block_lists={"single_blocks": "visual_transformer_blocks"},
    replace_kinds={"single_blocks": "double_block"},
    hidden_states={"single_blocks": Layout.of(visual_embed="image")},
    # self-attention and cross-attention to the text (each gated) are both the attention part
    sublayers={"single_blocks": SubLayers(attn=("self_attention", "cross_attention"), mlp=("feed_forward",))},
)
