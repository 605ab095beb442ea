"""What the nodes send to the UI after a run: the probe's heatmap preview, the model's block counts."""

import numpy as np
import torch
from PIL import Image

import folder_paths
from dit_layer_lab.core.preview import UI_KEY
from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe
from dit_layer_lab.nodes.reorder import LayerLabPlan, LayerLabSkip
from dit_layer_lab.tests.comfy import tiny_models as tm


def test_reorder_nodes_report_the_model_s_block_counts():
    model = tm.tiny_flux(double=3, single=5)
    expected = {UI_KEY: [{"family": "Flux", "counts": {"double_blocks": 3, "single_blocks": 5}}]}
    assert LayerLabPlan.execute(model, "2-0", "all", 0.0, 1.0).ui == expected
    assert LayerLabSkip.execute(model, "single_blocks", 1, 2, 0.0, 1.0).ui == expected
    sd3 = tm.tiny_sd3(joint=4)
    assert LayerLabPlan.execute(sd3, "all", "all", 0.0, 1.0).ui == {
        UI_KEY: [{"family": "SD3", "counts": {"double_blocks": 4, "single_blocks": 0}}]}


def test_probe_shows_its_heatmap_on_the_node(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "temp_directory", str(tmp_path))
    model = tm.tiny_flux(double=2, single=2)
    positive, negative = tm.conditioning(model)
    with torch.inference_mode():
        output = LayerLabSimilarityProbe.execute(model, positive, negative, {"samples": tm.latent(model)}, 1, 2, 2.0,
                                                 "euler", "simple", 1.0, "per_step", 16)
    ui = output.ui.as_dict()
    (saved,) = ui["images"]
    assert saved["type"] == "temp" and saved["subfolder"] == ""
    shown = np.asarray(Image.open(tmp_path / saved["filename"]).convert("RGB"))
    heatmap = output.args[0]
    assert heatmap.shape[0] == 1
    expected = np.clip(255.0 * heatmap[0].numpy(), 0, 255).astype(np.uint8)
    assert np.array_equal(shown, expected)
