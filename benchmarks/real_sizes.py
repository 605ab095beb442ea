"""The probe's and the fast sweep's memory and time at Flux.1-dev's and Wan 2.2 14B's real widths and tokens.

    COMFYUI_PATH=/path/to/ComfyUI python benchmarks/real_sizes.py [--model flux-dev|wan22-14b|both]
        [--device cpu|cuda] [--blocks N] [--frames 1,2] [--rounds 3]

(also run by ``benchmarks/bench.py --only real``). Builds each model from ComfyUI's own classes with
random weights, in bf16, at its real width, heads, MLP width and token counts (Flux.1-dev at 1024x1024:
4096 image + 512 text tokens; Wan 2.2 14B at 832x480: 30x52 = 1560 tokens per latent frame), with
fewer blocks where the whole model does not fit the machine: what a probe or a sweep holds is a
sum over blocks (rows of the probe, resume points of the sweep), so the figures at the real block
counts (19 + 38, 40) are the measured bytes per block times those counts, printed beside the
measured ones. Frames: the probe at ``--frames`` latent frames shows that its states do not grow
with the clip; the sweep's recorded states grow with the tokens, so their size at 21 frames is the
measured size per frame times 21.

Per model, in one run: plain sampling, the probe node (``max_tokens`` 1024, per_step) at 1 and 2
steps with cfg 1 and at 1 step with cfg > 1, and the fast sweep's baseline evaluation (which records
every state the sweep will hold), each with

- time: seconds of the run, and the probe against plain sampling with the same steps and cfg;
- held states: bytes the probe or sweep holds (counted exactly), and where (ComfyUI's intermediate
  device: host memory beside a GPU);
- on the model's device: on a GPU, the peak allocated memory above plain sampling's (measured); on a
  CPU, where the model's device is the host, the probe's largest working copy plus its Gram slice,
  which is what a GPU would hold;
- host: the process's peak RSS above its level before the run.

Then, in a fresh process (``--resume-memory``), one evaluation with cfg > 1, run plainly and resumed at
the first block of the last stream, the recorded state handed to the loop's own tensor (the sweep's
way) or given as a new copy beside it: the peak above the start of each (on a CPU, peak RSS with
glibc returning every block of 1 MiB or more when it is freed, so that RSS follows the tensors
alive; set there alone, as it changes the timings).

The timed Wan fast / naive sweep ratio needs a sweep over every block, 40 of them (41 evaluations of
40 blocks for the naive one): with every block (CUDA) it is timed on the Wan 2.2 14B model itself at
one latent frame; with fewer (a CPU) on a Wan-shaped model with its 40 blocks at width 256 and one
32x32 latent frame (``video_cost.sweep_ratio``, ``--rounds`` rounds), as the full width does not fit
a CPU's time. ``--no-ratio`` leaves it out.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import pathlib
import time

HERE = pathlib.Path(__file__).resolve().parent
MAX_TOKENS = 1024
CFG = 3.5
PERCENT = 0.5
# Flux.1-dev: bench.PRESETS["flux-dev"] (3072 wide, 24 heads, 19 + 38 blocks, 1024x1024, bf16)
WAN22_14B = dict(dim=5120, ffn=13824, blocks=40, latent=(60, 104), text_tokens=512, dtype="bfloat16", frames=21)
CPU_BLOCKS = {"flux-dev": (1, 1), "wan22-14b": 1}  # what this CPU runs within a few minutes
OPTIONS = dict(model="both", blocks=None, frames=None, no_ratio=False, no_probe=False, resume_memory=False)


def _module(name):
    spec = importlib.util.spec_from_file_location(f"dit_layer_lab_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PeakRSS = _module("probe_cost").PeakRSS


class Held:
    """Peak host RSS above the start, and on CUDA the peak allocated device memory above the start."""

    def __init__(self, cuda: bool):
        self.cuda, self.device = cuda, 0

    def __enter__(self):
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        self._rss = PeakRSS().__enter__()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.device = torch.cuda.max_memory_allocated() - self._base
        self.seconds = time.perf_counter() - self._start
        self._rss.__exit__(*exc)
        self.host = self._rss.extra


def mib(n) -> str:
    return f"{n / 2 ** 20:.1f}"


def gib(n) -> str:
    return f"{n / 2 ** 30:.2f}"


def resume_points(counts: dict[str, int]) -> dict[str, int]:
    """Resume points per stream of a width-1 sweep over every block of a model with these counts, no plan."""
    from dit_layer_lab.core.experiments.fast_sweep import resume

    base = {s: tuple((i,) for i in range(n)) for s, n in counts.items()}
    points = set()
    for stream, n in counts.items():
        for skipped in range(n):
            variant = {**base, stream: tuple((i,) for i in range(n) if i != skipped)}
            r = resume(base, variant)
            if r.stream is not None:
                points.add((r.stream, r.source))
    return {s: sum(1 for p in points if p[0] == s) for s in counts}


def probe_runs(model, cond, latent, cuda, steps_list, cfgs, slice_bytes, full_rows):
    """The probe node and plain sampling; returns the rows printed."""
    import torch

    from dit_layer_lab.nodes.probe import LayerLabSimilarityProbe

    import comfy.sample

    def plain(steps, cfg):
        with torch.inference_mode():
            noise = comfy.sample.prepare_noise(latent, 0)
            return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", cond, cond, latent, seed=0,
                                       disable_pbar=True)

    rows, plain_times = [], {}
    for steps, cfg in [(s, 1.0) for s in steps_list] + [(1, c) for c in cfgs if c != 1.0]:
        if (steps, cfg) not in plain_times:
            with Held(cuda) as base:
                plain(steps, cfg)
            plain_times[(steps, cfg)] = base
        with Held(cuda) as held, torch.inference_mode():
            out = LayerLabSimilarityProbe.execute(model, cond, cond, {"samples": latent}, 0, steps, cfg, "euler",
                                                  "simple", 1.0, "per_step", MAX_TOKENS)
        report = json.loads(out.args[2])
        base = plain_times[(steps, cfg)]
        on_device = held.device - base.device if cuda else report["working_bytes"] + slice_bytes
        full = sum(rows_bytes(report, key) * full_rows[key] for key in report["streams"])
        rows.append((steps, cfg, report, held, base, on_device, full))
    print(f"\n| steps | cfg | frames | tokens kept / total | probe / plain time | held states (MiB), where | "
          f"at the full block count (MiB) | on the model's device (MiB){'' if cuda else ', would be on a GPU'} | "
          "host peak RSS above start, probe / plain (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for steps, cfg, report, held, base, on_device, full in rows:
        tokens = "; ".join(f"{e['tokens']}/{e['total_tokens']}" for e in report["streams"].values())
        print(f"| {steps} | {cfg:g} | {report['frames']} | {tokens} | {held.seconds:.1f} s / {base.seconds:.1f} s = "
              f"{held.seconds / base.seconds:.3f}x | {mib(report['held_bytes'])}, {report['held_on']} | "
              f"{mib(full)} | {mib(on_device)} | {mib(held.host)} / {mib(base.host)} |")
    return rows


def rows_bytes(report: dict, key: str) -> float:
    """Bytes of one row (one block's state) of a stream part, from what the probe held: held bytes are
    rows x tokens x channels x bytes per value, summed over the parts."""
    entries = report["streams"]
    weights = {k: len(e["labels"]) * e["tokens"] for k, e in entries.items()}
    per_token_row = report["held_bytes"] / sum(weights.values())  # channels x bytes, the same for every part
    return per_token_row * entries[key]["tokens"]


def sweep_baseline(model, cond, latent, cuda, counts_full):
    """The fast sweep's baseline evaluation (streams both): the states it records, their estimate, memory."""
    import torch

    from dit_layer_lab.core.experiments.sweep import variants, windows
    from dit_layer_lab.core.patching import family_of, layer_plan
    from dit_layer_lab.nodes.sweep import FastRuns

    plan = layer_plan(model)
    family = family_of(plan)
    runnable, _ = variants(plan, family.check_order, windows(plan.counts, "both", 1))
    runs = FastRuns(model, family, plan, runnable, cond, cond, {"samples": latent}, 0, 1.0, PERCENT)
    # with these few blocks a stream may have no resume point (1 block: its skip runs in full), so the input
    # of every stream's first block is recorded too: the size of one resume point of each stream
    runs.sweep.needed |= {(stream, 0) for stream, n in plan.counts.items() if n}
    with Held(cuda) as held, torch.inference_mode(), runs:
        runs.baseline()
        recorded = runs.sweep.nbytes
        estimate = runs.sweep.estimate
    full_points = resume_points(counts_full)
    full = sum(estimate.state_bytes[s] * full_points[s] for s in full_points)
    return dict(recorded=recorded, estimate=estimate, held=held, full=full, points=full_points,
                one_call=max(estimate.state_bytes.values()), device=runs.settings.get("held_state_device"))


def exact_host_frees() -> bool:
    """Makes glibc return every block of 1 MiB or more to the system when it is freed (a fixed mmap threshold),
    so that peak RSS on a CPU follows the tensors alive; False where that cannot be set."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        return bool(libc.mallopt(-3, 1 << 20))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def resume_memory(model, cond, latent, cuda, rounds=2):
    """Peak memory of one evaluation with cfg > 1: run plainly, and resumed at the first block of the last stream
    from the recorded state, handed to the loop's own tensor (the sweep's way) or given as a
    new copy beside it (``FastSweep.in_place`` False). Each the lowest of ``rounds`` interleaved runs."""
    import torch

    from dit_layer_lab.core.experiments.fast_sweep import Resume, every_start
    from dit_layer_lab.core.patching import family_of, layer_plan
    from dit_layer_lab.core.rewrite import STREAMS
    from dit_layer_lab.nodes.sweep import FastRuns

    plan = layer_plan(model)
    runs = FastRuns(model, family_of(plan), plan, None, cond, cond, {"samples": latent}, 0, CFG, PERCENT)
    # the first block of the last stream: its blocks make the plain run's peak (Flux's single blocks are wider at
    # their peak than its double blocks), so a state held beside one of them adds to the peak
    last = [stream for stream in STREAMS if runs.base_orders.get(stream)][-1]
    first = next(r for r in every_start(runs.base_orders) if r.stream == last and r.source == 0)
    runs.sweep.needed = {(first.stream, first.source)}
    peaks = {"plain": [], "handed over": [], "new copy": []}
    with torch.inference_mode(), runs:
        runs.baseline()
        # ComfyUI puts both rows in one call where its memory estimate allows, else one call each
        calls = [runs.sweep.states[key][(first.stream, first.source)] for key in runs.sweep.states]
        state_bytes = max(sum(v.nbytes for v in state.values()) for state in calls)
        for _ in range(rounds):
            for name, resume, in_place in (("plain", Resume(runs.base_orders, None, 0), True),
                                           ("handed over", first, True), ("new copy", first, False)):
                runs.sweep.in_place = in_place
                with Held(cuda) as held, runs.sweep.running(resume):
                    runs.predict()
                peaks[name].append(held.device if cuda else held.host)
    return dict(state=state_bytes, calls=len(calls), **{k: min(v) for k, v in peaks.items()})


def resume_table(rows, cuda, exact):
    where = "device peak allocated" if cuda else "host peak RSS" + ("" if exact else " (glibc's mmap threshold not set)")
    print(f"\nOne evaluation, cfg {CFG:g} (cond and uncond rows), {where} above the start (MiB): run plainly, "
          "and resumed at the first block of the last stream from the recorded state, handed to the loop's own tensor or given as a new "
          "copy beside it\n")
    print("| latent | model calls | recorded state, one call (MiB) | plain | resumed, handed over | resumed, new copy | "
          "handed over - plain | new copy - plain |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['calls']} | {mib(r['state'])} | {mib(r['plain'])} | {mib(r['handed over'])} | "
              f"{mib(r['new copy'])} | {mib(r['handed over'] - r['plain'])} | {mib(r['new copy'] - r['plain'])} |")


def flux(args, cuda, slice_bytes):
    bench = _module("bench")
    double, single = (19, 38) if args.blocks == 0 or cuda and args.blocks is None else (
        CPU_BLOCKS["flux-dev"] if args.blocks is None else (args.blocks, args.blocks))
    bench.PRESETS["flux-dev-blocks"] = {**bench.PRESETS["flux-dev"], "double": double, "single": single}
    start = time.perf_counter()
    model, cond, latent, p = bench.build_flux("flux-dev-blocks", args.device)
    print(f"\n## Flux.1-dev dims ({'fresh process, ' if args.resume_memory else ''}{args.device}, {double} + {single} of 19 + 38 blocks, width {p['hidden']}, "
          f"{(p['latent'] // 2) ** 2} image + {p['tokens']} text tokens, {p['dtype']}, probe max_tokens "
          f"{MAX_TOKENS}, per_step; built in {time.perf_counter() - start:.0f} s)\n")
    if args.resume_memory:
        resume_table([("1024x1024", resume_memory(model, cond, latent, cuda))], cuda, args.exact_frees)
        return None
    full_rows = {"double_blocks/image": 20, "double_blocks/text": 20, "single_blocks": 39}
    if not args.no_probe:
        probe_runs(model, cond, latent, cuda, (1, 2), (1.0, CFG), slice_bytes, full_rows)
    s = sweep_baseline(model, cond, latent, cuda, {"double_blocks": 19, "single_blocks": 38})
    sweep_table(s, "19 + 38 blocks", cuda)
    del model
    free(cuda)
    in_a_child(args, "flux-dev")
    return s


def sweep_table(s, full_name, cuda):
    e = s["estimate"]
    print(f"\nFast sweep (streams both, cfg 1, batch 1), its baseline evaluation: recorded "
          f"{mib(s['recorded'])} MiB ({', '.join(f'{n} {k}' for k, n in e.positions.items())} resume points, "
          f"estimated {mib(e.total)} MiB at the first state) on {s['device']}, in {s['held'].seconds:.1f} s; "
          f"host peak RSS above start {mib(s['held'].host)} MiB"
          + (f"; device peak above start {mib(s['held'].device)} MiB" if cuda else "")
          + f". At {full_name} ({', '.join(f'{n} {k}' for k, n in s['points'].items())} resume points): "
          f"{gib(s['full'])} GiB per batch row (x 2 with cfg > 1). One recorded state: {mib(s['one_call'])} MiB per "
          "batch row.")


def wan(args, cuda, slice_bytes):
    video_cost = _module("video_cost")
    blocks = 40 if args.blocks == 0 or cuda and args.blocks is None else (
        CPU_BLOCKS["wan22-14b"] if args.blocks is None else args.blocks)
    video_cost.WAN = {**WAN22_14B, "blocks": blocks}
    start = time.perf_counter()
    model, cond = video_cost.build_wan(args.device)
    per_frame = (WAN22_14B["latent"][0] // 2) * (WAN22_14B["latent"][1] // 2)
    frames = [int(f) for f in args.frames.split(",")] if args.frames else ([1, 21] if cuda else [1, 2])
    print(f"\n## Wan 2.2 14B dims ({'fresh process, ' if args.resume_memory else ''}{args.device}, {blocks} of 40 blocks, width {WAN22_14B['dim']}, MLP "
          f"{WAN22_14B['ffn']}, {per_frame} tokens per latent frame (832x480), {WAN22_14B['dtype']}, probe "
          f"max_tokens {MAX_TOKENS}, per_step; built in {time.perf_counter() - start:.0f} s)\n")
    if args.resume_memory:
        resume_table([(f"{count} latent frame{'s' * (count > 1)}",
                       resume_memory(model, cond, video_cost.latent_of(count), cuda)) for count in frames],
                     cuda, args.exact_frees)
        return None
    full_rows = {"single_blocks": 41}
    for count in frames if not args.no_probe else ():
        latent = video_cost.latent_of(count)
        probe_runs(model, cond, latent, cuda, (1,), (1.0, 5.0) if count == frames[0] else (1.0,),
                   slice_bytes, full_rows)
    sweeps = {}
    for count in frames:
        sweeps[count] = sweep_baseline(model, cond, video_cost.latent_of(count), cuda, {"single_blocks": 40})
        sweep_table(sweeps[count], f"40 blocks, {count} latent frames", cuda)
    lo, hi = frames[0], frames[-1]
    per = (sweeps[hi]["full"] - sweeps[lo]["full"]) / (hi - lo) if hi != lo else sweeps[lo]["full"] / lo
    at21 = sweeps[lo]["full"] + per * (WAN22_14B["frames"] - lo)
    print(f"\nThe sweep's recorded states grow by {gib(per)} GiB per latent frame at 40 blocks: "
          f"{gib(at21)} GiB per batch row at 21 latent frames (81 frames of 832x480), x 2 with cfg > 1. "
          f"One state at 21 frames: {mib(sweeps[lo]['one_call'] / lo * 21)} MiB per batch row (what a resumed block "
          "would hold on the model's device beyond a plain run if it were given a new copy).")
    if not args.no_ratio:
        # Wan 2.2 14B's 40 blocks: this model on CUDA (one latent frame), a width-256 one on a CPU
        if blocks != 40:
            del model
            free(cuda)
            video_cost.WAN = {**_module("video_cost").WAN, "dim": 256, "blocks": 40}  # its own 32x32 latent
            model, cond = video_cost.build_wan(args.device)
        video_cost.sweep_ratio(model, cond, args.rounds, args.device, 1)
    del model
    free(cuda)
    in_a_child(args, "wan22-14b")
    return at21


def in_a_child(args, model: str) -> None:
    """The resume-memory table of ``model`` from a fresh process (``--resume-memory``), where glibc can be set to
    return freed blocks at once without changing the timings of this one."""
    import subprocess
    import sys

    command = [sys.executable, str(HERE / "real_sizes.py"), "--model", model, "--resume-memory",
               "--device", args.device]
    if args.blocks is not None:
        command += ["--blocks", str(args.blocks)]
    if args.frames:
        command += ["--frames", args.frames]
    sys.stdout.flush()
    subprocess.run(command, check=True)


def free(cuda):
    """Unload what ComfyUI keeps loaded, so that the next model has the memory."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    gc.collect()
    comfy.model_management.soft_empty_cache()


def run(args) -> dict:
    import comfy.utils
    from dit_layer_lab.core.probe import similarity

    comfy.utils.PROGRESS_BAR_ENABLED = False
    cuda = args.device == "cuda"
    for option, default in OPTIONS.items():  # bench.py --only real passes its own options
        setattr(args, option, getattr(args, option, default))
    args.exact_frees = cuda or args.resume_memory and exact_host_frees()
    slice_bytes = math.ceil(1.5 * similarity.CHUNK_BYTES)  # a float32 slice and its source on the device
    model = args.model
    out = {}
    if model in ("flux-dev", "both"):
        out["flux"] = flux(args, cuda, slice_bytes)
        free(cuda)
    if model in ("wan22-14b", "both"):
        out["wan"] = wan(args, cuda, slice_bytes)
    return out


def main():
    bench = _module("bench")
    parser = bench.command_line(__doc__, rounds=7)
    parser.add_argument("--model", choices=["flux-dev", "wan22-14b", "both"], default="both")
    parser.add_argument("--blocks", type=int, default=None,
                        help="blocks per list (0: the real counts; default: 1 on a CPU, the real counts on CUDA)")
    parser.add_argument("--frames", default=None, help="Wan latent frames to probe, e.g. 1,2 (CPU) or 1,21 (CUDA)")
    parser.add_argument("--no-ratio", action="store_true", help="skip the timed Wan fast / naive sweep ratio")
    parser.add_argument("--no-probe", action="store_true", help="skip the probe runs (the sweep's memory only)")
    parser.add_argument("--resume-memory", action="store_true",
                        help="only the peak memory of a plain and a resumed evaluation (the full run asks a child "
                             "process for it)")
    args = parser.parse_args()
    bench.prepare(args)
    run(args)


if __name__ == "__main__":
    main()
