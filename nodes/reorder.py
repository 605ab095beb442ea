"""Nodes that change the order in which a model's double and single blocks run."""

from __future__ import annotations

from comfy_api.latest import io

from ..core.families import supported_models
from ..core.patching import with_rewrites
from ..core.preview import model_blocks_ui
from ..core.rewrite import STREAMS, plan_rewrite, strategy_rewrite

CATEGORY = "layer_lab"

MODEL_HELP = f"The diffusion model ({supported_models()})"

PLAN_HELP = ("Order of original block indices: 'all', 'none', '7', '3-6', '6-3' (reversed), '8*4' (repeat), "
             "'(3-5)*2', '[4-7]' (run in parallel, average), '[4-7]*3' (looped parallel), comma separated. "
             "After an item: '@0.5' keeps half of its update, ':attn' / ':mlp' drop its attention / MLP, "
             "':img' / ':txt' update one stream of a double block only ('7:attn@0.5', '3-5:mlp', '[4-7]@0.5').")


def window_inputs() -> list:
    return [
        io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Where in the sampling schedule the change starts (0 = first step). "
                               "Outside the window the original order runs."),
        io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Where in the sampling schedule the change ends (1 = last step). As in ComfyUI's "
                               "own windows, a step at exactly end_percent is outside: windows that meet there "
                               "do not overlap, and start = end never applies."),
    ]


def range_inputs() -> list:
    return [
        io.Model.Input("model", tooltip=MODEL_HELP + "."),
        io.Combo.Input("stream", options=list(STREAMS), default="double_blocks",
                       tooltip="Which block list: double_blocks (dual-stream: SD3's joint blocks, Qwen-Image's "
                               "transformer blocks) or single_blocks (single-stream: Lumina 2 / Z-Image layers, "
                               "Wan blocks)."),
        io.Int.Input("first", default=0, min=0, max=999,
                     tooltip="First block of the range, as an original block index."),
        io.Int.Input("last", default=0, min=0, max=999,
                     tooltip="Last block of the range (inclusive)."),
    ]


OUTPUTS = [
    io.Model.Output(tooltip="A copy of the model that runs the new order; the input model is unchanged."),
    io.String.Output(display_name="summary", tooltip="The effective order of every stream after this node."),
]


def apply(model, make_rewrites) -> io.NodeOutput:
    patched, plan = with_rewrites(model, make_rewrites)
    return io.NodeOutput(patched, plan.summary(), ui=model_blocks_ui(plan.family, plan.counts))


class LayerLabPlan(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabPlan",
            display_name="Layer Lab Plan",
            category=CATEGORY,
            description="Run the model's blocks in the order you type, for each stream. " + PLAN_HELP,
            inputs=[
                io.Model.Input("model", tooltip=MODEL_HELP + "."),
                io.String.Input("double_blocks", default="all", multiline=False,
                                tooltip="Plan for the double-stream blocks (SD3: joint blocks). " + PLAN_HELP),
                io.String.Input("single_blocks", default="all", multiline=False,
                                tooltip="Plan for the single-stream blocks. " + PLAN_HELP),
                *window_inputs(),
            ],
            outputs=OUTPUTS,
        )

    @classmethod
    def execute(cls, model, double_blocks: str, single_blocks: str, start_percent: float,
                end_percent: float) -> io.NodeOutput:
        return apply(model, lambda counts: [
            plan_rewrite(counts, "double_blocks", double_blocks, start_percent, end_percent),
            plan_rewrite(counts, "single_blocks", single_blocks, start_percent, end_percent),
        ])


def strategy_node(node_id: str, display_name: str, strategy: str, description: str, extra_inputs: list):
    """A node that replaces blocks first..last of one stream by ``strategy``."""

    class StrategyNode(io.ComfyNode):
        @classmethod
        def define_schema(cls) -> io.Schema:
            return io.Schema(
                node_id=node_id,
                display_name=display_name,
                category=CATEGORY,
                description=description,
                inputs=[*range_inputs(), *extra_inputs, *window_inputs()],
                outputs=OUTPUTS,
            )

        @classmethod
        def execute(cls, model, stream: str, first: int, last: int, start_percent: float, end_percent: float,
                    **params) -> io.NodeOutput:
            return apply(model, lambda counts: [
                strategy_rewrite(counts, strategy, stream, first, last, start_percent, end_percent, **params)])

    StrategyNode.__name__ = StrategyNode.__qualname__ = node_id
    return StrategyNode


LayerLabSkip = strategy_node(
    "LayerLabSkip", "Layer Lab Skip Blocks", "skip",
    "Skip blocks first..last: they do not run at all.", [])

LayerLabRepeat = strategy_node(
    "LayerLabRepeat", "Layer Lab Repeat Block", "repeat",
    "Replace blocks first..last by one block run several times (the paper's 'middle repeat').",
    [io.Int.Input("layer", default=-1, min=-1, max=999,
                  tooltip="The block to repeat; -1 = the centre of the range, (first+last)//2."),
     io.Int.Input("count", default=-1, min=-1, max=999,
                  tooltip="How many times it runs; -1 = the length of the range.")])

LayerLabReverse = strategy_node(
    "LayerLabReverse", "Layer Lab Reverse Blocks", "reverse",
    "Run blocks first..last in reverse order.", [])

LayerLabParallel = strategy_node(
    "LayerLabParallel", "Layer Lab Parallel Blocks", "parallel",
    "Run blocks first..last each on the same input and average their outputs; with loops > 1, "
    "feed the average back through them (looped parallel).",
    [io.Int.Input("loops", default=1, min=1, max=64,
                  tooltip="How many times the averaged group runs; 1 = plain parallel.")])

LayerLabShuffle = strategy_node(
    "LayerLabShuffle", "Layer Lab Shuffle Blocks", "shuffle",
    "Run blocks first..last in a random order, fixed by the seed.",
    [io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                  tooltip="Seed of the permutation; the same seed gives the same order.")])

REORDER_NODES = [LayerLabPlan, LayerLabSkip, LayerLabRepeat, LayerLabReverse, LayerLabParallel, LayerLabShuffle]
