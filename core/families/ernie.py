"""Ernie-Image: one list of single-stream ``layers`` on the image and text tokens joined.

Every layer gets the same shared modulation; the loop hands out nothing by position.
"""

from . import Family, Layout, SubLayers

ERNIE_IMAGE = Family(
    name="Ernie-Image",
    classes=("comfy.ldm.ernie.model.ErnieImageModel",),
    block_lists={"single_blocks": "layers"},
    hidden_states={"single_blocks": Layout.of(x="text+image")},
    sublayers={"single_blocks": SubLayers(attn=("self_attention",), mlp=("mlp",))},  # each gated and added
    pruned_file_refusal="ComfyUI's loader reads nothing but the family from an Ernie-Image file and builds the "
                        "class default of 36 layers",
)
