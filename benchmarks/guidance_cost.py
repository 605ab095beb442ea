"""What Layer Lab Plan Guidance costs against plain CFG sampling: one extra pass per step in its window only.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/guidance_cost.py [--preset cpu-mid] [--steps 4] [--rounds 5]

(also run by ``benchmarks/bench.py --only guidance``). Builds a Flux model from ComfyUI's own
classes with random weights (``bench.build_flux``) and samples it with CFG (a cond and an uncond
per step), then with the guidance node skipping one double and a quarter of the single blocks, with
the window over the whole schedule, over its first half, and with scale 0 (no extra pass), and with
core's Skip Layer Guidance on the same blocks and window. Medians over interleaved rounds.
"""

from __future__ import annotations

import importlib.util
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
CFG = 3.5


def _bench():
    spec = importlib.util.spec_from_file_location("dit_layer_lab_bench", HERE / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args) -> None:
    import torch

    import comfy.sample
    from comfy_extras.nodes_slg import SkipLayerGuidanceDiT
    from dit_layer_lab.nodes.guidance import LayerLabPlanGuidance

    bench = _bench()
    model, cond, latent, p = bench.build_flux(args.preset, args.device)
    negative = [[torch.zeros_like(cond[0][0]), dict(cond[0][1])]]
    steps = args.steps

    def sample(m):
        with torch.inference_mode():
            noise = comfy.sample.prepare_noise(latent, 0)
            out = comfy.sample.sample(m, noise, steps, CFG, "euler", "simple", cond, negative, latent, seed=0,
                                      disable_pbar=True)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return out

    skipped_double, skipped_single = [1], list(range(2, 2 + p["single"] // 4))
    double_plan = ", ".join(str(i) for i in range(p["double"]) if i not in skipped_double)
    single_plan = ", ".join(str(i) for i in range(p["single"]) if i not in skipped_single)

    def guided(scale, start, end):
        return LayerLabPlanGuidance.execute(model, double_plan, single_plan, scale, 0.0, start, end).args[0]

    slg = SkipLayerGuidanceDiT.execute(model, 3.0, 0.0, 1.0, double_layers=",".join(map(str, skipped_double)),
                                       single_layers=",".join(map(str, skipped_single)), rescaling_scale=0.0)[0]
    variants = {
        "plain CFG": model,
        "guidance, window 0-1 (every step)": guided(3.0, 0.0, 1.0),
        "guidance, window 0-0.5": guided(3.0, 0.0, 0.5),
        "guidance, scale 0 (no extra pass)": guided(0.0, 0.0, 1.0),
        "core SkipLayerGuidanceDiT, window 0-1": slg,
    }
    medians = bench.measure({name: (lambda m=m: sample(m)) for name, m in variants.items()}, args.rounds)
    base = medians["plain CFG"]
    print(f"\n## Guidance cost ({args.preset}, {args.device}, {p['double']}+{p['single']} blocks, cfg {CFG}, "
          f"{steps} steps x {args.rounds} rounds; the plan skips double {skipped_double}, single {skipped_single})\n")
    print("| variant | step time (ms) | vs plain CFG |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {1000 * seconds / steps:.1f} | {seconds / base:.3f}x |")


if __name__ == "__main__":
    bench = _bench()
    parsed = bench.command_line(__doc__, rounds=5).parse_args()
    bench.prepare(parsed)
    run(parsed)
