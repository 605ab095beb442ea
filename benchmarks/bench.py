"""DiT Layer Lab benchmark: what a plan costs and what skipping saves, measured side by side.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/bench.py [--preset cpu-mid|flux-dev] [--device cpu|cuda]
        [--only plan|probe|sweep|guidance|video|prune]

Builds a Flux model from ComfyUI's own classes with random weights and samples it with one model
call per step (cfg 1), in interleaved rounds so that every variant sees the same machine load.
Prints medians and ratios to the unpatched model; ratios are what to compare between machines.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

PRESETS = {
    # A mid-size Flux for a CPU: 4 double + 8 single blocks, 512 wide, a 256-token image.
    "cpu-mid": dict(hidden=512, heads=4, axes=[16, 56, 56], double=4, single=8, context=256, pooled=256,
                    latent=32, tokens=64, dtype="float32"),
    # Flux.1-dev's real dimensions: 19 + 38 blocks, 3072 wide, 1024x1024 (4096 image tokens), bf16.
    "flux-dev": dict(hidden=3072, heads=24, axes=[16, 56, 56], double=19, single=38, context=4096, pooled=768,
                     latent=128, tokens=512, dtype="bfloat16"),
}


def load_comfy():
    """Prepare ComfyUI the way the integration tests do (tests/comfy/conftest.py) and import the pack."""
    if not os.environ.get("COMFYUI_PATH"):
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout")
    sys.path.insert(0, str(ROOT / "tests"))
    import conftest  # noqa: F401  registers the repository as the package dit_layer_lab

    spec = importlib.util.spec_from_file_location("comfy_test_env", ROOT / "tests" / "comfy" / "conftest.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))


def build_flux(preset, device, **overrides):
    import torch

    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    from dit_layer_lab.tests.comfy.tiny_models import _randomize

    p = {**PRESETS[preset], **overrides}  # overrides: other block counts (double=..., single=...)
    config = comfy.supported_models.Flux({
        "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "patch_size": 2,
        "context_in_dim": p["context"], "vec_in_dim": p["pooled"], "hidden_size": p["hidden"],
        "num_heads": p["heads"], "mlp_ratio": 4.0, "axes_dim": p["axes"], "theta": 10000, "qkv_bias": True,
        "txt_ids_dims": [], "yak_mlp": False, "txt_norm": False,
        "depth": p["double"], "depth_single_blocks": p["single"]})
    dtype = getattr(torch, p["dtype"])
    config.set_inference_dtype(dtype, None)
    with torch.inference_mode():
        model = config.get_model({}, device=device)
        _randomize(model.diffusion_model, seed=0)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=torch.device(device),
                                               offload_device=torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    cond = [[torch.randn(1, p["tokens"], p["context"], generator=g),
             {"pooled_output": torch.randn(1, p["pooled"], generator=g), "guidance": 3.5}]]
    latent = torch.zeros(1, 16, p["latent"], p["latent"])
    return patcher, cond, latent, p


def sampler(cond, latent, steps):
    import torch

    import comfy.sample

    def run(model):
        with torch.inference_mode():
            noise = comfy.sample.prepare_noise(latent, 0)
            out = comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", cond, cond, latent,
                                      seed=0, disable_pbar=True)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return out
    return run


class BlockTimer:
    """An observer that times every executed step, per (stream, original block)."""

    def __init__(self, cuda, clock=time.perf_counter):
        self.cuda = cuda
        self.clock = clock
        self.seconds = {}

    def wrap_step(self, stream, position, step, module):
        import torch

        timer = self

        class Timed(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = module

            def forward(self, *args, **kwargs):
                if timer.cuda:
                    torch.cuda.synchronize()
                start = timer.clock()
                out = self.inner(*args, **kwargs)
                if timer.cuda:
                    torch.cuda.synchronize()
                key = (stream, step)
                timer.seconds[key] = timer.seconds.get(key, 0.0) + timer.clock() - start
                return out

        return Timed()


def measure(variants, rounds, clock=time.perf_counter, summary=statistics.median):
    """Median (or ``summary``) seconds of each variant, run in interleaved rounds (the order rotating) after one
    warm-up each."""
    times = {name: [] for name in variants}
    for fn in variants.values():
        fn()
    names = list(variants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = clock()
            variants[name]()
            times[name].append(clock() - start)
    return {name: summary(ts) for name, ts in times.items()}


def wrapper_overhead(model, patched, latent, calls=2000):
    """Seconds per call that the pack's APPLY_MODEL wrapper adds, timed around a model that does nothing."""
    import torch

    from dit_layer_lab.core.patching import run_with_plan

    class NoModel:
        class_obj = model.model

        def __call__(self, *args, **kwargs):
            return None

    sigma = torch.ones(1)
    results = {}
    for name, patcher in patched.items():
        options = patcher.model_options["transformer_options"]
        start = time.perf_counter()
        for _ in range(calls):
            run_with_plan(NoModel(), latent, sigma, None, None, None, options)
        results[name] = (time.perf_counter() - start) / calls
    return results


def plan_section(preset, device, steps, rounds):
    from dit_layer_lab.core.patching import OBSERVER_KEY, with_rewrites
    from dit_layer_lab.nodes.reorder import LayerLabPlan

    model, cond, latent, p = build_flux(preset, device)
    run = sampler(cond, latent, steps)

    class PassThrough:
        def wrap_step(self, stream, position, step, module):
            return module

    all_plan = LayerLabPlan.execute(model, "all", "all", 0.0, 1.0).args[0]
    forced = with_rewrites(model, lambda counts: [])[0]
    forced.model_options["transformer_options"][OBSERVER_KEY] = PassThrough()
    skipped_double, skipped_single = [1], list(range(2, 2 + p["single"] // 4))
    double_plan = ", ".join(str(i) for i in range(p["double"]) if i not in skipped_double)
    single_plan = ", ".join(str(i) for i in range(p["single"]) if i not in skipped_single)
    skip = LayerLabPlan.execute(model, double_plan, single_plan, 0.0, 1.0).args[0]

    timer = BlockTimer(cuda=device == "cuda")
    timed = with_rewrites(model, lambda counts: [])[0]
    timed.model_options["transformer_options"][OBSERVER_KEY] = timer
    skipped_seconds = []

    def time_blocks():
        timer.seconds.clear()
        run(timed)
        skipped_seconds.append(sum(s for (stream, step), s in timer.seconds.items()
                                   if (stream == "double_blocks" and step[0] in skipped_double)
                                   or (stream == "single_blocks" and step[0] in skipped_single)))

    medians = measure({"unpatched": lambda: run(model), "all plan": lambda: run(all_plan),
                       "identity order, swap path": lambda: run(forced), "skip": lambda: run(skip),
                       "block timing": time_blocks}, rounds)
    medians.pop("block timing")
    block_seconds = statistics.median(skipped_seconds) / steps
    base = medians["unpatched"] / steps
    k = len(skipped_double) + len(skipped_single)
    print(f"\n## Plan cost ({preset}, {device}, {p['double']}+{p['single']} blocks, {steps} steps x {rounds} rounds)\n")
    print("| variant | step time (ms) | vs unpatched |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        label = f"skip {k} blocks (double {skipped_double}, single {skipped_single})" if name == "skip" else name
        print(f"| {label} | {1000 * seconds / steps:.1f} | {seconds / medians['unpatched']:.3f}x |")
    overhead = wrapper_overhead(model, {"all plan": all_plan, "skip": skip}, latent)
    saved = base - medians["skip"] / steps
    for name, seconds in overhead.items():
        print(f"\nThe wrapper's own work per model call, {name}: {1e6 * seconds:.1f} us "
              f"({seconds / base:.4%} of an unpatched step).", end="")
    print(f"\nThe skipped blocks took {1000 * block_seconds:.1f} ms per step unpatched; skipping them saved "
          f"{1000 * saved:.1f} ms, {saved / block_seconds:.1%} of their time.")


def command_line(description: str, rounds: int) -> argparse.ArgumentParser:
    """The options every benchmark entry point shares (this file's and each section file's own)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(PRESETS), default="cpu-mid")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser


def prepare(args) -> None:
    load_comfy()
    if args.device == "cuda":
        import comfy.cli_args
        comfy.cli_args.args.cpu = False


def section(name: str):
    """A benchmark section kept in its own file, ``benchmarks/<name>.py``, loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"dit_layer_lab_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = command_line(__doc__, rounds=7)
    parser.add_argument("--only", choices=["plan", "probe", "sweep", "guidance", "video", "prune", "real"], default=None)
    args = parser.parse_args()
    prepare(args)
    if args.only in (None, "plan"):
        plan_section(args.preset, args.device, args.steps, args.rounds)
    for name in ("probe", "sweep", "guidance", "video", "prune"):  # sections in their own files, each with run(args)
        if args.only in (None, name):
            section(f"{name}_cost").run(args)
    if args.only == "real":  # minutes on a CPU: only when asked for (benchmarks/real_sizes.py has its options)
        section("real_sizes").run(args)


if __name__ == "__main__":
    main()
