"""Lumina 2 and Z-Image (``NextDiT``): one list of single-stream blocks on the joint text+image sequence.

``layers`` is the ``single_blocks`` stream. The refiners that prepare the sequence before it
(``noise_refiner``, ``context_refiner``, Z-Image Omni's ``siglip_refiner``) are not part of the
stack and run as they are. The loop has no replace patches and no ControlNet residuals; it calls
block-index patches (``patches["double_block"]``, so named although the stream is single) after
each block with ``"block_index": i``: they follow their block.

Z-Image's Fun ControlNet is such a patch and keeps state between calls: it runs its own control
layers forward from its last index and starts over when the index goes down, so the residual it adds
after block i depends on i alone. Following the block (more control-layer runs for an order that
goes back) gives every block its own residual; a parallel group, which has no one index, is refused.
"""

from . import Family, Layout, SubLayers

LUMINA2 = Family(
    name="Lumina2",
    models="Lumina 2, Z-Image",
    classes=("comfy.ldm.lumina.model.NextDiT",),
    block_lists={"single_blocks": "layers"},
    index_patches={"single_blocks": "double_block"},
    hidden_states={"single_blocks": Layout.of(x="text+image")},
    # each output is RMS-normalised before its gate: the norms' outputs are the contributions (a scaled
    # attention output would come out of its norm unscaled, so 7:attn@0.5 would change nothing)
    sublayers={"single_blocks": SubLayers(attn=("attention_norm2",), mlp=("ffn_norm2",))},
)
