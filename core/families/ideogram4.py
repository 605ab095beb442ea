"""Ideogram 4: one list of single-stream ``layers`` on the LLM text and image tokens of one sequence.

The loop hands out nothing by position; the conditional and unconditional passes run the same loop.
"""

from . import Family, Layout, SubLayers

IDEOGRAM4 = Family(
    name="Ideogram4",
    models="Ideogram 4",
    classes=("comfy.ldm.ideogram4.model.Ideogram4Transformer2DModel",),
    block_lists={"single_blocks": "layers"},
    hidden_states={"single_blocks": Layout.of(x="text+image")},
    # each output is RMS-normalised before its gate: the norms' outputs are the contributions (a scaled
    # attention output would come out of its norm unscaled)
    sublayers={"single_blocks": SubLayers(attn=("attention_norm2",), mlp=("ffn_norm2",))},
)
