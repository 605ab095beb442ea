"""Placeholder model files that carry a released model's real header, for the strip's before-a-run answer.

Each entry is the file an example workflow's loader names, with the configuration ComfyUI's detection
reads off the released file (its real widths and depths). The model is built on the meta device, so
its state dict gives every tensor's name, dtype and shape without allocating a weight; the file is
that safetensors header alone, with no weights after it: ComfyUI's loaders refuse it, the pack's
header reader (which never reads weights) answers from it. A checkpoint's entry puts the diffusion
model's keys under ``model.diffusion_model.``, as a checkpoint file does.
"""

from __future__ import annotations

import json
import pathlib
import struct
from dataclasses import dataclass

import torch

import comfy.ldm.hunyuan_video.model as hunyuan_video
import comfy.model_detection
import comfy.supported_models as models

FLUX_DEV = {"image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
            "context_in_dim": 4096, "vec_in_dim": 768, "hidden_size": 3072, "num_heads": 24, "mlp_ratio": 4.0,
            "axes_dim": [16, 56, 56], "theta": 10000, "qkv_bias": True, "txt_ids_dims": [], "yak_mlp": False,
            "txt_norm": False, "depth": 19, "depth_single_blocks": 38}
FLUX2_DEV = {"image_model": "flux2", "guidance_embed": True, "in_channels": 128, "out_channels": 128, "patch_size": 1,
             "context_in_dim": 15360, "vec_in_dim": None, "hidden_size": 6144, "num_heads": 48, "mlp_ratio": 3.0,
             "axes_dim": [32, 32, 32, 32], "theta": 2000, "qkv_bias": False, "txt_ids_dims": [3],
             "global_modulation": True, "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
             "ref_index_scale": 10.0, "depth": 8, "depth_single_blocks": 48}
QWEN_IMAGE = {"image_model": "qwen_image", "in_channels": 64, "out_channels": 16, "patch_size": 2, "num_layers": 60,
              "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
              "axes_dims_rope": (16, 56, 56)}
SD35_LARGE = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "input_size": None, "depth": 38, "num_blocks": 38,
              "adm_in_channels": 2048, "qk_norm": "rms", "num_patches": 36864, "pos_embed_max_size": 192,
              "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [],
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 2432}}}
AURAFLOW_03 = {"in_channels": 4, "out_channels": 4, "patch_size": 2, "dim": 3072, "n_heads": 12,
               "global_conddim": 3072, "cond_seq_dim": 2048, "max_seq": 9216, "n_double_layers": 4, "n_layers": 36}
Z_IMAGE_TURBO = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "n_heads": 30,
                 "n_kv_heads": 30, "n_layers": 30, "n_refiner_layers": 2, "multiple_of": 256,
                 "ffn_dim_multiplier": 8.0 / 3.0, "qk_norm": True, "cap_feat_dim": 2560, "axes_dims": [32, 48, 48],
                 "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "z_image_modulation": True, "time_scale": 1000.0}
WAN22_TI2V_5B = {"image_model": "wan2.1", "model_type": "t2v", "dim": 3072, "out_dim": 48, "num_heads": 24,
                 "ffn_dim": 14336, "num_layers": 30, "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1),
                 "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6, "in_dim": 48}

# released models of families no example workflow uses, whose tiny files ComfyUI's detection cannot rebuild
FLUX2_KLEIN_4B = {**FLUX2_DEV, "guidance_embed": False, "hidden_size": 3072, "num_heads": 24, "context_in_dim": 7680,
                  "depth": 5, "depth_single_blocks": 20}
CHROMA = {**{k: v for k, v in FLUX_DEV.items() if k not in ("guidance_embed", "yak_mlp", "txt_norm")},
          "image_model": "chroma", "in_channels": 64, "out_channels": 64, "vec_in_dim": None, "in_dim": 64,
          "out_dim": 3072, "hidden_dim": 5120, "n_layers": 5}
HUNYUAN_VIDEO = {k: v for k, v in {
    "image_model": "hunyuan_video", "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2], "vec_in_dim": 768,
    "guidance_embed": True, "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False,
    "context_in_dim": 4096, "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 20,
    "depth_single_blocks": 40, "axes_dim": [16, 56, 56], "theta": 256, "qkv_bias": True, "byt5": False,
    "meanflow": False}.items() if k in hunyuan_video.HunyuanVideoParams.__dataclass_fields__ or k == "image_model"}
LUMINA_IMAGE_2 = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 2304, "n_heads": 24,
                  "n_kv_heads": 8, "n_layers": 26, "n_refiner_layers": 2, "multiple_of": 256, "ffn_dim_multiplier": None,
                  "qk_norm": True, "cap_feat_dim": 2304, "axes_dims": [32, 32, 32], "axes_lens": [300, 512, 512],
                  "rope_theta": 10000.0}
SD3_MEDIUM = {**SD35_LARGE, "depth": 24, "num_blocks": 24, "qk_norm": None,
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": 4096, "out_features": 1536}}}


@dataclass(frozen=True)
class RealFile:
    folder: str  # ComfyUI's model folder the loader reads
    config_class: type | None  # None: the class ComfyUI's detection picks for the config
    unet_config: dict
    family: str  # what the strip must show
    counts: dict
    prefix: str = ""  # "model.diffusion_model." for a checkpoint

    def header(self) -> dict:
        """The file's safetensors header: every tensor of the model, bf16 where floating point, offsets in order."""
        config_class = self.config_class or type(comfy.model_detection.model_config_from_unet_config(
            dict(self.unet_config)))
        config = config_class(dict(self.unet_config))
        config.set_inference_dtype(torch.bfloat16, None)
        meta = torch.device("meta")
        with meta:
            state_dict = config.get_model({}, "", device=meta).diffusion_model.state_dict()
        table, offset = {}, 0
        for key, tensor in state_dict.items():
            size = tensor.numel() * tensor.element_size()
            table[self.prefix + key] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                                        "data_offsets": [offset, offset + size]}
            offset += size
        return table

    def write(self, path: pathlib.Path) -> pathlib.Path:
        raw = json.dumps(self.header()).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(struct.pack("<Q", len(raw)) + raw)
        return path


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}
CHECKPOINT = "model.diffusion_model."

# the model files the example workflows name
EXAMPLE_FILES = {
    "flux1-dev.safetensors": RealFile("diffusion_models", models.Flux, FLUX_DEV, "Flux",
                                      {"double_blocks": 19, "single_blocks": 38}),
    "flux2_dev_fp8mixed.safetensors": RealFile("diffusion_models", models.Flux2, FLUX2_DEV, "Flux",
                                               {"double_blocks": 8, "single_blocks": 48}),
    "qwen_image_fp8_e4m3fn.safetensors": RealFile("diffusion_models", models.QwenImage, QWEN_IMAGE, "Qwen-Image",
                                                  {"double_blocks": 60, "single_blocks": 0}),
    "sd3.5_large.safetensors": RealFile("checkpoints", models.SD3, SD35_LARGE, "SD3",
                                        {"double_blocks": 38, "single_blocks": 0}, CHECKPOINT),
    "aura_flow_0.3.safetensors": RealFile("checkpoints", models.AuraFlow, AURAFLOW_03, "AuraFlow",
                                          {"double_blocks": 4, "single_blocks": 32}, CHECKPOINT),
    "z_image_turbo_bf16.safetensors": RealFile("diffusion_models", models.ZImage, Z_IMAGE_TURBO, "Lumina2",
                                               {"double_blocks": 0, "single_blocks": 30}),
    "wan2.2_ti2v_5B_fp16.safetensors": RealFile("diffusion_models", None, WAN22_TI2V_5B, "Wan",
                                                {"double_blocks": 0, "single_blocks": 30}),
}

OTHER_RELEASES = {
    "flux-2-klein-4b.safetensors": RealFile("diffusion_models", models.Flux2, FLUX2_KLEIN_4B, "Flux",
                                            {"double_blocks": 5, "single_blocks": 20}),
    "chroma.safetensors": RealFile("diffusion_models", models.Chroma, CHROMA, "Chroma",
                                   {"double_blocks": 19, "single_blocks": 38}),
    "hunyuan_video_t2v_720p_bf16.safetensors": RealFile("diffusion_models", models.HunyuanVideo, HUNYUAN_VIDEO,
                                                        "HunyuanVideo", {"double_blocks": 20, "single_blocks": 40}),
    "lumina_2.safetensors": RealFile("diffusion_models", models.Lumina2, LUMINA_IMAGE_2, "Lumina2",
                                     {"double_blocks": 0, "single_blocks": 26}),
    "sd3_medium.safetensors": RealFile("checkpoints", models.SD3, SD3_MEDIUM, "SD3",
                                       {"double_blocks": 24, "single_blocks": 0}, CHECKPOINT),
}


def write_example_files(models_folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every example workflow's model file, as a real-header placeholder under ComfyUI's ``models`` folder."""
    return {name: real.write(models_folder / real.folder / name) for name, real in EXAMPLE_FILES.items()}
