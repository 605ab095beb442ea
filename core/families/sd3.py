"""SD3 and SD3.5: ``joint_blocks`` is the double stream; there is no single stream.

The last joint block is built ``pre_only``: it updates the image stream and returns no text
stream, so any block after it would receive ``context=None``. Attention and MLP of a joint block are
its context and x sub-blocks' projections and MLPs.
"""

from . import Family, Layout, SubLayers
from ..plan import PlanError, Steps, format_steps


def check_order(stream: str, steps: Steps, n_blocks: int) -> None:
    last = n_blocks - 1
    if stream != "double_blocks" or n_blocks == 0:
        return
    runs = [position for position, step in enumerate(steps) if last in step]
    if runs and (runs != [len(steps) - 1] or tuple(steps[-1]) != (last,)):  # it may keep part of its update
        raise PlanError(
            f"SD3 joint block {last} is the last block: it returns no text stream, so it can only run "
            f"once, alone, as the last step, or be left out (order asked: {format_steps(steps)})")


SD3 = Family(
    name="SD3",
    models="SD3 / SD3.5",
    classes=("comfy.ldm.modules.diffusionmodules.mmdit.OpenAISignatureMMDITWrapper",),
    block_lists={"double_blocks": "joint_blocks"},
    replace_kinds={"double_blocks": "double_block"},
    control_keys={"double_blocks": "output"},
    check_order=check_order,
    pruned_file_refusal=(
        "ComfyUI's loader sets SD3's block count from its width (x_embedder width / 64), not from the blocks in "
        "the file, and builds the last block as the pre_only one by that count"),
    # JointBlock takes (context, x) positionally; the pre_only last block returns context None
    hidden_states={"double_blocks": Layout.of(context="text", x="image")},
    # SD3.5's MMDiT-X blocks also have an image-only attention (attn2); the last context block has neither part
    sublayers={"double_blocks": SubLayers(attn=("context_block.attn.proj", "x_block.attn.proj", "x_block.attn2.proj"),
                                          mlp=("context_block.mlp", "x_block.mlp"))},
)
