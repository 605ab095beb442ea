"""Tiny random-weight DiT models built from ComfyUI's own classes, for CPU tests.

Needs the setup done by ``tests/comfy/conftest.py``. Every builder returns a
``comfy.model_patcher.ModelPatcher`` (float32, CPU) as ComfyUI's loaders do; the BaseModel is
``patcher.model`` and the DiT ``patcher.model.diffusion_model``. Weight patch keys look like
``diffusion_model.double_blocks.0.img_attn.qkv.weight``.

Like ComfyUI's server, which runs every prompt under ``torch.inference_mode()``, models are built
and sampled in inference mode: the weights are inference tensors, so they cannot be modified in
place outside inference mode (patch them through the ModelPatcher instead).
"""

import collections
import itertools

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.sample
import comfy.supported_models

HIDDEN = 64
HEADS = 2
AXES_DIM = [8, 12, 12]  # sums to HIDDEN // HEADS
CONTEXT_DIM = 32
POOLED_DIM = 32
WEIGHT_STD = 0.05


def tiny_flux(double=3, single=4, seed=0):
    """Flux.1-dev layout (guidance embedding, pooled vector input): double_blocks / single_blocks."""
    return _build(comfy.supported_models.Flux, {
        "image_model": "flux", "guidance_embed": True,
        "in_channels": 16, "out_channels": 16, "patch_size": 2,
        "context_in_dim": CONTEXT_DIM, "vec_in_dim": POOLED_DIM,
        "hidden_size": HIDDEN, "num_heads": HEADS, "mlp_ratio": 4.0,
        "axes_dim": AXES_DIM, "theta": 10000, "qkv_bias": True, "txt_ids_dims": [],
        "yak_mlp": False, "txt_norm": False,
        "depth": double, "depth_single_blocks": single,
    }, seed)


def tiny_flux2(double=2, single=5, guidance=True, seed=0):
    """Flux.2 (``image_model`` "flux2"): shared global modulations, SiLU-gated MLPs, no biases, 128 latent
    channels at 1/16 of the image size, four rope axes. ``guidance`` True is dev-shaped (guidance
    embedding, 8 / 48 blocks in the real model), False Klein-shaped (5 / 20 blocks, no guidance)."""
    return _build(comfy.supported_models.Flux2, {
        "image_model": "flux2", "guidance_embed": guidance,
        "in_channels": 128, "out_channels": 128, "patch_size": 1,
        "context_in_dim": CONTEXT_DIM, "vec_in_dim": None,
        "hidden_size": HIDDEN, "num_heads": HEADS, "mlp_ratio": 3.0,
        "axes_dim": [8, 8, 8, 8], "theta": 2000, "qkv_bias": False, "txt_ids_dims": [3],
        "global_modulation": True, "mlp_silu_act": True, "ops_bias": False,
        "default_ref_method": "index", "ref_index_scale": 10.0,
        "depth": double, "depth_single_blocks": single,
    }, seed)


def tiny_flux2_klein(double=2, single=4, seed=0):
    return tiny_flux2(double, single, guidance=False, seed=seed)


def tiny_chroma(double=3, single=4, seed=0):
    """Chroma: Flux blocks without per-block modulation; an approximator makes all modulations."""
    # forward_orig always computes 344 modulation vectors (the real 19/38 layout) and slices them
    # by block index, so a model may not need more than that.
    if 3 * single + 12 * double + 2 > 344:
        raise ValueError("Chroma's 344 modulation vectors cannot cover that many blocks")
    return _build(comfy.supported_models.Chroma, {
        "image_model": "chroma",
        "in_channels": 64, "out_channels": 64, "patch_size": 2,  # channels counted after 2x2 patching
        "context_in_dim": CONTEXT_DIM, "vec_in_dim": None,
        "hidden_size": HIDDEN, "num_heads": HEADS, "mlp_ratio": 4.0,
        "axes_dim": AXES_DIM, "theta": 10000, "qkv_bias": True, "txt_ids_dims": [],
        "in_dim": 64,  # fixed by forward_orig: 16 (timestep) + 16 (guidance) + 32 (mod index)
        "out_dim": HIDDEN, "hidden_dim": 32, "n_layers": 2,
        "depth": double, "depth_single_blocks": single,
    }, seed)


def tiny_chroma_radiance(double=3, single=4, seed=0):
    """Chroma Radiance: Chroma's blocks in pixel space (3 channels, 4x4 pixel patches) and a NeRF head."""
    import comfy.ldm.chroma_radiance.model as radiance

    config = {
        "image_model": "chroma_radiance",
        "in_channels": 3, "out_channels": 3, "patch_size": 4,
        "context_in_dim": CONTEXT_DIM, "vec_in_dim": None,
        "hidden_size": HIDDEN, "num_heads": HEADS, "mlp_ratio": 4.0,
        "axes_dim": AXES_DIM, "theta": 10000, "qkv_bias": True, "txt_ids_dims": [],
        "in_dim": 64, "out_dim": HIDDEN, "hidden_dim": 32, "n_layers": 2,
        "depth": double, "depth_single_blocks": single,
        "nerf_hidden_size": 16, "nerf_mlp_ratio": 2, "nerf_depth": 2, "nerf_max_freqs": 4, "nerf_tile_size": 0,
        "nerf_final_head_type": "linear", "nerf_embedder_dtype": None, "use_x0": False,
        "use_sequential_txt_ids": False,
    }
    fields = radiance.ChromaRadianceParams.__dataclass_fields__  # ComfyUI versions differ in a few
    return _build(comfy.supported_models.ChromaRadiance,
                  {k: v for k, v in config.items() if k in fields or k == "image_model"}, seed)


def tiny_longcat(double=3, single=4, seed=0):
    """LongCat-Image (ComfyUI 0.33): Flux's class without guidance or pooled input, 3-axis text ids."""
    if not hasattr(comfy.supported_models, "LongCatImage"):
        import pytest

        pytest.skip("this ComfyUI has no LongCat-Image")
    return _build(comfy.supported_models.LongCatImage, {
        "image_model": "flux", "guidance_embed": False,
        "in_channels": 16, "out_channels": 16, "patch_size": 2,
        "context_in_dim": CONTEXT_DIM, "vec_in_dim": None,
        "hidden_size": HIDDEN, "num_heads": HEADS, "mlp_ratio": 4.0,
        "axes_dim": AXES_DIM, "theta": 10000, "qkv_bias": True, "txt_ids_dims": [1, 2],
        "yak_mlp": False, "txt_norm": False,
        "depth": double, "depth_single_blocks": single,
    }, seed)


def tiny_sd3(joint=4, seed=0):
    """SD3: joint_blocks, the last of which is pre_only (returns context None)."""
    depth = 2  # MMDiT fixes 64-wide heads: hidden = 64 * depth, heads = depth
    return _build(comfy.supported_models.SD3, {
        "in_channels": 16, "out_channels": 16, "patch_size": 2, "input_size": None,
        "depth": depth, "num_blocks": joint,
        "adm_in_channels": POOLED_DIM,
        "context_embedder_config": {
            "target": "torch.nn.Linear", "params": {"in_features": CONTEXT_DIM, "out_features": 64 * depth},
        },
        "num_patches": 16 * 16, "pos_embed_max_size": 16, "pos_embed_scaling_factor": None,
        "x_block_self_attn_layers": [],
    }, seed)


def tiny_auraflow(double=2, single=3, seed=0):
    """AuraFlow: double_layers (MMDiTBlock) then single_layers (DiTBlock)."""
    return _build(comfy.supported_models.AuraFlow, {
        "in_channels": 4, "out_channels": 4, "patch_size": 2,
        "dim": HIDDEN, "n_heads": HEADS, "global_conddim": HIDDEN,
        "cond_seq_dim": CONTEXT_DIM, "max_seq": 16 * 16,
        "n_double_layers": double, "n_layers": double + single,
    }, seed)


def tiny_qwen_image(blocks=3, seed=0):
    """Qwen-Image: ``transformer_blocks`` (dual-stream, keyword-only calls, text returned first)."""
    return _build(comfy.supported_models.QwenImage, {
        "image_model": "qwen_image",
        "in_channels": 64, "out_channels": 16, "patch_size": 2,  # 16 latent channels, 2x2 patches
        "num_layers": blocks, "attention_head_dim": HIDDEN // HEADS, "num_attention_heads": HEADS,
        "joint_attention_dim": CONTEXT_DIM, "axes_dims_rope": (8, 12, 12),
    }, seed)


def tiny_lumina2(blocks=4, seed=0, z_image=False):
    """Lumina 2 (``NextDiT``): ``layers`` on the joint caption+image sequence, one refiner layer of each kind.
    ``z_image`` True is Z-Image-shaped (its modulation, time scale, SwiGLU width and rope theta)."""
    config = {
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16,
        "dim": HIDDEN, "n_heads": HEADS, "n_kv_heads": HEADS, "n_layers": blocks, "n_refiner_layers": 1,
        "multiple_of": 16, "ffn_dim_multiplier": 4.0, "qk_norm": True, "cap_feat_dim": CONTEXT_DIM,
        "axes_dims": [8, 12, 12], "axes_lens": [300, 512, 512], "rope_theta": 10000.0,
    }
    if z_image:  # its timestep embedding is 256 wide and feeds every block's modulation: dim 256 at least
        config.update({"dim": 256, "axes_dims": [32, 48, 48], "ffn_dim_multiplier": 8.0 / 3.0,
                       "z_image_modulation": True, "time_scale": 1000.0, "rope_theta": 256.0})
    return _build(comfy.supported_models.ZImage if z_image else comfy.supported_models.Lumina2, config, seed)


def tiny_z_image(blocks=4, seed=0):
    return tiny_lumina2(blocks, seed, z_image=True)


def tiny_hunyuan_image21(double=3, single=4, seed=0):
    """HunyuanImage 2.1 (HunyuanVideo's class): Flux-style blocks, 64 latent channels, 1x1 patches."""
    import comfy.ldm.hunyuan_video.model as hunyuan

    config = {
        "image_model": "hunyuan_video", "in_channels": 64, "out_channels": 64, "patch_size": [1, 1],
        "vec_in_dim": None, "context_in_dim": CONTEXT_DIM, "hidden_size": HIDDEN, "mlp_ratio": 4.0,
        "num_heads": HEADS, "depth": double, "depth_single_blocks": single, "axes_dim": [16, 16], "theta": 256,
        "qkv_bias": True, "guidance_embed": False, "byt5": False, "meanflow": False,
        "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False,
    }
    fields = hunyuan.HunyuanVideoParams.__dataclass_fields__  # ComfyUI versions differ in a few
    return _build(comfy.supported_models.HunyuanImage21,
                  {k: v for k, v in config.items() if k in fields or k == "image_model"}, seed)


LLAMA_DIM, LLAMA_LAYERS, LLAMA_TOKENS = 48, 5, 6  # HiDream's LLM states: (batch, layers, tokens, width)


def tiny_hidream(double=3, single=4, seed=0):
    """HiDream-I1: ``double_stream_blocks`` / ``single_stream_blocks`` (MoE feed-forwards), and per block an LLM
    layer (``llama_layers``, the real pattern: one each, then the last again) through its own caption projection."""
    blocks = double + single
    return _build(comfy.supported_models.HiDream, {
        "image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16,
        "num_layers": double, "num_single_layers": single, "attention_head_dim": HIDDEN // HEADS,
        "num_attention_heads": HEADS, "caption_channels": [CONTEXT_DIM, LLAMA_DIM], "text_emb_dim": POOLED_DIM,
        "num_routed_experts": 4, "num_activated_experts": 2, "axes_dims_rope": [8, 12, 12],
        "max_resolution": [128, 128],
        "llama_layers": [min(i, LLAMA_LAYERS - 1) for i in range(blocks)],
    }, seed)


def _only_in_0_33(name):
    if not hasattr(comfy.supported_models, name):
        import pytest

        pytest.skip(f"this ComfyUI has no {name}")
    return getattr(comfy.supported_models, name)


def tiny_pixart(blocks=4, seed=0):
    """PixArt-Σ (``PixArtMS``): ``blocks`` on the image tokens, cross-attending to T5 text; SDXL latent, eps."""
    return _build(comfy.supported_models.PixArtSigma, {
        "image_model": "pixart_sigma", "micro_condition": False,
        "input_size": 32, "patch_size": 2, "in_channels": 4, "hidden_size": HIDDEN, "num_heads": HEADS,
        "depth": blocks, "caption_channels": CONTEXT_DIM, "model_max_length": 8,
    }, seed)


def tiny_omnigen2(blocks=4, seed=0):
    """OmniGen2: Lumina-style ``layers`` on instruction+image tokens, one refiner layer of each kind."""
    return _build(comfy.supported_models.Omnigen2, {
        "image_model": "omnigen2", "patch_size": 2, "in_channels": 16, "out_channels": None,
        "hidden_size": HIDDEN, "num_layers": blocks, "num_refiner_layers": 1, "num_attention_heads": HEADS,
        "num_kv_heads": 1, "multiple_of": 16, "ffn_dim_multiplier": None, "norm_eps": 1e-5,
        "axes_dim_rope": [8, 12, 12], "axes_lens": [300, 512, 512], "text_feat_dim": CONTEXT_DIM,
        "timestep_scale": 1000.0,
    }, seed)


def tiny_boogu(double=2, single=3, seed=0):
    """Boogu-Image (ComfyUI 0.33): OmniGen2's refiners, then ``double_stream_layers`` and ``single_stream_layers``."""
    return _build(_only_in_0_33("Boogu"), {
        "image_model": "boogu", "patch_size": 2, "in_channels": 16, "out_channels": None,
        "hidden_size": HIDDEN, "num_layers": single, "num_double_stream_layers": double, "num_refiner_layers": 1,
        "num_attention_heads": HEADS, "num_kv_heads": 1, "multiple_of": 16, "ffn_dim_multiplier": None,
        "norm_eps": 1e-5, "axes_dim_rope": [8, 12, 12], "axes_lens": [300, 512, 512],
        "instruction_feat_dim": CONTEXT_DIM, "timestep_scale": 1000.0,
    }, seed)


KREA2_TEXT_LAYERS = 3


def tiny_krea2(blocks=4, seed=0):
    """Krea2 (ComfyUI 0.33, ``SingleStreamDiT``): ``blocks`` on text+image; text from a stack of LLM layers
    (``KREA2_TEXT_LAYERS`` of ``CONTEXT_DIM``, fused) through its own small text transformer."""
    return _build(_only_in_0_33("Krea2"), {
        "image_model": "krea2", "features": HIDDEN, "heads": HEADS, "kvheads": HEADS, "multiplier": 4,
        "layers": blocks, "patch": 2, "channels": 16, "txtdim": CONTEXT_DIM, "txtlayers": KREA2_TEXT_LAYERS,
        "txtheads": HEADS, "txtkvheads": HEADS,
    }, seed)


def tiny_ernie_image(blocks=4, seed=0):
    """Ernie-Image (ComfyUI 0.33): ``layers`` on image+text with one shared modulation; Flux.2's latent."""
    return _build(_only_in_0_33("ErnieImage"), {
        "image_model": "ernie", "hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_layers": blocks,
        "ffn_hidden_size": 4 * HIDDEN, "in_channels": 128, "out_channels": 128, "patch_size": 1,
        "text_in_dim": CONTEXT_DIM, "rope_axes_dim": (8, 12, 12),
    }, seed)


def tiny_ideogram4(blocks=4, seed=0):
    """Ideogram 4 (ComfyUI 0.33): ``layers`` on LLM text+image tokens; Flux.2's latent. Its config class fixes
    the real widths (``unet_extra_config``), so the tiny one is built through a subclass that does not."""
    config = type("TinyIdeogram4", (_only_in_0_33("Ideogram4"),), {"unet_extra_config": {}})
    return _build(config, {
        "image_model": "ideogram4", "in_channels": 128, "num_layers": blocks, "num_attention_heads": HEADS,
        "attention_head_dim": HIDDEN // HEADS, "intermediate_size": 4 * HIDDEN, "adaln_dim": 32,
        "llm_features_dim": CONTEXT_DIM, "rope_theta": 10000, "mrope_section": [6, 5, 5], "norm_eps": 1e-5,
    }, seed)


def tiny_hunyuan_video(double=3, single=4, seed=0):
    """HunyuanVideo 1.0: the same class on a 5-D latent ([B, 16, T, H, W], 1x2x2 patches, three rope axes,
    frames x rows x columns flattened into one token sequence), guidance embedding and a pooled text vector."""
    return _hunyuan_video(comfy.supported_models.HunyuanVideo, {
        "in_channels": 16, "out_channels": 16, "patch_size": [1, 2, 2], "vec_in_dim": POOLED_DIM,
        "guidance_embed": True, "use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False,
    }, double, single, seed)


def tiny_hunyuan_video15(double=4, single=0, seed=0):
    """HunyuanVideo 1.5: the same class, double blocks only (54 in the real model), 32 latent channels plus
    33 of image condition and mask (zeros for text-to-video), 1x1x1 patches, condition-type embeddings
    and a vision projection."""
    return _hunyuan_video(comfy.supported_models.HunyuanVideo15, {
        "in_channels": 65, "out_channels": 32, "patch_size": [1, 1, 1], "vec_in_dim": None,
        "guidance_embed": False, "use_cond_type_embedding": True, "vision_in_dim": 16, "meanflow_sum": True,
    }, double, single, seed)


def _hunyuan_video(config_class, config, double, single, seed):
    import comfy.ldm.hunyuan_video.model as hunyuan

    config = {"image_model": "hunyuan_video", "context_in_dim": CONTEXT_DIM, "hidden_size": HIDDEN,
              "mlp_ratio": 4.0, "num_heads": HEADS, "depth": double, "depth_single_blocks": single,
              "axes_dim": AXES_DIM, "theta": 256, "qkv_bias": True, "byt5": False, "meanflow": False, **config}
    fields = hunyuan.HunyuanVideoParams.__dataclass_fields__
    return _build(config_class, {k: v for k, v in config.items() if k in fields or k == "image_model"}, seed)


def tiny_ltxv(blocks=4, seed=0):
    """LTXV: one list of ``transformer_blocks`` on the video tokens (128 latent channels, 1x1x1 patches),
    each cross-attending to the T5 text (28 blocks in the 2B model, 48 in the 13B)."""
    return _build(comfy.supported_models.LTXV, {
        "image_model": "ltxv", "num_layers": blocks, "attention_head_dim": HIDDEN // HEADS,
        "num_attention_heads": HEADS, "cross_attention_dim": HIDDEN, "caption_channels": CONTEXT_DIM,
    }, seed)


def tiny_ltx2(blocks=4, seed=0):
    """LTX-2 (``LTXAVModel``): one list of ``transformer_blocks``, each taking and returning the tuple
    (video tokens, audio tokens), 48 blocks in the real model; a video latent and an audio latent
    ([B, 8, frames, 16]) sampled together as ComfyUI's nested latent."""
    return _build(comfy.supported_models.LTXAV, {
        "image_model": "ltxav", "num_layers": blocks, "attention_head_dim": HIDDEN // HEADS,
        "num_attention_heads": HEADS, "cross_attention_dim": HIDDEN, "caption_channels": CONTEXT_DIM,
        "audio_attention_head_dim": 16, "audio_num_attention_heads": HEADS, "audio_cross_attention_dim": 32,
        "connector_attention_head_dim": CONTEXT_DIM // HEADS, "connector_num_attention_heads": HEADS,
        "connector_num_layers": 1,
    }, seed)


def tiny_cosmos_predict2(blocks=4, seed=0, anima=False):
    """Cosmos Predict2 (``MiniTrainDIT``): one list of ``blocks`` on ``[B, T, H, W, D]`` states (the 5-D
    latent patchified 1x2x2 but not flattened), each cross-attending to the text; 28 blocks in the 2B
    model, 36 in the 14B. ``anima`` True builds Anima, its subclass with an LLM adapter for the text."""
    config = {
        "image_model": "anima" if anima else "cosmos_predict2", "max_img_h": 240, "max_img_w": 240,
        "max_frames": 128, "in_channels": 16, "out_channels": 16, "patch_spatial": 2, "patch_temporal": 1,
        "concat_padding_mask": True, "model_channels": HIDDEN, "num_heads": HEADS, "num_blocks": blocks,
        "crossattn_emb_channels": CONTEXT_DIM, "pos_emb_cls": "rope3d", "pos_emb_learnable": True,
        "pos_emb_interpolation": "crop", "min_fps": 1, "max_fps": 30, "use_adaln_lora": True, "adaln_lora_dim": 16,
        "extra_per_block_abs_pos_emb": False, "rope_h_extrapolation_ratio": 4.0, "rope_w_extrapolation_ratio": 4.0,
        "rope_t_extrapolation_ratio": 1.0, "extra_h_extrapolation_ratio": 1.0, "extra_w_extrapolation_ratio": 1.0,
        "extra_t_extrapolation_ratio": 1.0,
    }
    if anima and not hasattr(comfy.supported_models, "Anima"):
        import pytest

        pytest.skip("this ComfyUI has no Anima")
    return _build(comfy.supported_models.Anima if anima else comfy.supported_models.CosmosT2IPredict2, config, seed)


def tiny_anima(blocks=4, seed=0):
    return tiny_cosmos_predict2(blocks, seed, anima=True)


def tiny_kandinsky5(blocks=4, seed=0):
    """Kandinsky 5 (video): ``visual_transformer_blocks`` on the video tokens (32 in Lite, 60 in Pro), each
    cross-attending to the text that ``text_transformer_blocks`` (2 / 4) prepared; the 16 latent channels
    are joined by 16 of image condition and a mask (zeros for text-to-video), 1x2x2 patches."""
    return _build(comfy.supported_models.Kandinsky5, {
        "image_model": "kandinsky5", "in_visual_dim": 16, "out_visual_dim": 16, "visual_embed_dim": 132,
        "in_text_dim": CONTEXT_DIM, "in_text_dim2": POOLED_DIM, "time_dim": 32, "model_dim": HIDDEN, "ff_dim": 128,
        "patch_size": (1, 2, 2), "num_text_blocks": 1, "num_visual_blocks": blocks, "axes_dims": (8, 12, 12),
    }, seed)


WAN_DIM = 128  # ComfyUI reads Wan's head count off a checkpoint as dim // 128: one head


def wan_config(blocks, kind="t2v"):
    """The unet config ComfyUI's detection reads off a Wan checkpoint of this shape, tiny widths.

    ``kind``: "t2v" (Wan 2.1 T2V, Wan 2.2 T2V 14B: 16 latent channels), "i2v" (Wan 2.1 I2V: CLIP image
    embedding, 36 input channels) or "ti2v_5b" (Wan 2.2 TI2V 5B: 48 channels in and out, its own latent).
    """
    in_dim, out_dim = {"t2v": (16, 16), "i2v": (36, 16), "ti2v_5b": (48, 48)}[kind]
    return {"image_model": "wan2.1", "model_type": "i2v" if kind == "i2v" else "t2v",
            "dim": WAN_DIM, "out_dim": out_dim, "num_heads": 1, "ffn_dim": 2 * WAN_DIM, "num_layers": blocks,
            "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
            "cross_attn_norm": True, "eps": 1e-6, "in_dim": in_dim}


def tiny_wan(blocks=4, kind="t2v", seed=0):
    """Wan (``WanModel``): ``blocks``, single-stream video blocks; the config class as ComfyUI picks it."""
    import comfy.model_detection

    config = wan_config(blocks, kind)
    return _build(type(comfy.model_detection.model_config_from_unet_config(dict(config))), config, seed)


def tiny_wan_i2v(blocks=4, seed=0):
    return tiny_wan(blocks, "i2v", seed)


def tiny_wan22_5b(blocks=4, seed=0):
    return tiny_wan(blocks, "ti2v_5b", seed)


FAMILIES = {"flux": tiny_flux, "flux2": tiny_flux2, "flux2_klein": tiny_flux2_klein, "longcat": tiny_longcat,
            "chroma": tiny_chroma, "chroma_radiance": tiny_chroma_radiance, "sd3": tiny_sd3, "auraflow": tiny_auraflow,
            "qwen_image": tiny_qwen_image, "lumina2": tiny_lumina2, "z_image": tiny_z_image,
            "hunyuan_image21": tiny_hunyuan_image21, "hidream": tiny_hidream,
            "pixart": tiny_pixart, "omnigen2": tiny_omnigen2, "boogu": tiny_boogu, "krea2": tiny_krea2,
            "ernie_image": tiny_ernie_image, "ideogram4": tiny_ideogram4, "hunyuan_video": tiny_hunyuan_video,
            "hunyuan_video15": tiny_hunyuan_video15, "ltxv": tiny_ltxv, "ltx2": tiny_ltx2,
            "cosmos_predict2": tiny_cosmos_predict2, "anima": tiny_anima, "kandinsky5": tiny_kandinsky5, "wan": tiny_wan,
            "wan_i2v": tiny_wan_i2v, "wan22_5b": tiny_wan22_5b}


def conditioning(model, seed=0, tokens=8, batch=1, guidance=3.5):
    """Return (positive, negative) in CLIPTextEncode's format: ``[[context, {"pooled_output": ...}]]``.

    ``pooled_output`` is None for models without a pooled input (Chroma, AuraFlow); ``guidance``
    is added (as the FluxGuidance node does) for models with a guidance embedding.
    """
    config = model.model.model_config.unet_config
    if "context_embedder_config" in config:
        context_dim, pooled_dim = config["context_embedder_config"]["params"]["in_features"], config["adm_in_channels"]
    elif "cond_seq_dim" in config:
        context_dim, pooled_dim = config["cond_seq_dim"], None
    elif "joint_attention_dim" in config:  # Qwen-Image
        context_dim, pooled_dim = config["joint_attention_dim"], None
    elif "cap_feat_dim" in config:  # Lumina 2, Z-Image
        context_dim, pooled_dim = config["cap_feat_dim"], None
    elif "llama_layers" in config:  # HiDream: T5 context, pooled CLIP, and the LLM's states
        context_dim, pooled_dim = config["caption_channels"][0], config["text_emb_dim"]
    elif "text_feat_dim" in config or "instruction_feat_dim" in config:  # OmniGen2, Boogu
        context_dim, pooled_dim = config.get("text_feat_dim", config.get("instruction_feat_dim")), None
    elif "txtlayers" in config:  # Krea2: its LLM layers side by side
        context_dim, pooled_dim = config["txtlayers"] * config["txtdim"], None
    elif "text_in_dim" in config:  # Ernie-Image
        context_dim, pooled_dim = config["text_in_dim"], None
    elif "llm_features_dim" in config:  # Ideogram 4
        context_dim, pooled_dim = config["llm_features_dim"], None
    elif "in_text_dim" in config:  # Kandinsky 5
        context_dim, pooled_dim = config["in_text_dim"], config["in_text_dim2"]
    elif "crossattn_emb_channels" in config:  # Cosmos Predict2, Anima
        context_dim, pooled_dim = config["crossattn_emb_channels"], None
    elif "caption_channels" in config:  # PixArt, LTXV; LTX-2's encoder output holds video and audio text side by side
        context_dim, pooled_dim = config["caption_channels"] * (2 if config["image_model"] == "ltxav" else 1), None
    elif config.get("image_model") == "wan2.1":  # umT5 states, 4096 wide
        context_dim, pooled_dim = config.get("text_dim", 4096), None
    else:
        context_dim, pooled_dim = config["context_in_dim"], config["vec_in_dim"]
    generator = torch.Generator().manual_seed(seed)

    def one():
        extra = {"pooled_output": None if pooled_dim is None else torch.randn(batch, pooled_dim, generator=generator)}
        if config.get("model_type") == "i2v":  # Wan I2V: CLIP vision states, as WanImageToVideo adds them
            extra["clip_vision_output"] = ClipVisionOutput(torch.randn(batch, 4, 1280, generator=generator))
        if config.get("guidance_embed"):
            extra["guidance"] = guidance
        if config.get("image_model") in ("omnigen2", "boogu", "ltxv"):  # their loops (LTXV: its T5 mask) read it
            extra["attention_mask"] = torch.ones(batch, tokens, dtype=torch.long)
        if "llama_layers" in config:
            extra["conditioning_llama3"] = torch.randn(batch, LLAMA_LAYERS, LLAMA_TOKENS, LLAMA_DIM,
                                                       generator=generator)
        return [[torch.randn(batch, tokens, context_dim, generator=generator), extra]]

    return one(), one()


class ClipVisionOutput:
    def __init__(self, penultimate_hidden_states):
        self.penultimate_hidden_states = penultimate_hidden_states


IMAGE_MODELS_ON_VIDEO_LATENTS = ("krea2",)  # image models on Wan's 3-D latent: one frame


def latent(model, h=None, w=None, batch=1, frames=None):
    """An empty latent (zeros, as EmptyLatentImage) with the model's channel count; h, w in latent pixels
    (16, or 48 for PixArt, whose position embedding is sized in steps of 64 latent pixels, rounded).
    A video model's latent is ``[batch, channels, frames, h, w]`` (3 frames unless given)."""
    image_model = model.model.model_config.unet_config.get("image_model", "")
    least = 48 if image_model.startswith("pixart") else 16
    h, w = h or least, w or least
    frames = frames or (1 if image_model in IMAGE_MODELS_ON_VIDEO_LATENTS else 3)
    latent_format = model.get_model_object("latent_format")
    if type(latent_format).__name__ == "LTXAV":  # video and audio latents, nested as LTXVConcatAVLatent makes them
        import comfy.nested_tensor

        return comfy.nested_tensor.NestedTensor([torch.zeros(batch, latent_format.latent_channels, frames, h, w),
                                                 torch.zeros(batch, 8, 2 * frames, 16)])
    if getattr(latent_format, "latent_dimensions", 2) == 3:
        return torch.zeros(batch, latent_format.latent_channels, frames, h, w)
    return torch.zeros(batch, latent_format.latent_channels, h, w)


def sample(model, positive, negative, latent, seed=0, steps=3, cfg=2.0, sampler="euler", scheduler="simple", **kwargs):
    """Run ``comfy.sample.sample`` as the KSampler node does and return the output latent.

    Extra keyword arguments (``denoise``, ``callback``, ``sigmas`` ...) go to ``comfy.sample.sample``.
    """
    kwargs.setdefault("disable_pbar", True)
    with torch.inference_mode():
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        noise = comfy.sample.prepare_noise(latent, seed)
        return flat(comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                        seed=seed, **kwargs))


def flat(samples):
    """A sampled latent as one tensor: a nested one (LTX-2's video and audio) packed as ComfyUI's sampler packs it."""
    if getattr(samples, "is_nested", False):
        import comfy.utils

        return comfy.utils.pack_latents(samples.unbind())[0]
    return samples


def tiny_vae(latent_channels=16, seed=0):
    """A ``comfy.sd.VAE`` with a tiny random-weight AutoencoderKL decoder (8x upscale, 3 channels).

    Built through ``comfy.sd.VAE(sd=..., config=...)``, the path ComfyUI takes for a VAE with a
    config, so ``vae.decode`` runs ComfyUI's own code. ``latent_channels`` is 16 for Flux and SD3,
    4 for AuraFlow; Chroma's latent is Flux's.
    """
    import comfy.ldm.models.autoencoder
    import comfy.sd

    # ch 32 is the least width ComfyUI's GroupNorm (32 groups) accepts; four levels give the usual 8x
    ddconfig = {"double_z": True, "z_channels": latent_channels, "resolution": 64, "in_channels": 3, "out_ch": 3,
                "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    params = {"ddconfig": ddconfig, "embed_dim": latent_channels}
    with torch.inference_mode():
        source = comfy.ldm.models.autoencoder.AutoencoderKL(**params)
        _randomize(source, seed)
        state_dict = {k: v.clone() for k, v in source.state_dict().items()}
        return comfy.sd.VAE(sd=state_dict, config={"params": params}, dtype=torch.float32)


def _build(config_class, unet_config, seed):
    config = config_class(unet_config)
    config.set_inference_dtype(torch.float32, None)
    with torch.inference_mode():
        model = config.get_model({})
        _randomize(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def _randomize(module, seed):
    # comfy ops skip initialisation, so every parameter and buffer starts as torch.empty garbage.
    generator = torch.Generator().manual_seed(seed)
    norm_weights = {
        id(p)
        for m in module.modules() if "norm" in type(m).__name__.lower()
        for name, p in m.named_parameters(recurse=False) if name != "bias"
    }
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        if tensor.is_floating_point():
            noise = torch.randn(tensor.shape, generator=generator) * WEIGHT_STD
            tensor.copy_(noise + 1 if id(tensor) in norm_weights else noise)


class BlockCalls:
    """Forward calls of a diffusion model's blocks while counting: ``calls[(list attribute, index)]``, and
    ``planned``, how many of them ran while their list was replaced by a plan's (the executor's path)."""

    def __init__(self, patcher):
        from dit_layer_lab.core.families import detect
        from dit_layer_lab.core.planned_blocks import PlannedBlocks

        dit = patcher.model.diffusion_model
        self.calls, self.planned, self._handles = collections.Counter(), 0, []
        for attribute in detect(dit).block_lists.values():
            for index, block in enumerate(getattr(dit, attribute)):
                def pre_hook(module, args, key=(attribute, index)):
                    self.calls[key] += 1
                    self.planned += isinstance(getattr(dit, key[0]), PlannedBlocks)
                self._handles.append(block.register_forward_pre_hook(pre_hook))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
