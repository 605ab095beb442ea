"""Boogu-Image (an OmniGen2 derivative): dual-stream ``double_stream_layers``, then single-stream ``single_stream_layers``.

A double layer takes and returns ``(image, instruction)``; the single layers run on the instruction
and image tokens joined. OmniGen2's refiners before the stack (``noise_refiner``,
``ref_image_refiner``, ``context_refiner``) run as they are. The loop hands out nothing by position.
"""

from . import Family, Layout, SubLayers

BOOGU = Family(
    name="Boogu",
    models="Boogu-Image",
    classes=("comfy.ldm.boogu.model.BooguTransformer2DModel",),
    block_lists={"double_blocks": "double_stream_layers", "single_blocks": "single_stream_layers"},
    hidden_states={"double_blocks": Layout.of(img_hidden_states="image", instruct_hidden_states="text"),
                   "single_blocks": Layout.of(hidden_states="text+image")},
    # every output is RMS-normalised before its gate, so the norms' outputs are the contributions; a
    # double layer's attention is its joint attention (both streams) and its image self-attention
    sublayers={"double_blocks": SubLayers(attn=("img_attn_norm", "instruct_attn_norm", "img_self_attn_norm"),
                                          mlp=("img_ffn_norm2", "instruct_ffn_norm2")),
               "single_blocks": SubLayers(attn=("norm2",), mlp=("ffn_norm2",))},
)
