"""Block importance sweep, as data: which windows to skip, how far each result moved, what to suggest.

A *window* is ``width`` consecutive original blocks of one stream; the sweep skips each window alone
(sliding by one block) and compares the result with the baseline's: the model as received. With
``granularity`` attention or MLP, a variant drops only that sub-layer of the window's blocks
(``3:attn``) instead of skipping them.

Distances, for a baseline ``a`` and a variant ``v`` of the same shape ``[B, ...]``: every batch item
is flattened and taken in float64, then

    cosine distance  = 1 - <a, v> / (|a| |v|)    (0 when both are zero, 1 when only one is)
    relative L2      = |v - a| / |a|             (0 when both are zero, inf when only a is)

and the window's distance is the mean over the batch items (each item also kept). 0 means
"unchanged"; a larger value means the skip moved the result further.

The suggested skip set for a budget of ``budget`` blocks takes windows in ranking order (safest
first, over every swept stream together), leaves out any that overlaps a window already taken or
whose distance exceeds ``max_distance`` (when set), and stops when the next window would exceed the
budget. Skipping several windows together moves the result by an amount the sweep did not measure:
distances of single skips do not add up, so check the suggestion by running it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch

from ..plan import PART_NAMES, Modified, PlanError, Steps, format_steps, index_range
from ..rewrite import STREAMS, LayerPlan, Rewrite, apply_rewrite, check_range, strategy_rewrite
from .bar_chart import BarPanel

STREAM_CHOICES = ("double_blocks", "single_blocks", "both")
GRANULARITIES = {"block": "", "attention": "attn", "mlp": "mlp"}  # what a variant drops -> plan part
MODES = ("full", "fast")
METRICS = ("latent_cosine", "latent_rel_l2", "image_cosine", "image_rel_l2")
METRIC_NAMES = {
    "latent_cosine": "latent cosine distance",
    "latent_rel_l2": "latent relative L2",
    "image_cosine": "image cosine distance",
    "image_rel_l2": "image relative L2",
}


class SweepError(ValueError):
    """A sweep that cannot run as asked."""


@dataclass(frozen=True)
class Window:
    stream: str
    first: int
    last: int
    part: str = ""  # "": the blocks are skipped; "attn" / "mlp": only that sub-layer of each is dropped

    @property
    def label(self) -> str:
        blocks = str(self.first) if self.first == self.last else f"{self.first}-{self.last}"
        return f"{blocks}:{self.part}" if self.part else blocks

    @property
    def blocks(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def overlaps(self, other: "Window") -> bool:
        return self.stream == other.stream and self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class Variant:
    """A window that can be skipped, with the plan that skips it."""

    window: Window
    plan: LayerPlan


@dataclass(frozen=True)
class Excluded:
    """A window the model cannot run without, and why."""

    window: Window
    reason: str


@dataclass
class Measured:
    window: Window
    distances: dict[str, float]  # metric -> mean over the batch
    per_item: dict[str, list[float]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ variants


def swept_streams(counts: Mapping[str, int], streams: str) -> list[str]:
    if streams not in STREAM_CHOICES:
        raise SweepError(f"unknown streams {streams!r}: choose one of {', '.join(STREAM_CHOICES)}")
    chosen = list(STREAMS) if streams == "both" else [streams]
    present = [s for s in chosen if counts.get(s, 0) > 0]
    if not present:
        have = ", ".join(f"{s} ({n})" for s, n in counts.items() if n) or "none"
        raise SweepError(f"this model has no {streams}; its block lists are: {have}")
    return present


def windows(counts: Mapping[str, int], streams: str, width: int, granularity: str = "block") -> list[Window]:
    """Every window of ``width`` consecutive blocks of the chosen streams, sliding by one block."""
    if granularity not in GRANULARITIES:
        raise SweepError(f"unknown granularity {granularity!r}: choose one of {', '.join(GRANULARITIES)}")
    part = GRANULARITIES[granularity]
    chosen = swept_streams(counts, streams)
    if width < 1:
        raise SweepError(f"width = {width}: a window holds at least one block")
    for stream in chosen:
        if width > counts[stream]:
            raise SweepError(f"width = {width} is wider than {stream}, which has {counts[stream]} blocks "
                             f"(indices {index_range(counts[stream])})")
    return [Window(s, first, first + width - 1, part) for s in chosen for first in range(counts[s] - width + 1)]


def check_one_order(plan: LayerPlan) -> None:
    """The sweep compares against one baseline order; refuse a plan whose order changes during sampling."""
    if plan.order_changes_during_sampling:
        raise SweepError("this model's plan changes the block order during sampling (a start/end window):\n"
                         f"{plan.summary()}\nthe sweep needs one baseline order; sweep the model before the "
                         "windowed node, or with windows spanning 0-1")


def skip_rewrite(plan: LayerPlan, window: Window):
    """The window's variant: its blocks skipped, or each without the window's sub-layer."""
    if not window.part:
        return strategy_rewrite(plan.counts, "skip", window.stream, window.first, window.last)
    check_range(window.stream, window.first, window.last, plan.counts.get(window.stream, 0))
    steps = tuple(Modified((i,), 0.0, window.part) for i in window.blocks)
    return Rewrite(window.stream, window.first, window.last, steps, f"drop {window.stream} {window.label}")


def variants(plan: LayerPlan, check: Callable[[str, Steps, int], None],
             swept: Iterable[Window]) -> tuple[list[Variant], list[Excluded]]:
    """The plan of each window's skip on top of ``plan``, and the windows that cannot be skipped, with why.

    ``check`` is the family's order check (SD3's last joint block); a window is also excluded when
    an earlier plan on the model no longer runs its blocks in place.
    """
    runnable, excluded = [], []
    for window in swept:
        try:
            runnable.append(Variant(window, plan.with_rewrite(skip_rewrite(plan, window), check)))
        except PlanError as error:
            excluded.append(Excluded(window, str(error)))
    return runnable, excluded


# ----------------------------------------------------------------------------------- distances


def _joined(latent):
    """A nested latent (LTX-2's video and audio, sampled together) as one ``[batch, -1]`` tensor per item."""
    if not getattr(latent, "is_nested", False):
        return latent
    return torch.cat([part.reshape(part.shape[0], -1) for part in latent.unbind()], dim=1)


def distances(baseline: torch.Tensor, variant: torch.Tensor, prefix: str) -> tuple[dict, dict]:
    """``{prefix_cosine, prefix_rel_l2}``: means over the batch, and the per-item values."""
    baseline, variant = _joined(baseline), _joined(variant)
    if baseline.shape != variant.shape:
        raise SweepError(f"the variant's result has shape {tuple(variant.shape)}, the baseline's "
                         f"{tuple(baseline.shape)}; they cannot be compared")
    a = baseline.detach().to("cpu", torch.float64).reshape(baseline.shape[0], -1)
    v = variant.detach().to("cpu", torch.float64).reshape(variant.shape[0], -1)
    norm_a, norm_v = a.norm(dim=1), v.norm(dim=1)
    diff = (v - a).norm(dim=1)
    cos, rel = [], []
    for na, nv, dot, d in zip(norm_a.tolist(), norm_v.tolist(), (a * v).sum(dim=1).tolist(), diff.tolist()):
        if na == 0.0 or nv == 0.0:
            cos.append(0.0 if na == nv else 1.0)
        else:
            cos.append(1.0 - dot / (na * nv))
        rel.append(d / na if na else (0.0 if d == 0.0 else math.inf))
    per_item = {f"{prefix}_cosine": cos, f"{prefix}_rel_l2": rel}
    return {k: sum(vs) / len(vs) for k, vs in per_item.items()}, per_item


# --------------------------------------------------------------------------- ranking, suggestion


def check_metric(metric: str, available: Sequence[str]) -> None:
    if metric not in METRICS:
        raise SweepError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if metric not in available:
        raise SweepError(f"metric {metric!r} needs a VAE: connect one to 'vae', or rank by "
                         f"{' or '.join(m for m in METRICS if m in available)}")


def ranking(measured: Sequence[Measured], metric: str) -> list[Measured]:
    """Safest (smallest distance) first; ties keep stream and block order."""
    order = {id(m): i for i, m in enumerate(measured)}
    return sorted(measured, key=lambda m: (_rank_value(m.distances[metric]), order[id(m)]))


def _rank_value(value: float) -> float:
    return math.inf if math.isnan(value) else value  # a result that broke down ranks last


def suggest(measured: Sequence[Measured], metric: str, budget: int, max_distance: float = 0.0) -> list[Window]:
    """The individually safest non-overlapping windows that together skip at most ``budget`` blocks.

    ``max_distance`` > 0 also leaves out every window whose own distance is above it.
    """
    if budget < 0:
        raise SweepError(f"budget = {budget}: the number of blocks to skip is 0 or more")
    if max_distance < 0:
        raise SweepError(f"max_distance = {max_distance}: use 0 for no limit or a positive distance")
    chosen: list[Window] = []
    used = 0
    for m in ranking(measured, metric):
        if not math.isfinite(m.distances[metric]) or (max_distance and m.distances[metric] > max_distance):
            break
        if used + m.window.size > budget:
            break
        if any(m.window.overlaps(c) for c in chosen):
            continue
        chosen.append(m.window)
        used += m.window.size
    return chosen


def plan_texts(plan: LayerPlan, chosen: Sequence[Window]) -> dict[str, str]:
    """Per stream, the plan text of the model's order without the chosen windows (``all`` if unchanged)."""
    orders = plan.compose(plan.all_active)
    texts = {}
    for stream, n in plan.block_counts:
        steps = orders[stream]
        for window in sorted((w for w in chosen if w.stream == stream), key=lambda w: w.first):
            steps = apply_rewrite(steps, skip_rewrite(plan, window))
        texts[stream] = format_steps(steps, n) if n else "all"
    return texts


# ------------------------------------------------------------------------------------------- chart


def chart_panels(streams: Sequence[str], swept: Sequence[Window], measured: Sequence[Measured],
                 chosen: Sequence[Window], metric: str, subtitle: str, max_distance: float = 0.0) -> list[BarPanel]:
    """One bar panel per swept stream: every window in block order, the chosen ones highlighted."""
    by_window = {m.window: m.distances[metric] for m in measured}
    panels = []
    for stream in streams:
        in_stream = [w for w in swept if w.stream == stream]
        part = in_stream[0].part if in_stream else ""
        what = f"without its {PART_NAMES[part]}" if part else "skipped"
        panels.append(BarPanel(
            title=f"{stream}: {METRIC_NAMES[metric]} when {what} (lower = safer to {'drop' if part else 'skip'})",
            subtitle=subtitle,
            labels=[w.label for w in in_stream],
            values=[by_window.get(w) for w in in_stream],
            highlighted=frozenset(i for i, w in enumerate(in_stream) if w in chosen),
            threshold=max_distance or None,
        ))
    return panels


# ------------------------------------------------------------------------------------------ report


def build_report(*, family: str, counts: Mapping[str, int], streams: Sequence[str], width: int, mode: str,
                 metric: str, budget: int, max_distance: float, measured: Sequence[Measured],
                 excluded: Sequence[Excluded], chosen: Sequence[Window], texts: Mapping[str, str],
                 settings: Mapping[str, object], granularity: str = "block") -> dict:
    ranked = ranking(measured, metric)
    rank_of = {id(m): i + 1 for i, m in enumerate(ranked)}
    return {
        "family": family,
        "block_counts": dict(counts),
        "streams": list(streams),
        "width": width,
        "granularity": granularity,
        "mode": mode,
        "metric": metric,
        "settings": dict(settings),
        "distance_definitions": {
            "cosine": "1 - cos(baseline, variant), each batch item flattened, float64, then averaged over the batch",
            "rel_l2": "|variant - baseline| / |baseline|, each batch item flattened, float64, then averaged",
        },
        "ranking": [{"rank": rank_of[id(m)], "stream": m.window.stream, "blocks": m.window.label,
                     "first": m.window.first, "last": m.window.last,
                     "distances": {k: _finite(v) for k, v in m.distances.items()},
                     "per_item": {k: [_finite(x) for x in v] for k, v in m.per_item.items()}}
                    for m in ranked],
        "excluded": [{"stream": e.window.stream, "blocks": e.window.label, "reason": e.reason} for e in excluded],
        "suggestion": {
            "budget_blocks": budget,
            "max_distance": max_distance or None,
            "skip": [{"stream": w.stream, "blocks": w.label} for w in chosen],
            "blocks_skipped": sum(w.size for w in chosen),
            "plan": dict(texts),
            "note": "the individually safest non-overlapping windows within the budget; distances of single "
                    "skips do not add up, so the combined skip moves the result by an amount this sweep did "
                    "not measure: run it to check. Each plan is the stream's whole order: use it in a Layer "
                    "Lab Plan node applied to the model before any other Layer Lab node",
        },
    }


def _finite(value: float):
    return value if math.isfinite(value) else None  # JSON has no inf or NaN: null means "no finite distance"


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False)
