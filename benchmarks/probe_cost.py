"""What the similarity probe costs: time against plain sampling, and memory at two step counts.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/probe_cost.py [--preset cpu-mid] [--steps 4] [--rounds 5]
        [--latent 64] [--heatmap docs/probe_heatmap.png]

(also run by ``benchmarks/bench.py``). Builds a Flux model from ComfyUI's own classes with random
weights (``bench.build_flux``), samples it with one model call per step (cfg 1), and runs the probe
node with the same settings. Time: medians over interleaved rounds, the node's whole run (sampling,
capture, report, heatmap) against plain sampling. Memory: the hidden-state bytes the probe held at
its peak (counted exactly) and the process's peak RSS above its level before the run (sampled
every 2 ms), at ``steps`` and at four times as many steps. ``--latent`` overrides the preset's
latent size (in latent pixels; the image has (latent / 2)^2 tokens); ``--heatmap`` saves the
node's IMAGE output of a per_step probe as a PNG.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
MAX_TOKENS = 1024


def _bench():
    spec = importlib.util.spec_from_file_location("dit_layer_lab_bench", HERE / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class PeakRSS:
    """The process's peak resident memory above its level at start, sampled on a thread."""

    def __init__(self, interval=0.002):
        import psutil

        self.process, self.interval = psutil.Process(), interval
        self.base = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra(self) -> int:
        return self.peak - self.base


def run(args) -> dict:
    import gc

    import torch
    from PIL import Image

    import comfy.utils
    from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe

    bench = _bench()
    comfy.utils.PROGRESS_BAR_ENABLED = False
    if getattr(args, "latent", None):
        bench.PRESETS[args.preset] = {**bench.PRESETS[args.preset], "latent": args.latent}  # this copy only
    model, cond, latent, p = bench.build_flux(args.preset, args.device)

    def plain(steps):
        return bench.sampler(cond, latent, steps)(model)

    def probe(steps, aggregate="per_step", max_tokens=MAX_TOKENS, image=None):
        with torch.inference_mode():
            out = LayerLabSimilarityProbe.execute(model, cond, cond, {"samples": latent}, 0, steps, 1.0, "euler",
                                                  "simple", 1.0, aggregate, max_tokens)
        if image:
            pixels = (out.args[0][0].numpy() * 255).round().astype("uint8")
            Image.fromarray(pixels).save(image, optimize=True)
        return json.loads(out.args[2])

    steps = args.steps
    medians = bench.measure({
        "plain sampling": lambda: plain(steps),
        f"probe per_step, max_tokens {MAX_TOKENS}": lambda: probe(steps),
        f"probe step_mean, max_tokens {MAX_TOKENS}": lambda: probe(steps, "step_mean"),
        "probe per_step, max_tokens 0 (every token)": lambda: probe(steps, max_tokens=0),
    }, args.rounds)
    base = medians["plain sampling"]
    tokens = (p["latent"] // 2) ** 2 + p["tokens"]
    print(f"\n## Probe cost ({args.preset}, {args.device}, {p['double']}+{p['single']} blocks, width {p['hidden']}, "
          f"{tokens} tokens in the single stream, cfg 1, {steps} steps x {args.rounds} rounds)\n")
    print("| variant | time per step (ms) | vs plain sampling |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {1000 * seconds / steps:.1f} | {seconds / base:.3f}x |")

    print(f"\n| steps | aggregate | held hidden states (MiB) | peak RSS above start, plain (MiB) | "
          f"peak RSS above start, probe (MiB) |")
    print("|---|---|---|---|---|")
    memory = {}
    for aggregate in ("per_step", "step_mean"):
        for count in (steps, 4 * steps):
            gc.collect()
            with PeakRSS() as plain_rss:
                plain(count)
            gc.collect()
            with PeakRSS() as probe_rss:
                report = probe(count, aggregate)
            memory[(aggregate, count)] = report["held_bytes"]
            print(f"| {count} | {aggregate} | {report['held_bytes'] / 2 ** 20:.2f} | {plain_rss.extra / 2 ** 20:.1f} | "
                  f"{probe_rss.extra / 2 ** 20:.1f} |")
    if getattr(args, "heatmap", None):
        probe(steps, image=args.heatmap)
        print(f"\nheatmap of a per_step probe, {steps} steps: {args.heatmap}")
    return {"time": {k: v / base for k, v in medians.items()}, "held_bytes": memory}


def main():
    bench = _bench()
    parser = bench.command_line(__doc__, rounds=5)
    parser.add_argument("--latent", type=int, default=None, help="latent size in latent pixels (preset's if unset)")
    parser.add_argument("--heatmap", default=None, help="save the node's heatmap here (PNG)")
    args = parser.parse_args()
    bench.prepare(args)
    run(args)


if __name__ == "__main__":
    main()
