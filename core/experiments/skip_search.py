"""Skip search, as data: grow a skip set one unit at a time, measuring each candidate as the plan it becomes.

A *unit* is one width-1 ``Window`` of the sweep: a block to skip, or with granularity attention /
MLP one block's sub-layer to drop. A *skip set* is a set of units; the search never adds up single
scores: every candidate is measured as a whole by the ``evaluate`` callback, which runs the
combined plan and returns its distances to the baseline (``{metric: mean over the batch}``).

Size by size, k = 1, 2, ...:

- **candidates**: every set kept at size k-1 (the beam; greedy keeps one) plus one unit it does
  not hold, each set once, in beam order then unit order. Size 1's candidates are the single
  skips: exactly a width-1 sweep.
- **the top-k suggestion**: the sweep's own suggestion for a budget of k blocks (``sweep.suggest``
  over size 1's distances: the k individually safest units) is measured as a whole too (a set
  already measured is not measured again).
- **kept**: the closest of the candidates and the top-k set (ties go to the earlier evaluation, so
  a candidate beats a top-k set it only equals). The next beam is the ``width`` closest of the
  same pool, so the search continues from the kept set.

Stopping: at ``blocks`` units removed (the target); when the kept set at size k is farther than
``max_distance`` (the result is then size k-1's); when no set of size k has a finite distance;
when every unit is removed; or when the next evaluation would exceed ``budget`` (the result is
then the last size that was measured completely). The reason is always reported.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from math import comb
from typing import Callable, Mapping, Sequence

from ..rewrite import LayerPlan, OrderCheck, Rewrite
from . import line_chart
from .bar_chart import BAR, HIGHLIGHT, OFF_SCALE
from .sweep import METRIC_NAMES, Measured, Window, plan_texts, skip_rewrite, suggest

STRATEGIES = ("greedy", "beam")


class SearchError(ValueError):
    """A search that cannot run as asked."""


class Refused(Exception):
    """Raised by ``evaluate`` for a set the model cannot run as one plan; the message says why."""


@dataclass(frozen=True)
class Target:
    blocks: int = 0  # units to remove; 0: no count, stop by max_distance
    max_distance: float = 0.0  # 0: no limit
    budget: int = 100  # evaluations, the baseline not counted
    strategy: str = "greedy"
    width: int = 1  # beam width (greedy: 1)

    @property
    def beam(self) -> int:
        return 1 if self.strategy == "greedy" else self.width


def check_target(target: Target, n_units: int) -> None:
    if target.strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {target.strategy!r}: choose one of {', '.join(STRATEGIES)}")
    if target.strategy == "beam" and target.width < 1:
        raise SearchError(f"beam_width = {target.width}: a beam keeps at least 1 plan")
    if target.blocks < 0:
        raise SearchError(f"blocks = {target.blocks}: the number of blocks to remove is 0 (no count) or more")
    if not target.max_distance >= 0:
        raise SearchError(f"max_distance = {target.max_distance}: use 0 for no limit or a positive distance")
    if target.blocks == 0 and target.max_distance == 0:
        raise SearchError("blocks = 0 and max_distance = 0: set how many blocks to remove, a largest allowed "
                          "distance, or both")
    if target.budget < 1:
        raise SearchError(f"budget = {target.budget}: the search needs at least 1 evaluation")
    if n_units == 0:
        raise SearchError("nothing can be removed: every swept block is excluded")
    if target.blocks > n_units:
        raise SearchError(f"blocks = {target.blocks}, but only {n_units} can be removed from the swept streams; "
                          f"choose 1-{n_units}")


def evaluation_bound(n_units: int, target: Target) -> int:
    """The most evaluations the search can make (never more than the budget): the progress bar's length."""
    total = 0
    for k in range(1, (target.blocks or n_units) + 1):
        parents = min(target.beam, comb(n_units, k - 1))
        total += min(comb(n_units, k), parents * (n_units - k + 1)) + (1 if k > 1 else 0)
        if total >= target.budget:
            return target.budget
    return total


# ------------------------------------------------------------------------------------------ the search


@dataclass
class Evaluation:
    index: int
    step: int  # the size k it was measured for
    role: str  # "candidate" or "top_k"
    skip: tuple[Window, ...]  # in unit order
    distances: dict[str, float]
    parent: int | None = None  # the evaluation whose set it grew from (None: from the empty set, or top-k)

    @property
    def removed(self) -> int:
        return len(self.skip)


@dataclass
class Round:
    k: int
    search: Evaluation  # the closest candidate
    top_k: Evaluation | None  # the top-k suggestion measured as a whole
    top_k_note: str  # why there is no top-k set, when there is none
    kept: Evaluation
    beam: list[Evaluation]
    accepted: bool = True  # False: it went past max_distance and the search stopped before it

    @property
    def won(self) -> str:
        if self.top_k is self.search:
            return "same"
        return "top_k" if self.kept is self.top_k else "search"


@dataclass
class Result:
    evaluations: list[Evaluation] = field(default_factory=list)
    refused: list[tuple[tuple[Window, ...], str]] = field(default_factory=list)
    rounds: list[Round] = field(default_factory=list)
    final: Evaluation | None = None  # None: nothing removed
    stop: str = ""  # target, max_distance, no_finite, all_removed, budget
    message: str = ""

    @property
    def skip(self) -> tuple[Window, ...]:
        return self.final.skip if self.final else ()


class _BudgetSpent(Exception):
    pass


def rank_value(evaluation: Evaluation, metric: str) -> float:
    value = evaluation.distances[metric]
    return math.inf if math.isnan(value) else value  # a result that broke down ranks last


def search(units: Sequence[Window], metric: str, target: Target,
           evaluate: Callable[[tuple[Window, ...]], Mapping[str, float]]) -> Result:
    """Run the search (see the module docstring); ``evaluate`` measures one skip set as a whole."""
    check_target(target, len(units))
    if len(set(units)) != len(units):
        raise SearchError("a unit is listed twice")
    order = {u: i for i, u in enumerate(units)}
    result = Result()
    measured: dict[frozenset, Evaluation | None] = {}

    def measure(chosen: frozenset, k: int, role: str, parent: Evaluation | None) -> Evaluation | None:
        if chosen in measured:
            return measured[chosen]
        if len(result.evaluations) >= target.budget:
            raise _BudgetSpent
        skip = tuple(sorted(chosen, key=order.__getitem__))
        try:
            found = evaluate(skip)
        except Refused as reason:
            result.refused.append((skip, str(reason)))
            measured[chosen] = None
            return None
        if metric not in found:
            raise SearchError(f"the evaluation gave {sorted(found)}, not the metric {metric!r}")
        evaluation = Evaluation(len(result.evaluations), k, role, skip, dict(found),
                                parent.index if parent else None)
        result.evaluations.append(evaluation)
        measured[chosen] = evaluation
        return evaluation

    def rank(e: Evaluation):
        return rank_value(e, metric), e.index

    beam: list[Evaluation | None] = [None]  # the empty set
    singles: list[Measured] = []
    k_last = target.blocks or len(units)
    k = 0
    for k in range(1, k_last + 1):
        try:
            candidates = _grow(beam, units, k, measure)
            if k == 1:
                singles = [Measured(e.skip[0], e.distances) for e in candidates]
            top, note = None, ""
            suggested = suggest(singles, metric, k)
            if len(suggested) < k:
                note = f"only {len(suggested)} single skips have a finite distance"
            else:
                top = measure(frozenset(suggested), k, "top_k", None)
                note = "" if top is not None else "the model cannot run it as one plan"
        except _BudgetSpent:
            done = len(result.rounds)
            result.stop = "budget"
            result.message = (f"the budget of {target.budget} evaluations was spent while measuring size {k}; "
                              f"the result is the last size measured completely ({done} removed)")
            break
        pool = candidates + ([top] if top is not None and all(top is not c for c in candidates) else [])
        if not pool:
            result.stop, result.message = "no_finite", f"no set of size {k} can run as one plan"
            break
        ranked = sorted(pool, key=rank)
        best = min(candidates, key=rank) if candidates else ranked[0]
        kept = ranked[0]
        round_ = Round(k, best, top, note, kept, ranked[:target.beam])
        value = kept.distances[metric]
        if not math.isfinite(rank_value(kept, metric)):
            round_.accepted = False
            result.rounds.append(round_)
            result.stop, result.message = "no_finite", f"no set of size {k} has a finite distance"
            break
        if target.max_distance and value > target.max_distance:
            round_.accepted = False
            result.rounds.append(round_)
            result.stop = "max_distance"
            result.message = (f"the closest set of size {k} is at {value:.6g}, above max_distance "
                              f"{target.max_distance:g}; the result is size {k - 1}")
            break
        result.rounds.append(round_)
        result.final = kept
        beam = round_.beam
        if k == target.blocks:
            result.stop, result.message = "target", f"removed {k}, the target"
            break
    else:
        result.stop, result.message = "all_removed", f"every one of the {len(units)} units is removed"
    return result


def _grow(beam, units, k, measure) -> list[Evaluation]:
    candidates, seen = [], set()
    for parent in beam:
        held = frozenset(parent.skip) if parent else frozenset()
        for unit in units:
            if unit in held:
                continue
            chosen = held | {unit}
            if chosen in seen:
                continue
            seen.add(chosen)
            evaluation = measure(chosen, k, "candidate", parent)
            if evaluation is not None:
                candidates.append(evaluation)
    return candidates


# ------------------------------------------------------------------------------------------- plans


def skip_rewrites(base: LayerPlan, chosen: Sequence[Window]) -> list[Rewrite]:
    """The rewrites that remove every chosen unit from the base plan."""
    return [skip_rewrite(base, w) for w in chosen]


def combined_plan(base: LayerPlan, chosen: Sequence[Window], check: OrderCheck | None = None) -> LayerPlan:
    plan = base
    for rewrite in skip_rewrites(base, chosen):
        plan = plan.with_rewrite(rewrite, check)
    return plan


# ------------------------------------------------------------------------------------------- chart


def chart_panel(result: Result, metric: str, mode: str, final_full: Mapping, target: Target, family: str,
                describe: str) -> line_chart.LinePanel:
    """Distance against blocks removed: the kept plan per size from 0, the top-k plans, the final full re-run."""
    fast = mode == "fast"
    rounds = result.rounds
    kept = line_chart.Series("kept plan", BAR, (line_chart.Point(0, 0.0, fast),) + tuple(
        line_chart.Point(r.k, r.kept.distances[metric], fast) for r in rounds), "circle")
    top = line_chart.Series("top-k singles, together", HIGHLIGHT, tuple(
        line_chart.Point(r.k, r.top_k.distances[metric], fast) for r in rounds if r.top_k), "square")
    series = [kept, top]
    if result.final is not None and fast:
        series.append(line_chart.Series("final plan, full re-run", OFF_SCALE, (
            line_chart.Point(result.final.removed, final_full["distances"][metric]),), "diamond", joined=False))
    x_max = max([target.blocks] + [r.k for r in rounds] + [1])
    how = target.strategy if target.strategy == "greedy" else f"beam of {target.beam}"
    return line_chart.LinePanel(
        title=f"{METRIC_NAMES[metric]} of each plan against blocks removed (lower = closer to the model)",
        subtitle=f"{family}, {describe}, {how}, {len(result.evaluations)} evaluations; stopped: {result.message}",
        series=tuple(series), x_max=x_max, threshold=target.max_distance or None,
        fast_note="hollow = fast")


# ------------------------------------------------------------------------------------------ report


def _skip_json(skip: Sequence[Window]) -> list[dict]:
    return [{"stream": w.stream, "blocks": w.label} for w in skip]


def _finite_map(distances: Mapping[str, float]) -> dict:
    return {k: v if math.isfinite(v) else None for k, v in distances.items()}


def build_report(*, family: str, counts: Mapping[str, int], streams: Sequence[str], granularity: str, mode: str,
                 metric: str, target: Target, result: Result, base: LayerPlan, excluded: Sequence,
                 full: Mapping[str, object], settings: Mapping[str, object]) -> dict:
    """The search as JSON data: every evaluation, the path per size, why it stopped, and the result."""

    def evaluation(e: Evaluation) -> dict:
        return {"index": e.index, "step": e.step, "role": e.role, "skip": _skip_json(e.skip),
                "blocks_removed": e.removed, "plan": plan_texts(base, e.skip), "mode": mode,
                "distances": _finite_map(e.distances), "parent": e.parent}

    return {
        "family": family,
        "block_counts": dict(counts),
        "streams": list(streams),
        "granularity": granularity,
        "mode": mode,
        "metric": metric,
        "target": {"blocks": target.blocks or None, "max_distance": target.max_distance or None,
                   "budget_evaluations": target.budget},
        "strategy": target.strategy,
        "beam_width": target.beam,
        "settings": dict(settings),
        "excluded": [{"stream": e.window.stream, "blocks": e.window.label, "reason": e.reason} for e in excluded],
        "evaluations": [evaluation(e) for e in result.evaluations],
        "refused": [{"skip": _skip_json(s), "reason": r} for s, r in result.refused],
        "path": [{"blocks_removed": r.k, "search": r.search.index,
                  "search_distance": _finite_map(r.search.distances)[metric],
                  "top_k": r.top_k.index if r.top_k else None,
                  "top_k_distance": _finite_map(r.top_k.distances)[metric] if r.top_k else None,
                  "top_k_note": r.top_k_note or None,
                  "kept": r.kept.index, "won": r.won, "beam": [e.index for e in r.beam], "accepted": r.accepted}
                 for r in result.rounds],
        "stop": {"reason": result.stop, "message": result.message},
        "result": {
            "skip": _skip_json(result.skip),
            "blocks_removed": len(result.skip),
            "plan": plan_texts(base, result.skip),
            "evaluation": result.final.index if result.final else None,
            "distances": _finite_map(result.final.distances) if result.final else None,
            "mode": mode,
            "full": dict(full),
            "note": "each plan is the stream's whole order: use it in a Layer Lab Plan node applied to the model "
                    "before any other Layer Lab node",
        },
        "distance": METRIC_NAMES[metric],
    }


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False)
