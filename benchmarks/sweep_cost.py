"""What the importance sweep costs: fast against naive one-evaluation sweeps, and full mode per variant.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/sweep_cost.py [--preset cpu-mid] [--device cpu|cuda]
        [--steps 4] [--rounds 5] [--chart docs/importance_sweep.png]

(also run by ``benchmarks/bench.py --only sweep``). Builds a Flux model from ComfyUI's own classes with
random weights (``bench.build_flux``), cfg 1 (one model call per evaluation), width 1.

- Fast vs naive: for each stream choice, the sweep's model evaluations only (the baseline and one
  per variant), timed in interleaved rounds. Naive evaluates every skip in full (one forward of a
  skip-plan clone per variant); fast records the baseline's block inputs and resumes each variant
  after its window. Also the ratio of blocks run (a double block costs more than a single one), and the cheapest fast variant (skip
  the last single block: it runs one block) against a full evaluation, which is the per-variant
  cost that does not shrink: embeddings, final layer, sampling set-up.
- Full mode: the node's whole run (streams both) per variant, against one plain sampling run.
- Memory: the node's peak RSS above its start with 4 variants (double_blocks) and with 12 (both);
  flat means the count of variants does not show, beyond fast mode's recorded block inputs.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import pathlib
import statistics
import time

HERE = pathlib.Path(__file__).resolve().parent
PERCENT = 0.5


def _module(name):
    spec = importlib.util.spec_from_file_location(f"dit_layer_lab_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args) -> dict:
    import torch

    import comfy.utils
    from dit_layer_lab.core.experiments.sweep import skip_rewrite, variants, windows
    from dit_layer_lab.core.patching import family_of, layer_plan, with_rewrites
    from dit_layer_lab.nodes.sweep import FastRuns, LayerLabImportanceSweep, predict_once

    bench, probe_cost = _module("bench"), _module("probe_cost")
    comfy.utils.PROGRESS_BAR_ENABLED = False
    model, cond, latent, p = bench.build_flux(args.preset, args.device)
    latent_dict = {"samples": latent}
    plan = layer_plan(model)
    family = family_of(plan)
    cuda = args.device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def evaluate(m):
        with torch.inference_mode():
            out = predict_once(m, cond, cond, latent_dict, 0, 1.0, sigma)
        sync()
        return out

    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(PERCENT))
    sweeps, predicted, counts = {}, {}, {}
    for streams in ("double_blocks", "single_blocks", "both"):
        runnable, _ = variants(plan, family.check_order, windows(plan.counts, streams, 1))
        clones = [with_rewrites(model, lambda c, v=v: [skip_rewrite(plan, v.window)])[0] for v in runnable]
        runs = FastRuns(model, family, plan, runnable, cond, cond, latent_dict, 0, 1.0, PERCENT)

        def naive(clones=clones):
            evaluate(model)
            for clone in clones:
                evaluate(clone)

        def fast(runs=runs, runnable=runnable):
            with torch.inference_mode(), runs:
                runs.baseline()
                for v in runnable:
                    runs.variant(v)
            sync()

        sweeps[f"naive {streams}"], sweeps[f"fast {streams}"] = naive, fast
        total = p["double"] + p["single"]
        predicted[streams] = (total + sum(r.blocks_run for r in runs.resumes.values())) / (total * (1 + len(runnable)))
        counts[streams] = len(runnable)

    last = [v for v in variants(plan, family.check_order, windows(plan.counts, "single_blocks", 1))[0]
            if v.window.first == p["single"] - 1]
    cheapest = FastRuns(model, family, plan, last, cond, cond, latent_dict, 0, 1.0, PERCENT)

    def cheapest_variant():
        with torch.inference_mode(), cheapest:
            cheapest.baseline()
            start = time.perf_counter()
            cheapest.variant(last[0])
            sync()
            timings.append(time.perf_counter() - start)

    timings = []
    medians = bench.measure({**sweeps, "one full evaluation": lambda: evaluate(model),
                             "cheapest fast variant": cheapest_variant}, args.rounds)
    medians["cheapest fast variant"] = statistics.median(timings)

    print(f"\n## Sweep cost, fast vs naive ({args.preset}, {args.device}, {p['double']}+{p['single']} blocks, "
          f"width {p['hidden']}, one evaluation at {PERCENT:.0%} of the schedule, cfg 1, {args.rounds} rounds)\n")
    print("| streams | variants | naive sweep (ms) | fast sweep (ms) | fast / naive | blocks run, fast / naive |")
    print("|---|---|---|---|---|---|")
    ratios = {}
    for streams in ("double_blocks", "single_blocks", "both"):
        n, f = medians[f"naive {streams}"], medians[f"fast {streams}"]
        ratios[streams] = f / n
        print(f"| {streams} | {counts[streams]} | {1000 * n:.0f} | {1000 * f:.0f} | {f / n:.3f}x | "
              f"{predicted[streams]:.3f}x |")
    full_eval = medians["one full evaluation"]
    print(f"\nOne full evaluation: {1000 * full_eval:.1f} ms. The cheapest fast variant (skip single block "
          f"{p['single'] - 1}, runs one block): {1000 * medians['cheapest fast variant']:.1f} ms, "
          f"{medians['cheapest fast variant'] / full_eval:.3f}x of it (embeddings, final layer, one block and "
          "the sampling set-up).")

    # full mode: the node's whole run, per variant, against one plain sampling run
    steps = args.steps

    def node(mode, streams):
        with torch.inference_mode():
            out = LayerLabImportanceSweep.execute(model, cond, cond, latent_dict, 0, steps, 1.0, "euler", "simple",
                                                  1.0, streams, 1, mode, PERCENT, "latent_cosine", 3, 0.0)
        sync()
        return out

    full_rounds = max(2, args.rounds // 2)
    plain = bench.sampler(cond, latent, steps)
    timed = bench.measure({"plain sampling": lambda: plain(model), "full sweep": lambda: node("full", "both")},
                          full_rounds)
    n_both = counts["both"]
    per_variant = timed["full sweep"] / (n_both + 1)
    print(f"\n## Full-mode sweep ({steps} steps, cfg 1, streams both: {n_both} variants + the baseline, "
          f"{full_rounds} rounds)\n")
    print("| | time (s) | per sampling run vs one plain sampling run |")
    print("|---|---|---|")
    print(f"| plain sampling | {timed['plain sampling']:.2f} | 1.000x |")
    print(f"| full sweep, whole node | {timed['full sweep']:.2f} | {per_variant / timed['plain sampling']:.3f}x "
          f"(= {timed['full sweep']:.2f} s / {n_both + 1} runs) |")

    print("\n| mode | streams | variants | recorded block inputs (MiB) | peak RSS above start (MiB) |")
    print("|---|---|---|---|---|")
    memory = {}
    for mode in ("fast", "full"):
        for streams in ("double_blocks", "both"):
            gc.collect()
            with probe_cost.PeakRSS() as rss:
                report = json.loads(node(mode, streams).args[1])
            held = report["settings"].get("held_state_bytes", 0)
            memory[(mode, streams)] = rss.extra
            print(f"| {mode} | {streams} | {counts[streams]} | {held / 2 ** 20:.2f} | {rss.extra / 2 ** 20:.1f} |")

    if getattr(args, "chart", None):
        from PIL import Image

        out = node("full", "both")
        Image.fromarray((out.args[0][0].numpy() * 255).round().astype("uint8")).save(args.chart, optimize=True)
        print(f"\nchart of a full-mode sweep, streams both, {steps} steps: {args.chart}")
    return {"fast_vs_naive": ratios, "full_per_variant": per_variant / timed["plain sampling"]}


def main():
    bench = _module("bench")
    parser = bench.command_line(__doc__, rounds=5)
    parser.add_argument("--chart", default=None, help="save a full-mode sweep's chart here (PNG)")
    args = parser.parse_args()
    bench.prepare(args)
    run(args)


if __name__ == "__main__":
    main()
