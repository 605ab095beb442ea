"""Draw the README's example plan grid: the Plan Grid node's default lines on a Flux-shaped model.

    COMFYUI_PATH=/path/to/ComfyUI python scripts/plan_grid_example.py [--out docs/plan_grid.png]
        [--steps 4] [--latent 24]

The model has Flux.1's block counts (19 double, 38 single) but is tiny and has random weights, and
so has the VAE: the picture shows the grid's layout and captions, not what the plans do to a real
image. The JSON report is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "plan_grid.png"))
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
    from dit_layer_lab.tests.comfy import tiny_models as tm

    model = tm.tiny_flux(double=19, single=38)
    vae = tm.tiny_vae()
    positive, negative = tm.conditioning(model)
    with torch.inference_mode():
        latent = {"samples": tm.latent(model, h=args.latent, w=args.latent)}
        grid, _, report = LayerLabPlanGrid.execute(model, vae, positive, negative, latent, 0, args.steps, 1.0,
                                                   "euler", "simple", 1.0, DEFAULT_PLANS).args
    Image.fromarray(np.round(grid[0].numpy() * 255).astype(np.uint8)).save(args.out, optimize=True)
    print(report)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
