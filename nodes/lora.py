"""Nodes that apply, or save, a LoRA restricted to selected blocks of the model.

The LoRA file is read and mapped by ComfyUI's own loader, exactly as core's LoraLoaderModelOnly
does; ``core.lora_blocks`` only decides which of the resulting patches stay.
"""

from __future__ import annotations

import functools
import json
import os

import comfy.lora
import comfy.lora_convert
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..core.families import detect
from ..core.lora_blocks import BlockSelection, OTHER_TENSORS, filter_groups, group_lora, render_report
from ..core.patching import diffusion_model
from ..core.preview import model_blocks_ui
from .reorder import MODEL_HELP

CATEGORY = "layer_lab"
METADATA_KEY = "dit_layer_lab_selection"

SELECTION_HELP = ("Original block indices: 'all', 'none', '3', '3-9', '0-2, 17-18'. "
                  "They stay the original indices even when a Layer Lab plan reorders the blocks.")


def selection_inputs() -> list:
    return [
        io.Model.Input("model",
                       tooltip=MODEL_HELP + " the LoRA is for."),
        io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                       tooltip="The LoRA file, from your loras folder. Any key format ComfyUI's own LoRA "
                               "loader reads works (kohya, diffusers / ai-toolkit, ComfyUI)."),
        io.String.Input("double_blocks", default="all",
                        tooltip="Which double-stream blocks get the LoRA (SD3: the joint blocks). " + SELECTION_HELP),
        io.String.Input("single_blocks", default="all",
                        tooltip="Which single-stream blocks get the LoRA (SD3 has none: leave 'all'). "
                                + SELECTION_HELP),
        io.Combo.Input("other_tensors", options=list(OTHER_TENSORS), default="keep",
                       tooltip="LoRA parts outside every block (input embedders, final layer, global "
                               "modulation): keep applies them as usual, drop leaves them out. 'keep' with "
                               "'all' blocks is exactly the normal LoRA loader."),
    ]


def read_lora(lora_name: str) -> tuple[dict, dict, bool]:
    """The LoRA's tensors as ComfyUI's loader sees them, the file's metadata, and whether ComfyUI
    converted its keys on load (a few formats, e.g. BFL control or USO LoRAs)."""
    path = folder_paths.get_full_path_or_raise("loras", lora_name)
    tensors, metadata = comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    converted = comfy.lora_convert.convert_lora(tensors)
    return converted, dict(metadata or {}), converted is not tensors


def filtered_lora(model, lora_name: str, lora: dict, double_blocks: str, single_blocks: str, other_tensors: str):
    """(file tensors kept, patches kept, report) for ``lora`` on ``model``."""
    dit = diffusion_model(model)
    family = detect(dit)
    selection = BlockSelection.parse(family.name, family.block_lists, family.block_counts(dit),
                                     {"double_blocks": double_blocks, "single_blocks": single_blocks}, other_tensors)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    groups, unused = group_lora(lora, key_map, functools.partial(comfy.lora.load_lora, log_missing=False))
    if not groups:
        raise ValueError(f"LoRA {lora_name!r}: none of its {len(lora)} tensors is for this {family.name} model "
                         f"(first keys: {', '.join(list(lora)[:3])}); is it a LoRA for another model?")
    return filter_groups(groups, unused, selection)


class LayerLabLoraBlocks(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        inputs = selection_inputs()
        inputs.insert(2, io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                                        tooltip="How strongly the LoRA changes the selected blocks; can be negative."))
        return io.Schema(
            node_id="LayerLabLoraBlocks",
            display_name="Layer Lab LoRA on Blocks",
            category=CATEGORY,
            description="Load a LoRA into the diffusion model, but only into the blocks you select.",
            inputs=inputs,
            outputs=[
                io.Model.Output(tooltip="A copy of the model with the LoRA on the selected blocks."),
                io.String.Output(display_name="report", tooltip="Per block: patches applied; selected blocks "
                                                                 "the LoRA lacks; what was left out."),
            ],
        )

    @classmethod
    def execute(cls, model, lora_name: str, strength_model: float, double_blocks: str, single_blocks: str,
                other_tensors: str) -> io.NodeOutput:
        lora, _, _ = read_lora(lora_name)
        _, patches, report = filtered_lora(model, lora_name, lora, double_blocks, single_blocks, other_tensors)
        text = render_report(report, f"LoRA {lora_name!r} on {report.selection.family}, strength {strength_model}")
        blocks = model_blocks_ui(report.selection.family, report.selection.counts)
        if strength_model == 0:
            return io.NodeOutput(model, text + "\nstrength_model is 0: the model is returned unchanged", ui=blocks)
        patched = model.clone()
        patched.add_patches(patches, strength_model)
        return io.NodeOutput(patched, text, ui=blocks)


class LayerLabLoraBlocksSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabLoraBlocksSave",
            display_name="Layer Lab Save LoRA Blocks",
            category=CATEGORY,
            description="Write a new LoRA file holding only the parts of a LoRA that land in the selected "
                        "blocks, in the original file's key format, into your loras folder.",
            inputs=[
                *selection_inputs(),
                io.String.Input("filename_prefix", default="layer_lab/lora_blocks",
                                tooltip="File name inside your loras folder; a counter and .safetensors are "
                                        "added, so no file is overwritten. A '/' makes a subfolder."),
            ],
            outputs=[io.String.Output(display_name="report",
                                      tooltip="The saved file's name and what it holds, per block.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, lora_name: str, double_blocks: str, single_blocks: str, other_tensors: str,
                filename_prefix: str) -> io.NodeOutput:
        lora, metadata, converted = read_lora(lora_name)
        kept, _, report = filtered_lora(model, lora_name, lora, double_blocks, single_blocks, other_tensors)
        kept = set(kept)
        names = [name for name in lora if name in kept]  # the file's own order
        if not names:
            raise ValueError(f"the selection keeps no part of LoRA {lora_name!r}: nothing to save\n"
                             + render_report(report, f"LoRA {lora_name!r} on {report.selection.family}", "kept"))
        note = {"source": lora_name, **report.selection.as_metadata(),
                "keys": "converted by ComfyUI's loader" if converted else "original"}
        metadata[METADATA_KEY] = json.dumps(note)
        folder = os.path.abspath(folder_paths.get_folder_paths("loras")[0])
        full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, folder)
        file = f"{filename}_{counter:05}_.safetensors"
        tensors = {name: lora[name].contiguous().clone() for name in names}  # clone: no shared storage
        comfy.utils.save_torch_file(tensors, os.path.join(full_folder, file), metadata=metadata)
        saved = os.path.join(subfolder, file).replace(os.sep, "/")
        text = render_report(report, f"saved {saved!r} in the loras folder ({len(names)} of the {len(lora)} "
                                     f"tensors of {lora_name!r})", verb="kept")
        if converted:
            text += "\nComfyUI converts this LoRA's key format on load; the new file uses the converted keys"
        return io.NodeOutput(text, ui=model_blocks_ui(report.selection.family, report.selection.counts))


LORA_NODES = [LayerLabLoraBlocks, LayerLabLoraBlocksSave]
