"""PixArt-α and PixArt-Σ (``PixArtMS``): one list of blocks on the image tokens, cross-attending to the text.

``blocks`` is the ``single_blocks`` stream (one token sequence; the text enters by cross-attention
and is not changed by a block). The loop hands out nothing by position: no replace patches, no
ControlNet residuals, no block index. ``:attn`` drops the self-attention and the cross-attention.
"""

from . import Family, Layout, SubLayers

PIXART = Family(
    name="PixArt",
    models="PixArt-α / Σ",
    classes=("comfy.ldm.pixart.pixartms.PixArtMS",),
    block_lists={"single_blocks": "blocks"},
    hidden_states={"single_blocks": Layout.of(x="image")},
    # self-attention (gated) and cross-attention to the text (added as it is) are both the attention part
    sublayers={"single_blocks": SubLayers(attn=("attn", "cross_attn"), mlp=("mlp",))},
)
