"""AuraFlow: ``double_layers`` (MM-DiT) then ``single_layers``; no ControlNet input."""

from . import Family, Layout

AURAFLOW = Family(
    name="AuraFlow",
    classes=("comfy.ldm.aura.mmdit.MMDiT",),
    block_lists={"double_blocks": "double_layers", "single_blocks": "single_layers"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    hidden_states={"double_blocks": Layout.of(c="text", x="image"), "single_blocks": Layout.of(cx="text+image")},
)
