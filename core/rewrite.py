"""What the nodes ask for, as data: rewrites of a stream's block order, each active in a window.

Every node adds one ``Rewrite``: "replace the blocks first..last of this stream, which must still
run as the unbroken run first, first+1, ..., last, by these steps". A whole typed plan is the
rewrite of 0..n-1. Rewrites apply in graph order, so stacking nodes composes; rewriting blocks
that an earlier active node already moved is refused, because its meaning would be a guess.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .plan import PlanError, Steps, format_steps, identity, index_range, parse_steps

STREAMS = ("double_blocks", "single_blocks")


@dataclass(frozen=True)
class Rewrite:
    stream: str
    first: int
    last: int
    steps: Steps
    label: str
    start_percent: float = 0.0
    end_percent: float = 1.0

    @property
    def always(self) -> bool:
        return self.start_percent <= 0.0 and self.end_percent >= 1.0

    @property
    def never(self) -> bool:
        """A window of zero length: it contains no noise level, so the rewrite never applies."""
        return self.start_percent >= self.end_percent

    def active_at(self, percent: float) -> bool:
        """Half-open, as ComfyUI's windows are: from start_percent up to, not including, end_percent."""
        return self.always or self.start_percent <= percent < self.end_percent

    def active_at_sigma(self, sigma: float, percent_to_sigma: Callable[[float], float]) -> bool:
        """Half-open, as ComfyUI's hook keyframes hand over: active while sigma(end) < sigma <= sigma(start).
        (Skip Layer Guidance includes its end; Plan Guidance follows it there, see core.guidance.)"""
        return self.always or percent_to_sigma(self.start_percent) >= sigma > percent_to_sigma(self.end_percent)


# ------------------------------------------------------------------------ the paper's strategies


def check_range(stream: str, first: int, last: int, n_blocks: int) -> None:
    if stream not in STREAMS:
        raise PlanError(f"unknown stream {stream!r}: choose one of {', '.join(STREAMS)}")
    for name, value in (("first", first), ("last", last)):
        if not 0 <= value < n_blocks:
            raise PlanError(f"{name} = {value} is out of range: valid {stream} indices are {index_range(n_blocks)}")
    if first > last:
        raise PlanError(f"first = {first} is after last = {last}; the range is first..last inclusive")


def span(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


def skip_steps(first: int, last: int) -> Steps:
    return ()


def repeat_steps(first: int, last: int, layer: int = -1, count: int = -1) -> Steps:
    layer = (first + last) // 2 if layer == -1 else layer
    count = last - first + 1 if count == -1 else count
    if count < 1:
        raise PlanError(f"count = {count}: repeat a block at least once, or -1 for the length of the range")
    return ((layer,),) * count


def reverse_steps(first: int, last: int) -> Steps:
    return tuple((i,) for i in reversed(span(first, last)))


def parallel_steps(first: int, last: int, loops: int = 1) -> Steps:
    if loops < 1:
        raise PlanError(f"loops = {loops}: a parallel group runs at least once")
    return (tuple(span(first, last)),) * loops


def shuffle_steps(first: int, last: int, seed: int = 0) -> Steps:
    order = span(first, last)
    random.Random(seed).shuffle(order)
    return tuple((i,) for i in order)


STRATEGIES = {
    "skip": skip_steps,
    "repeat": repeat_steps,
    "reverse": reverse_steps,
    "parallel": parallel_steps,
    "shuffle": shuffle_steps,
}


def check_window(start_percent: float, end_percent: float) -> None:
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise PlanError(f"start_percent = {start_percent} and end_percent = {end_percent}: "
                        "need 0 <= start_percent <= end_percent <= 1")


def strategy_rewrite(counts: dict[str, int], name: str, stream: str, first: int, last: int,
                     start_percent: float = 0.0, end_percent: float = 1.0, **params) -> Rewrite:
    """The rewrite of one of the paper's strategies over first..last of ``stream``."""
    if name not in STRATEGIES:
        raise PlanError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    n_blocks = counts.get(stream, 0)
    check_range(stream, first, last, n_blocks)
    check_window(start_percent, end_percent)
    steps = STRATEGIES[name](first, last, **params)
    for step in steps:
        for i in step:
            if not 0 <= i < n_blocks:
                raise PlanError(f"block {i} is out of range: valid {stream} indices are {index_range(n_blocks)}")
    shown = "".join(f", {k}={v}" for k, v in params.items())
    return Rewrite(stream, first, last, steps, f"{name} {stream} {first}-{last}{shown}", start_percent, end_percent)


def plan_rewrite(counts: dict[str, int], stream: str, text: str,
                 start_percent: float = 0.0, end_percent: float = 1.0) -> Rewrite | None:
    """The rewrite of a typed plan for a whole stream; None when it is the original order."""
    if stream not in STREAMS:
        raise PlanError(f"unknown stream {stream!r}: choose one of {', '.join(STREAMS)}")
    check_window(start_percent, end_percent)
    n_blocks = counts.get(stream, 0)
    steps = parse_steps(text, n_blocks, stream)
    if steps == identity(n_blocks):
        return None
    return Rewrite(stream, 0, n_blocks - 1, steps, f"plan {stream} = {text.strip()}", start_percent, end_percent)


# ------------------------------------------------------------------------------------ composition


def apply_rewrite(order: Steps, rewrite: Rewrite) -> Steps:
    run = tuple((i,) for i in span(rewrite.first, rewrite.last))
    width = len(run)
    found = [j for j in range(len(order) - width + 1) if order[j:j + width] == run]
    if len(found) != 1:
        where = "no longer run" if not found else "run more than once"
        raise PlanError(
            f"{rewrite.label}: blocks {rewrite.first}-{rewrite.last} of {rewrite.stream} {where} as an unbroken "
            f"run after the earlier nodes (order so far: {format_steps(order)}); a node only rewrites blocks "
            "that earlier nodes left in place. Write the combined order in one Layer Lab Plan node instead.")
    j = found[0]
    return order[:j] + tuple(rewrite.steps) + order[j + width:]


OrderCheck = Callable[[str, Steps, int], None]


@dataclass(frozen=True)
class LayerPlan:
    """All rewrites a model carries, with its block counts; the data the runtime reads."""

    family: str
    block_counts: tuple[tuple[str, int], ...]
    rewrites: tuple[Rewrite, ...] = ()
    # (stream, the model's own name of that block list) where it differs from the stream's name
    list_names: tuple[tuple[str, str], ...] = ()
    orders_by_active: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.block_counts)

    def with_rewrite(self, rewrite: Rewrite, check: OrderCheck | None = None) -> "LayerPlan":
        """A new plan with ``rewrite`` added last; every order it can produce is composed and checked now."""
        plan = LayerPlan(self.family, self.block_counts, self.rewrites + (rewrite,), self.list_names)
        for active in plan.possible_active_sets():
            plan.orders_by_active[active] = plan._changed(plan.compose(active, check))
        return plan

    def compose(self, active: frozenset[int], check: OrderCheck | None = None) -> dict[str, Steps]:
        """The order of every stream when the rewrites in ``active`` apply."""
        orders = {stream: identity(n) for stream, n in self.block_counts}
        for i, rewrite in enumerate(self.rewrites):
            if i in active:
                orders[rewrite.stream] = apply_rewrite(orders[rewrite.stream], rewrite)
        if check is not None:
            for stream, steps in orders.items():
                check(stream, steps, self.counts[stream])
        return orders

    def _changed(self, orders: dict[str, Steps]) -> dict[str, Steps]:
        return {s: steps for s, steps in orders.items() if steps != identity(self.counts[s])}

    def orders(self, active: frozenset[int]) -> dict[str, Steps]:
        """The streams whose order differs from the original when ``active`` apply (the runtime's view)."""
        orders = self.orders_by_active.get(active)
        if orders is None:
            orders = self.orders_by_active[active] = self._changed(self.compose(active))
        return orders

    def possible_active_sets(self) -> list[frozenset[int]]:
        """Every set of rewrites that can be active together: one per window boundary and gap."""
        cuts = self._cuts()
        points = cuts + [(a + b) / 2 for a, b in zip(cuts, cuts[1:])]
        return sorted({self.active_at(p) for p in points}, key=sorted)

    def _cuts(self) -> list[float]:
        return sorted({0.0, 1.0} | {p for r in self.rewrites for p in (r.start_percent, r.end_percent)})

    def active_at(self, percent: float) -> frozenset[int]:
        return frozenset(i for i, r in enumerate(self.rewrites) if r.active_at(percent))

    def active_at_sigma(self, sigma: float, percent_to_sigma: Callable[[float], float]) -> frozenset[int]:
        return frozenset(i for i, r in enumerate(self.rewrites) if r.active_at_sigma(sigma, percent_to_sigma))

    @property
    def all_active(self) -> frozenset[int]:
        return frozenset(range(len(self.rewrites)))

    @property
    def windowed(self) -> bool:
        return not all(r.always for r in self.rewrites)

    @property
    def order_changes_during_sampling(self) -> bool:
        """Whether windows make the executed order differ between parts of the schedule."""
        return self.windowed and len({tuple(sorted(self.compose(active).items()))
                                      for active in self.possible_active_sets()}) > 1

    def summary(self) -> str:
        names = dict(self.list_names)
        lines = [f"{self.family}: " + ", ".join(f"{s} ({names[s]}, {n})" if s in names else f"{s} {n}"
                                                for s, n in self.block_counts if n)]
        pieces = self._pieces() if self.windowed else [(0.0, 1.0, self.all_active)]
        for start, end, active in pieces:
            prefix = "" if not self.windowed else f"sampling {start:.0%}-{end:.0%}: "
            orders = self.compose(active)
            for stream, n in self.block_counts:
                if n:
                    lines.append(f"{prefix}{stream} = {format_steps(orders[stream], n)}")
        lines += [f"never applies (empty window at {r.start_percent:.0%}): {r.label}" for r in self.rewrites if r.never]
        return "\n".join(lines)

    def _pieces(self) -> Iterable[tuple[float, float, frozenset[int]]]:
        cuts = self._cuts()
        for a, b in zip(cuts, cuts[1:]):
            yield a, b, self.active_at((a + b) / 2)
