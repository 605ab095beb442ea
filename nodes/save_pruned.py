"""The node that writes a planned model as a plain diffusion-model file (a pruned or re-ordered model)."""

from __future__ import annotations

import os

import comfy.model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..core.patching import diffusion_model, family_of, layer_plan
from ..core.pruned_model import SaveRefused, metadata, output_path, pruned_orders, renamed_keys, report
from .reorder import MODEL_HELP

CATEGORY = "layer_lab"
FOLDER = "diffusion_models"


def baked_state_dict(model) -> dict:
    """The diffusion model's tensors with every weight patch on ``model`` applied, as core's Save Model bakes
    them (``comfy.sd.save_checkpoint``): the model is loaded with its patches, then read. Not forced to load
    fully: a model larger than the GPU's memory is patched in place where it is offloaded, as core does.
    ComfyUI 0.33 hands weights it did not patch in place as tensors that patch themselves when moved to the
    CPU."""
    comfy.model_management.load_models_gpu([model], force_patch_weights=True)
    if hasattr(model, "model_state_dict_for_saving"):
        return model.model_state_dict_for_saving(model.model.diffusion_model, "diffusion_model.")
    return model.model.diffusion_model.state_dict()


def output_folder() -> str:
    """models/diffusion_models (ComfyUI lists the legacy models/unet first), else the first folder registered."""
    folders = folder_paths.get_folder_paths(FOLDER)
    return next((f for f in folders if os.path.basename(os.path.normpath(f)) == FOLDER), folders[0])


def source_name(model) -> str:
    """The file the model was loaded from where ComfyUI keeps it (0.33's loaders), else its class."""
    init = getattr(model, "cached_patcher_init", None)
    if init and init[1] and isinstance(init[1][0], str):
        return os.path.basename(init[1][0])
    dit = diffusion_model(model)
    return f"{type(dit).__module__}.{type(dit).__qualname__}"


def write(tensors: dict, path: str, file_metadata: dict) -> None:
    """Into a temporary file, then renamed: a failed write leaves no file, and a file being replaced stays
    whole for anything that still reads it."""
    temporary = path + ".tmp"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        comfy.utils.save_torch_file(tensors, temporary, metadata=file_metadata)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class LayerLabSavePrunedModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="LayerLabSavePrunedModel",
            display_name="Layer Lab Save Pruned Model",
            category=CATEGORY,
            description="Write a model that carries a Layer Lab plan of whole blocks (skips, repeats, reverses, "
                        "shuffles) as a diffusion-model file whose block lists are the planned order, with every "
                        "LoRA and weight patch on the model baked in. Core's Load Diffusion Model loads it, "
                        "without the pack.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_HELP + " to save, with its Layer Lab plan."),
                io.String.Input("filename", default="layer_lab/pruned_model",
                                tooltip="File name inside your diffusion_models folder; .safetensors is added. A '/' "
                                        "makes a subfolder."),
                io.Boolean.Input("overwrite", default=False,
                                 tooltip="Replace a file of that name. Off: an existing file is an error."),
            ],
            outputs=[io.String.Output(display_name="report",
                                      tooltip="The file written, its size, and per stream the original block at "
                                              "each new position.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, filename: str, overwrite: bool) -> io.NodeOutput:
        plan = layer_plan(model)
        family = family_of(plan)
        orders = pruned_orders(plan, family)
        folder = output_folder()
        path = output_path(folder, filename)
        saved = os.path.relpath(path, os.path.realpath(folder)).replace(os.sep, "/")
        if os.path.exists(path) and not overwrite:
            raise SaveRefused(f"{saved!r} already exists in the diffusion_models folder: choose another filename, "
                              "or set overwrite to replace it")
        state = baked_state_dict(model)
        names = renamed_keys(state, family.block_lists, orders)
        tensors, used = {}, set()
        for new, old in names.items():
            tensor = state[old]
            if old in used:  # a repeated block: its own copy, a file cannot share storage between names
                tensor = tensor.to("cpu").clone()
            used.add(old)
            tensors[new] = tensor if tensor.is_contiguous() else tensor.contiguous()
        source = source_name(model)
        write(tensors, path, metadata(plan, family, orders, source))
        source_bytes = sum(t.numel() * t.element_size() for t in state.values())
        text = report(plan, family, orders, saved, os.path.getsize(path), source_bytes, source)
        return io.NodeOutput(text)


SAVE_NODES = [LayerLabSavePrunedModel]
