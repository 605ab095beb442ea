"""How much host memory the fast sweep's recorded states will take, and whether that fits the machine.

The fast sweep keeps one recorded block input per resume point (``FastSweep.needed``), for every
model call of the baseline evaluation. Its size is read off the first state recorded in each stream,
nothing per family: the bytes of that state (every part of it) divided by the rows of its call, times
the rows of a whole evaluation, are the bytes of one resume point; times the resume points of the
stream, the stream's share. A stream not reached yet counts with the size of the last one seen (for
the Flux-style models the single stream carries the same tokens as both double-stream parts together).

The sweep refuses, at its first recorded state, before it holds more than that one state, when the
total is more than ``USABLE`` of the memory the system says is available then; the message gives the
figure and the settings that would fit. Everything here but ``available_host_bytes`` is a pure function.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping

USABLE = 0.8  # the share of the available host memory the recorded states may take; sampling needs the rest
GIB = 1 << 30


@dataclass(frozen=True)
class Estimate:
    """The host memory of a fast sweep's recorded states."""

    state_bytes: Mapping[str, int]  # per stream: one resume point's state, every call of an evaluation together
    positions: Mapping[str, int]  # per stream: how many resume points
    rows: int  # batch rows of one evaluation (latent batch x the conditionings evaluated)

    def stream_bytes(self, stream: str) -> int:
        return self.state_bytes[stream] * self.positions[stream]

    @property
    def total(self) -> int:
        return sum(self.stream_bytes(s) for s in self.positions)


def estimate(seen: Mapping[str, tuple[int, int]], positions: Mapping[str, int], rows: int,
             order: tuple[str, ...]) -> Estimate:
    """``seen``: per stream recorded so far, (bytes of its first state, batch rows of that state's call);
    ``positions``: resume points per stream; ``rows``: batch rows of a whole evaluation; ``order``: the
    streams in execution order (a stream not seen yet counts like the last one seen before it)."""
    if not seen:
        raise ValueError("an estimate needs at least one recorded state")
    per_point, last = {}, None
    for stream in order:
        if stream in seen:
            state, call_rows = seen[stream]
            last = math.ceil(state * rows / call_rows)
        if stream in positions:
            per_point[stream] = last if last is not None else next(
                math.ceil(b * rows / r) for b, r in (seen[s] for s in order if s in seen))
    return Estimate(per_point, {s: positions[s] for s in order if s in positions}, rows)


def refusal(found: Estimate, available: int | None, held: int = 0, usable: float = USABLE) -> str | None:
    """Why the sweep cannot hold its recorded states, with the settings that would fit; None when they fit
    (or when the available memory is unknown). ``held``: bytes of them already held (and so no longer in
    ``available``)."""
    if available is None:
        return None
    budget = int((available + held) * usable)
    if found.total - held <= available * usable:
        return None
    kinds = ", ".join(f"{found.positions[s]} for {s}" for s in found.positions if found.positions[s])
    one = max(found.state_bytes.values())
    lines = [f"fast mode would hold {gib(found.total)} of recorded block inputs in host memory ({kinds} resume "
             f"points, up to {mib(one)} each at {found.rows} batch row{'s' * (found.rows != 1)} per evaluation), "
             f"but {gib(available)} is available and the sweep takes at most {usable:.0%} of it ({gib(budget)}). "
             "Settings that fit:"]
    swept = [s for s in found.positions if found.positions[s]]
    if len(swept) > 1:
        lines += [f"- streams {s} alone: {gib(found.stream_bytes(s))}" for s in swept
                  if found.stream_bytes(s) <= budget]
    share = budget / found.total
    lines.append(f"- a latent with at most {share:.0%} of this one's tokens (each side x {math.sqrt(share):.2f}, "
                 "or fewer frames)")
    if found.rows > 1:
        per_row = found.total / found.rows
        fit_rows = int(budget // per_row)
        if fit_rows >= 1:
            lines.append(f"- {fit_rows} batch row{'s' * (fit_rows != 1)} per evaluation instead of {found.rows} "
                         f"({gib(per_row)} per row; cfg 1 evaluates only the positive rows, batch 1 fewer)")
    lines.append("- mode full (no recorded states: one sampling run per variant)")
    return "\n".join(lines)


def available_bytes(device) -> int | None:
    """What ``device`` can still give now: host memory for the CPU, free memory for a CUDA device."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch
        return int(torch.cuda.mem_get_info(device)[0])
    return available_host_bytes()


def available_host_bytes() -> int | None:
    """The memory the system can give without swapping, now; None where it cannot tell."""
    try:
        import psutil  # in ComfyUI's requirements
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def gib(n: float) -> str:
    """GiB, or MiB below a tenth of one."""
    return f"{n / GIB:.2f} GiB" if n >= GIB / 10 else mib(n)


def mib(n: float) -> str:
    return f"{n / (1 << 20):.2f} MiB"
