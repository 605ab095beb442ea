"""LayerLabSavePrunedModel: plan -> save -> ComfyUI's own diffusion-model loader -> the same samples.

As a user has it: a model file loaded by ``comfy.sd.load_diffusion_model`` (what core's Load Diffusion
Model runs), a plan, the save; the saved file loaded the same way, with nothing of the pack on it
(no plan, no wrapper), samples bit for bit what the plan gives on the original.

Tiny models have widths no real model has, and for most families ComfyUI's detection takes head counts,
widths or the config class from tables of the real sizes (Flux: 24 heads), so a tiny file would not
load as the tiny model even unpruned. ``load_with_comfyui`` therefore lets detection run on the file
and replaces only what detection cannot read from the *unpruned* tiny file either (a value, or the
config class) by the tiny model's own; every value detection reads differently from the pruned file
than from the unpruned one (the block counts) stays ComfyUI's. For Wan, whose tiny files detection
reads exactly, nothing is replaced.

Families whose file cannot stand for the planned model are refused by name, before anything is
written; for each, a file written anyway is shown not to load as the planned model.
"""

import json
import pathlib
import re

import pytest
import safetensors
import torch

import comfy.model_detection
import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
import nodes as comfy_nodes
from dit_layer_lab.core.families import detect
from dit_layer_lab.core.plan import format_steps
from dit_layer_lab.core.pruned_model import SaveRefused, renamed_keys
from dit_layer_lab.nodes.reorder import LayerLabPlan, LayerLabShuffle, LayerLabSkip
from dit_layer_lab.nodes.save_pruned import LayerLabSavePrunedModel
from dit_layer_lab.tests.comfy import tiny_models as tm
from dit_layer_lab.tests.comfy.test_lora_blocks import key_map_lora, loras  # noqa: F401  (a fixture)
from dit_layer_lab.tests.comfy.test_reorder import FAMILIES

MISSING = object()
ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def models_folder(tmp_path, monkeypatch):
    folder = tmp_path / "diffusion_models"
    folder.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models",
                        ([str(folder)], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return folder


def plan_order(n_blocks):
    """One block fewer: block 1 twice, then 0, blocks 2 and 3 left out, the rest as they were (a repeat, a
    reorder and a skip, keeping the last block last: SD3's rule); with 3 blocks, 1 then 0."""
    return (1, 1, 0) + tuple(range(4, n_blocks)) if n_blocks >= 4 else (1, 0)


def plan_text(n_blocks):
    return format_steps(tuple((i,) for i in plan_order(n_blocks)))


def planned(model, lists):
    dit = model.model.diffusion_model
    texts = {stream: plan_text(len(getattr(dit, attribute))) for stream, attribute in lists.items()}
    with torch.inference_mode():
        clone, summary = LayerLabPlan.execute(model, texts.get("double_blocks", "all"), texts.get("single_blocks", "all"),
                                              0.0, 1.0).args
    return clone


def save(model, filename, overwrite=False):
    with torch.inference_mode():
        return LayerLabSavePrunedModel.execute(model, filename, overwrite).args[0]


def load_with_comfyui(path, source, monkeypatch):
    """``comfy.sd.load_diffusion_model(path)``, with the tiny widths detection cannot read (see the module's text)."""
    real, real_match = comfy.model_detection.detect_unet_config, comfy.model_detection.model_config_from_unet_config
    tiny, tiny_class = source.model.model_config.unet_config, type(source.model.model_config)
    from_source = real(source.model.diffusion_model.state_dict(), "")
    class_readable = type(real_match(dict(tiny), source.model.diffusion_model.state_dict())) is tiny_class

    def model_config_from_unet_config(unet_config, *args, **kwargs):
        return real_match(unet_config, *args, **kwargs) if class_readable else tiny_class(unet_config)

    def detect_unet_config(state_dict, key_prefix, *args, **kwargs):
        found = real(state_dict, key_prefix, *args, **kwargs)
        config = dict(found)
        for key in set(tiny) | set(found):
            unreadable = from_source.get(key, MISSING) != tiny.get(key, MISSING)
            if unreadable and found.get(key, MISSING) == from_source.get(key, MISSING):
                if key in tiny:
                    config[key] = tiny[key]
                else:
                    config.pop(key, None)
        return config

    with monkeypatch.context() as patch:
        patch.setattr(comfy.model_detection, "detect_unet_config", detect_unet_config)
        patch.setattr(comfy.model_detection, "model_config_from_unet_config", model_config_from_unet_config)
        return comfy.sd.load_diffusion_model(str(path))


def counts(model, lists):
    dit = model.model.diffusion_model
    return {stream: len(getattr(dit, attribute)) for stream, attribute in lists.items()}


def sampled(model, source):
    positive, negative = tm.conditioning(source)
    return tm.sample(model, positive, negative, tm.latent(source))


def weights(model):
    return {k: v.clone() for k, v in model.model.state_dict().items()}


def unchanged(model, before):
    comfy.model_management.unload_all_models()
    after = model.model.state_dict()
    return [k for k in before if not torch.equal(after[k], before[k])] == []


def from_file(name, tmp_path, monkeypatch):
    """(tiny source, the model ComfyUI's loader makes of its file, its lists): the original as a user has it."""
    build, lists = FAMILIES[name]
    source = build()
    path = tmp_path / f"{name}_original.safetensors"
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in source.model.diffusion_model.state_dict().items()},
                                str(path))
    return source, load_with_comfyui(path, source, monkeypatch), lists


def tiny_model(name):
    return FAMILIES[name][0](), FAMILIES[name][1]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_saves_and_loads_as_the_plan_or_is_refused_by_name(name, models_folder, tmp_path, monkeypatch):
    source, original, lists = from_file(name, tmp_path, monkeypatch)
    before = weights(original)
    family = detect(original.model.diffusion_model)
    plan = planned(original, lists)
    options = repr(plan.model_options)
    wanted = {stream: n - 1 for stream, n in counts(original, lists).items()}
    why = family.pruned_file_problem()
    if why:
        with pytest.raises(SaveRefused, match=f"^{re.escape(family.name)} cannot be saved pruned or re-ordered: "):
            save(plan, "refused")
        assert list(models_folder.iterdir()) == []
        # the reason holds: written anyway (the same renaming; no patches to bake), ComfyUI's loader does not make
        # the planned model of it
        state = original.model.diffusion_model.state_dict()
        orders = {stream: plan_order(n) for stream, n in counts(original, lists).items()}
        path = tmp_path / "anyway.safetensors"
        comfy.utils.save_torch_file({new: state[old].clone() for new, old in
                                     renamed_keys(state, family.block_lists, orders).items()}, str(path))
        try:
            loaded = load_with_comfyui(path, source, monkeypatch)
        except Exception:
            return  # the loader refuses the file
        if counts(loaded, lists) == wanted:  # the planned depth, but not the planned model
            assert not torch.equal(sampled(loaded, source), sampled(plan, source))
        return
    text = save(plan, f"pruned/{name}")
    path = models_folder / "pruned" / f"{name}.safetensors"
    assert path.is_file() and f"'pruned/{name}.safetensors'" in text
    loaded = load_with_comfyui(path, source, monkeypatch)
    dit, loaded_dit = original.model.diffusion_model, loaded.model.diffusion_model
    assert type(loaded_dit) is type(dit)
    assert "dit_layer_lab" not in repr(loaded.model_options)  # nothing of the pack on it
    with safetensors.safe_open(str(path), "pt") as file:
        assert set(file.keys()) == set(loaded_dit.state_dict())  # every tensor of the file found its place
    assert counts(loaded, lists) == wanted
    assert next(loaded_dit.parameters()).dtype == next(dit.parameters()).dtype
    assert torch.equal(sampled(loaded, source), sampled(plan, source))
    assert repr(plan.model_options) == options
    assert unchanged(original, before)


@pytest.mark.parametrize("name", ["wan", "flux"])
def test_stacked_strategy_nodes_save_their_composed_order(name, models_folder, tmp_path, monkeypatch):
    source, original, lists = from_file(name, tmp_path, monkeypatch)
    stream = "double_blocks" if "double_blocks" in lists else "single_blocks"
    with torch.inference_mode():
        model = LayerLabSkip.execute(original, stream, 0, 0, 0.0, 1.0).args[0]
        model = LayerLabShuffle.execute(model, stream, 1, 2, 0.0, 1.0, seed=3).args[0]
    text = save(model, "stacked")
    loaded = load_with_comfyui(models_folder / "stacked.safetensors", source, monkeypatch)
    assert counts(loaded, lists)[stream] == counts(source, lists)[stream] - 1
    assert "original -> new: 2->0, 1->1" in text  # block 0 skipped, then the shuffle of 1-2 (seed 3: 2, 1)
    assert torch.equal(sampled(loaded, source), sampled(model, source))


@pytest.mark.parametrize("name", ["flux", "wan", "qwen_image"])
def test_loras_are_baked_in(name, models_folder, loras, tmp_path, monkeypatch):  # noqa: F811
    """The pack's LoRA on blocks and core's LoraLoaderModelOnly on a planned model: the file holds the patched
    weights; its samples are the planned, patched model's; the source's weights are untouched after."""
    from dit_layer_lab.nodes.lora import LayerLabLoraBlocks

    source, original, lists = from_file(name, tmp_path, monkeypatch)
    before = weights(original)
    first = loras(f"{name}_a.safetensors", key_map_lora(original, "native", lists, seed=1))
    second = loras(f"{name}_b.safetensors", key_map_lora(original, "native", lists, seed=2))
    model = planned(original, lists)
    selection = {stream: "0-1" if stream in lists else "all" for stream in ("double_blocks", "single_blocks")}
    with torch.inference_mode():
        model = LayerLabLoraBlocks.execute(model, first, 0.8, selection["double_blocks"], selection["single_blocks"],
                                           "keep").args[0]
        model = comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, second, 0.6)[0]
    expected = sampled(model, source)
    comfy.model_management.unload_all_models()
    save(model, "with_loras")
    assert unchanged(original, before)
    loaded = load_with_comfyui(models_folder / "with_loras.safetensors", source, monkeypatch)
    assert torch.equal(sampled(loaded, source), expected)
    assert not torch.equal(expected, sampled(planned(original, lists), source))  # the LoRAs change the samples
    assert unchanged(original, before)


def test_metadata_and_report(models_folder):
    source, lists = tiny_model("flux")
    model = planned(source, lists)
    text = save(model, "meta")
    with safetensors.safe_open(str(models_folder / "meta.safetensors"), "pt") as file:
        metadata = file.metadata()
    assert json.loads(metadata["dit_layer_lab_plan"]) == {"double_blocks": "1-0", "single_blocks": "1*2, 0"}
    assert json.loads(metadata["dit_layer_lab_blocks"]) == {"double_blocks": [1, 0], "single_blocks": [1, 1, 0]}
    assert metadata["dit_layer_lab_family"] == "Flux"
    assert metadata["dit_layer_lab_source"] == "comfy.ldm.flux.model.Flux"  # built here, not loaded from a file
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert metadata["dit_layer_lab_version"] == version
    assert "Flux double_blocks: 3 -> 2 blocks, plan 1-0\n  original -> new: 1->0, 0->1\n  not written: 2\n" in text
    assert "Flux single_blocks: 4 -> 3 blocks, plan 1*2, 0\n  original -> new: 1->0, 1->1, 0->2\n" \
           "  not written: 2-3\n" in text


def test_the_source_file_name_is_recorded(models_folder, tmp_path):
    source, lists = tiny_model("wan")
    path = tmp_path / "tiny_wan_source.safetensors"
    comfy.utils.save_torch_file({k: v.contiguous() for k, v in source.model.diffusion_model.state_dict().items()},
                                str(path))
    loaded = comfy.sd.load_diffusion_model(str(path))
    save(planned(loaded, lists), "from_file")
    with safetensors.safe_open(str(models_folder / "from_file.safetensors"), "pt") as file:
        recorded = file.metadata()["dit_layer_lab_source"]
    if getattr(loaded, "cached_patcher_init", None) is None:
        assert recorded == "comfy.ldm.wan.model.WanModel"  # this ComfyUI does not keep the file's name
    else:
        assert recorded == "tiny_wan_source.safetensors"


@pytest.mark.parametrize("filename", ["../outside", "/tmp/absolute", "a/../../outside", "./x", ""])
def test_a_name_outside_the_folder_is_refused(filename, models_folder):
    source, lists = tiny_model("wan")
    with pytest.raises(SaveRefused, match="leaves the diffusion_models folder|names no file"):
        save(planned(source, lists), filename)
    assert list(models_folder.iterdir()) == []


def test_an_existing_file_needs_overwrite(models_folder):
    source, lists = tiny_model("wan")
    model = planned(source, lists)
    (models_folder / "taken.safetensors").write_bytes(b"not a model")
    with pytest.raises(SaveRefused, match="'taken.safetensors' already exists .* set overwrite"):
        save(model, "taken")
    assert (models_folder / "taken.safetensors").read_bytes() == b"not a model"
    save(model, "taken.safetensors", overwrite=True)
    with safetensors.safe_open(str(models_folder / "taken.safetensors"), "pt") as file:
        assert "dit_layer_lab_plan" in file.metadata()
    assert sorted(p.name for p in models_folder.iterdir()) == ["taken.safetensors"]  # no temporary file left


@pytest.mark.parametrize("double, single, start, message", [
    ("0, [1-2]", "all", 0.0, r"double_blocks: step 2 of the order 0, \[1-2\], \[1-2\], is a parallel group; a saved"),
    ("all", "0-1, 2@0.5, 3", 0.0, r"single_blocks: step 3 of the order 0-1, 2@0.5, 3, 2@0.5, is a block keeping"),
    ("0, 1:attn, 2", "all", 0.0, r"double_blocks: step 2 of the order 0, 1:attn, 2, 1:attn, is a block keeping"),
    ("0:img, 1-2", "all", 0.0, r"double_blocks: step 1 of the order 0:img, 1-2, 0:img, is a block keeping part"),
    ("0-1", "all", 0.5, r"changes the order during sampling \(plan double_blocks = 0-1 \(0.5-1\)\)"),
    ("all", "none", 0.0, r"the plan leaves no Flux single_blocks block"),
    ("all", "all", 0.0, r"carries no Layer Lab plan: nothing to prune"),
    ("0-2", "0-3", 0.0, r"carries no Layer Lab plan: nothing to prune"),
])
def test_plans_a_file_cannot_hold_are_refused(double, single, start, message, models_folder):
    source, lists = tiny_model("flux")
    with torch.inference_mode():
        model = LayerLabPlan.execute(source, double, single, start, 1.0).args[0]
    with pytest.raises(SaveRefused, match=message):
        save(model, "refused")
    assert list(models_folder.iterdir()) == []


def test_an_unchanged_order_is_refused(models_folder):
    source, lists = tiny_model("flux")
    with torch.inference_mode():  # two nodes that together give back the original order
        model = LayerLabSkip.execute(source, "double_blocks", 1, 1, 0.0, 0.0).args[0]
    with pytest.raises(SaveRefused, match="every block in its original order: nothing to prune"):
        save(model, "refused")


def test_schema():
    schema = LayerLabSavePrunedModel.define_schema()
    assert schema.is_output_node and schema.category == "layer_lab"
    assert [i.id for i in schema.inputs] == ["model", "filename", "overwrite"]
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
