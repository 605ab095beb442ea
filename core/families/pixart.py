"""PixArt-α and PixArt-Σ (``PixArtMS``): one list of blocks on the image tokens, cross-attending to the text.

``blocks`` is the ``single_blocks`` stream (one token sequence; the text enters by cross-attention
and is not changed by a block). The loop hands out nothing by position: no replace patches, no
ControlNet residuals, no block index.
"""

from . import Family, Layout

PIXART = Family(
    name="PixArt",
    classes=("comfy.ldm.pixart.pixartms.PixArtMS",),
    block_lists={"single_blocks": "blocks"},
    hidden_states={"single_blocks": Layout.of(x="image")},
)
