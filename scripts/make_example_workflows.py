"""Write ``example_workflows/*.json`` from the node definitions of a running ComfyUI.

    python scripts/make_example_workflows.py [--server http://127.0.0.1:8188 | --object-info object_info.json]

The graphs are described below by node type, widget values by name and links by input/output name;
the widget order, the sockets and the extra value after a seed widget come from ``/object_info``, so
the files stay in step with the nodes when their inputs change. The browser test
(``tests/comfy/test_browser.py``) loads every file in the real UI and validates its prompt.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
NODE_WIDTH = 320


class Node:
    def __init__(self, graph: "Graph", node_id: int, node_type: str, pos, title: str | None, widgets: dict):
        self.graph, self.id, self.type = graph, node_id, node_type
        info = graph.info.get(node_type)
        self.inputs: list[dict] = []
        self.outputs: list[dict] = []
        self.widgets_values: list = []
        self.widget_names: list[str] = []
        self.data = {"id": node_id, "type": node_type, "pos": list(pos), "size": [NODE_WIDTH, 0], "flags": {},
                     "order": node_id, "mode": 0, "properties": {"Node name for S&R": node_type}}
        if title:
            self.data["title"] = title
        if info is None:  # a frontend-only node (notes)
            self.widgets_values = [widgets.pop("text")]
        else:
            self._fill(info, dict(widgets))

    def _fill(self, info: dict, widgets: dict) -> None:
        order = info.get("input_order", {})
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name in [*order.get("required", []), *order.get("optional", [])]:
            kind, options = specs[name][0], (specs[name][1] if len(specs[name]) > 1 else {})
            is_widget = (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")
            if not is_widget:
                self.inputs.append({"name": name, "type": kind, "link": None})
                continue
            if name in widgets:
                value = widgets.pop(name)
            elif "default" in options:
                value = options["default"]
            elif isinstance(kind, list):
                value = kind[0]
            else:
                value = options.get("options", [None])[0]
            self.widgets_values.append(value)
            self.widget_names.append(name)
            if options.get("control_after_generate"):
                self.widgets_values.append("fixed")
        if widgets:
            raise KeyError(f"{self.type} has no widget(s) {sorted(widgets)}")
        for slot, (kind, name) in enumerate(zip(info["output"], info["output_name"])):
            self.outputs.append({"name": name, "type": kind, "links": [], "slot_index": slot})

    def out(self, name: str) -> tuple["Node", int]:
        for slot, output in enumerate(self.outputs):
            if output["name"] == name:
                return self, slot
        raise KeyError(f"{self.type} has no output {name!r}: {[o['name'] for o in self.outputs]}")

    def json(self) -> dict:
        rows = len(self.inputs) + len(self.outputs) + len(self.widgets_values)
        self.data["size"] = [NODE_WIDTH, 46 + 24 * rows]
        return {**self.data, "inputs": self.inputs, "outputs": self.outputs, "widgets_values": self.widgets_values}


class Graph:
    def __init__(self, info: dict):
        self.info = info
        self.nodes: list[Node] = []
        self.links: list[list] = []

    def add(self, node_type: str, pos, title: str | None = None, inputs: dict | None = None, **widgets) -> Node:
        node = Node(self, len(self.nodes) + 1, node_type, pos, title, widgets)
        self.nodes.append(node)
        for name, (source, slot) in (inputs or {}).items():
            self.connect(source, slot, node, name)
        return node

    def connect(self, source: Node, slot: int, target: Node, input_name: str) -> None:
        link_id = len(self.links) + 1
        kind = source.outputs[slot]["type"]
        if not any(item["name"] == input_name for item in target.inputs):  # a widget fed by a link
            if input_name not in target.widget_names:
                raise KeyError(f"{target.type} has no input {input_name!r}")
            target.inputs.append({"name": input_name, "type": kind, "widget": {"name": input_name}, "link": None})
        target_slot = next(i for i, item in enumerate(target.inputs) if item["name"] == input_name)
        target.inputs[target_slot]["link"] = link_id
        source.outputs[slot]["links"].append(link_id)
        self.links.append([link_id, source.id, slot, target.id, target_slot, kind])

    def json(self) -> dict:
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links),
                "nodes": [node.json() for node in self.nodes], "links": self.links,
                "groups": [], "config": {}, "extra": {}, "version": 0.4}


# ---------------------------------------------------------------------------------------- the graphs

PROMPT = "a red fox sitting in a snowy birch forest at dawn, soft light, detailed fur"
NEGATIVE = "blurry, low quality"


def flux_base(g: Graph, x: int = 0):
    """Flux.1-dev loaders, prompt and latent, as in ComfyUI's own Flux template."""
    unet = g.add("UNETLoader", (x, 0), unet_name="flux1-dev.safetensors")
    clip = g.add("DualCLIPLoader", (x, 160), clip_name1="clip_l.safetensors", clip_name2="t5xxl_fp16.safetensors",
                 type="flux")
    vae = g.add("VAELoader", (x, 360), vae_name="ae.safetensors")
    text = g.add("CLIPTextEncode", (x + 360, 160), inputs={"clip": clip.out("CLIP")}, text=PROMPT)
    positive = g.add("FluxGuidance", (x + 360, 420), inputs={"conditioning": text.out("CONDITIONING")},
                     guidance=3.5)
    negative = g.add("ConditioningZeroOut", (x + 360, 540), inputs={"conditioning": text.out("CONDITIONING")})
    latent = g.add("EmptySD3LatentImage", (x + 360, 640), width=1024, height=1024)
    return unet, vae, positive, negative, latent


def sampling_inputs(model, positive, negative, latent) -> dict:
    """The links every sampling node takes (KSampler's and ours)."""
    return {"model": model, "positive": positive.out("CONDITIONING"), "negative": negative.out("CONDITIONING"),
            "latent_image": latent.out("LATENT")}


def sample_and_save(g: Graph, pos, model, positive, negative, latent, vae, prefix: str, title: str, **settings):
    x, y = pos
    sampler = g.add("KSampler", (x, y), title=title, inputs=sampling_inputs(model, positive, negative, latent),
                    **settings)
    image = g.add("VAEDecode", (x + 360, y), inputs={"samples": sampler.out("LATENT"), "vae": vae.out("VAE")})
    g.add("SaveImage", (x + 720, y), inputs={"images": image.out("IMAGE")}, filename_prefix=prefix)


FLUX_SETTINGS = dict(seed=42, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)


def note(g: Graph, pos, text: str):
    g.add("MarkdownNote", pos, text=text)


def flux_skip_middle(g: Graph):
    unet, vae, positive, negative, latent = flux_base(g)
    skip = g.add("LayerLabSkip", (760, -200), inputs={"model": unet.out("MODEL")},
                 stream="single_blocks", first=14, last=23)
    g.add("PreviewAny", (1120, -200), inputs={"source": skip.out("summary")})
    sample_and_save(g, (760, 120), unet.out("MODEL"), positive, negative, latent, vae, "layer_lab/flux_baseline",
                    "KSampler (all blocks)", **FLUX_SETTINGS)
    sample_and_save(g, (760, 480), skip.out("MODEL"), positive, negative, latent, vae, "layer_lab/flux_skip",
                    "KSampler (single blocks 14-23 skipped)", **FLUX_SETTINGS)
    note(g, (0, -200), "**Skip middle blocks.** Single blocks 14-23 of Flux.1-dev do not run (10 of its 57 "
                       "blocks). The baseline on the same seed is sampled beside it. "
                       "The summary shows the order that runs. Run the Layer Lab Similarity Probe first to "
                       "find your model's middle group.")


def flux_looped_parallel(g: Graph):
    unet, vae, positive, negative, latent = flux_base(g)
    parallel = g.add("LayerLabParallel", (760, -200), inputs={"model": unet.out("MODEL")},
                     stream="single_blocks", first=10, last=27, loops=3)
    g.add("PreviewAny", (1120, -200), inputs={"source": parallel.out("summary")})
    sample_and_save(g, (760, 120), parallel.out("MODEL"), positive, negative, latent, vae,
                    "layer_lab/flux_looped_parallel", "KSampler (looped parallel)", **FLUX_SETTINGS)
    note(g, (0, -200), "**Looped parallel.** Single blocks 10-27 run side by side on the same input, their "
                       "outputs are averaged, and the average goes through them again, 3 times in all "
                       "(the paper's looped parallel; the plan `0-9, [10-27]*3, 28-37`).")


def flux_probe(g: Graph):
    unet, vae, positive, negative, latent = flux_base(g)
    probe = g.add("LayerLabSimilarityProbe", (760, 0),
                  inputs=sampling_inputs(unet.out("MODEL"), positive, negative, latent), **FLUX_SETTINGS)
    g.add("PreviewImage", (1120, 0), inputs={"images": probe.out("heatmap")})
    image = g.add("VAEDecode", (1120, 420), inputs={"samples": probe.out("LATENT"), "vae": vae.out("VAE")})
    g.add("PreviewImage", (1480, 420), inputs={"images": image.out("IMAGE")})
    g.add("PreviewAny", (1480, 0), inputs={"source": probe.out("report")})
    note(g, (0, -200), "**Similarity probe.** Samples like KSampler and draws the cosine similarity of the "
                       "hidden states after every block, one heatmap per stream, with the first / middle / "
                       "last groups boxed. The report's `middle` ranges can be typed into a Layer Lab node.")


def sd35_base(g: Graph):
    """SD3.5 Large's checkpoint, its three text encoders, the prompts and a 1024x1024 latent."""
    checkpoint = g.add("CheckpointLoaderSimple", (0, 0), ckpt_name="sd3.5_large.safetensors")
    clip = g.add("TripleCLIPLoader", (0, 180), clip_name1="clip_l.safetensors", clip_name2="clip_g.safetensors",
                 clip_name3="t5xxl_fp16.safetensors")
    positive = g.add("CLIPTextEncode", (360, 120), inputs={"clip": clip.out("CLIP")}, text=PROMPT)
    negative = g.add("CLIPTextEncode", (360, 360), inputs={"clip": clip.out("CLIP")}, text=NEGATIVE)
    latent = g.add("EmptySD3LatentImage", (360, 600), width=1024, height=1024)
    return checkpoint, positive, negative, latent


def sd35_reverse_repeat(g: Graph):
    checkpoint, positive, negative, latent = sd35_base(g)
    reverse = g.add("LayerLabReverse", (760, -220), inputs={"model": checkpoint.out("MODEL")},
                    stream="double_blocks", first=12, last=25)
    repeat = g.add("LayerLabRepeat", (760, 100), inputs={"model": checkpoint.out("MODEL")},
                   stream="double_blocks", first=12, last=25)
    settings = dict(seed=42, steps=28, cfg=4.5, sampler_name="euler", scheduler="sgm_uniform", denoise=1.0)
    sample_and_save(g, (1120, -220), reverse.out("MODEL"), positive, negative, latent, checkpoint,
                    "layer_lab/sd35_reverse", "KSampler (joint blocks 12-25 reversed)", **settings)
    sample_and_save(g, (1120, 100), repeat.out("MODEL"), positive, negative, latent, checkpoint,
                    "layer_lab/sd35_repeat", "KSampler (block 18 repeated 14 times)", **settings)
    note(g, (0, -220), "**SD3.5 reverse / repeat.** Two of the paper's strategies on joint blocks 12-25 of "
                       "SD3.5 Large (38 joint blocks): run them backwards, or replace them by their centre "
                       "block run 14 times (the paper's worst case). Same seed for both.")


def auraflow_probe(g: Graph):
    checkpoint = g.add("CheckpointLoaderSimple", (0, 0), ckpt_name="aura_flow_0.3.safetensors")
    sampling = g.add("ModelSamplingAuraFlow", (360, -120), inputs={"model": checkpoint.out("MODEL")}, shift=1.73)
    positive = g.add("CLIPTextEncode", (360, 60), inputs={"clip": checkpoint.out("CLIP")}, text=PROMPT)
    negative = g.add("CLIPTextEncode", (360, 300), inputs={"clip": checkpoint.out("CLIP")}, text=NEGATIVE)
    latent = g.add("EmptyLatentImage", (360, 540), width=1024, height=1024)
    probe = g.add("LayerLabSimilarityProbe", (760, 0),
                  inputs=sampling_inputs(sampling.out("MODEL"), positive, negative, latent),
                  seed=42, steps=25, cfg=3.5, sampler_name="uni_pc", scheduler="normal")
    g.add("PreviewImage", (1120, 0), inputs={"images": probe.out("heatmap")})
    image = g.add("VAEDecode", (1120, 420), inputs={"samples": probe.out("LATENT"), "vae": checkpoint.out("VAE")})
    g.add("PreviewImage", (1480, 420), inputs={"images": image.out("IMAGE")})
    g.add("PreviewAny", (1480, 0), inputs={"source": probe.out("report")})
    note(g, (0, -220), "**AuraFlow probe.** The similarity heatmaps of AuraFlow 0.3's double (MMDiT) and "
                       "single (DiT) layers, with the groups found.")


def flux_lora_blocks(g: Graph):
    unet, vae, positive, negative, latent = flux_base(g)
    lora = g.add("LayerLabLoraBlocks", (760, -220), inputs={"model": unet.out("MODEL")},
                 lora_name="flux_style_lora.safetensors", double_blocks="7-12", single_blocks="20-30")
    g.add("PreviewAny", (1120, -220), inputs={"source": lora.out("report")})
    sample_and_save(g, (760, 160), lora.out("MODEL"), positive, negative, latent, vae, "layer_lab/flux_lora_blocks",
                    "KSampler (LoRA on chosen blocks)", **FLUX_SETTINGS)
    note(g, (0, -220), "**LoRA on selected blocks.** Applies the LoRA to double blocks 7-12 and single blocks "
                       "20-30 only; the report lists what landed where. Pick your own LoRA in lora_name.")


def flux_plan_grid(g: Graph):
    unet, vae, positive, negative, latent = flux_base(g)
    links = sampling_inputs(unet.out("MODEL"), positive, negative, latent)
    grid = g.add("LayerLabPlanGrid", (760, 0), inputs={"model": links.pop("model"), "vae": vae.out("VAE"), **links},
                 **FLUX_SETTINGS)
    g.add("SaveImage", (1120, 0), inputs={"images": grid.out("grid")}, filename_prefix="layer_lab/flux_plan_grid")
    g.add("PreviewAny", (1120, 420), inputs={"source": grid.out("report")})
    note(g, (0, -220), "**Plan grid.** One prompt, one seed, one cell per plan line: the unchanged model first, "
                       "then each line of `plans` (`label: double_blocks=...; single_blocks=...`). Every line "
                       "is checked before anything is sampled.")


def flux_importance_sweep(g: Graph):
    unet, vae, positive, negative, latent = flux_base(g)
    sweep = g.add("LayerLabImportanceSweep", (760, 0),
                  inputs=sampling_inputs(unet.out("MODEL"), positive, negative, latent),
                  **FLUX_SETTINGS, streams="both", mode="fast", budget=8)
    g.add("PreviewImage", (1120, 0), inputs={"images": sweep.out("chart")})
    g.add("PreviewAny", (1120, 420), inputs={"source": sweep.out("ranking")})
    plan = g.add("LayerLabPlan", (1480, 0), inputs={"model": unet.out("MODEL")})
    g.connect(*sweep.out("double_blocks"), plan, "double_blocks")
    g.connect(*sweep.out("single_blocks"), plan, "single_blocks")
    sample_and_save(g, (1480, 360), plan.out("MODEL"), positive, negative, latent, vae,
                    "layer_lab/flux_suggested_skips", "KSampler (suggested skips)", **FLUX_SETTINGS)
    note(g, (0, -220), "**Which blocks can I skip?** Skips each block on its own and measures how far the result "
                       "moves (fast mode: one model evaluation per block, reusing the unpatched run's block "
                       "inputs). The suggested skip set for `budget` blocks goes straight into a Layer Lab Plan "
                       "node and is sampled.")


def probe_and_preview(g: Graph, pos, model, positive, negative, latent, vae, **settings):
    x, y = pos
    probe = g.add("LayerLabSimilarityProbe", (x, y), inputs=sampling_inputs(model, positive, negative, latent),
                  **settings)
    g.add("PreviewImage", (x + 360, y), inputs={"images": probe.out("heatmap")})
    image = g.add("VAEDecode", (x + 360, y + 420), inputs={"samples": probe.out("LATENT"), "vae": vae.out("VAE")})
    g.add("PreviewImage", (x + 720, y + 420), inputs={"images": image.out("IMAGE")})
    g.add("PreviewAny", (x + 720, y), inputs={"source": probe.out("report")})


def qwen_image_probe(g: Graph):
    """Loaders, sampling and size of ComfyUI's own Qwen-Image template."""
    unet = g.add("UNETLoader", (0, 0), unet_name="qwen_image_fp8_e4m3fn.safetensors")
    clip = g.add("CLIPLoader", (0, 160), clip_name="qwen_2.5_vl_7b_fp8_scaled.safetensors", type="qwen_image")
    vae = g.add("VAELoader", (0, 360), vae_name="qwen_image_vae.safetensors")
    sampling = g.add("ModelSamplingAuraFlow", (360, -120), inputs={"model": unet.out("MODEL")}, shift=3.5)
    positive = g.add("CLIPTextEncode", (360, 60), inputs={"clip": clip.out("CLIP")}, text=PROMPT)
    negative = g.add("CLIPTextEncode", (360, 300), inputs={"clip": clip.out("CLIP")}, text=NEGATIVE)
    latent = g.add("EmptySD3LatentImage", (360, 540), width=1328, height=1328)
    probe_and_preview(g, (760, 0), sampling.out("MODEL"), positive, negative, latent, vae,
                      seed=42, steps=20, cfg=4.0, sampler_name="euler", scheduler="simple")
    note(g, (0, -220), "**Qwen-Image probe.** The similarity heatmaps of Qwen-Image's 60 dual-stream "
                       "`transformer_blocks` (the pack's `double_blocks`), image and text streams, with the groups "
                       "found. Models, sampling and size as in ComfyUI's Qwen-Image template; Qwen-Image-Edit "
                       "runs the same blocks.")


def z_image_plan_grid(g: Graph):
    """Loaders, sampling and size of ComfyUI's own Z-Image-Turbo template."""
    unet = g.add("UNETLoader", (0, 0), unet_name="z_image_turbo_bf16.safetensors")
    clip = g.add("CLIPLoader", (0, 160), clip_name="qwen_3_4b.safetensors", type="lumina2")
    vae = g.add("VAELoader", (0, 360), vae_name="ae.safetensors")
    sampling = g.add("ModelSamplingAuraFlow", (360, -120), inputs={"model": unet.out("MODEL")}, shift=3.0)
    positive = g.add("CLIPTextEncode", (360, 60), inputs={"clip": clip.out("CLIP")}, text=PROMPT)
    negative = g.add("ConditioningZeroOut", (360, 300), inputs={"conditioning": positive.out("CONDITIONING")})
    latent = g.add("EmptySD3LatentImage", (360, 420), width=1024, height=1024)
    links = sampling_inputs(sampling.out("MODEL"), positive, negative, latent)
    plans = ("# Z-Image-Turbo: 30 single-stream layers (its `layers`)\n"
             "skip 10-19: single_blocks=0-9, 20-29\n"
             "skip 20-25: single_blocks=0-19, 26-29\n"
             "reverse 10-19: single_blocks=0-9, 19-10, 20-29\n"
             "parallel 10-19: single_blocks=0-9, [10-19], 20-29\n"
             "looped parallel x2: single_blocks=0-9, [10-19]*2, 20-29")
    grid = g.add("LayerLabPlanGrid", (760, 0), inputs={"model": links.pop("model"), "vae": vae.out("VAE"), **links},
                 seed=42, steps=8, cfg=1.0, sampler_name="res_multistep", scheduler="simple", plans=plans)
    g.add("SaveImage", (1120, 0), inputs={"images": grid.out("grid")}, filename_prefix="layer_lab/z_image_plan_grid")
    g.add("PreviewAny", (1120, 420), inputs={"source": grid.out("report")})
    note(g, (0, -220), "**Z-Image-Turbo plan grid.** Z-Image's 30 `layers` are the pack's `single_blocks`; its "
                       "noise and context refiners run as they are. One cell per plan line, the unchanged model "
                       "first. Models, sampling (8 steps, cfg 1) and size as in ComfyUI's Z-Image-Turbo template.")


def flux2_probe(g: Graph):
    """Loaders of ComfyUI's own Flux.2 [dev] template; KSampler-style sampling (the template uses Flux2Scheduler)."""
    unet = g.add("UNETLoader", (0, 0), unet_name="flux2_dev_fp8mixed.safetensors")
    clip = g.add("CLIPLoader", (0, 160), clip_name="mistral_3_small_flux2_bf16.safetensors", type="flux2")
    vae = g.add("VAELoader", (0, 360), vae_name="flux2-vae.safetensors")
    text = g.add("CLIPTextEncode", (360, 60), inputs={"clip": clip.out("CLIP")}, text=PROMPT)
    positive = g.add("FluxGuidance", (360, 300), inputs={"conditioning": text.out("CONDITIONING")}, guidance=4.0)
    negative = g.add("ConditioningZeroOut", (360, 420), inputs={"conditioning": text.out("CONDITIONING")})
    latent = g.add("EmptyFlux2LatentImage", (360, 520), width=1024, height=1024)
    probe_and_preview(g, (760, 0), unet.out("MODEL"), positive, negative, latent, vae,
                      seed=42, steps=20, cfg=1.0, sampler_name="euler", scheduler="simple")
    note(g, (0, -220), "**Flux.2 [dev] probe.** Heatmaps of its 8 double and 48 single blocks, with the groups "
                       "found. Model, text encoder and VAE files as in ComfyUI's Flux.2 template; the probe "
                       "samples like KSampler (euler / simple here), where the template uses Flux2Scheduler.")


def sd35_plan_guidance(g: Graph):
    checkpoint, positive, negative, latent = sd35_base(g)
    skip = g.add("LayerLabPlanGuidance", (760, -220), "Plan Guidance (= Skip Layer Guidance on 7-9)",
                 inputs={"model": checkpoint.out("MODEL")}, double_blocks="0-6, 10-37", scale=3.0,
                 start_percent=0.01, end_percent=0.15)
    attention = g.add("LayerLabPlanGuidance", (760, 160), "Plan Guidance (attention of 7-9 dropped)",
                      inputs={"model": checkpoint.out("MODEL")}, double_blocks="0-6, 7-9:attn, 10-37", scale=3.0,
                      start_percent=0.01, end_percent=0.15)
    settings = dict(seed=42, steps=28, cfg=4.5, sampler_name="euler", scheduler="sgm_uniform", denoise=1.0)
    sample_and_save(g, (1120, -560), checkpoint.out("MODEL"), positive, negative, latent, checkpoint,
                    "layer_lab/sd35_plain", "KSampler (plain CFG)", **settings)
    sample_and_save(g, (1120, -220), skip.out("MODEL"), positive, negative, latent, checkpoint,
                    "layer_lab/sd35_guidance_skip", "KSampler (guided away from 7-9 skipped)", **settings)
    sample_and_save(g, (1120, 160), attention.out("MODEL"), positive, negative, latent, checkpoint,
                    "layer_lab/sd35_guidance_attention", "KSampler (guided away from 7-9 without attention)",
                    **settings)
    note(g, (0, -220), "**Plan guidance.** In the window (1%-15% of sampling), each step makes one extra pass "
                       "under the plan and moves the result away from it: cfg + 3 * (cond - cond under the plan). "
                       "The first node is core's Skip Layer Guidance on joint blocks 7-9, bit for bit; the second "
                       "guides away from those blocks without their attention only. Same seed for all three.")
VIDEO_PROMPT = "a red fox trotting through a snowy birch forest at dawn, the camera tracking beside it, soft light"
VIDEO_NEGATIVE = "static, blurry, low quality, jpeg artifacts, deformed"
WAN22_SETTINGS = dict(seed=42, steps=20, cfg=5.0, sampler_name="uni_pc", scheduler="simple", denoise=1.0)


def wan22_base(g: Graph, length: int, width: int = 1280, height: int = 704):
    """Wan 2.2 TI2V 5B loaders, prompt and an empty video latent, as in ComfyUI's own Wan 2.2 5B template."""
    unet = g.add("UNETLoader", (0, 0), unet_name="wan2.2_ti2v_5B_fp16.safetensors")
    sampling = g.add("ModelSamplingSD3", (360, -120), inputs={"model": unet.out("MODEL")}, shift=8.0)
    clip = g.add("CLIPLoader", (0, 160), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan")
    vae = g.add("VAELoader", (0, 360), vae_name="wan2.2_vae.safetensors")
    positive = g.add("CLIPTextEncode", (360, 60), inputs={"clip": clip.out("CLIP")}, text=VIDEO_PROMPT)
    negative = g.add("CLIPTextEncode", (360, 300), inputs={"clip": clip.out("CLIP")}, text=VIDEO_NEGATIVE)
    latent = g.add("Wan22ImageToVideoLatent", (360, 540), inputs={"vae": vae.out("VAE")}, width=width,
                   height=height, length=length)
    return sampling, vae, positive, negative, latent


def save_video(g: Graph, pos, images, prefix: str):
    x, y = pos
    video = g.add("CreateVideo", (x, y), inputs={"images": images}, fps=24)
    g.add("SaveVideo", (x + 360, y), inputs={"video": video.out("VIDEO")}, filename_prefix=prefix)


def wan22_probe(g: Graph):
    model, vae, positive, negative, latent = wan22_base(g, length=121)
    probe = g.add("LayerLabSimilarityProbe", (760, 0),
                  inputs=sampling_inputs(model.out("MODEL"), positive, negative, latent), **WAN22_SETTINGS)
    g.add("PreviewImage", (1120, 0), inputs={"images": probe.out("heatmap")})
    g.add("PreviewAny", (1480, 0), inputs={"source": probe.out("report")})
    frames = g.add("VAEDecode", (1120, 420), inputs={"samples": probe.out("LATENT"), "vae": vae.out("VAE")})
    save_video(g, (1480, 420), frames.out("IMAGE"), "layer_lab/wan22_probe")
    note(g, (0, -220), "**Wan 2.2 similarity probe.** Samples a 121-frame clip (31 latent frames) like KSampler "
                       "and draws the cosine similarity of the video tokens after each of the 30 blocks. "
                       "`max_tokens` keeps the same token positions for every block and step, an equal share "
                       "from every latent frame, so memory does not grow with the clip. The title and the "
                       "report say how many frames and tokens were used.")


WAN22_PLANS = """\
# Wan 2.2 TI2V 5B: 30 blocks, one list (single_blocks). One variant per line; the baseline comes first.
skip 12-17: single_blocks=0-11, 18-29
skip 10-19: single_blocks=0-9, 20-29
reverse 10-19: single_blocks=0-9, 19-10, 20-29
parallel 12-17: single_blocks=0-11, [12-17], 18-29"""


def wan22_skip_grid(g: Graph):
    model, vae, positive, negative, latent = wan22_base(g, length=17, width=640, height=352)
    links = sampling_inputs(model.out("MODEL"), positive, negative, latent)
    grid = g.add("LayerLabPlanGrid", (760, 0), inputs={"model": links.pop("model"), "vae": vae.out("VAE"), **links},
                 **WAN22_SETTINGS, plans=WAN22_PLANS)
    g.add("SaveImage", (1120, 0), inputs={"images": grid.out("grid")}, filename_prefix="layer_lab/wan22_skip_grid")
    g.add("PreviewAny", (1120, 420), inputs={"source": grid.out("report")})
    save_video(g, (1480, 0), grid.out("images"), "layer_lab/wan22_skip_grid")
    note(g, (0, -220), "**Wan 2.2 skip grid.** The same prompt and noise with the unchanged model and with each "
                       "plan line: middle blocks skipped, reversed or run in parallel. A short 17-frame clip: "
                       "the grid has one row per frame and one column per variant; the video plays the "
                       "variants one after another.")


def search_look_save(g: Graph, model, positive, negative, latent, vae, settings: dict, streams: str, name: str):
    """Skip search -> its chart and report; its plan on the model -> sampled; the planned model -> saved as a file.
    Returns the planned sampler's decoded images."""
    search = g.add("LayerLabSkipSearch", (760, 0), inputs={**sampling_inputs(model, positive, negative, latent)},
                   **settings, streams=streams, mode="fast", blocks=6, strategy="greedy")
    g.add("PreviewImage", (1120, 0), inputs={"images": search.out("chart")})
    g.add("PreviewAny", (1120, 420), inputs={"source": search.out("report")})
    plan = g.add("LayerLabPlan", (1480, 0), inputs={"model": model})
    g.connect(*search.out("double_blocks"), plan, "double_blocks")
    g.connect(*search.out("single_blocks"), plan, "single_blocks")
    sampler = g.add("KSampler", (1480, 360), title="KSampler (searched skips)",
                    inputs=sampling_inputs(plan.out("MODEL"), positive, negative, latent), **settings)
    images = g.add("VAEDecode", (1840, 360), inputs={"samples": sampler.out("LATENT"), "vae": vae.out("VAE")})
    g.add("LayerLabSavePrunedModel", (1840, 0), inputs={"model": plan.out("MODEL")}, filename=name)
    return images


def flux_skip_search_prune(g: Graph):
    unet, vae, positive, negative, latent = flux_base(g)
    images = search_look_save(g, unet.out("MODEL"), positive, negative, latent, vae, FLUX_SETTINGS, "both",
                              "layer_lab/flux1-dev_6_blocks_pruned")
    g.add("SaveImage", (2200, 360), inputs={"images": images.out("IMAGE")},
          filename_prefix="layer_lab/flux_searched_skips")
    note(g, (0, -220), "**From a finding to a faster model.** The skip search grows a set of 6 blocks to skip, "
                       "one block at a time, and measures every candidate as the combined plan it would be "
                       "(fast mode: one model evaluation each, resumed from the unchanged run's block inputs); "
                       "the chart compares its path with the sweep's top-k singles, and the final plan is "
                       "re-run in full. Look at the sample of its plan, then Save Pruned Model writes the "
                       "smaller model to models/diffusion_models, for core's Load Diffusion Model, without "
                       "the pack.")


def wan22_skip_search_prune(g: Graph):
    model, vae, positive, negative, latent = wan22_base(g, length=17, width=640, height=352)
    images = search_look_save(g, model.out("MODEL"), positive, negative, latent, vae, WAN22_SETTINGS,
                              "single_blocks", "layer_lab/wan2.2_ti2v_5B_6_blocks_pruned")
    save_video(g, (2200, 360), images.out("IMAGE"), "layer_lab/wan22_searched_skips")
    note(g, (0, -220), "**Wan 2.2: search, look, save.** The skip search on Wan's one list of 30 blocks finds 6 "
                       "to skip, each candidate measured as the combined plan on a short 17-frame clip; the "
                       "plan is sampled as a video to look at, and Save Pruned Model writes the 24-block model "
                       "that core's Load Diffusion Model runs without the pack.")


WORKFLOWS = {
    "flux_skip_middle_blocks": flux_skip_middle,
    "flux_looped_parallel": flux_looped_parallel,
    "flux_similarity_probe": flux_probe,
    "sd35_reverse_repeat": sd35_reverse_repeat,
    "auraflow_similarity_probe": auraflow_probe,
    "flux_lora_on_blocks": flux_lora_blocks,
    "flux_plan_grid": flux_plan_grid,
    "flux_importance_sweep": flux_importance_sweep,
    "qwen_image_similarity_probe": qwen_image_probe,
    "z_image_plan_grid": z_image_plan_grid,
    "flux2_similarity_probe": flux2_probe,
    "sd35_plan_guidance": sd35_plan_guidance,
    "wan22_similarity_probe": wan22_probe,
    "wan22_skip_grid": wan22_skip_grid,
    "flux_skip_search_prune": flux_skip_search_prune,
    "wan22_skip_search_prune": wan22_skip_search_prune,
}


def object_info(server: str | None, path: str | None) -> dict:
    if path:
        return json.loads(pathlib.Path(path).read_text())
    with urllib.request.urlopen(f"{server.rstrip('/')}/object_info", timeout=60) as response:
        return json.load(response)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--object-info", help="a saved /object_info response instead of a server")
    parser.add_argument("--out", default=str(ROOT / "example_workflows"))
    args = parser.parse_args()
    info = object_info(args.server, args.object_info)
    out = pathlib.Path(args.out)
    out.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        graph = Graph(info)
        build(graph)
        (out / f"{name}.json").write_text(json.dumps(graph.json(), indent=1) + "\n")
        print(f"wrote {out / name}.json ({len(graph.nodes)} nodes)")


if __name__ == "__main__":
    main()
