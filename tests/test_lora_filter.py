"""core.lora_blocks on plain data: patch dicts keyed like ComfyUI's, block lists like the families'."""

import json

import pytest

from dit_layer_lab.core.lora_blocks import (BlockSelection, LoraReport, block_of, filter_groups, filter_patches,
                                            group_lora, merged_patches, render_report, target_name)
from dit_layer_lab.core.plan import PlanError

FLUX = {"double_blocks": "double_blocks", "single_blocks": "single_blocks"}
SD3 = {"double_blocks": "joint_blocks"}
AURA = {"double_blocks": "double_layers", "single_blocks": "single_layers"}


def flux_selection(double="all", single="all", other="keep", counts=(19, 38)):
    return BlockSelection.parse("Flux", FLUX, {"double_blocks": counts[0], "single_blocks": counts[1]},
                                {"double_blocks": double, "single_blocks": single}, other)


def swap(x):  # stands in for ComfyUI's swap_scale_shift in a 3-tuple key
    return x


# Keys as ComfyUI's load_lora makes them: plain names, (name, offset) for part of a fused weight,
# (name, None, function) for a reshuffled one.
PATCHES = {
    "diffusion_model.img_in.weight": "p-img_in",
    ("diffusion_model.double_blocks.0.img_attn.qkv.weight", (0, 0, 3072)): "p-d0-q",
    ("diffusion_model.double_blocks.0.img_attn.qkv.weight", (0, 3072, 3072)): "p-d0-k",
    "diffusion_model.double_blocks.0.img_attn.proj.weight": "p-d0-proj",
    "diffusion_model.double_blocks.3.img_mlp.0.weight": "p-d3-mlp",
    "diffusion_model.double_blocks.3.img_mlp.0.bias": "p-d3-mlp-bias",
    "diffusion_model.double_blocks.12.txt_mod.lin.weight": "p-d12-mod",
    ("diffusion_model.single_blocks.4.linear1.weight", (0, 0, 9216)): "p-s4-qkv",
    "diffusion_model.single_blocks.4.linear2.weight": "p-s4-l2",
    "diffusion_model.single_blocks.37.linear2.weight": "p-s37-l2",
    ("diffusion_model.final_layer.adaLN_modulation.1.weight", None, swap): "p-final-mod",
}


@pytest.mark.parametrize("target, lists, expected", [
    ("diffusion_model.double_blocks.7.img_attn.qkv.weight", FLUX, ("double_blocks", 7)),
    ("diffusion_model.single_blocks.37.linear2.bias", FLUX, ("single_blocks", 37)),
    ("diffusion_model.joint_blocks.3.x_block.attn.qkv.weight", SD3, ("double_blocks", 3)),
    ("diffusion_model.single_layers.0.mlp.c_fc1.weight", AURA, ("single_blocks", 0)),
    ("diffusion_model.double_layers.2.attn.w1q.weight", AURA, ("double_blocks", 2)),
    ("diffusion_model.img_in.weight", FLUX, None),
    ("diffusion_model.final_layer.linear.weight", FLUX, None),
    ("diffusion_model.double_blocks_extra.0.weight", FLUX, None),
    ("diffusion_model.double_blocks.weight", FLUX, None),
    ("diffusion_model.double_blocks.x.weight", FLUX, None),
    ("double_blocks.1.img_attn.qkv.weight", FLUX, None),  # not a model key: no diffusion_model. prefix
    ("diffusion_model.single_blocks.3.linear1.weight", SD3, None),  # SD3 has no single stream
])
def test_block_of(target, lists, expected):
    assert block_of(target, lists) == expected


def test_target_name_of_tuple_keys():
    assert target_name(("diffusion_model.x.weight", (0, 0, 8))) == "diffusion_model.x.weight"
    assert target_name(("diffusion_model.x.weight", None, swap)) == "diffusion_model.x.weight"
    assert target_name("diffusion_model.x.weight") == "diffusion_model.x.weight"


def test_all_keeps_every_patch_in_order():
    kept, report = filter_patches(PATCHES, flux_selection())
    assert list(kept) == list(PATCHES) and all(kept[k] is PATCHES[k] for k in kept)
    assert report.total_applied == report.total == len(PATCHES)


def test_selection_keeps_selected_blocks_including_tuple_keys():
    kept, report = filter_patches(PATCHES, flux_selection("0, 12", "4", "drop"))
    assert list(kept.values()) == ["p-d0-q", "p-d0-k", "p-d0-proj", "p-d12-mod", "p-s4-qkv", "p-s4-l2"]
    assert report.applied["double_blocks"] == {0: 3, 12: 1}
    assert report.applied["single_blocks"] == {4: 2}
    assert report.left_out["double_blocks"] == {3: 2}
    assert report.left_out["single_blocks"] == {37: 1}
    assert report.other_applied == []
    assert report.other_left_out == ["diffusion_model.img_in.weight",
                                     "diffusion_model.final_layer.adaLN_modulation.1.weight"]
    assert (report.total_applied, report.total) == (6, len(PATCHES))


def test_other_tensors_switch():
    kept, report = filter_patches(PATCHES, flux_selection("none", "none", "keep"))
    assert list(kept.values()) == ["p-img_in", "p-final-mod"]
    assert report.other_applied == ["diffusion_model.img_in.weight",
                                    "diffusion_model.final_layer.adaLN_modulation.1.weight"]
    kept, _ = filter_patches(PATCHES, flux_selection("none", "none", "drop"))
    assert kept == {}


def test_missing_blocks_are_the_selected_ones_without_patches():
    _, report = filter_patches(PATCHES, flux_selection("0-4", "30-37"))
    assert report.missing("double_blocks") == (1, 2, 4)
    assert report.missing("single_blocks") == tuple(range(30, 37))


def test_sd3_selection():
    selection = BlockSelection.parse("SD3", SD3, {"double_blocks": 24, "single_blocks": 0},
                                     {"double_blocks": "5-20", "single_blocks": "all"}, "keep")
    patches = {f"diffusion_model.joint_blocks.{i}.x_block.attn.qkv.weight": i for i in range(24)}
    kept, report = filter_patches(patches, selection)
    assert sorted(kept.values()) == list(range(5, 21))
    text = render_report(report, "LoRA 'x' on SD3")
    assert "double_blocks (joint_blocks), 24 blocks, selected 5-20:" in text
    assert "left out (in the LoRA, not selected): 0-4, 21-23 (8 patches)" in text
    assert "single_blocks" not in text
    with pytest.raises(PlanError, match="valid single_blocks indices are none"):
        BlockSelection.parse("SD3", SD3, {"double_blocks": 24, "single_blocks": 0},
                             {"double_blocks": "all", "single_blocks": "0"}, "keep")


@pytest.mark.parametrize("kwargs, message", [
    ({"other": "maybe"}, "other_tensors = 'maybe': choose one of keep, drop"),
    ({"double": "19"}, "block 19 is out of range: valid double_blocks indices are 0-18"),
    ({"single": "3-40"}, "block 40 is out of range: valid single_blocks indices are 0-37"),
    ({"single": "[1-2]"}, "parallel groups"),
])
def test_bad_selection(kwargs, message):
    with pytest.raises(PlanError, match=message.replace("[", r"\[")):
        flux_selection(**kwargs)


def test_unknown_stream():
    with pytest.raises(PlanError, match="unknown stream 'joint_blocks': choose one of double_blocks, single_blocks"):
        BlockSelection.parse("SD3", SD3, {"double_blocks": 4}, {"joint_blocks": "all"}, "keep")


def test_report_text():
    _, report = filter_patches(PATCHES, flux_selection("0-2", "all", "drop"))
    report.ignored = ["lora_te1_a.lora_up.weight", "lora_te1_a.lora_down.weight"]
    text = render_report(report, "LoRA 'x' on Flux, strength 0.5")
    assert text.splitlines() == [
        "LoRA 'x' on Flux, strength 0.5: 6 of 11 patches applied "
        "(a patch is one LoRA module's change to one model weight)",
        "double_blocks, 19 blocks, selected 0-2:",
        "  applied per block: 0: 3",
        "  selected but not in the LoRA: 1-2",
        "  left out (in the LoRA, not selected): 3, 12 (3 patches)",
        "single_blocks, 38 blocks, selected all:",
        "  applied per block: 4: 2, 37: 1",
        "  selected but not in the LoRA: 0-3, 5-36",
        "outside the blocks (other_tensors = drop): 2 patches left out: img_in.weight, "
        "final_layer.adaLN_modulation.1.weight",
        "not for this diffusion model (ComfyUI's loader does not use them; never saved): 2 file tensors: "
        "lora_te1_a.lora_up.weight, lora_te1_a.lora_down.weight",
    ]


def test_report_shortens_long_name_lists_and_counts_repeats():
    patches = {(f"diffusion_model.emb{i}.weight", (0, j, 1)): 0 for i in range(10) for j in range(2)}
    _, report = filter_patches(patches, flux_selection(other="keep"))
    text = render_report(report, "t", verb="kept")
    assert "20 patches kept: emb0.weight x2, emb1.weight x2," in text
    assert "emb7.weight x2 and 2 more" in text
    assert "kept per block: none" in text


def test_selection_metadata():
    data = flux_selection("9-3, 0", "none", "drop").as_metadata()
    assert json.loads(json.dumps(data)) == {"family": "Flux", "double_blocks": "0, 3-9", "single_blocks": "none",
                                            "other_tensors": "drop"}


# ------------------------------------------------------------------------------- grouping a file


def fake_load(lora, to_load):
    """Reads a file the way ComfyUI's load_lora does: by names built from each key-map entry."""
    patches = {}
    for stem, target in to_load.items():
        alpha = lora[f"{stem}.alpha"] if f"{stem}.alpha" in lora.keys() else None
        for up, down in ((f"{stem}.lora_up.weight", f"{stem}.lora_down.weight"),
                         (f"{stem}_lora.up.weight", f"{stem}_lora.down.weight")):
            if up in lora.keys():
                patches[target] = ("lora", lora[up], lora[down], alpha)
        diff_b = lora.get(f"{stem}.diff_b")
        if diff_b is not None:
            patches[f"{target[:-len('.weight')]}.bias"] = ("diff", diff_b)
    return patches


KEY_MAP = {
    "lora_unet_img_in": "diffusion_model.img_in.weight",
    "lora_unet_double_blocks_0_img_attn_proj": "diffusion_model.double_blocks.0.img_attn.proj.weight",
    "lora_unet_double_blocks_1_img_attn_proj": "diffusion_model.double_blocks.1.img_attn.proj.weight",
    "lora_unet_double_blocks_10_img_attn_proj": "diffusion_model.double_blocks.10.img_attn.proj.weight",
    "transformer.transformer_blocks.1.attn.to_q": ("diffusion_model.double_blocks.1.img_attn.qkv.weight", (0, 0, 8)),
    "lora_unet_single_blocks_2_linear2": "diffusion_model.single_blocks.2.linear2.weight",
    "lora_unet_single_blocks_3_linear2": "diffusion_model.single_blocks.3.linear2.weight",
}

def module(stem, *suffixes):
    return {f"{stem}{suffix}": f"{stem}{suffix}" for suffix in suffixes}


LORA = (".lora_up.weight", ".lora_down.weight")
FILE = {
    **module("lora_unet_img_in", *LORA),
    **module("lora_unet_double_blocks_1_img_attn_proj", *LORA, ".alpha", ".diff_b"),
    **module("lora_unet_double_blocks_10_img_attn_proj", *LORA),
    **module("transformer.transformer_blocks.1.attn.to_q", "_lora.up.weight", "_lora.down.weight"),
    **module("lora_unet_single_blocks_2_linear2", *LORA),
    **module("lora_unet_single_blocks_3_linear2", ".alpha"),  # an alpha alone makes no patch
    **module("lora_te1_text_model_encoder_layers_0_mlp_fc1", ".lora_up.weight"),
}


def test_groups_merge_to_one_load_and_name_their_tensors():
    calls = []

    def load(lora, to_load):
        calls.append(next(iter(to_load)))
        return fake_load(lora, to_load)

    groups, unused = group_lora(FILE, KEY_MAP, load)
    assert merged_patches(groups) == fake_load(FILE, KEY_MAP)
    assert list(merged_patches(groups)) == list(fake_load(FILE, KEY_MAP))
    assert "lora_unet_double_blocks_0_img_attn_proj" not in calls  # no file tensor starts with it
    by_stem = {g.stem: g.tensors for g in groups}
    assert sorted(by_stem["lora_unet_double_blocks_1_img_attn_proj"]) == sorted(
        k for k in FILE if k.startswith("lora_unet_double_blocks_1_img_attn_proj."))
    assert by_stem["transformer.transformer_blocks.1.attn.to_q"] == (
        "transformer.transformer_blocks.1.attn.to_q_lora.up.weight",
        "transformer.transformer_blocks.1.attn.to_q_lora.down.weight")
    assert "lora_unet_single_blocks_3_linear2" not in by_stem
    assert unused == ["lora_unet_single_blocks_3_linear2.alpha",
                      "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"]


def test_filter_groups_keeps_the_file_tensors_of_selected_blocks():
    groups, unused = group_lora(FILE, KEY_MAP, fake_load)
    tensors, patches, report = filter_groups(groups, unused, flux_selection("1", "none", "drop"))
    assert sorted(tensors) == sorted(k for k in FILE if k.startswith(
        ("lora_unet_double_blocks_1_", "transformer.transformer_blocks.1.")))
    assert patches == fake_load({k: FILE[k] for k in tensors}, KEY_MAP)
    assert report.applied["double_blocks"] == {1: 3}  # proj weight, proj bias, the q part of qkv
    assert report.left_out["double_blocks"] == {10: 1}
    assert report.ignored == unused

    tensors, _, _ = filter_groups(groups, unused, flux_selection("none", "none", "keep"))
    assert sorted(tensors) == ["lora_unet_img_in.lora_down.weight", "lora_unet_img_in.lora_up.weight"]


def test_report_starts_empty():
    report = LoraReport(flux_selection())
    assert report.total == 0 and report.missing("double_blocks") == tuple(range(19))
