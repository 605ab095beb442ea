"""A model file's family and block counts before any run: ComfyUI's own detection on the file's header.

The strip asks for the model a node's MODEL input comes from (the loader node's file). The file is
found the way its loader finds it (``folder_paths.get_full_path``, which stays inside the model
folders); only its header is read (``model_header``); ComfyUI's ``model_detection`` turns the
names and shapes into a model config, exactly as its loaders do; the diffusion model is built on the
meta device (no weights are allocated) and the pack's ``families.detect`` and ``block_counts`` read
it as they read a loaded model. Answers are cached per file (path, size, mtime).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .model_header import MAX_HEADER, Header, HeaderError, file_identity, read_header

# loader node type -> (its file widget, the model folders it looks in, in order)
LOADERS = {
    "UNETLoader": ("unet_name", ("diffusion_models",)),
    "CheckpointLoaderSimple": ("ckpt_name", ("checkpoints",)),
    "UnetLoaderGGUF": ("unet_name", ("unet_gguf", "diffusion_models")),  # ComfyUI-GGUF, where installed
}
MAX_NAME = 1000
CACHE_SIZE = 64

_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()


class ModelBlocksError(ValueError):
    """Why the block counts of a file are not known: ``status`` 400 for a malformed request, 404 for a file not
    in the model folders, 422 for one that cannot be read or holds no supported model (the route answers the
    last two with 200 and "known": false)."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def model_blocks(loader: str, name: str) -> dict:
    """{family, counts, list_names, model_class} of the file ``name`` that the node type ``loader`` loads."""
    if loader not in LOADERS:
        raise ModelBlocksError(f"loader {loader!r:.60} is not read before a run; known: {', '.join(LOADERS)}", 400)
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ModelBlocksError(f"'name' is a model file name of 1 to {MAX_NAME} characters", 400)
    path = _resolve(loader, name)
    identity = file_identity(path)
    with _cache_lock:
        if identity in _cache:
            _cache.move_to_end(identity)
            return _cache[identity]
    try:
        header = read_header(path, name, MAX_HEADER)
    except HeaderError as error:
        raise ModelBlocksError(str(error)) from None
    except OSError as error:
        raise ModelBlocksError(f"{name} cannot be read: {error.strerror or error}") from None
    answer = blocks_from_header(header, name)
    with _cache_lock:
        _cache[identity] = answer
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return answer


def _resolve(loader: str, name: str) -> str:
    import folder_paths

    folders = LOADERS[loader][1]
    for folder in folders:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    raise ModelBlocksError(f"{name!r:.200} is not a file in ComfyUI's {' or '.join(folders)} model folders", 404)


def blocks_from_header(header: Header, name: str = "the file") -> dict:
    """The family and block counts of the diffusion model whose tensors ``header`` lists.

    Raises ``ModelBlocksError`` when ComfyUI does not recognise the model, or the pack does not support it.
    """
    import torch

    from .families import _qualified, detect, unwrap
    from .plan import PlanError

    state_dict = {key: torch.empty(shape, dtype=_torch_dtype(dtype), device="meta")
                  for key, (dtype, shape) in header.tensors.items()}
    model_config, state_dict = _detect(state_dict, header.metadata)
    if model_config is None:
        raise ModelBlocksError(f"ComfyUI does not recognise a diffusion model in {name}")
    model_config.set_inference_dtype(model_config.supported_inference_dtypes[0], None)
    try:
        model = _build_on_meta(model_config, state_dict)
    except Exception as error:  # a config the detection got wrong for this file (e.g. sizes it hard-codes)
        raise ModelBlocksError(f"{name}: ComfyUI detects {type(model_config).__name__}, but its model cannot be "
                               f"built from this file's sizes ({type(error).__name__}: {str(error)[:200]})") from None
    dit = unwrap(model.diffusion_model)
    try:
        family = detect(dit)
    except PlanError:
        raise ModelBlocksError(f"not a supported model: {_qualified(type(dit))}") from None
    return {"family": family.name, "counts": family.block_counts(dit), "list_names": dict(family.list_names()),
            "model_class": _qualified(type(dit))}


def _build_on_meta(model_config, state_dict):
    """The BaseModel of ``model_config`` with every weight on the meta device (nothing allocated)."""
    import torch

    meta = torch.device("meta")
    try:
        with meta:  # also the tensors a class creates without a device
            return model_config.get_model(state_dict, "", device=meta)
    except RuntimeError as error:
        if "meta" not in str(error):
            raise
    # a class that reads a value it computes while built (PixArt's drop-path rule calls .item()): only
    # the device argument, which ComfyUI's layers (comfy.ops) honour for every weight
    return model_config.get_model(state_dict, "", device=meta)


def _detect(state_dict: dict, metadata: dict):
    """ComfyUI's config for a diffusion model or checkpoint state dict, as ``comfy.sd``'s loaders detect it."""
    import comfy.model_detection as detection
    import comfy.utils

    prefix = detection.unet_prefix_from_state_dict(state_dict)
    bare = comfy.utils.state_dict_prefix_replace(state_dict, {prefix: ""}, filter_keys=True)
    if bare:
        state_dict = bare
    model_config = detection.model_config_from_unet(state_dict, "", metadata=metadata or None)
    if model_config is None:
        converted = detection.convert_diffusers_mmdit(state_dict, "")
        if converted is not None:
            state_dict, model_config = converted, detection.model_config_from_unet(converted, "")
    return model_config, state_dict


def _torch_dtype(name: str):
    import torch

    dtypes = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
              "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu", "I64": "int64", "I32": "int32", "I16": "int16",
              "I8": "int8", "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
              "C64": "complex64"}
    return getattr(torch, dtypes.get(name, "uint8"), torch.uint8)  # packed 4/6-bit types: bytes
