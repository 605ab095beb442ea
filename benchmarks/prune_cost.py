"""What a pruned model saves: a Flux-shaped model with a third of its single blocks removed, saved by Layer Lab
Save Pruned Model, against the original: file size, weight memory held, step time.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/prune_cost.py [--preset cpu-mid] [--steps 4] [--rounds 5]

(also run by ``benchmarks/bench.py --only prune``). Builds the preset's Flux with 9 single blocks
(``bench.build_flux``), plans single blocks 3-5 away, saves the planned model with the node, and
loads the file into a Flux of 6 single blocks, strictly (every tensor of the file has its place, none
is missing). ComfyUI's own loader is not used here: its detection fixes Flux's heads at 24 of 128
wide, which the benchmark's widths are not (the round trip through that loader is in the tests).
The original is saved unpruned the same way for its file size. Step times: medians over interleaved
rounds of the original, the plan on the original (the blocks skipped while running) and the pruned
model: the fastest round of each, on one CPU thread and in CPU time on the CPU (``--device cuda``: wall
time), so that other work on a shared machine enters the ratios as little as it can. The kept fractions the ratios are compared with: of the weights, the bytes of everything but
the removed blocks; of the step time, one minus the removed blocks' share, timed block by block on
the original.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
SINGLE, REMOVED = 9, (3, 4, 5)  # a third of the single blocks, from the middle


def _bench():
    spec = importlib.util.spec_from_file_location("dit_layer_lab_bench", HERE / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args) -> None:
    import torch

    import comfy.utils
    import folder_paths
    from dit_layer_lab.core.patching import OBSERVER_KEY, with_rewrites
    from dit_layer_lab.nodes.reorder import LayerLabPlan
    from dit_layer_lab.nodes.save_pruned import LayerLabSavePrunedModel

    bench = _bench()
    original, cond, latent, p = bench.build_flux(args.preset, args.device, single=SINGLE)
    kept = [i for i in range(SINGLE) if i not in REMOVED]
    single_plan = ", ".join(map(str, kept))
    with torch.inference_mode():
        planned = LayerLabPlan.execute(original, "all", single_plan, 0.0, 1.0).args[0]
    state = original.model.diffusion_model.state_dict()
    removed_bytes = sum(t.numel() * t.element_size() for k, t in state.items()
                        if any(k.startswith(f"single_blocks.{i}.") for i in REMOVED))
    total_bytes = sum(t.numel() * t.element_size() for t in state.values())

    with tempfile.TemporaryDirectory() as folder:
        folder_paths.folder_names_and_paths["diffusion_models"] = ([folder], folder_paths.supported_pt_extensions)
        with torch.inference_mode():
            LayerLabSavePrunedModel.execute(planned, "pruned", False)
        whole = os.path.join(folder, "original.safetensors")
        comfy.utils.save_torch_file({k: v.contiguous() for k, v in state.items()}, whole)
        sizes = {"original": os.path.getsize(whole), "pruned": os.path.getsize(os.path.join(folder, "pruned.safetensors"))}
        saved = comfy.utils.load_torch_file(os.path.join(folder, "pruned.safetensors"))
    pruned, _, _, _ = bench.build_flux(args.preset, args.device, single=len(kept))
    with torch.inference_mode():
        pruned.model.diffusion_model.load_state_dict(saved, strict=True)
    memory = {"original": original.model_size(), "pruned": pruned.model_size()}

    steps = args.steps
    sample = bench.sampler(cond, latent, steps)
    clock = time.perf_counter if args.device == "cuda" else time.process_time
    if args.device != "cuda":
        torch.set_num_threads(1)  # CPU time of one thread: the work itself, whatever else the machine runs
    timer = bench.BlockTimer(cuda=args.device == "cuda", clock=clock)
    timed = with_rewrites(original, lambda counts: [])[0]
    timed.model_options["transformer_options"][OBSERVER_KEY] = timer
    shares = []

    def time_blocks():
        timer.seconds.clear()
        sample(timed)
        shares.append(sum(s for (stream, step), s in timer.seconds.items()
                          if stream == "single_blocks" and step[0] in REMOVED))

    medians = bench.measure({"original": lambda: sample(original), "plan on the original": lambda: sample(planned),
                             "saved pruned model": lambda: sample(pruned), "block timing": time_blocks}, args.rounds,
                            clock, min)
    medians.pop("block timing")
    same = torch.equal(sample(pruned), sample(planned))
    kept_weights = 1 - removed_bytes / total_bytes
    kept_time = 1 - min(shares) / medians["original"]

    timing = "fastest round, " + ("wall time" if args.device == "cuda" else "CPU time, 1 thread")
    print(f"\n## Pruned model ({args.preset}, {args.device}, {p['double']}+{SINGLE} blocks, single blocks "
          f"{REMOVED[0]}-{REMOVED[-1]} removed, {steps} steps x {args.rounds} rounds, {timing})\n")
    print("| | original | pruned | ratio | kept fraction |")
    print("|---|---|---|---|---|")
    print(f"| file size (MiB) | {sizes['original'] / 2**20:.1f} | {sizes['pruned'] / 2**20:.1f} | "
          f"{sizes['pruned'] / sizes['original']:.3f} | {kept_weights:.3f} (weights) |")
    print(f"| weight memory held (MiB) | {memory['original'] / 2**20:.1f} | {memory['pruned'] / 2**20:.1f} | "
          f"{memory['pruned'] / memory['original']:.3f} | {kept_weights:.3f} (weights) |")
    print(f"| step time (ms) | {1000 * medians['original'] / steps:.1f} | "
          f"{1000 * medians['saved pruned model'] / steps:.1f} | "
          f"{medians['saved pruned model'] / medians['original']:.3f} | {kept_time:.3f} (step time) |")
    print(f"| step time, the plan on the original (ms) | {1000 * medians['original'] / steps:.1f} | "
          f"{1000 * medians['plan on the original'] / steps:.1f} | "
          f"{medians['plan on the original'] / medians['original']:.3f} | {kept_time:.3f} (step time) |")
    print(f"\nThe pruned model's latent equals the plan's on the original, bit for bit: {'yes' if same else 'NO'}.")


if __name__ == "__main__":
    bench = _bench()
    parsed = bench.command_line(__doc__, rounds=5).parse_args()
    bench.prepare(parsed)
    run(parsed)
