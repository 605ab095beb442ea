"""Qwen-Image (and Qwen-Image-Edit, -Layered: the same class): one list of 60 dual-stream blocks.

``transformer_blocks`` holds MM-DiT blocks (separate image and text weights, joint attention), so
it is the ``double_blocks`` stream. Blocks are called with keyword arguments only and return
``(text, image)``, text first. By loop position: ``patches_replace["dit"][("double_block", i)]``,
block-index patches (``patches["double_block"]`` with ``"block_index": i``: DiffSynth and InstantX
control) and ControlNet residuals ``control["input"][i]``; all follow their block.
"""

from . import Family, Layout, SubLayers

QWEN_IMAGE = Family(
    name="Qwen-Image",
    models="Qwen-Image, Qwen-Image-Edit",
    classes=("comfy.ldm.qwen_image.model.QwenImageTransformer2DModel",),
    block_lists={"double_blocks": "transformer_blocks"},
    replace_kinds={"double_blocks": "double_block"},
    control_keys={"double_blocks": "input"},
    index_patches={"double_blocks": "double_block"},
    hidden_states={"double_blocks": Layout.of(hidden_states="image", encoder_hidden_states="text",
                                              returns=("text", "image"))},
    # the joint attention module returns both streams' projected outputs
    sublayers={"double_blocks": SubLayers(attn=("attn",), mlp=("img_mlp", "txt_mlp"))},
)
