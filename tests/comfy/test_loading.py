"""ComfyUI's own custom-node loader imports the pack and builds every node's schema."""

import asyncio
import pathlib
import re

import nodes
from dit_layer_lab.core.families import all_families

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The nodes a user is told about: every node id the README names. The pack registers exactly these.
DOCUMENTED = set(re.findall(r"`(LayerLab\w+)`", (ROOT / "README.md").read_text()))


def test_comfyui_loads_the_pack_from_custom_nodes_with_every_documented_node(tmp_path):
    folder = tmp_path / "custom_nodes" / "dit-layer-lab"
    folder.parent.mkdir()
    folder.symlink_to(ROOT, target_is_directory=True)
    assert asyncio.run(nodes.load_custom_node(str(folder)))
    ours = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("LayerLab")}
    assert len(DOCUMENTED) >= 12
    assert set(ours) == DOCUMENTED
    for node_id, cls in ours.items():
        info = cls.GET_NODE_INFO_V1()
        assert info["category"] == "layer_lab", node_id
        assert info["description"], node_id
        for name, spec in {**info["input"]["required"], **info["input"].get("optional", {})}.items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
            if spec[0] == "MODEL":  # a MODEL input names every supported model
                missing = [f.name for f in all_families() if (f.models or f.name) not in spec[1]["tooltip"]]
                assert missing == [], f"{node_id}.{name}'s tooltip leaves out {missing}"
