"""The strip's preview: what the route answers for plan, strategy and selection nodes (no ComfyUI needed)."""

import json

import pytest

from dit_layer_lab import server_routes
from dit_layer_lab.core.experiments.variant_lines import PlanLinesError, read_lines
from dit_layer_lab.core.preview import (DEFAULT_COUNTS, UI_KEY, UNKNOWN_NOTE, cells_of, model_blocks_ui, preview_lines, preview_plan,
                                        preview_selection, preview_strategy)
from dit_layer_lab.core.rewrite import LayerPlan


def kinds(stream):
    return [(c["kind"], c["label"]) for c in stream["cells"]]


def test_plan_cells_skipped_and_canonical_text():
    answer = preview_plan({"double_blocks": "0-2, [3-6]*2, 7*3, 12-9, 15-18", "single_blocks": "all"})
    assert answer["ok"] and answer["counts"] == {"double_blocks": 19, "single_blocks": 38}
    assert answer["counts_source"] == "default" and "Flux.1" in answer["note"]
    double, single = answer["streams"]
    assert kinds(double) == [("run", "0"), ("run", "1"), ("run", "2"), ("parallel", "[3-6]*2"), ("repeated", "7*3"),
                             ("reversed", "12"), ("reversed", "11"), ("reversed", "10"), ("reversed", "9"),
                             ("run", "15"), ("run", "16"), ("run", "17"), ("run", "18")]
    assert double["cells"][3] == {"blocks": [3, 4, 5, 6], "kind": "parallel", "count": 2, "label": "[3-6]*2",
                                 "modifier": None}
    assert double["cells"][4]["count"] == 3
    assert double["skipped"] == [8, 13, 14]
    assert double["plan"] == "0-2, [3-6]*2, 7*3, 12-9, 15-18" and double["changed"] and double["steps"] == 16
    assert single["plan"] == "all" and not single["changed"] and single["skipped"] == []
    assert kinds(single) == [("run", str(i)) for i in range(38)]


def test_the_answer_is_json():
    answer = preview_plan({"double_blocks": "[0-2]*3", "single_blocks": "x"})
    assert json.loads(json.dumps(answer)) == answer


def test_repeats_that_are_not_adjacent_and_moved_blocks():
    assert [c["kind"] for c in cells_of(((3,), (4,), (3,), (4,)))] == ["repeated"] * 4
    # 5 then 2: a jump back that is not part of a descending run
    assert [c["kind"] for c in cells_of(((0,), (5,), (2,), (3,)))] == ["run", "run", "moved", "run"]
    assert [c["kind"] for c in cells_of(((2,), (1,), (0,)))] == ["reversed"] * 3
    assert cells_of(()) == []


@pytest.mark.parametrize("text, position, token, fragment", [
    ("0-2, 19", 5, "19", "block 19 is out of range: valid double_blocks indices are 0-18"),
    ("0-2, [3-6]*2, 19", 14, "19", "block 19 is out of range"),
    ("0-4, 7 x", 7, "x", "unknown word 'x'"),
    ("1;2", 1, ";", "unknown token ';'"),
    ("8*0", 2, "0", "repeat count 0 must be at least 1"),
    ("[1, 1]", 4, "1", "block 1 appears twice in one parallel group"),
    ("(1-3", 4, "", "expected ',' or ')', found the end of the text"),
    ("", 0, "", "empty plan"),
    ("none, 1", 4, ",", "'none' stands alone"),
])
def test_errors_carry_the_token_and_its_position(text, position, token, fragment):
    answer = preview_plan({"double_blocks": text})
    assert not answer["ok"]
    (stream,) = answer["streams"]
    error = stream["error"]
    assert (error["position"], error["token"]) == (position, token)
    assert fragment in error["reason"] and fragment in error["message"]
    assert text[position:position + len(token)] == token
    assert "cells" not in stream


def test_a_plan_for_a_larger_model_says_so():
    error = preview_plan({"single_blocks": "0-3, 40-47"})["streams"][0]["error"]
    assert error["needs_blocks"] == 48
    assert "at least 48 single_blocks" in error["hint"] and "Flux.1 has 38" in error["hint"]
    # with the model's own counts it is a plain out-of-range error naming that model
    answer = preview_plan({"single_blocks": "0-3, 40-47"}, {"double_blocks": 8, "single_blocks": 48}, "Flux")
    assert answer["ok"] and answer["counts_source"] == "model" and answer["note"] is None
    error = preview_plan({"double_blocks": "0-9"}, {"double_blocks": 8, "single_blocks": 48}, "Flux")["streams"][0]["error"]
    assert error["needs_blocks"] == 10 and "this Flux model has 8" in error["hint"]
    # a syntax error is not about the model's size
    assert preview_plan({"double_blocks": "0-3 x"})["streams"][0]["error"]["needs_blocks"] is None


def test_model_counts_apply_the_family_rule():
    sd3 = {"double_blocks": 24, "single_blocks": 0}
    answer = preview_plan({"double_blocks": "23, 0-22", "single_blocks": "all"}, sd3, "SD3")
    double, single = answer["streams"]
    assert not double["ok"] and "SD3 joint block 23 is the last block" in double["error"]["message"]
    assert single["ok"] and single["blocks"] == 0 and single["cells"] == [] and single["plan"] == "none"
    # without a reported model the family is unknown: only the language's rules apply
    assert preview_plan({"double_blocks": "18, 0-17"})["ok"]


def test_streams_carry_the_model_s_own_list_names_once_a_model_has_reported():
    qwen = {"double_blocks": 60, "single_blocks": 0}
    double, single = preview_plan({"double_blocks": "0-59", "single_blocks": "all"}, qwen, "Qwen-Image")["streams"]
    assert double["list_name"] == "transformer_blocks" and single["list_name"] is None
    hidream = {"double_blocks": 16, "single_blocks": 32}
    answer = preview_lines("a: single_blocks=0-30", hidream, "HiDream")
    assert [s["list_name"] for s in answer["lines"][0]["streams"]] == ["double_stream_blocks", "single_stream_blocks"]
    selection = preview_selection({"double_blocks": "0-3", "single_blocks": "all"}, hidream, "HiDream")["streams"]
    assert [s["list_name"] for s in selection] == ["double_stream_blocks", "single_stream_blocks"]
    # Flux's lists have the pack's names; before a run (default counts) nothing is known
    assert [s["list_name"] for s in preview_plan({"double_blocks": "all"}, qwen, "Flux")["streams"]] == [None]
    assert [s["list_name"] for s in preview_plan({"double_blocks": "all"})["streams"]] == [None]


@pytest.mark.parametrize("strategy, params, expected", [
    ("skip", {}, ["0", "1", "2", "6", "7"]),
    ("reverse", {}, ["0", "1", "2", "5", "4", "3", "6", "7"]),
    ("repeat", {"layer": -1, "count": -1}, ["0", "1", "2", "4*3", "6", "7"]),
    ("repeat", {"layer": 7, "count": 2}, ["0", "1", "2", "7*2", "6", "7"]),
    ("parallel", {"loops": 4}, ["0", "1", "2", "[3-5]*4", "6", "7"]),
])
def test_strategies(strategy, params, expected):
    answer = preview_strategy(strategy, "double_blocks", 3, 5, params, {"double_blocks": 8, "single_blocks": 0}, "Flux")
    (stream,) = answer["streams"]
    assert [c["label"] for c in stream["cells"]] == expected
    assert "window" not in answer


def test_shuffle_is_the_node_s_permutation():
    import random

    order = [3, 4, 5, 6, 7]
    random.Random(11).shuffle(order)
    (stream,) = preview_strategy("shuffle", "single_blocks", 3, 7, {"seed": 11})["streams"]
    assert [c["blocks"][0] for c in stream["cells"]] == [0, 1, 2, *order, *range(8, 38)]


def test_strategy_errors_and_windows():
    (stream,) = preview_strategy("skip", "double_blocks", 5, 25)["streams"]
    assert not stream["ok"] and "last = 25 is out of range" in stream["error"]["message"]
    assert stream["error"]["position"] is None and stream["error"]["needs_blocks"] == 26
    (stream,) = preview_strategy("skip", "double_blocks", 6, 5)["streams"]
    assert "first = 6 is after last = 5" in stream["error"]["message"] and stream["error"]["needs_blocks"] is None
    (stream,) = preview_strategy("parallel", "double_blocks", 1, 2, {"loops": 0})["streams"]
    assert "loops = 0" in stream["error"]["message"]
    answer = preview_strategy("reverse", "double_blocks", 1, 2, {}, None, None, 0.2, 0.6)
    assert answer["ok"] and answer["window"] == [0.2, 0.6]
    assert answer["window_note"] == "from 20% of sampling up to 60%"
    empty = preview_strategy("reverse", "double_blocks", 1, 2, {}, None, None, 0.4, 0.4)
    assert empty["ok"] and empty["window_note"] == "never applies: start_percent = end_percent"
    assert not preview_strategy("reverse", "double_blocks", 1, 2, {}, None, None, 0.7, 0.6)["ok"]


def test_selection():
    answer = preview_selection({"double_blocks": "0-2, 17-18", "single_blocks": "none"})
    double, single = answer["streams"]
    assert double["selected"] == [0, 1, 2, 17, 18] and double["plan"] == "0-2, 17-18"
    assert [c["kind"] for c in double["cells"]] == ["selected"] * 3 + ["unselected"] * 14 + ["selected"] * 2
    assert single["selected"] == [] and single["plan"] == "none"
    for text, position, token in (("8*4", 1, "*"), ("[4-7]", 0, "["), ("3, 2-4", 3, "2-4")):
        error = preview_selection({"double_blocks": text, "single_blocks": "all"})["streams"][0]["error"]
        assert (error["position"], error["token"]) == (position, token)


def test_route_dispatches_by_node_type():
    texts = {"double_blocks": "3-5", "single_blocks": "all"}
    # without the model's counts the route invents none: they are unknown, and the request may say why
    assert server_routes.answer({"node_type": "LayerLabPlan", "inputs": texts}) == preview_plan(
        texts, unknown=UNKNOWN_NOTE)
    assert server_routes.answer({"node_type": "LayerLabLoraBlocks", "inputs": texts, "counts_unknown": "why"}) \
        == preview_selection(texts, unknown="why")
    assert server_routes.answer({"node_type": "LayerLabLoraBlocksSave", "inputs": texts}) == preview_selection(
        texts, unknown=UNKNOWN_NOTE)
    inputs = {"stream": "single_blocks", "first": 2, "last": 4, "layer": 3, "count": 2.0,
              "start_percent": 0, "end_percent": 1}
    counts = {"double_blocks": 4, "single_blocks": 6}
    assert server_routes.answer({"node_type": "LayerLabRepeat", "inputs": inputs, "counts": counts, "family": "Flux"}) \
        == preview_strategy("repeat", "single_blocks", 2, 4, {"layer": 3, "count": 2}, counts, "Flux")
    described = server_routes.describe()
    assert "default_counts" not in described
    assert described["nodes"]["LayerLabShuffle"]["inputs"] == ["stream", "first", "last", "seed", "start_percent",
                                                               "end_percent"]


@pytest.mark.parametrize("body, fragment", [
    ([], "JSON object"),
    ({"node_type": "KSampler", "inputs": {}}, "'KSampler' has no preview"),
    ({"node_type": "LayerLabPlan"}, "'inputs'"),
    ({"node_type": "LayerLabPlan", "inputs": {"double_blocks": "all"}}, "needs the inputs single_blocks"),
    ({"node_type": "LayerLabPlan", "inputs": {"double_blocks": 3, "single_blocks": "all"}}, "is text"),
    ({"node_type": "LayerLabSkip", "inputs": {"stream": "double_blocks", "first": 1.5, "last": 2,
                                              "start_percent": 0, "end_percent": 1}}, "whole number"),
    ({"node_type": "LayerLabPlan", "inputs": {"double_blocks": "all", "single_blocks": "all"},
      "counts": {"double_blocks": -1}}, "whole number from 0 to 1000"),
    ({"node_type": "LayerLabPlan", "inputs": {"double_blocks": "all", "single_blocks": "all"}, "counts": 19},
     "'counts'"),
    ({"node_type": "LayerLabPlan", "inputs": {"double_blocks": "all", "single_blocks": "all"},
      "counts": {"double_blocks": 1}, "counts_unknown": "why"}, "either 'counts' or 'counts_unknown'"),
    ({"node_type": "LayerLabPlan", "inputs": {"double_blocks": "all", "single_blocks": "all"},
      "counts_unknown": 3}, "why the block counts are unknown"),
])
def test_route_refuses_malformed_requests(body, fragment):
    with pytest.raises(server_routes.BadRequest, match=None) as raised:
        server_routes.answer(body)
    assert fragment in str(raised.value)


def test_unknown_stream_in_a_strategy_is_an_error_not_a_crash():
    answer = server_routes.answer({"node_type": "LayerLabSkip", "inputs": {
        "stream": "joint_blocks", "first": 0, "last": 1, "start_percent": 0, "end_percent": 1}})
    assert not answer["ok"] and "unknown stream 'joint_blocks'" in answer["streams"][0]["error"]["message"]


def test_nodes_report_their_model_s_block_counts():
    assert model_blocks_ui("SD3", {"double_blocks": 24}) == {
        UI_KEY: [{"family": "SD3", "counts": {"double_blocks": 24, "single_blocks": 0}}]}


# ------------------------------------------------------------------------------ plan grid lines

LINES = """\
# one variant per line
skip middle: double_blocks=0-2, 17-18

reverse single: single_blocks = 0-3, 33-4, 34-37   # a comment after the plan
too far: double_blocks=0-2, 19
typo: single_blocks=0-3 x; double_blocks=all
skip middle: double_blocks=1
parallel: double_blocks=[0-18]*2; single_blocks=0-36
"""


def entries(answer):
    return {entry["number"]: entry for entry in answer["lines"]}


def streams_of(entry):
    return {stream["stream"]: stream for stream in entry["streams"]}


def test_lines_give_each_line_s_cells_and_left_out_streams_run_as_usual():
    answer = preview_lines(LINES)
    assert [entry["number"] for entry in answer["lines"]] == [2, 4, 5, 6, 7, 8]  # comments and blank lines: none
    assert answer["counts_source"] == "default" and answer["streams"] == []
    skip = entries(answer)[2]
    assert skip["ok"] and skip["label"] == "skip middle" and skip["error"] is None
    double, single = skip["streams"]
    assert kinds(double) == [("run", "0"), ("run", "1"), ("run", "2"), ("run", "17"), ("run", "18")]
    assert double["skipped"] == list(range(3, 17)) and double["text"] == "0-2, 17-18" and double["changed"]
    # single_blocks is not on the line: the original order, shown as such
    assert single["text"] is None and not single["changed"] and single["plan"] == "all"
    assert kinds(single) == [("run", str(i)) for i in range(38)]
    reverse = streams_of(entries(answer)[4])
    assert not reverse["double_blocks"]["changed"] and reverse["single_blocks"]["text"] == "0-3, 33-4, 34-37"
    assert kinds(reverse["single_blocks"]) == ([("run", str(i)) for i in range(4)]
                                               + [("reversed", str(i)) for i in range(33, 3, -1)]
                                               + [("run", str(i)) for i in range(34, 38)])
    parallel = streams_of(entries(answer)[8])
    assert parallel["double_blocks"]["cells"] == [{"blocks": list(range(19)), "kind": "parallel", "count": 2,
                                                   "label": "[0-18]*2", "modifier": None}]
    assert parallel["single_blocks"]["skipped"] == [37]


def test_an_invalid_line_among_valid_ones_names_its_line_column_and_token():
    answer = preview_lines(LINES)
    assert not answer["ok"]
    lines = LINES.splitlines()
    expected = {5: ("19", "block 19 is out of range: valid double_blocks indices are 0-18"),
                6: ("x", "unknown word 'x'"),
                7: ("skip middle", "the label 'skip middle' is already used on line 2")}
    for number, (token, reason) in expected.items():
        entry = entries(answer)[number]
        assert not entry["ok"] and entry["streams"] == []
        error = entry["error"]
        assert error["line"] == number and error["token"] == token and reason in error["reason"]
        assert error["column"] == lines[number - 1].index(token) + 1  # 1-based, as an editor counts
        assert error["text"] == lines[number - 1] and f"line {number}, column {error['column']}" in error["message"]
    assert entries(answer)[5]["label"] == "too far"  # the syntax was fine: its label is known
    assert [n for n, entry in entries(answer).items() if entry["ok"]] == [2, 4, 8]


def test_lines_report_what_the_grid_node_reports():
    """The preview's errors are exactly those the node raises before sampling (read_lines)."""
    counts = {"double_blocks": 19, "single_blocks": 38}
    with pytest.raises(PlanLinesError) as raised:
        read_lines(LINES, LayerPlan("Flux", tuple(counts.items())))
    node = [(e.number, e.column, e.token, e.reason) for e in raised.value.errors]
    preview = [(e["error"]["line"], e["error"]["column"], e["error"]["token"], e["error"]["reason"])
               for e in preview_lines(LINES, counts, "Flux")["lines"] if not e["ok"]]
    assert preview == node


def test_lines_with_only_comments_and_blank_lines_run_the_baseline_alone():
    answer = preview_lines("# nothing yet\n\n   \n# still nothing")
    assert answer["ok"] and answer["lines"] == []
    assert preview_lines("")["lines"] == []


def test_lines_use_the_model_s_counts_and_family_rule():
    sd3 = {"double_blocks": 24, "single_blocks": 0}
    answer = preview_lines("ok: double_blocks=0-20, 23\nlast first: double_blocks=23, 0-22", sd3, "SD3")
    fine, bad = answer["lines"]
    assert [s["stream"] for s in fine["streams"]] == ["double_blocks"]  # SD3 has no single stream to show
    assert fine["streams"][0]["skipped"] == [21, 22]
    assert "SD3 joint block 23 is the last block" in bad["error"]["reason"]
    assert (bad["error"]["column"], bad["error"]["token"]) == (len("last first: double_blocks=") + 1, "23, 0-22")
    assert json.loads(json.dumps(answer)) == answer


def test_route_serves_the_plan_grid():
    inputs = {"plans": LINES}
    counts = {"double_blocks": 8, "single_blocks": 48}
    assert server_routes.answer({"node_type": "LayerLabPlanGrid", "inputs": inputs}) == preview_lines(
        LINES, unknown=UNKNOWN_NOTE)
    assert server_routes.answer({"node_type": "LayerLabPlanGrid", "inputs": inputs, "counts": counts,
                                 "family": "Flux"}) == preview_lines(LINES, counts, "Flux")
    assert server_routes.describe()["nodes"]["LayerLabPlanGrid"] == {"kind": "lines", "inputs": ["plans"]}
    assert server_routes.describe()["nodes"]["LayerLabPlanGuidance"] == {
        "kind": "plan", "inputs": ["double_blocks", "single_blocks"]}
    with pytest.raises(server_routes.BadRequest, match="'plans' is text"):
        server_routes.answer({"node_type": "LayerLabPlanGrid", "inputs": {"plans": 3}})


def test_block_counts_beyond_any_model_are_refused_quickly():
    # a huge count must not keep the server busy (tests/test_preview_limits.py has the other bounds)
    with pytest.raises(server_routes.BadRequest, match="from 0 to 1000"):
        server_routes.answer({"node_type": "LayerLabSkip", "counts": {"double_blocks": 10 ** 9, "single_blocks": 0},
                "inputs": {"stream": "double_blocks", "first": 0, "last": 1, "start_percent": 0.0,
                           "end_percent": 1.0}})


def test_modified_steps_are_shown_with_what_they_keep_and_strengths_outside_0_1_marked():
    answer = preview_plan({"double_blocks": "0-2, 3@0.5, 4:attn, 5:img@1.5, 6@0, [7-8]:mlp@0.5*2, 9-18"})
    double = answer["streams"][0]
    assert answer["ok"] and double["plan"] == "0-2, 3@0.5, 4:attn, 5:img@1.5, [7-8]:mlp@0.5*2, 9-18"
    cells = {c["label"]: c for c in double["cells"]}
    assert cells["0"]["modifier"] is None
    assert cells["3@0.5"]["modifier"] == {"part": None, "strength": 0.5, "outside": False,
                                          "words": "keeps 0.5 of its update"}
    assert cells["4:attn"]["modifier"]["words"] == "without its attention"
    assert cells["5:img@1.5"]["modifier"]["outside"] and "outside 0..1" in cells["5:img@1.5"]["modifier"]["words"]
    assert cells["[7-8]:mlp@0.5*2"]["kind"] == "parallel" and cells["[7-8]:mlp@0.5*2"]["count"] == 2
    assert cells["[7-8]:mlp@0.5*2"]["modifier"]["words"] == "its MLP at 0.5"
    assert double["skipped"] == [6]  # @0 does not run the block


def test_parts_a_reported_family_lacks_are_errors_in_the_strip():
    answer = preview_plan({"single_blocks": "0-3, 4:attn"}, {"double_blocks": 19, "single_blocks": 38}, "Flux")
    single = answer["streams"][0]
    assert not single["ok"] and "Flux single_blocks cannot do" in single["error"]["message"]
    answer = preview_plan({"single_blocks": "0:img"}, {"double_blocks": 0, "single_blocks": 4}, "Lumina2")
    assert "carry one sequence of text and image tokens" in answer["streams"][0]["error"]["message"]


# ------------------------------------------------------------------ block counts unknown (no model known)


def blocks_and_kinds(stream):
    return [(cell["blocks"], cell["kind"]) for cell in stream["cells"]]


def test_unknown_counts_invent_none_and_say_why():
    answer = preview_plan({"double_blocks": "0-2, 7", "single_blocks": "all"}, unknown="not a supported model: X")
    assert (answer["counts"], answer["family"], answer["counts_source"]) == (None, None, "unknown")
    assert answer["note"] == "not a supported model: X" and answer["ok"]
    double, single = answer["streams"]
    # explicit indices: the same order on any model, so drawn; which blocks are skipped is not known
    assert blocks_and_kinds(double) == [([0], "run"), ([1], "run"), ([2], "run"), ([7], "run")]
    assert double["blocks"] is None and double["skipped"] is None and not double["depends_on_counts"]
    # 'all' depends on the count: no cells
    assert single["ok"] and single["cells"] == [] and single["depends_on_counts"] and single["plan"] is None


def test_unknown_counts_still_check_the_plan_text():
    answer = preview_plan({"double_blocks": "0-2, 7 x", "single_blocks": "500"}, unknown=UNKNOWN_NOTE)
    double, single = answer["streams"]
    assert not answer["ok"] and not double["ok"] and double["error"]["token"] == "x"
    # no count is assumed, so a large index is no error and gets no "valid only for" hint
    assert single["ok"] and blocks_and_kinds(single) == [([500], "run")]


def test_unknown_counts_draw_an_order_only_where_no_count_changes_it():
    (stream,) = preview_plan({"double_blocks": "3-1"}, unknown=UNKNOWN_NOTE)["streams"]
    assert blocks_and_kinds(stream) == [([3], "reversed"), ([2], "reversed"), ([1], "reversed")]
    (stream,) = preview_plan({"double_blocks": "3, all"}, unknown=UNKNOWN_NOTE)["streams"]
    assert stream["ok"] and stream["cells"] == [] and stream["depends_on_counts"]


def test_unknown_counts_strategies_and_selections():
    answer = preview_strategy("skip", "single_blocks", 1, 2, unknown=UNKNOWN_NOTE)
    (stream,) = answer["streams"]
    assert answer["ok"] and stream["cells"] == [] and stream["depends_on_counts"]
    bad = preview_strategy("skip", "single_blocks", 5, 2, unknown=UNKNOWN_NOTE)
    assert not bad["ok"]
    double, single = preview_selection({"double_blocks": "1, 3", "single_blocks": "all"}, unknown=UNKNOWN_NOTE)["streams"]
    assert blocks_and_kinds(double) == [([1], "selected"), ([3], "selected")] and double["selected"] == [1, 3]
    assert single["ok"] and single["cells"] == [] and single["selected"] is None


def test_unknown_counts_plan_grid_lines():
    answer = preview_lines("a: double_blocks=0-2\nb: single_blocks=all*2\nc: double_blocks=1-x\n", unknown=UNKNOWN_NOTE)
    a, b, c = answer["lines"]
    assert answer["counts_source"] == "unknown" and not answer["ok"]
    double = next(s for s in a["streams"] if s["stream"] == "double_blocks")
    assert a["ok"] and blocks_and_kinds(double) == [([0], "run"), ([1], "run"), ([2], "run")]
    single = next(s for s in b["streams"] if s["stream"] == "single_blocks")
    assert b["ok"] and single["depends_on_counts"] and single["cells"] == []
    left_out = next(s for s in b["streams"] if s["stream"] == "double_blocks")  # the original order, whatever the count
    assert left_out["ok"] and left_out["changed"] is False and not left_out["depends_on_counts"]
    assert not c["ok"] and c["error"]["line"] == 3


def test_unknown_counts_check_at_most_the_largest_model_the_preview_takes():
    answer = preview_strategy("shuffle", "double_blocks", 0, 10 ** 15, {"seed": 1}, unknown=UNKNOWN_NOTE)
    assert not answer["ok"] and "out of range" in answer["streams"][0]["error"]["message"]
