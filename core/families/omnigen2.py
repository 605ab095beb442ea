"""OmniGen2: Lumina-style single-stream ``layers`` on the instruction and image tokens joined.

``layers`` is the ``single_blocks`` stream. The refiners before it (``noise_refiner``,
``ref_image_refiner``, ``context_refiner``) are not part of the stack and run as they are. The loop
hands out nothing by position.
"""

from . import Family, Layout, SubLayers

OMNIGEN2 = Family(
    name="OmniGen2",
    classes=("comfy.ldm.omnigen.omnigen2.OmniGen2Transformer2DModel",),
    block_lists={"single_blocks": "layers"},
    hidden_states={"single_blocks": Layout.of(hidden_states="text+image")},
    # each output is RMS-normalised before its gate: the norms' outputs are the contributions (a scaled
    # attention output would come out of its norm unscaled)
    sublayers={"single_blocks": SubLayers(attn=("norm2",), mlp=("ffn_norm2",))},
    pruned_file_refusal="ComfyUI's loader fixes OmniGen2's depth at 32 layers, whatever the file holds",
)
