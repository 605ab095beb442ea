"""HiDream-I1 and -E1: ``double_stream_blocks`` then ``single_stream_blocks``, each block with its own LLM text.

The loop projects one LLM hidden state per block (``llama_layers[i]`` through ``caption_projection[i]``,
i counted across both lists) and hands the i-th to the block at loop position i, as the tail of its
tokens: a double block's text is the T5 and last-LLM tokens followed by it, a single block's
sequence is image, T5 and last-LLM tokens followed by it; the loop cuts the tail off again after
each block. The first text (T5 and the last LLM state) is not by position and is left as it is.

For a planned call the loop's projections are listed by the planned positions (the state of the
block that runs there, then every parallel member's), followed by the last LLM state and T5 where the
loop looks for them; each block that runs then swaps its own state in as its tail, so a parallel
group's members and a fast-sweep resume get their own. Blocks are called by keyword.
"""

from __future__ import annotations

import contextlib
from typing import Mapping

import torch
from torch import nn

from . import Family, Layout, SubLayers
from ..plan import Steps
from ..planned_blocks import PlannedBlocks

STREAMS = (("double_blocks", "double_stream_blocks"), ("single_blocks", "single_stream_blocks"))


def _own_tail(tokens: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
    return torch.cat([tokens[:, :tokens.shape[1] - state.shape[1]], state], dim=1)


def _with_own_state(block: nn.Module, own: dict, index: int):
    forward = type(block).forward

    def run(image_tokens, image_tokens_masks=None, text_tokens=None, adaln_input=None, rope=None,
            transformer_options={}):
        if text_tokens is not None:
            text_tokens = _own_tail(text_tokens, own[index])
        else:
            image_tokens = _own_tail(image_tokens, own[index])
        return forward(block, image_tokens, image_tokens_masks, text_tokens, adaln_input, rope,
                       transformer_options=transformer_options)
    return run


@contextlib.contextmanager
def follow_llm_states(dit: nn.Module, orders: Mapping[str, Steps]):
    blocks, ran, members = [], [], set()  # ran: per loop position, the index (across lists) of its block
    for stream, attribute in STREAMS:
        first = len(blocks)
        blocks += list(getattr(dit, attribute))
        for step in orders.get(stream, tuple((i,) for i in range(len(blocks) - first))):
            ran.append(first + step[0])
            members.update(first + i for i in step)
    entries = ran + sorted(members - set(ran)) + [len(blocks) - 1]  # the loop reads the last LLM state at [-2]
    projections, layers = dit.caption_projection, dit.llama_layers
    own: dict[int, torch.Tensor] = {}

    def project(index: int):
        def run(state):
            if index not in own:
                own[index] = projections[index](state)
            return own[index]
        return run

    dit.llama_layers = [layers[i] for i in entries]
    dit.caption_projection = PlannedBlocks(projections, [project(i) for i in entries] + [projections[-1]])
    for i in members:
        blocks[i].forward = _with_own_state(blocks[i], own, i)
    try:
        yield None
    finally:
        for i in members:
            del blocks[i].forward
        dit.caption_projection, dit.llama_layers = projections, layers


HIDREAM = Family(
    name="HiDream",
    models="HiDream-I1 / E1",
    classes=("comfy.ldm.hidream.model.HiDreamImageTransformer2DModel",),
    block_lists=dict(STREAMS),
    per_call=follow_llm_states,
    pruned_file_refusal=(
        "ComfyUI's loader fixes HiDream's depth (16 double and 32 single blocks) and the LLM layer each block "
        "position reads (llama_layers), so a file cannot hold another count or say which LLM layer a moved block "
        "had"),
    # by keyword; a single block's sequence is image, text, then its own LLM tokens
    hidden_states={"double_blocks": Layout.of(image_tokens="image", text_tokens="text"),
                   "single_blocks": Layout.of(image_tokens="text+image")},
    # the joint attention returns both streams' projected outputs; ff_i is a mixture of experts whose
    # output (shared expert plus routed ones) is all of the image MLP's contribution
    sublayers={"double_blocks": SubLayers(attn=("block.attn1",), mlp=("block.ff_i", "block.ff_t")),
               "single_blocks": SubLayers(attn=("block.attn1",), mlp=("block.ff_i",))},
)
