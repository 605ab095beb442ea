import pytest
from hypothesis import given, settings, strategies as st

from dit_layer_lab.core.experiments.variant_lines import (
    PlanLinesError, StreamPlan, check_lines, parse_lines, read_lines)
from dit_layer_lab.core.plan import PlanError, identity
from dit_layer_lab.core.rewrite import LayerPlan, strategy_rewrite

FLUX = LayerPlan("Flux", (("double_blocks", 19), ("single_blocks", 38)))
SD3 = LayerPlan("SD3", (("double_blocks", 24), ("single_blocks", 0)))


def errors_of(text, base=None):
    with pytest.raises(PlanLinesError) as caught:
        lines = parse_lines(text)
        check_lines(lines, base or FLUX)
    return caught.value.errors


def only_error(text, base=None):
    errors = errors_of(text, base)
    assert len(errors) == 1, errors
    return errors[0]


def test_lines_labels_and_plans():
    lines = parse_lines("skip middle: double_blocks=0-2, 17-18; single_blocks=0-3, 34-37\n"
                        "reverse: single_blocks = 0-3, 33-4, 34-37\n")
    assert [line.label for line in lines] == ["skip middle", "reverse"]
    assert [line.number for line in lines] == [1, 2]
    assert [(p.stream, p.text.strip()) for p in lines[0].plans] == [
        ("double_blocks", "0-2, 17-18"), ("single_blocks", "0-3, 34-37")]
    assert [(p.stream, p.text.strip()) for p in lines[1].plans] == [("single_blocks", "0-3, 33-4, 34-37")]


def test_blank_and_comment_lines_are_skipped_but_counted():
    text = "# a grid\n\n   \nskip: double_blocks=3-5   # inline comment\n\t# indented comment\nrev: single_blocks=5-3"
    lines = parse_lines(text)
    assert [(line.number, line.label) for line in lines] == [(4, "skip"), (6, "rev")]
    assert lines[0].plans[0].text.strip() == "3-5"


def test_nothing_but_comments_is_no_line():
    assert parse_lines("") == [] and parse_lines("# only the baseline\n\n") == []


def test_stream_names_ignore_case_and_spaces_and_a_trailing_semicolon():
    (line,) = parse_lines("  a :  Double_Blocks =3 ;SINGLE_BLOCKS= none ;  ")
    assert line.label == "a"
    assert [(p.stream, p.text.strip()) for p in line.plans] == [("double_blocks", "3"), ("single_blocks", "none")]


def test_plan_column_points_into_the_line():
    (line,) = parse_lines("ab: double_blocks= 3-5; single_blocks=7")
    for part in line.plans:
        assert line.text[part.column:part.column + len(part.text)] == part.text
    assert line.plans[0] == StreamPlan("double_blocks", " 3-5", 18)


def test_rewrites_for_a_model():
    (line,) = parse_lines("x: single_blocks=1-0; double_blocks=all")
    single, double = line.rewrites({"double_blocks": 2, "single_blocks": 2})
    assert double is None  # the original order changes nothing
    assert (single.stream, single.steps) == ("single_blocks", ((1,), (0,)))


@pytest.mark.parametrize("text, column, token, fragment", [
    ("bad: doubel_blocks=3", 6, "doubel_blocks", "unknown stream 'doubel_blocks': the streams are double_blocks, "
                                                 "single_blocks (did you mean double_blocks?)"),
    ("bad: singel_block=3", 6, "singel_block", "did you mean single_blocks?"),
    ("bad: joint_blocks=3", 6, "joint_blocks", "SD3's joint blocks are double_blocks"),
    ("bad: single_layers=3", 6, "single_layers", "AuraFlow's single_layers are single_blocks"),
    ("bad: blocks=3", 6, "blocks", "unknown stream 'blocks': the streams are double_blocks, single_blocks"),
    ("bad: =3", 6, "", "no stream name before '='"),
    ("bad: 3-5", 6, "3-5", "expected stream=plan, found '3-5'"),
    ("double_blocks=3-5", 1, "double_blocks=3-5", "no ':' after a label (every line starts with its label)"),
    ("   just words", 4, "just words", "no ':' after a label; expected 'label: double_blocks=<plan>"),
    ("  : double_blocks=3", 3, ":", "the label before ':' is empty"),
    ("a:", 2, ":", "no plan after ':'"),
    ("a: ;  # nothing", 2, ":", "no plan after ':'"),
    ("a: double_blocks=1; double_blocks=2", 21, "double_blocks", "double_blocks is given twice in this line "
                                                                 "(first at column 4)"),
    ("a: double_blocks=", 18, "", "double_blocks: empty plan"),
    ("a: double_blocks=3*0", 20, "0", "double_blocks: repeat count 0 must be at least 1"),
    ("a: double_blocks=3, x", 21, "x", "double_blocks: unknown word 'x'"),
    ("a: single_blocks=[1-2", 22, "", "single_blocks: expected ']'"),
    ("a: double_blocks=3-5, single_blocks=4", 23, "single_blocks", "separate the streams with ';'"),
    ("a: double_blocks=3-5, joint_blocks=4", 23, "joint_blocks", "separate the streams with ';'"),
    # range errors need the model's block counts (check_lines)
    ("a: double_blocks=0-2, 19", 23, "19", "block 19 is out of range: valid double_blocks indices are 0-18"),
    ("a: single_blocks= 30-40", 19, "30-40", "block 40 is out of range: valid single_blocks indices are 0-37"),
    ("a: single_blocks=[1, 1]", 22, "1", "block 1 appears twice in one parallel group"),
    ("a: double_blocks=all*5000", 18, "all*5000", "runs 95000 steps of double_blocks; the limit is 10000"),
])
def test_errors_name_line_column_token_and_choices(text, column, token, fragment):
    error = only_error("# header\n\n" + text)
    assert (error.number, error.column, error.token) == (3, column, token)
    assert fragment in error.reason, error.reason
    if token:
        assert text[column - 1:column - 1 + len(token)] == token
    assert f"line 3, column {column}: " in str(error) and repr(text.split("#")[0].strip())[1:-1] in str(error)


def test_every_bad_line_is_reported_at_once_with_its_number():
    with pytest.raises(PlanLinesError) as caught:
        parse_lines("ok: double_blocks=1\nbad: doubel_blocks=1\nok2: single_blocks=2\nworse: double_blocks=1-\n")
    assert [e.number for e in caught.value.errors] == [2, 4]
    message = str(caught.value)
    assert message.startswith("plans: 2 invalid lines")
    assert "line 2, column 6: unknown stream 'doubel_blocks'" in message
    assert "line 4, column 24: double_blocks: expected the end of the range" in message


def test_range_errors_of_every_line_are_reported_together():
    lines = parse_lines("a: double_blocks=19\nb: double_blocks=1\nc: single_blocks=38")
    with pytest.raises(PlanLinesError) as caught:
        check_lines(lines, FLUX)
    assert [(e.number, e.token) for e in caught.value.errors] == [(1, "19"), (3, "38")]


def test_read_lines_reports_syntax_and_range_errors_together_in_line_order():
    with pytest.raises(PlanLinesError) as caught:
        read_lines("a: double_blocks=19\nb: doubel_blocks=1\nc: single_blocks=2\nd: single_blocks=38", FLUX)
    assert [(e.number, e.token) for e in caught.value.errors] == [(1, "19"), (2, "doubel_blocks"), (4, "38")]
    (line, plan), = read_lines("c: single_blocks=2", FLUX)
    assert line.label == "c" and plan.compose(plan.all_active)["single_blocks"] == ((2,),)


@pytest.mark.parametrize("label", ["baseline", "Baseline", " BASELINE "])
def test_baseline_label_is_reserved(label):
    error = only_error(f"{label}: double_blocks=all")
    assert error.column == 1 + len(label) - len(label.lstrip())
    assert "the label" in error.reason and "is reserved" in error.reason and "always the first" in error.reason


def test_labels_are_unique_ignoring_case():
    error = only_error("Skip: double_blocks=3\nother: double_blocks=4\n  skip : single_blocks=1")
    assert (error.number, error.column, error.token) == (3, 3, "skip")
    assert "already used on line 1" in error.reason


def test_a_hash_always_starts_a_comment():
    # so a label cannot contain '#': the rest of the line is a comment and the line has no ':'
    error = only_error("skip #3: double_blocks=3")
    assert "no ':' after a label" in error.reason


def test_lines_compose_onto_what_the_model_carries():
    skipped = FLUX.with_rewrite(strategy_rewrite(FLUX.counts, "skip", "double_blocks", 3, 5))
    lines = parse_lines("s: single_blocks=1-0, 2-37\nd: double_blocks=all")
    single, unchanged = check_lines(lines, skipped)
    assert single.compose(single.all_active) == {
        "double_blocks": tuple((i,) for i in [0, 1, 2, *range(6, 19)]),
        "single_blocks": ((1,), (0,), *((i,) for i in range(2, 38)))}
    assert unchanged == skipped
    assert skipped.rewrites[0].stream == "double_blocks" and len(skipped.rewrites) == 1  # base untouched


def test_a_plan_that_conflicts_with_what_the_model_carries_is_refused_with_its_line():
    skipped = FLUX.with_rewrite(strategy_rewrite(FLUX.counts, "skip", "double_blocks", 3, 5))
    error = only_error("ok: single_blocks=3\nfull: double_blocks= 0-2, 6-18", skipped)
    assert (error.number, error.column, error.token) == (2, 22, "0-2, 6-18")
    assert "no longer run as an unbroken run" in error.reason and "order so far: 0-2, 6-18" in error.reason


def test_the_family_rule_is_checked_per_line():
    def last_block_stays_last(stream, steps, n_blocks):
        if steps and steps[-1] != (n_blocks - 1,) and any(n_blocks - 1 in step for step in steps):
            raise PlanError(f"{stream}: block {n_blocks - 1} must run last")

    lines = parse_lines("fine: double_blocks=0-10, 23\nbad: double_blocks=23, 0-22")
    with pytest.raises(PlanLinesError) as caught:
        check_lines(lines, SD3, last_block_stays_last)
    (error,) = caught.value.errors
    assert (error.number, error.column, error.token) == (2, 20, "23, 0-22")
    assert "block 23 must run last" in error.reason


def test_a_stream_the_model_lacks():
    assert check_lines(parse_lines("a: single_blocks=all; double_blocks=1"), SD3)[0].compose(frozenset({0})) == {
        "double_blocks": ((1,),), "single_blocks": identity(0)}
    error = only_error("a: single_blocks=0", SD3)
    assert (error.column, error.token) == (18, "0")
    assert "valid single_blocks indices are none: this model has no such blocks" in error.reason


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab: =;#\n-,*[]()0123456789") + ["double_blocks", "single_blocks",
                                                                       "all", "none", "baseline"]),
                max_size=40).map("".join))
def test_any_text_is_lines_or_a_clear_error(text):
    try:
        lines = parse_lines(text)
        check_lines(lines, FLUX)
    except PlanLinesError as error:
        for e in error.errors:
            assert e.number >= 1 and e.column >= 1 and e.reason
            raw = text.splitlines()[e.number - 1]
            assert e.column <= len(raw) + 1
            if e.token:
                assert raw[e.column - 1:e.column - 1 + len(e.token)] == e.token


def test_lines_take_strengths_and_parts_after_the_label_colon():
    from dit_layer_lab.core.experiments.variant_lines import parse_lines
    from dit_layer_lab.core.plan import Modified, parse_steps

    (line,) = parse_lines("half of 7: double_blocks=0-6, 7@0.5, 8-18; single_blocks=0-2:attn, 3-37\n")
    assert line.label == "half of 7"
    texts = {part.stream: part.text for part in line.plans}
    assert parse_steps(texts["double_blocks"], 19)[7] == Modified((7,), 0.5)
    assert parse_steps(texts["single_blocks"], 38)[0] == Modified((0,), 0.0, "attn")
