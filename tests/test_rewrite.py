import pytest

from dit_layer_lab.core.families.sd3 import check_order as sd3_check
from dit_layer_lab.core.plan import PlanError, identity, parse_steps
from dit_layer_lab.core.rewrite import LayerPlan, plan_rewrite, strategy_rewrite

COUNTS = {"double_blocks": 19, "single_blocks": 38}


def flux_plan():
    return LayerPlan("Flux", tuple(COUNTS.items()))


def add(plan, *rewrites, check=None):
    for rewrite in rewrites:
        if rewrite is not None:
            plan = plan.with_rewrite(rewrite, check)
    return plan


def order(plan, stream="double_blocks"):
    return plan.compose(plan.all_active)[stream]


@pytest.mark.parametrize("name, params, expected", [
    ("skip", {}, "0-2, 7-18"),
    ("repeat", {}, "0-2, 4*4, 7-18"),
    ("repeat", {"layer": 10, "count": 2}, "0-2, 10*2, 7-18"),
    ("reverse", {}, "0-2, 6-3, 7-18"),
    ("parallel", {}, "0-2, [3-6], 7-18"),
    ("parallel", {"loops": 3}, "0-2, [3-6]*3, 7-18"),
])
def test_strategies(name, params, expected):
    plan = add(flux_plan(), strategy_rewrite(COUNTS, name, "double_blocks", 3, 6, **params))
    assert order(plan) == parse_steps(expected, 19)
    assert f"double_blocks = {expected}" in plan.summary()
    assert order(plan, "single_blocks") == identity(38)


def test_shuffle_is_a_seeded_permutation_of_the_range():
    orders = [order(add(flux_plan(), strategy_rewrite(COUNTS, "shuffle", "single_blocks", 4, 33, seed=s)),
                    "single_blocks") for s in (1, 1, 2)]
    assert orders[0] == orders[1] != orders[2]
    middle = orders[0][4:34]
    assert sorted(middle) == [(i,) for i in range(4, 34)] and middle != tuple((i,) for i in range(4, 34))
    assert orders[0][:4] == identity(4) and orders[0][34:] == tuple((i,) for i in range(34, 38))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"first": 3, "last": 19}, "last = 19 is out of range: valid double_blocks indices are 0-18"),
    ({"first": 7, "last": 3}, "first = 7 is after last = 3"),
    ({"first": 3, "last": 6, "layer": 40}, "block 40 is out of range"),
    ({"first": 3, "last": 6, "count": 0}, "count = 0"),
    ({"first": 3, "last": 6, "stream": "middle"}, "unknown stream 'middle'"),
    ({"first": 3, "last": 6, "start_percent": 0.8, "end_percent": 0.2}, "start_percent = 0.8"),
])
def test_strategy_errors(kwargs, fragment):
    args = {"name": "repeat", "stream": "double_blocks", **kwargs}
    with pytest.raises(PlanError, match=fragment.replace("(", r"\(")):
        strategy_rewrite(COUNTS, **args)


def test_stacked_nodes_compose_in_graph_order():
    plan = add(flux_plan(),
               plan_rewrite(COUNTS, "double_blocks", "0-2, [3-15]*3, 16-18"),
               strategy_rewrite(COUNTS, "skip", "double_blocks", 17, 18),
               strategy_rewrite(COUNTS, "reverse", "single_blocks", 0, 3),
               strategy_rewrite(COUNTS, "skip", "single_blocks", 10, 12))
    assert order(plan) == parse_steps("0-2, [3-15]*3, 16", 19)
    assert order(plan, "single_blocks") == parse_steps("3-0, 4-9, 13-37", 38)


@pytest.mark.parametrize("second", [
    ("reverse", 3, 6),  # the range was already rewritten
    ("skip", 2, 4),  # overlaps it
])
def test_rewriting_moved_blocks_is_refused(second):
    plan = add(flux_plan(), strategy_rewrite(COUNTS, "reverse", "double_blocks", 3, 6))
    with pytest.raises(PlanError, match=r"no longer run as an unbroken run .*order so far: 0-2, 6-3, 7-18"):
        add(plan, strategy_rewrite(COUNTS, second[0], "double_blocks", second[1], second[2]))


def test_a_typed_plan_over_a_changed_stream_is_refused():
    plan = add(flux_plan(), strategy_rewrite(COUNTS, "skip", "double_blocks", 3, 3))
    with pytest.raises(PlanError, match="blocks 0-18 of double_blocks no longer run"):
        add(plan, plan_rewrite(COUNTS, "double_blocks", "18-0"))


def test_ambiguous_range_is_refused():
    plan = add(flux_plan(), plan_rewrite(COUNTS, "double_blocks", "0-18, 5-6"))
    with pytest.raises(PlanError, match="run more than once"):
        add(plan, strategy_rewrite(COUNTS, "skip", "double_blocks", 5, 6))


def test_all_adds_no_rewrite():
    assert plan_rewrite(COUNTS, "double_blocks", "all") is None
    assert plan_rewrite(COUNTS, "double_blocks", "0-18") is None
    assert plan_rewrite({"double_blocks": 24, "single_blocks": 0}, "single_blocks", "none") is None


def test_windows_compose_per_piece_of_the_schedule():
    plan = add(flux_plan(),
               strategy_rewrite(COUNTS, "skip", "double_blocks", 3, 5, start_percent=0.0, end_percent=0.5),
               strategy_rewrite(COUNTS, "reverse", "double_blocks", 10, 12, start_percent=0.3, end_percent=1.0))
    assert plan.orders(plan.active_at(0.1)) == {"double_blocks": parse_steps("0-2, 6-18", 19)}
    assert plan.orders(plan.active_at(0.4)) == {"double_blocks": parse_steps("0-2, 6-9, 12-10, 13-18", 19)}
    assert plan.orders(plan.active_at(0.9)) == {"double_blocks": parse_steps("0-9, 12-10, 13-18", 19)}
    summary = plan.summary()
    assert "sampling 0%-30%: double_blocks = 0-2, 6-18" in summary
    assert "sampling 50%-100%: double_blocks = 0-9, 12-10, 13-18" in summary


def test_conflicts_are_found_only_where_windows_meet():
    first = strategy_rewrite(COUNTS, "reverse", "double_blocks", 3, 6, end_percent=0.4)
    later = strategy_rewrite(COUNTS, "skip", "double_blocks", 3, 6, start_percent=0.5)
    plan = add(flux_plan(), first, later)
    assert plan.orders(plan.active_at(0.2)) == {"double_blocks": parse_steps("0-2, 6-3, 7-18", 19)}
    assert plan.orders(plan.active_at(0.7)) == {"double_blocks": parse_steps("0-2, 7-18", 19)}
    overlapping = strategy_rewrite(COUNTS, "skip", "double_blocks", 3, 6, start_percent=0.3)
    with pytest.raises(PlanError):
        add(flux_plan(), first, overlapping)  # both active from 30% up to 40%


def test_windows_that_meet_do_not_overlap():
    # half-open, as ComfyUI's: [0, 0.5) then [0.5, 1]; at exactly 50% only the later one applies
    first = strategy_rewrite(COUNTS, "reverse", "double_blocks", 3, 6, end_percent=0.5)
    later = strategy_rewrite(COUNTS, "skip", "double_blocks", 3, 6, start_percent=0.5)
    plan = add(flux_plan(), first, later)
    assert plan.active_at(0.5) == frozenset({1})
    assert plan.orders(plan.active_at(0.49)) == {"double_blocks": parse_steps("0-2, 6-3, 7-18", 19)}
    assert plan.orders(plan.active_at(0.5)) == {"double_blocks": parse_steps("0-2, 7-18", 19)}
    to_sigma = lambda p: 1.0 - p  # noqa: E731
    assert plan.active_at_sigma(0.5, to_sigma) == frozenset({1})
    assert plan.active_at_sigma(0.5000001, to_sigma) == frozenset({0})


def test_a_zero_length_window_never_applies():
    empty = strategy_rewrite(COUNTS, "skip", "double_blocks", 3, 6, start_percent=0.4, end_percent=0.4)
    plan = add(flux_plan(), empty)
    to_sigma = lambda p: 1.0 - p  # noqa: E731
    assert all(plan.active_at(p) == frozenset() for p in (0.0, 0.39, 0.4, 0.41, 1.0))
    assert all(plan.active_at_sigma(s, to_sigma) == frozenset() for s in (1.0, 0.6, 0.59, 0.0))
    assert not plan.order_changes_during_sampling
    assert "never applies (empty window at 40%): skip double_blocks 3-6" in plan.summary()
    # an empty window cannot conflict with anything
    add(flux_plan(), empty, strategy_rewrite(COUNTS, "reverse", "double_blocks", 2, 8))


def test_active_at_sigma_follows_comfyui_ranges():
    plan = add(flux_plan(), strategy_rewrite(COUNTS, "skip", "double_blocks", 3, 5, start_percent=0.25, end_percent=0.5))
    to_sigma = lambda p: 1.0 - p  # noqa: E731  a flow model's schedule
    assert plan.active_at_sigma(0.9, to_sigma) == frozenset()
    assert plan.active_at_sigma(0.75, to_sigma) == frozenset({0})
    assert plan.active_at_sigma(0.5000001, to_sigma) == frozenset({0})
    assert plan.active_at_sigma(0.5, to_sigma) == frozenset()  # sigma(end) itself is outside
    assert plan.active_at_sigma(0.2, to_sigma) == frozenset()


def test_sd3_last_block_must_stay_last():
    sd3 = LayerPlan("SD3", (("double_blocks", 24), ("single_blocks", 0)))
    counts = sd3.counts
    add(sd3, strategy_rewrite(counts, "reverse", "double_blocks", 5, 20), check=sd3_check)
    add(sd3, plan_rewrite(counts, "double_blocks", "0-22"), check=sd3_check)
    for text in ("23-0", "0-23, 23", "0-21, [22-23]", "0-20, 23, 21-22"):
        with pytest.raises(PlanError, match="SD3 joint block 23 is the last block"):
            add(sd3, plan_rewrite(counts, "double_blocks", text), check=sd3_check)
    with pytest.raises(PlanError, match="SD3 joint block 23"):
        add(sd3, strategy_rewrite(counts, "reverse", "double_blocks", 20, 23), check=sd3_check)
