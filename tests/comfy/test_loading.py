"""ComfyUI's own custom-node loader imports the pack and builds every node's schema."""

import asyncio
import pathlib

import nodes

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_IDS = {"LayerLabPlan", "LayerLabSkip", "LayerLabRepeat", "LayerLabReverse", "LayerLabParallel", "LayerLabShuffle",
            "LayerLabSimilarityProbe", "LayerLabLoraBlocks", "LayerLabLoraBlocksSave", "LayerLabPlanGrid",
            "LayerLabImportanceSweep"}


def test_comfyui_loads_the_pack_from_custom_nodes(tmp_path):
    folder = tmp_path / "custom_nodes" / "dit-layer-lab"
    folder.parent.mkdir()
    folder.symlink_to(ROOT, target_is_directory=True)
    assert asyncio.run(nodes.load_custom_node(str(folder)))
    ours = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("LayerLab")}
    assert NODE_IDS <= set(ours)
    for node_id, cls in ours.items():
        info = cls.GET_NODE_INFO_V1()
        assert info["category"] == "layer_lab", node_id
        assert info["description"], node_id
        for name, spec in info["input"]["required"].items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
