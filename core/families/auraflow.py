"""AuraFlow: ``double_layers`` (MM-DiT) then ``single_layers``; no ControlNet input.

Its blocks add only the MLP's output to the residual stream: the attention output is added to the
residual, normalised, and becomes the MLP's input. So a block has no separate attention and MLP
contributions: ':attn' and ':mlp' are refused.
"""

from . import Family, Layout

_NO_SEPARATE_PARTS = ("its blocks add only the MLP's output to the residual stream (the attention output is added to "
                      "the residual, normalised and fed to the MLP), so attention and MLP have no separate contributions")

AURAFLOW = Family(
    name="AuraFlow",
    classes=("comfy.ldm.aura.mmdit.MMDiT",),
    block_lists={"double_blocks": "double_layers", "single_blocks": "single_layers"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    hidden_states={"double_blocks": Layout.of(c="text", x="image"), "single_blocks": Layout.of(cx="text+image")},
    sublayers={stream: _NO_SEPARATE_PARTS for stream in ("double_blocks", "single_blocks")},
)
