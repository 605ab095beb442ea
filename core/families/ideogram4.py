"""Ideogram 4: one list of single-stream ``layers`` on the LLM text and image tokens of one sequence.

The loop hands out nothing by position; the conditional and unconditional passes run the same loop.
"""

from . import Family, Layout

IDEOGRAM4 = Family(
    name="Ideogram4",
    classes=("comfy.ldm.ideogram4.model.Ideogram4Transformer2DModel",),
    block_lists={"single_blocks": "layers"},
    hidden_states={"single_blocks": Layout.of(x="text+image")},
)
