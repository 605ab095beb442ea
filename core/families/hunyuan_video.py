"""HunyuanVideo 1.0 and 1.5, and HunyuanImage 2.1 (the same class): Flux-style ``double_blocks`` then ``single_blocks``.

The blocks are Flux's; the single stream runs on text and image tokens concatenated (1.5 has
double blocks only). On video the 5-D latent is patchified once before the stack, so every block
sees ``[B, frames * rows * columns, D]`` image tokens, frame by frame. By loop
position: ``patches_replace["dit"]`` entries and ControlNet residuals (``control["input"]`` after
double blocks, ``control["output"]`` after single blocks); both follow their block. The text
refiner (``txt_in``) runs before the stack and is left alone.
"""

from . import Family, Layout
from .flux import FLUX_STYLE_SUBLAYERS

HUNYUAN_VIDEO = Family(
    name="HunyuanVideo",
    models="HunyuanVideo 1.0 / 1.5, HunyuanImage 2.1",
    classes=("comfy.ldm.hunyuan_video.model.HunyuanVideo",),
    block_lists={"double_blocks": "double_blocks", "single_blocks": "single_blocks"},
    replace_kinds={"double_blocks": "double_block", "single_blocks": "single_block"},
    control_keys={"double_blocks": "input", "single_blocks": "output"},
    hidden_states={"double_blocks": Layout.of(img="image", txt="text"), "single_blocks": Layout.of(x="text+image")},
    sublayers=FLUX_STYLE_SUBLAYERS,
)
