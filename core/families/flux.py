"""Flux.1 (dev, schnell and fine-tunes) and Flux.2: one class, ``comfy.ldm.flux.model.Flux``."""

from . import Family

FLUX = Family(
    name="Flux",
    classes=("comfy.ldm.flux.model.Flux",),
    block_lists={"double_blocks": "double_blocks", "single_blocks": "single_blocks"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    control_keys={"double_blocks": "input", "single_blocks": "output"},
    hidden_states={"double_blocks": (("img", "image"), ("txt", "text")), "single_blocks": (("x", "text+image"),)},
)
