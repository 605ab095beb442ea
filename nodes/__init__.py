"""The pack's ComfyUI nodes (V3 schema). Thin: each one reads its inputs and calls ``core``."""

from comfy_api.latest import ComfyExtension, io

from .grid import GRID_NODES
from .guidance import GUIDANCE_NODES
from .lora import LORA_NODES
from .probe import PROBE_NODES
from .reorder import REORDER_NODES
from .save_pruned import SAVE_NODES
from .skip_search import SKIP_SEARCH_NODES
from .sweep import SWEEP_NODES


class LayerLabExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [*REORDER_NODES, *PROBE_NODES, *LORA_NODES, *GRID_NODES, *SWEEP_NODES, *SKIP_SEARCH_NODES,
                *SAVE_NODES, *GUIDANCE_NODES]
