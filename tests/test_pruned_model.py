"""The pure part of saving a planned model: which plans a file can hold, the new key names, the name checks."""

import dataclasses
import json
import os

import pytest

from dit_layer_lab.core.families import all_families, by_name
from dit_layer_lab.core.pruned_model import (SaveRefused, metadata, output_path, pack_version, pruned_orders,
                                             renamed_keys, report)
from dit_layer_lab.core.rewrite import LayerPlan, plan_rewrite, strategy_rewrite

FLUX = by_name("Flux")
COUNTS = {"double_blocks": 3, "single_blocks": 4}


def flux_plan(*rewrites):
    plan = LayerPlan("Flux", tuple(COUNTS.items()))
    for rewrite in rewrites:
        if rewrite is not None:
            plan = plan.with_rewrite(rewrite, FLUX.check)
    return plan


def typed(double="all", single="all", start=0.0, end=1.0):
    return flux_plan(plan_rewrite(COUNTS, "double_blocks", double, start, end),
                     plan_rewrite(COUNTS, "single_blocks", single, start, end))


def block_keys(lists, counts, leaves=("attn.qkv.weight", "attn.qkv.bias", "mlp.0.weight")):
    """A state dict's key list in module order: embedders, each list's blocks, a final layer."""
    keys = ["img_in.weight", "time_in.mlp.0.weight"]
    for stream, attribute in lists.items():
        keys += [f"{attribute}.{i}.{leaf}" for i in range(counts[stream]) for leaf in leaves]
    return keys + ["final_layer.linear.weight"]


# ------------------------------------------------------------------------------------------ key names


def test_blocks_are_renumbered_in_the_planned_order():
    keys = block_keys(FLUX.block_lists, COUNTS, leaves=("w",))
    names = renamed_keys(keys, FLUX.block_lists, {"double_blocks": (2, 0), "single_blocks": (1, 1, 3)})
    assert list(names.items()) == [
        ("img_in.weight", "img_in.weight"), ("time_in.mlp.0.weight", "time_in.mlp.0.weight"),
        ("double_blocks.0.w", "double_blocks.2.w"), ("double_blocks.1.w", "double_blocks.0.w"),
        ("single_blocks.0.w", "single_blocks.1.w"), ("single_blocks.1.w", "single_blocks.1.w"),
        ("single_blocks.2.w", "single_blocks.3.w"),
        ("final_layer.linear.weight", "final_layer.linear.weight")]


def test_a_stream_without_an_order_and_keys_outside_the_lists_are_kept():
    keys = block_keys(FLUX.block_lists, COUNTS)
    names = renamed_keys(keys, FLUX.block_lists, {"single_blocks": (0,)})
    assert [k for k in names if k.startswith("double_blocks.")] == [k for k in keys if k.startswith("double_blocks.")]
    assert all(names[k] == k for k in names if not k.startswith("single_blocks."))
    assert [k for k in names if k.startswith("single_blocks.")] == [
        "single_blocks.0.attn.qkv.weight", "single_blocks.0.attn.qkv.bias", "single_blocks.0.mlp.0.weight"]


@pytest.mark.parametrize("family", all_families(), ids=lambda f: f.name)
def test_every_familys_lists_are_renumbered_from_its_declaration(family):
    """The prefixes come from the family's list names (joint_blocks, transformer_blocks, layers, double_layers ...)."""
    counts = {stream: 5 for stream in family.block_lists}
    keys = block_keys(family.block_lists, counts)
    orders = {stream: (4, 4, 0, 2) for stream in family.block_lists}
    names = renamed_keys(keys, family.block_lists, orders)
    for stream, attribute in family.block_lists.items():
        for position, block in enumerate(orders[stream]):
            for leaf in ("attn.qkv.weight", "attn.qkv.bias", "mlp.0.weight"):
                assert names[f"{attribute}.{position}.{leaf}"] == f"{attribute}.{block}.{leaf}"
        assert f"{attribute}.4.attn.qkv.weight" not in names
    assert len(names) == len(keys) - sum(3 for _ in family.block_lists)  # 5 blocks of 3 keys -> 4 blocks


def test_a_prefix_is_matched_whole():
    """``blocks`` is Wan's list; ``vace_blocks.0`` and ``blocks_norm`` are not its blocks; a key without an index
    under the list (a buffer of the list module) is kept."""
    keys = ["blocks.0.w", "blocks.1.w", "vace_blocks.0.w", "blocks_norm.weight", "blocks.scale", "text_blocks.1.w"]
    names = renamed_keys(keys, {"single_blocks": "blocks"}, {"single_blocks": (1,)})
    assert names == {"blocks.0.w": "blocks.1.w", "vace_blocks.0.w": "vace_blocks.0.w",
                     "blocks_norm.weight": "blocks_norm.weight", "blocks.scale": "blocks.scale",
                     "text_blocks.1.w": "text_blocks.1.w"}


def test_a_block_without_tensors_is_named():
    with pytest.raises(SaveRefused, match=r"no tensors for blocks\.7 \(its blocks holds blocks 0-1\)"):
        renamed_keys(["blocks.0.w", "blocks.1.w"], {"single_blocks": "blocks"}, {"single_blocks": (0, 7)})


# ------------------------------------------------------------------------------------------ plans


def test_skips_repeats_reverses_and_shuffles_are_orders():
    plan = typed("2-0", "1*2, 3")
    assert pruned_orders(plan, FLUX) == {"double_blocks": (2, 1, 0), "single_blocks": (1, 1, 3)}
    stacked = flux_plan(strategy_rewrite(COUNTS, "skip", "single_blocks", 0, 0),
                        strategy_rewrite(COUNTS, "shuffle", "single_blocks", 1, 3, seed=5))
    order = pruned_orders(stacked, FLUX)["single_blocks"]
    assert sorted(order) == [1, 2, 3] and pruned_orders(stacked, FLUX)["double_blocks"] == (0, 1, 2)


@pytest.mark.parametrize("plan, message", [
    (lambda: flux_plan(), "carries no Layer Lab plan: nothing to prune"),
    (lambda: flux_plan(strategy_rewrite(COUNTS, "skip", "double_blocks", 1, 1, 0.0, 0.0)),
     "runs every block in its original order: nothing to prune"),
    (lambda: typed("0-1", start=0.25), r"changes the order during sampling \(plan double_blocks = 0-1 \(0.25-1\)\)"),
    (lambda: typed("0, [1-2]"), r"double_blocks: step 2 of the order 0, \[1-2\], \[1-2\], is a parallel group"),
    (lambda: typed(single="0-2, [1-2]*2"), r"single_blocks: step 4 of the order .*, \[1-2\], is a parallel group"),
    (lambda: typed("0-1, 2@0.5"), r"step 3 of the order 0-1, 2@0.5, 2@0.5, is a block keeping part of its update"),
    (lambda: typed("0, 1:attn@0.5, 2"), r"step 2 of the order 0, 1:attn@0.5, 2, 1:attn@0.5, is a block keeping"),
    (lambda: typed("2:txt, 1"), r"step 1 of the order 2:txt, 1, 2:txt, is a block keeping"),
    (lambda: typed(single="none"), r"leaves no Flux single_blocks block; ComfyUI recognises a model file"),
])
def test_plans_a_file_cannot_hold(plan, message):
    with pytest.raises(SaveRefused, match=message):
        pruned_orders(plan(), FLUX)


def test_windows():
    """Any window that is not the whole schedule is refused (the plan's own test of whether its order changes,
    which counts the schedule's end too); a window that never applies changes nothing."""
    plan = flux_plan(plan_rewrite(COUNTS, "double_blocks", "2-0", 0.0, 0.5),
                     plan_rewrite(COUNTS, "double_blocks", "2-0", 0.5, 1.0))
    with pytest.raises(SaveRefused, match="changes the order during sampling"):
        pruned_orders(plan, FLUX)
    never = flux_plan(plan_rewrite(COUNTS, "double_blocks", "2-0"), plan_rewrite(COUNTS, "single_blocks", "3-0", 0.5, 0.5))
    assert pruned_orders(never, FLUX) == {"double_blocks": (2, 1, 0), "single_blocks": (0, 1, 2, 3)}


def test_a_refused_family_is_named_with_its_reason_after_the_plan_checks():
    refused = dataclasses.replace(FLUX, name="Tiny", pruned_file_refusal="its loader fixes the depth")
    with pytest.raises(SaveRefused, match=r"^Tiny cannot be saved pruned or re-ordered: its loader fixes the depth$"):
        pruned_orders(typed("1-0"), refused)
    asked = dataclasses.replace(FLUX, name="Asked", pruned_file_refusal=lambda: "this ComfyUI counts nothing")
    with pytest.raises(SaveRefused, match="^Asked cannot be saved .*: this ComfyUI counts nothing$"):
        pruned_orders(typed("1-0"), asked)
    with pytest.raises(SaveRefused, match="parallel group"):  # a bad plan is named first
        pruned_orders(typed("[0-1]"), refused)


@pytest.mark.parametrize("name", ["SD3", "HiDream", "OmniGen2", "Ernie-Image", "Chroma", "Chroma Radiance"])
def test_the_families_comfyui_cannot_load_pruned_say_why(name):
    assert by_name(name).pruned_file_refusal  # the reasons are checked against ComfyUI in tests/comfy


# ------------------------------------------------------------------------------------------ file names


@pytest.mark.parametrize("name, inside", [
    ("pruned", "pruned.safetensors"), ("layer_lab/flux_pruned", "layer_lab/flux_pruned.safetensors"),
    ("a.safetensors", "a.safetensors"), (" spaced ", "spaced.safetensors"), ("sub\\win", "sub/win.safetensors"),
])
def test_names_inside_the_folder(name, inside, tmp_path):
    assert output_path(str(tmp_path), name) == os.path.join(os.path.realpath(tmp_path), inside)


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/x", "C:/x", "./x", "a/./x", "..", "", "  ", "dir/"])
def test_names_leaving_the_folder_are_refused(name, tmp_path):
    with pytest.raises(SaveRefused, match="leaves the diffusion_models folder|names no file"):
        output_path(str(tmp_path), name)


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    folder, outside = tmp_path / "models", tmp_path / "outside"
    folder.mkdir(), outside.mkdir()
    (folder / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(SaveRefused, match="resolves to a path outside it"):
        output_path(str(folder), "link/x")


# ------------------------------------------------------------------------------------------ what the file says


def test_metadata_and_report():
    plan = typed("2, 0", "1*2, 3")
    orders = pruned_orders(plan, FLUX)
    data = metadata(plan, FLUX, orders, "flux1-dev.safetensors")
    assert all(isinstance(v, str) for v in data.values())
    assert json.loads(data["dit_layer_lab_plan"]) == {"double_blocks": "2, 0", "single_blocks": "1*2, 3"}
    assert json.loads(data["dit_layer_lab_blocks"]) == {"double_blocks": [2, 0], "single_blocks": [1, 1, 3]}
    assert data["dit_layer_lab_source"] == "flux1-dev.safetensors" and data["dit_layer_lab_family"] == "Flux"
    assert data["dit_layer_lab_version"] == pack_version() != "unknown"
    text = report(plan, FLUX, orders, "layer_lab/x.safetensors", 3 * 2**20, 4 * 2**20, "flux1-dev.safetensors")
    assert text.splitlines()[:7] == [
        "saved 'layer_lab/x.safetensors' in the diffusion_models folder: 3.0 MiB, 75.0% of the source's 4.0 MiB "
        "of weights",
        "source: flux1-dev.safetensors (Flux)",
        "Flux double_blocks: 3 -> 2 blocks, plan 2, 0",
        "  original -> new: 2->0, 0->1",
        "  not written: 1",
        "Flux single_blocks: 4 -> 3 blocks, plan 1*2, 3",
        "  original -> new: 1->0, 1->1, 3->2"]
