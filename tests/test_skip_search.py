"""The skip search's logic on a fake evaluator, against brute-force references written here."""

import itertools
import json
import math
import random

import pytest

from dit_layer_lab.core.experiments.skip_search import (Refused, SearchError, Target, build_report, check_target,
                                                        combined_plan, evaluation_bound, search, to_json)
from dit_layer_lab.core.experiments.sweep import Excluded, Window
from dit_layer_lab.core.plan import parse_steps
from dit_layer_lab.core.rewrite import LayerPlan

METRIC = "latent_cosine"


def units(double=0, single=6):
    return ([Window("double_blocks", i, i) for i in range(double)]
            + [Window("single_blocks", i, i) for i in range(single)])


class Fake:
    """Distance of a set: the sum of its units' own costs plus a cost for each pair (and any extra terms)."""

    def __init__(self, units, seed=0, interaction=0.5, extra=None):
        rng = random.Random(seed)
        self.units = list(units)
        self.single = {u: rng.uniform(0.1, 1.0) for u in self.units}
        self.pair = {frozenset(p): rng.uniform(-interaction, interaction) * 0.3
                     for p in itertools.combinations(self.units, 2)}
        self.extra = extra or {}
        self.calls = []

    def distance(self, chosen) -> float:
        chosen = frozenset(chosen)
        value = sum(self.single[u] for u in chosen)
        value += sum(v for p, v in self.pair.items() if p <= chosen)
        value += sum(v for s, v in self.extra.items() if frozenset(s) <= chosen)
        return value

    def __call__(self, chosen):
        self.calls.append(chosen)
        d = self.distance(chosen)
        return {METRIC: d, "latent_rel_l2": 2 * d}


def run(fake, metric=METRIC, **target):
    return search(fake.units, metric, Target(**{"budget": 10_000, **target}), fake)


def reference_greedy(fake, k_max):
    """Greedy written out: at each size add the unit that gives the closest set (ties: unit order), then
    compare with the k individually safest units measured together, and go on from the closer."""
    singles = sorted(fake.units, key=lambda u: (fake.distance({u}), fake.units.index(u)))
    kept, path = frozenset(), []
    for k in range(1, k_max + 1):
        options = [kept | {u} for u in fake.units if u not in kept]
        best = min(options, key=fake.distance)  # min keeps the first of equal values
        top = frozenset(singles[:k])
        kept = top if fake.distance(top) < fake.distance(best) else best
        path.append(kept)
    return path


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("interaction", [0.0, 1.0, 4.0])
def test_greedy_picks_what_greedy_written_out_picks(seed, interaction):
    fake = Fake(units(double=3, single=5), seed, interaction)
    result = run(fake, blocks=6)
    expected = reference_greedy(fake, 6)
    assert [frozenset(r.kept.skip) for r in result.rounds] == expected
    assert frozenset(result.skip) == expected[-1] and result.stop == "target"
    # every evaluation is the set it names, measured as a whole, once
    assert len(fake.calls) == len(set(map(frozenset, fake.calls))) == len(result.evaluations)
    for e in result.evaluations:
        assert e.distances[METRIC] == fake.distance(e.skip)
        assert list(e.skip) == sorted(e.skip, key=fake.units.index)


@pytest.mark.parametrize("seed", range(6))
def test_a_beam_as_wide_as_every_set_is_exhaustive_search(seed):
    fake = Fake(units(single=7), seed, interaction=3.0)
    widest = max(math.comb(7, k) for k in range(8))
    result = run(fake, blocks=7, strategy="beam", width=widest)
    for r in result.rounds:
        sets = [frozenset(c) for c in itertools.combinations(fake.units, r.k)]
        assert fake.distance(r.kept.skip) == min(map(fake.distance, sets))
        measured = {frozenset(e.skip) for e in result.evaluations if e.removed == r.k}
        assert measured == set(sets)  # every set of that size, each once


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("strategy, width", [("greedy", 1), ("beam", 2), ("beam", 4)])
def test_at_every_size_the_kept_set_is_no_farther_than_the_top_k_suggestion(seed, strategy, width):
    fake = Fake(units(double=2, single=6), seed, interaction=4.0)
    result = run(fake, blocks=8, strategy=strategy, width=width)
    singles = sorted(fake.units, key=lambda u: (fake.distance({u}), fake.units.index(u)))
    assert [r.k for r in result.rounds] == list(range(1, 9))
    for r in result.rounds:
        assert frozenset(r.top_k.skip) == frozenset(singles[:r.k])
        assert r.kept.distances[METRIC] <= r.top_k.distances[METRIC]
        assert r.kept.distances[METRIC] <= r.search.distances[METRIC]
        assert r.won == ("same" if r.top_k is r.search else "top_k" if r.kept is r.top_k else "search")
        assert len(r.beam) <= width and r.beam[0] is r.kept


def test_the_top_k_suggestion_wins_and_the_search_continues_from_it():
    us = units(single=5)
    a, b, c, d, e = us
    # singles a < b < c < d < e; a pair of a with b or c costs 10, but all three together cost almost nothing
    fake = Fake(us, interaction=0.0, extra={(a, b): 10.0, (a, c): 10.0, (a, b, c): -25.0})
    fake.single = dict(zip(us, [1.0, 2.0, 3.0, 4.0, 5.0]))
    result = run(fake, blocks=4)
    wins = [r.won for r in result.rounds]
    assert wins == ["same", "search", "top_k", "same"]  # size 4: top-4 is a candidate grown from top-3
    assert frozenset(result.rounds[1].kept.skip) == {a, d}
    assert frozenset(result.rounds[2].kept.skip) == {a, b, c} and result.rounds[2].top_k.role == "top_k"
    # size 4 grows from the kept top-3 set, not from the search's own size-3 set
    size4 = [ev for ev in result.evaluations if ev.step == 4]
    assert {frozenset(ev.skip) for ev in size4} == {frozenset({a, b, c, d}), frozenset({a, b, c, e})}
    assert all(ev.parent == result.rounds[2].kept.index for ev in size4 if ev.role == "candidate")


def test_budget_stops_after_the_last_complete_size():
    fake = Fake(units(single=6), seed=3, interaction=2.0)
    full = run(fake, blocks=4)
    used = len(full.evaluations)
    assert evaluation_bound(6, Target(blocks=4, budget=10_000)) >= used
    exact = search(fake.units, METRIC, Target(blocks=4, budget=used), Fake(units(single=6), seed=3, interaction=2.0))
    assert exact.stop == "target" and exact.skip == full.skip
    short = search(fake.units, METRIC, Target(blocks=4, budget=used - 1), Fake(units(single=6), seed=3,
                                                                               interaction=2.0))
    assert short.stop == "budget" and "budget of %d evaluations" % (used - 1) in short.message
    assert len(short.evaluations) == used - 1
    assert [r.kept.skip for r in short.rounds] == [r.kept.skip for r in full.rounds[:3]]
    assert short.skip == full.rounds[2].kept.skip
    tiny = search(fake.units, METRIC, Target(blocks=4, budget=3), Fake(units(single=6)))
    assert tiny.stop == "budget" and tiny.final is None and tiny.skip == () and len(tiny.evaluations) == 3


def test_max_distance_stops_before_the_first_size_beyond_it():
    fake = Fake(units(single=6), seed=1, interaction=1.0)
    free = run(fake, blocks=6)
    limit = (free.rounds[2].kept.distances[METRIC] + free.rounds[3].kept.distances[METRIC]) / 2
    assert free.rounds[2].kept.distances[METRIC] < limit < free.rounds[3].kept.distances[METRIC]
    result = run(fake, max_distance=limit)
    assert result.stop == "max_distance" and result.skip == free.rounds[2].kept.skip
    assert [r.accepted for r in result.rounds] == [True, True, True, False]
    # below every single skip: nothing is removed
    nothing = run(fake, max_distance=min(fake.single.values()) / 2)
    assert nothing.final is None and nothing.stop == "max_distance" and len(nothing.rounds) == 1
    # with both, the first to be reached stops it
    assert run(fake, blocks=2, max_distance=limit).stop == "target"


def test_every_unit_removed_and_evaluation_bound_for_greedy():
    fake = Fake(units(single=4), seed=2)
    result = run(fake, max_distance=1e9)
    assert result.stop == "all_removed" and len(result.skip) == 4
    assert evaluation_bound(4, Target(max_distance=1.0, budget=10_000)) == 4 + (3 + 1) + (2 + 1) + (1 + 1)
    assert len(result.evaluations) <= 13
    assert evaluation_bound(4, Target(max_distance=1.0, budget=5)) == 5
    assert evaluation_bound(5, Target(blocks=5, budget=10_000, strategy="beam", width=100)) == \
        sum(math.comb(5, k) for k in range(1, 6)) + 4


def test_refused_sets_are_reported_and_not_counted():
    us = units(single=4)

    class Refusing(Fake):
        def __call__(self, chosen):
            if us[0] in chosen and us[1] in chosen:
                raise Refused("blocks 0 and 1 cannot both go")
            return super().__call__(chosen)

    fake = Refusing(us, seed=4)
    fake.single = dict(zip(us, [0.1, 0.2, 0.5, 0.6]))
    result = run(fake, blocks=3)
    assert all(not (us[0] in e.skip and us[1] in e.skip) for e in result.evaluations)
    assert {frozenset(s) for s, _ in result.refused} >= {frozenset(us[:2])}
    assert all(reason == "blocks 0 and 1 cannot both go" for _, reason in result.refused)
    assert result.rounds[1].top_k is None and "cannot run it" in result.rounds[1].top_k_note


def test_a_broken_result_ranks_last_and_stops_the_search_when_nothing_else_is_left():
    us = units(single=3)

    def evaluate(chosen):
        return {METRIC: math.nan if us[0] in chosen else 0.1 * len(chosen)}

    result = search(us, METRIC, Target(blocks=3, budget=100), evaluate)
    assert result.rounds[0].kept.skip == (us[1],)
    assert result.rounds[0].top_k.skip == (us[1],)
    assert result.rounds[2].top_k is None and "only 2 single skips" in result.rounds[2].top_k_note
    assert result.stop == "no_finite" and result.skip == (us[1], us[2])


@pytest.mark.parametrize("target, n, message", [
    (Target(blocks=0, max_distance=0.0), 4, "blocks = 0 and max_distance = 0"),
    (Target(blocks=5), 4, "blocks = 5, but only 4 can be removed from the swept streams; choose 1-4"),
    (Target(blocks=-1), 4, "blocks = -1"),
    (Target(blocks=1, max_distance=-0.5), 4, "max_distance = -0.5"),
    (Target(blocks=1, budget=0), 4, "budget = 0"),
    (Target(blocks=1, strategy="random"), 4, "unknown strategy 'random': choose one of greedy, beam"),
    (Target(blocks=1, strategy="beam", width=0), 4, "beam_width = 0"),
    (Target(blocks=1), 0, "every swept block is excluded"),
])
def test_bad_targets_are_refused_with_the_value_and_the_choices(target, n, message):
    with pytest.raises(SearchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_target(target, n)


def test_an_evaluation_without_the_metric_is_an_error():
    with pytest.raises(SearchError, match="not the metric 'image_cosine'"):
        search(units(single=2), "image_cosine", Target(blocks=1), lambda s: {METRIC: 0.5})


def test_the_combined_plan_and_the_report():
    base = LayerPlan("Flux", (("double_blocks", 4), ("single_blocks", 6)))
    chosen = [Window("double_blocks", 1, 1), Window("single_blocks", 2, 2), Window("single_blocks", 5, 5)]
    plan = combined_plan(base, chosen)
    orders = plan.compose(plan.all_active)
    assert orders["double_blocks"] == parse_steps("0, 2-3", 4)
    assert orders["single_blocks"] == parse_steps("0-1, 3-4", 6)
    attn = combined_plan(base, [Window("double_blocks", 2, 2, "attn"), Window("double_blocks", 3, 3)])
    assert attn.compose(attn.all_active)["double_blocks"] == parse_steps("0-1, 2:attn@0", 4)

    fake = Fake(units(double=4, single=6), seed=5)
    target = Target(blocks=3, budget=1000)
    result = search(fake.units, METRIC, target, fake)
    excluded = [Excluded(Window("double_blocks", 9, 9), "why")]
    report = json.loads(to_json(build_report(
        family="Flux", counts=base.counts, streams=["double_blocks", "single_blocks"], granularity="block",
        mode="fast", metric=METRIC, target=target, result=result, base=base, excluded=excluded,
        full={"distances": {METRIC: 0.25}}, settings={"seed": 1})))
    assert len(report["evaluations"]) == len(result.evaluations)
    first = report["evaluations"][0]
    assert first["skip"] == [{"stream": "double_blocks", "blocks": "0"}] and first["blocks_removed"] == 1
    assert first["plan"] == {"double_blocks": "1-3", "single_blocks": "all"} and first["mode"] == "fast"
    assert [p["blocks_removed"] for p in report["path"]] == [1, 2, 3]
    assert report["stop"]["reason"] == "target"
    kept = [w for w in result.skip]
    assert report["result"]["blocks_removed"] == 3
    assert report["result"]["skip"] == [{"stream": w.stream, "blocks": w.label} for w in kept]
    assert report["result"]["full"] == {"distances": {METRIC: 0.25}}
    assert report["excluded"] == [{"stream": "double_blocks", "blocks": "9", "reason": "why"}]


@pytest.mark.parametrize("mode", ["fast", "full"])
def test_the_chart_shows_the_kept_path_the_top_k_plans_and_the_full_re_run(mode):
    import numpy as np

    from dit_layer_lab.core.experiments import bar_chart as bc
    from dit_layer_lab.core.experiments import line_chart as lc
    from dit_layer_lab.core.experiments.skip_search import chart_panel

    fake = Fake(units(double=3, single=6), seed=2, interaction=4.0)
    result = run(fake, blocks=5, max_distance=10.0)
    result.rounds[-1].kept.distances[METRIC] = math.inf  # every legend entry: a broken result too
    full = {"distances": {METRIC: 0.5}}
    p = chart_panel(result, METRIC, mode, full, Target(blocks=5, max_distance=0.25, budget=1000), "Flux",
                    "fast, one evaluation at 50% of the schedule (sigma 0.76)")
    kept, top, *final = p.series
    fast = mode == "fast"
    assert kept.points == (lc.Point(0, 0.0, fast),) + tuple(
        lc.Point(r.k, r.kept.distances[METRIC], fast) for r in result.rounds)
    assert top.points == tuple(lc.Point(r.k, r.top_k.distances[METRIC], fast) for r in result.rounds)
    assert [s.points for s in final] == ([(lc.Point(5, 0.5),)] if fast else [])
    assert p.x_max == 5 and p.threshold == 0.25
    image = np.asarray(lc.render(p))
    legend = image[40:64]
    assert (legend[:, -6:] == 255).all(), "the legend runs off the chart"
    assert (legend[:, bc.LEFT:] != 255).any()
