"""The probe and the fast sweep on a video model: Wan's class, one list of single-stream blocks.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/video_cost.py [--device cpu|cuda] [--rounds 3]

(also run by ``benchmarks/bench.py --only video``). Builds a Wan 2.1-shaped model from ComfyUI's own
``WanModel`` with random weights (``WAN``: 12 blocks, 512 wide, a 32x32 latent: 256 tokens per latent
frame), cfg 1.

- Probe memory: the hidden-state bytes the probe node held at its peak (counted exactly) and the
  process's peak RSS above its start (sampling included), for 1 and 16 latent frames, with
  ``max_tokens`` 256 (one frame's worth) and 0 (every token). With ``max_tokens`` set, the probe holds
  one evaluation's states at ``max_tokens`` tokens, so 16 frames hold what 1 frame does.
- Fast vs naive sweep: the sweep's model evaluations only (the baseline and one skip per block), as
  ``sweep_cost.py`` times them for Flux, with 4 latent frames.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
PERCENT = 0.5
WAN = dict(dim=512, blocks=12, latent=32, text_tokens=64, dtype="float32")


def _module(name):
    spec = importlib.util.spec_from_file_location(f"dit_layer_lab_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_wan(device):
    """A Wan 2.1 T2V-shaped ``WanModel`` (the config ComfyUI's detection reads off such weights), random weights."""
    import torch

    import comfy.model_detection
    import comfy.model_patcher
    from dit_layer_lab.tests.comfy.tiny_models import _randomize

    p = WAN
    unet_config = {"image_model": "wan2.1", "model_type": "t2v", "dim": p["dim"], "out_dim": 16,
                   "num_heads": p["dim"] // 128, "ffn_dim": p.get("ffn", 4 * p["dim"]), "num_layers": p["blocks"],
                   "patch_size": (1, 2, 2), "freq_dim": 256, "window_size": (-1, -1), "qk_norm": True,
                   "cross_attn_norm": True, "eps": 1e-6, "in_dim": 16}
    config = comfy.model_detection.model_config_from_unet_config(dict(unet_config))
    config.set_inference_dtype(getattr(torch, p["dtype"]), None)
    with torch.inference_mode():
        model = config.get_model({}, device=device)
        _randomize(model.diffusion_model, seed=0)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device(device),
                                               offload_device=torch.device("cpu"))
    cond = [[torch.randn(1, p["text_tokens"], 4096, generator=torch.Generator().manual_seed(0)), {}]]
    return patcher, cond


def latent_of(frames):
    """A latent of ``frames`` latent frames, ``WAN["latent"]`` pixels square or (height, width)."""
    import torch

    size = WAN["latent"]
    height, width = size if isinstance(size, tuple) else (size, size)
    return torch.zeros(1, 16, frames, height, width)


def probe_memory(model, cond, steps):
    import torch

    from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe

    probe_cost = _module("probe_cost")
    per_frame = (WAN["latent"] // 2) ** 2
    print(f"\n## Probe memory over video frames (Wan-shaped, {WAN['blocks']} blocks, width {WAN['dim']}, "
          f"{per_frame} tokens per latent frame, {steps} steps, cfg 1, per_step)\n")
    print("| latent frames | tokens | max_tokens | tokens kept | held hidden states (MiB) | "
          "peak RSS above start (MiB) |")
    print("|---|---|---|---|---|---|")
    held = {}
    for max_tokens in (per_frame, 0):
        for frames in (1, 16):
            gc.collect()
            with probe_cost.PeakRSS() as rss, torch.inference_mode():
                out = LayerLabSimilarityProbe.execute(model, cond, cond, {"samples": latent_of(frames)}, 0, steps,
                                                      1.0, "euler", "simple", 1.0, "per_step", max_tokens)
            report = json.loads(out.args[2])
            entry = report["streams"]["single_blocks"]
            held[(frames, max_tokens)] = report["held_bytes"]
            print(f"| {report['frames']} | {entry['total_tokens']} | {max_tokens} | {entry['tokens']} | "
                  f"{report['held_bytes'] / 2 ** 20:.2f} | {rss.extra / 2 ** 20:.1f} |")
    return held


def sweep_ratio(model, cond, rounds, device, frames=4):
    import torch

    from dit_layer_lab.core.experiments.sweep import skip_rewrite, variants, windows
    from dit_layer_lab.core.patching import family_of, layer_plan, with_rewrites
    from dit_layer_lab.nodes.sweep import FastRuns, predict_once

    bench = _module("bench")
    latent = {"samples": latent_of(frames)}
    plan = layer_plan(model)
    family = family_of(plan)
    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(PERCENT))

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def evaluate(m):
        with torch.inference_mode():
            out = predict_once(m, cond, cond, latent, 0, 1.0, sigma)
        sync()
        return out

    runnable, _ = variants(plan, family.check_order, windows(plan.counts, "single_blocks", 1))
    clones = [with_rewrites(model, lambda c, v=v: [skip_rewrite(plan, v.window)])[0] for v in runnable]
    runs = FastRuns(model, family, plan, runnable, cond, cond, latent, 0, 1.0, PERCENT)

    def naive():
        evaluate(model)
        for clone in clones:
            evaluate(clone)

    def fast():
        with torch.inference_mode(), runs:
            runs.baseline()
            for v in runnable:
                runs.variant(v)
        sync()

    medians = bench.measure({"naive": naive, "fast": fast, "one evaluation": lambda: evaluate(model)}, rounds)
    n = WAN["blocks"]
    blocks = (n + sum(r.blocks_run for r in runs.resumes.values())) / (n + len(runnable) * (n - 1))
    ratio = medians["fast"] / medians["naive"]
    tokens = (latent["samples"].shape[-2] // 2) * (latent["samples"].shape[-1] // 2)
    print(f"\n## Sweep cost on a Wan-shaped model, fast vs naive ({device}, {n} blocks in one list, width "
          f"{WAN['dim']}, {frames} latent frame{'s' * (frames != 1)} of {tokens} tokens, one evaluation at "
          f"{PERCENT:.0%} of the schedule, cfg 1, {rounds} rounds)\n")
    print("| variants | naive sweep (ms) | fast sweep (ms) | fast / naive | blocks run, fast / naive | "
          "one evaluation (ms) |")
    print("|---|---|---|---|---|---|")
    print(f"| {len(runnable)} | {1000 * medians['naive']:.0f} | {1000 * medians['fast']:.0f} | {ratio:.3f}x | "
          f"{blocks:.3f}x | {1000 * medians['one evaluation']:.0f} |")
    return ratio, blocks


def run(args) -> dict:
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, cond = build_wan(args.device)
    held = probe_memory(model, cond, min(args.steps, 2))
    ratio, blocks = sweep_ratio(model, cond, args.rounds, args.device)
    return {"held_bytes": held, "fast_vs_naive": ratio, "blocks_run": blocks}


def main():
    bench = _module("bench")
    args = bench.command_line(__doc__, rounds=3).parse_args()
    bench.prepare(args)
    run(args)


if __name__ == "__main__":
    main()
