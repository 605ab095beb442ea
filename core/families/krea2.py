"""Krea2 (``SingleStreamDiT``): one list of single-stream ``blocks`` on the text and image tokens joined.

The loop tells each block its index (``transformer_options["block_index"]``, read by attention
patches), which the executor makes the block's own. The text-fusion transformer that prepares the
text (``txtfusion``) is not part of the stack and runs as it is.
"""

from . import Family, Layout, SubLayers

KREA2 = Family(
    name="Krea2",
    classes=("comfy.ldm.krea2.model.SingleStreamDiT",),
    block_lists={"single_blocks": "blocks"},
    hidden_states={"single_blocks": Layout.of(x="text+image")},
    # each output is gated (per part of the sequence with a reference image) and added
    sublayers={"single_blocks": SubLayers(attn=("attn",), mlp=("mlp",))},
)
