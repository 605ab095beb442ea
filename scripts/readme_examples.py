"""Draw the README's example plan grid, importance-sweep chart and skip-search chart on a Flux-shaped model.

    COMFYUI_PATH=/path/to/ComfyUI python scripts/readme_examples.py [--only grid|sweep|search] [--steps 4] [--latent 24]

The model has Flux.1's block counts (19 double, 38 single) but is tiny and has random weights, and
so has the VAE: the pictures show the nodes' layout and captions, not what a real model does. The
grid runs the Plan Grid node's default lines; the sweep is a full-mode sweep of both streams with a
budget of 6 blocks; the search is a fast-mode greedy search for 6 blocks over both streams. Each
node's JSON report is printed. Writes docs/plan_grid.png, docs/importance_sweep.png and
docs/skip_search.png.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["grid", "sweep", "search"], default=None)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--latent", type=int, default=24, help="latent size in latent pixels (the image is 8x)")
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("dit_layer_lab_bench", ROOT / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.load_comfy()  # ComfyUI set up as in the integration tests, the repository importable as dit_layer_lab

    import numpy as np
    import torch
    from PIL import Image

    from dit_layer_lab.nodes.grid import DEFAULT_PLANS, LayerLabPlanGrid
    from dit_layer_lab.nodes.skip_search import LayerLabSkipSearch
    from dit_layer_lab.nodes.sweep import LayerLabImportanceSweep
    from dit_layer_lab.tests.comfy import tiny_models as tm

    model = tm.tiny_flux(double=19, single=38)
    positive, negative = tm.conditioning(model)
    latent = {"samples": tm.latent(model, h=args.latent, w=args.latent)}
    sampling = dict(seed=0, steps=args.steps, cfg=1.0, sampler_name="euler", scheduler="simple", denoise=1.0)

    def save(image, name):
        path = ROOT / "docs" / name
        Image.fromarray(np.round(image[0].numpy() * 255).astype(np.uint8)).save(path, optimize=True)
        print(f"saved {path}")

    with torch.inference_mode():
        if args.only in (None, "grid"):
            grid, _, report = LayerLabPlanGrid.execute(model, tm.tiny_vae(), positive, negative, latent,
                                                       plans=DEFAULT_PLANS, **sampling).args
            print(report)
            save(grid, "plan_grid.png")
        if args.only in (None, "sweep"):
            chart, ranking, _, _ = LayerLabImportanceSweep.execute(
                model, positive, negative, latent, streams="both", width=1, mode="full", fast_percent=0.5,
                metric="latent_cosine", budget=6, max_distance=0.0, **sampling).args
            print(ranking)
            save(chart, "importance_sweep.png")
        if args.only in (None, "search"):
            chart, report, _, _ = LayerLabSkipSearch.execute(
                model, positive, negative, latent, streams="both", granularity="block", mode="fast",
                fast_percent=0.5, metric="latent_cosine", blocks=6, max_distance=0.0, strategy="greedy",
                beam_width=3, budget=400, **sampling).args
            print(report)
            save(chart, "skip_search.png")


if __name__ == "__main__":
    main()
