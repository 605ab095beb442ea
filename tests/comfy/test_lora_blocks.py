"""LayerLabLoraBlocks / LayerLabLoraBlocksSave on ComfyUI's own models, LoRA loader and ModelPatcher.

LoRA files are written here in three key formats ComfyUI reads for Flux (ComfyUI-native
``diffusion_model.<name>.lora_up.weight``, kohya ``lora_unet_<name_with_underscores>``, diffusers /
ai-toolkit ``transformer.transformer_blocks.<i>.attn.to_q.lora_A.weight``, which lands on one part of
a fused qkv weight) and diffusers for SD3. Weights are compared after ComfyUI itself has patched
them (``load_models_gpu``), and again after unloading.
"""

import json

import pytest
import safetensors.torch
import torch

import comfy.lora
import comfy.model_management
import folder_paths
import nodes as comfy_nodes
from dit_layer_lab.core.plan import PlanError
from dit_layer_lab.nodes.lora import METADATA_KEY, LayerLabLoraBlocks, LayerLabLoraBlocksSave
from dit_layer_lab.nodes.reorder import LayerLabReverse
from dit_layer_lab.tests.comfy import tiny_models as tm
from dit_layer_lab.tests.comfy.test_reorder import FAMILIES

RANK = 2


# ------------------------------------------------------------------------------ LoRA files


def flux_modules(double, single):
    """(native name, diffusers name) of the linear layers a Flux LoRA usually trains, plus two outside blocks."""
    pairs = []
    for i in range(double):
        d = f"transformer.transformer_blocks.{i}"
        pairs += [(f"double_blocks.{i}.img_attn.qkv", f"{d}.attn.to_q"),
                  (f"double_blocks.{i}.img_attn.proj", f"{d}.attn.to_out.0"),
                  (f"double_blocks.{i}.txt_attn.qkv", f"{d}.attn.add_k_proj"),
                  (f"double_blocks.{i}.img_mlp.0", f"{d}.ff.net.0.proj")]
    for i in range(single):
        s = f"transformer.single_transformer_blocks.{i}"
        pairs += [(f"single_blocks.{i}.linear1", f"{s}.attn.to_v"), (f"single_blocks.{i}.linear2", f"{s}.proj_out")]
    return pairs + [("img_in", "transformer.x_embedder"), ("final_layer.linear", "transformer.proj_out")]


FORMATS = {
    # name -> (stem of a native module name, suffixes of (up, down), alpha?)
    "native": (lambda native, diffusers: f"diffusion_model.{native}", (".lora_up.weight", ".lora_down.weight"), True),
    "kohya": (lambda native, diffusers: "lora_unet_" + native.replace(".", "_"),
              (".lora_up.weight", ".lora_down.weight"), True),
    "diffusers": (lambda native, diffusers: diffusers, (".lora_B.weight", ".lora_A.weight"), False),
}


def make_lora(model, modules, fmt, seed=0, extra=None):
    """A LoRA state dict in format ``fmt`` for ``modules`` [(native, diffusers)], sized from the model."""
    stem_of, (up, down), alpha = FORMATS[fmt]
    weights = model.model.diffusion_model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for native, diffusers in modules:
        out_features, in_features = weights[f"{native}.weight"].shape
        if fmt == "diffusers" and diffusers.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v", "add_k_proj"):
            out_features = tm.HIDDEN  # one of q, k, v: a part of a fused qkv (or of linear1)
        stem = stem_of(native, diffusers)
        lora[stem + up] = torch.randn(out_features, RANK, generator=generator) * 0.2
        lora[stem + down] = torch.randn(RANK, in_features, generator=generator) * 0.2
        if alpha:
            lora[stem + ".alpha"] = torch.tensor(float(RANK))
    lora.update(extra or {})
    return lora


TEXT_ENCODER = {"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.ones(4, RANK),
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(RANK, 4)}
METADATA = {"ss_network_dim": str(RANK), "trained_by": "the test"}


@pytest.fixture
def loras(tmp_path, monkeypatch):
    """A loras folder in tmp_path that folder_paths uses; write(name, tensors) puts a LoRA in it."""
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras",
                        ([str(tmp_path)], folder_paths.supported_pt_extensions))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})

    def write(name, tensors, metadata=METADATA):
        safetensors.torch.save_file(tensors, str(tmp_path / name), metadata=metadata)
        return name

    write.folder = tmp_path
    return write


# ----------------------------------------------------------------------------- weight checks


def patched_weights(patcher, original):
    """The model's weights while ComfyUI has ``patcher`` loaded; checks that unloading restores ``original``."""
    with torch.inference_mode():
        comfy.model_management.load_models_gpu([patcher])
        weights = {k: v.clone() for k, v in patcher.model.state_dict().items()}
    comfy.model_management.unload_all_models()
    after = patcher.model.state_dict()
    assert [k for k in original if not torch.equal(after[k], original[k])] == []
    return weights


def changed(weights, original):
    return {k for k in original if not torch.equal(weights[k], original[k])}


def in_blocks(keys, attribute, indices):
    return {k for k in keys if any(k.startswith(f"diffusion_model.{attribute}.{i}.") for i in indices)}


def lora_blocks(model, name, double="all", single="all", other="keep", strength=1.0):
    return LayerLabLoraBlocks.execute(model, name, strength, double, single, other).args


def core_lora(model, name, strength=1.0):
    return comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, strength)[0]


@pytest.fixture(scope="module")
def flux():
    model = tm.tiny_flux(double=3, single=4)
    return model, {k: v.clone() for k, v in model.model.state_dict().items()}


@pytest.fixture(scope="module")
def sd3():
    model = tm.tiny_sd3(joint=4)
    return model, {k: v.clone() for k, v in model.model.state_dict().items()}


# -------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_all_blocks_is_bit_identical_to_core_loader(flux, loras, fmt):
    model, original = flux
    name = loras(f"{fmt}.safetensors", make_lora(model, flux_modules(3, 4), fmt, extra=TEXT_ENCODER))
    patched, report = lora_blocks(model, name, strength=0.7)
    ours = patched_weights(patched, original)
    theirs = patched_weights(core_lora(model, name, 0.7), original)
    assert [k for k in original if not torch.equal(ours[k], theirs[k])] == []
    touched = {f"diffusion_model.{native}.weight" for native, _ in flux_modules(3, 4)}
    assert changed(ours, original) == touched
    assert "22 of 22 patches applied" in report
    assert "not for this diffusion model" in report and "lora_te1_text_model_encoder_layers_0_mlp_fc1" in report


def test_diffusers_qkv_parts_are_counted_per_block(flux, loras):
    model, _ = flux
    modules = [(f"double_blocks.1.img_attn.qkv", f"transformer.transformer_blocks.1.attn.to_{p}") for p in "qkv"]
    name = loras("qkv.safetensors", make_lora(model, modules, "diffusers"))
    _, report = lora_blocks(model, name, double="1", single="none")
    assert "applied per block: 1: 3" in report
    assert "selected but not in the LoRA" not in report


def test_selection_changes_exactly_the_selected_blocks(flux, loras):
    model, original = flux
    name = loras("kohya.safetensors", make_lora(model, flux_modules(3, 4), "kohya"))
    full = patched_weights(core_lora(model, name), original)
    patched, report = lora_blocks(model, name, double="1", single="0, 2-3", other="drop")
    weights = patched_weights(patched, original)
    expected = (in_blocks(changed(full, original), "double_blocks", [1])
                | in_blocks(changed(full, original), "single_blocks", [0, 2, 3]))
    assert len(expected) == 4 + 3 * 2
    assert changed(weights, original) == expected
    assert all(torch.equal(weights[k], full[k]) for k in expected)
    assert "applied per block: 1: 4" in report and "applied per block: 0: 2, 2: 2, 3: 2" in report
    assert "left out (in the LoRA, not selected): 0, 2 (8 patches)" in report
    assert "other_tensors = drop): 2 patches left out: img_in.weight, final_layer.linear.weight" in report

    kept, _ = lora_blocks(model, name, double="none", single="none", other="keep")
    assert changed(patched_weights(kept, original), original) == {
        "diffusion_model.img_in.weight", "diffusion_model.final_layer.linear.weight"}


def test_partial_lora_loads_and_names_the_blocks_it_lacks(flux, loras):
    model, original = flux
    modules = [m for m in flux_modules(3, 4) if m[0].startswith(("double_blocks.0.", "single_blocks.1."))]
    name = loras("partial.safetensors", make_lora(model, modules, "native"))
    patched, report = lora_blocks(model, name, double="0-2", single="all")
    weights = patched_weights(patched, original)
    assert changed(weights, original) == {f"diffusion_model.{n}.weight" for n, _ in modules}
    assert ("double_blocks, 3 blocks, selected all:\n  applied per block: 0: 4\n"
            "  selected but not in the LoRA: 1-2") in report
    assert ("single_blocks, 4 blocks, selected all:\n  applied per block: 1: 2\n"
            "  selected but not in the LoRA: 0, 2-3") in report
    assert "outside the blocks (other_tensors = keep): the LoRA has none" in report


def test_saved_file_keeps_the_format_reloads_and_equals_the_filtered_load(flux, loras):
    model, original = flux
    source = make_lora(model, flux_modules(3, 4), "kohya", extra=TEXT_ENCODER)
    name = loras("kohya.safetensors", source)
    selection = ("0, 2", "1", "drop")
    filtered = patched_weights(lora_blocks(model, name, *selection)[0], original)

    (report,) = LayerLabLoraBlocksSave.execute(model, name, *selection, "picked/kohya_blocks").args
    saved = "picked/kohya_blocks_00001_.safetensors"
    assert f"saved {saved!r}" in report
    with safetensors.safe_open(str(loras.folder / saved), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
        tensors = {k: f.get_tensor(k) for k in keys}
    expected = [k for k in source if k.startswith(("lora_unet_double_blocks_0_", "lora_unet_double_blocks_2_",
                                                   "lora_unet_single_blocks_1_"))]
    assert sorted(keys) == sorted(expected) and len(keys) == 3 * (2 * 4 + 2)
    assert all(torch.equal(tensors[k], source[k]) for k in keys)
    assert {k: metadata[k] for k in METADATA} == METADATA
    assert json.loads(metadata[METADATA_KEY]) == {
        "source": name, "family": "Flux", "double_blocks": "0, 2", "single_blocks": "1",
        "other_tensors": "drop", "keys": "original"}

    again = patched_weights(lora_blocks(model, saved)[0], original)
    core = patched_weights(core_lora(model, saved), original)
    assert [k for k in original if not torch.equal(again[k], filtered[k])] == []
    assert [k for k in original if not torch.equal(core[k], filtered[k])] == []

    LayerLabLoraBlocksSave.execute(model, name, *selection, "picked/kohya_blocks")
    assert (loras.folder / "picked/kohya_blocks_00002_.safetensors").is_file()  # never overwrites


def test_selection_uses_original_indices_under_a_plan(flux, loras):
    model, original = flux
    name = loras("native.safetensors", make_lora(model, flux_modules(3, 4), "native"))
    planned, _ = LayerLabReverse.execute(model, stream="double_blocks", first=0, last=2,
                                         start_percent=0.0, end_percent=1.0).args
    patched, report = lora_blocks(planned, name, double="0", single="none", other="drop")
    weights = patched_weights(patched, original)
    assert changed(weights, original) == in_blocks(original, "double_blocks", [0]) & {
        f"diffusion_model.{n}.weight" for n, _ in flux_modules(3, 4)}
    assert "applied per block: 0: 4" in report
    positive, negative = tm.conditioning(patched)
    assert torch.isfinite(tm.sample(patched, positive, negative, tm.latent(patched), steps=2)).all()
    comfy.model_management.unload_all_models()
    assert changed(patched.model.state_dict(), original) == set()


def sd3_modules(joint):
    out = []
    for i in range(joint):
        d = f"transformer.transformer_blocks.{i}"
        out += [(f"joint_blocks.{i}.x_block.attn.qkv", f"{d}.attn.to_k"),
                (f"joint_blocks.{i}.x_block.mlp.fc1", f"{d}.ff.net.0.proj")]
    return out + [("final_layer.linear", "transformer.proj_out")]


def test_sd3_diffusers_lora_on_joint_blocks(sd3, loras):
    model, original = sd3
    modules = sd3_modules(4)
    lora = make_lora(model, [(n, d) for n, d in modules if "qkv" not in n], "diffusers")
    # to_k is one third of SD3's fused qkv, 128 wide (64 per head, 2 heads)
    generator = torch.Generator().manual_seed(1)
    for i in range(4):
        stem = f"transformer.transformer_blocks.{i}.attn.to_k"
        lora[f"{stem}.lora_B.weight"] = torch.randn(128, RANK, generator=generator) * 0.2
        lora[f"{stem}.lora_A.weight"] = torch.randn(RANK, 128, generator=generator) * 0.2
    name = loras("sd3.safetensors", lora)

    ours = patched_weights(lora_blocks(model, name)[0], original)
    theirs = patched_weights(core_lora(model, name), original)
    assert [k for k in original if not torch.equal(ours[k], theirs[k])] == []
    assert len(changed(ours, original)) == 4 * 2 + 1
    patched, report = lora_blocks(model, name, double="1-2", other="drop")
    weights = patched_weights(patched, original)
    assert changed(weights, original) == {f"diffusion_model.joint_blocks.{i}.x_block.{m}.weight"
                                          for i in (1, 2) for m in ("attn.qkv", "mlp.fc1")}
    assert "double_blocks (joint_blocks), 4 blocks, selected 1-2:\n  applied per block: 1: 2, 2: 2" in report
    assert "single_blocks" not in report
    with pytest.raises(PlanError, match="valid single_blocks indices are none: this model has no such blocks"):
        lora_blocks(model, name, single="0")


@pytest.mark.parametrize("double, single, message", [
    ("3", "all", r"block 3 is out of range: valid double_blocks indices are 0-2"),
    ("all", "[0-1]", r"single_blocks: a selection lists blocks; parallel groups.*valid single_blocks indices are 0-3"),
    ("1*2", "all", r"repeats.*at position 2 in '1\*2'"),
])
def test_bad_selection_names_the_valid_range(flux, loras, double, single, message):
    model, _ = flux
    name = loras("native.safetensors", make_lora(model, flux_modules(3, 4), "native"))
    with pytest.raises(PlanError, match=message):
        lora_blocks(model, name, double=double, single=single)


def test_refuses_a_lora_for_another_model_and_an_empty_save(flux, loras):
    model, _ = flux
    name = loras("te.safetensors", dict(TEXT_ENCODER))
    with pytest.raises(ValueError, match="none of its 2 tensors is for this Flux model"):
        lora_blocks(model, name)
    partial = loras("partial.safetensors", make_lora(model, flux_modules(1, 0)[:1], "native"))
    with pytest.raises(ValueError, match="keeps no part of LoRA"):
        LayerLabLoraBlocksSave.execute(model, partial, "1-2", "all", "drop", "x")


def test_strength_zero_returns_the_model_unchanged(flux, loras):
    model, _ = flux
    name = loras("native.safetensors", make_lora(model, flux_modules(3, 4), "native"))
    same, report = lora_blocks(model, name, strength=0.0)
    assert same is model and "model is returned unchanged" in report


def uso_lora(hidden):
    """A LoRA in the USO key format, which ComfyUI converts on load (it needs Flux.1's 19 / 38 blocks)."""
    generator = torch.Generator().manual_seed(2)
    lora = {}
    for block, name, out_features in (("double_blocks.18", "qkv_lora1", 3 * hidden),
                                      ("double_blocks.18", "qkv_lora2", 3 * hidden),
                                      ("double_blocks.3", "proj_lora1", hidden),
                                      ("single_blocks.37", "qkv_lora", 3 * hidden),
                                      ("single_blocks.5", "proj_lora", hidden)):
        lora[f"{block}.processor.{name}.up.weight"] = torch.randn(out_features, RANK, generator=generator) * 0.2
        in_features = hidden * 5 if name == "proj_lora" else hidden  # linear2 takes attention + mlp (4x)
        lora[f"{block}.processor.{name}.down.weight"] = torch.randn(RANK, in_features, generator=generator) * 0.2
    return lora


def test_a_format_comfyui_converts_is_saved_in_the_converted_keys(loras):
    model = tm.tiny_flux(double=19, single=38)
    original = {k: v.clone() for k, v in model.model.state_dict().items()}
    name = loras("uso.safetensors", uso_lora(tm.HIDDEN))
    ours = patched_weights(lora_blocks(model, name)[0], original)
    theirs = patched_weights(core_lora(model, name), original)
    assert [k for k in original if not torch.equal(ours[k], theirs[k])] == []
    assert len(changed(ours, original)) == 5

    selection = ("18", "30-37", "keep")
    filtered = patched_weights(lora_blocks(model, name, *selection)[0], original)
    assert changed(filtered, original) == {
        "diffusion_model.double_blocks.18.img_attn.qkv.weight", "diffusion_model.double_blocks.18.txt_attn.qkv.weight",
        "diffusion_model.single_blocks.37.linear1.weight"}
    (report,) = LayerLabLoraBlocksSave.execute(model, name, *selection, "uso_blocks").args
    assert "the new file uses the converted keys" in report
    with safetensors.safe_open(str(loras.folder / "uso_blocks_00001_.safetensors"), "pt") as f:
        keys, metadata = set(f.keys()), f.metadata()
    assert keys == {f"diffusion_model.{m}.{part}.weight" for m in ("double_blocks.18.img_attn.qkv",
                                                                   "double_blocks.18.txt_attn.qkv",
                                                                   "single_blocks.37.linear1_qkv")
                    for part in ("lora_up", "lora_down")}
    assert json.loads(metadata[METADATA_KEY])["keys"] == "converted by ComfyUI's loader"
    again = patched_weights(core_lora(model, "uso_blocks_00001_.safetensors"), original)
    assert [k for k in original if not torch.equal(again[k], filtered[k])] == []


def test_schemas_have_tooltips(loras):
    loras("a.safetensors", {"x.lora_up.weight": torch.ones(1, 1)})
    for node, output_node in ((LayerLabLoraBlocks, False), (LayerLabLoraBlocksSave, True)):
        info = node.GET_NODE_INFO_V1()
        assert info["category"] == "layer_lab" and info["description"] and info["output_node"] == output_node
        required = info["input"]["required"]
        assert [name for name, spec in required.items() if not spec[1].get("tooltip")] == []
        assert required["lora_name"][1]["options"] == ["a.safetensors"]
        assert required["other_tensors"][1]["options"] == ["keep", "drop"]
        assert required["other_tensors"][1]["default"] == "keep"


# ------------------------------------------------ every family, LoRA files made from ComfyUI's key map

# families of test_reorder.FAMILIES checked here; key formats by how ComfyUI's key map spells them
KEY_MAP_FAMILIES = ["flux2", "longcat", "chroma_radiance", "qwen_image", "lumina2", "z_image",
                    "hunyuan_image21", "hidream", "pixart", "omnigen2", "boogu", "krea2", "ernie_image", "ideogram4",
                    "hunyuan_video", "hunyuan_video15", "ltxv", "ltx2", "cosmos_predict2", "anima", "kandinsky5",
                    "wan", "wan22_5b"]
KEY_FORMATS = {"native": "diffusion_model.", "kohya": "lora_unet_", "diffusers": "transformer."}


def key_map_lora(model, fmt, lists, per_block=2, seed=0):
    """A LoRA whose module names are ComfyUI's own (``comfy.lora.model_lora_keys_unet``) in format ``fmt``:
    ``per_block`` linear layers of every block of every list, and one layer outside the blocks."""
    weights = model.model.state_dict()
    chosen, outside = {}, None
    for stem, target in sorted(comfy.lora.model_lora_keys_unet(model.model, {}).items()):
        name = target[0] if isinstance(target, tuple) else target
        if not stem.startswith(KEY_FORMATS[fmt]) or name not in weights or weights[name].ndim != 2:
            continue
        block = next(((a, name.split(".")[2]) for a in lists.values() if name.startswith(f"diffusion_model.{a}.")),
                     None)
        if block is None:
            outside = outside or (stem, target)
        elif len(chosen.setdefault(block, [])) < per_block and name not in {
                (t[0] if isinstance(t, tuple) else t) for _, t in chosen[block]}:
            chosen[block].append((stem, target))
    generator = torch.Generator().manual_seed(seed)
    lora = {}
    for stem, target in [m for modules in chosen.values() for m in modules] + ([outside] if outside else []):
        name = target[0] if isinstance(target, tuple) else target
        out_features, in_features = weights[name].shape
        if isinstance(target, tuple):  # one part of a fused weight: (name, (dim, offset, size)[, function])
            out_features = target[1][2]
        lora[f"{stem}.lora_up.weight"] = torch.randn(out_features, RANK, generator=generator) * 0.2
        lora[f"{stem}.lora_down.weight"] = torch.randn(RANK, in_features, generator=generator) * 0.2
        lora[f"{stem}.alpha"] = torch.tensor(float(RANK))
    return lora


@pytest.mark.parametrize("fmt", list(KEY_FORMATS))
@pytest.mark.parametrize("family", KEY_MAP_FAMILIES)
def test_all_and_a_selection_through_comfyuis_key_map(family, fmt, loras):
    build, lists = FAMILIES[family]
    model = build()
    original = {k: v.clone() for k, v in model.model.state_dict().items()}
    tensors = key_map_lora(model, fmt, lists)
    if not tensors:
        pytest.skip(f"ComfyUI's key map has no {fmt} names for {family}")
    name = loras(f"{family}_{fmt}.safetensors", tensors)
    theirs = patched_weights(core_lora(model, name, 0.7), original)
    patched, report = lora_blocks(model, name, strength=0.7)
    ours = patched_weights(patched, original)
    assert [k for k in original if not torch.equal(ours[k], theirs[k])] == []
    touched = changed(theirs, original)
    counts = {stream: len(getattr(model.model.diffusion_model, attribute)) for stream, attribute in lists.items()}
    for stream, attribute in lists.items():  # every block of every list has patches
        assert all(in_blocks(touched, attribute, [i]) for i in range(counts[stream])), (stream, attribute)

    chosen = {stream: [counts[stream] - 1] for stream in lists}  # the last block of each list
    patched, report = lora_blocks(model, name, **{("double" if s == "double_blocks" else "single"): str(i[0])
                                                  for s, i in chosen.items()}, other="drop", strength=0.7)
    expected = set().union(*(in_blocks(touched, lists[s], i) for s, i in chosen.items()))
    weights = patched_weights(patched, original)
    assert expected and changed(weights, original) == expected
    assert all(torch.equal(weights[k], theirs[k]) for k in expected)
