import pytest
import copy
import pickle

from hypothesis import given, settings, strategies as st

from dit_layer_lab.core.plan import (MAX_STEPS, Modified, PlanError, format_steps, identity, modified, parse_plan,
                                    parse_steps)


@pytest.mark.parametrize("text, expected", [
    ("all", [(i,) for i in range(6)]),
    ("none", []),
    ("3", [(3,)]),
    ("1-4", [(1,), (2,), (3,), (4,)]),
    ("4-1", [(4,), (3,), (2,), (1,)]),
    ("2*3", [(2,), (2,), (2,)]),
    ("(1-2)*2", [(1,), (2,), (1,), (2,)]),
    ("[1-3]", [(1, 2, 3)]),
    ("[1-3]*2", [(1, 2, 3), (1, 2, 3)]),
    ("[0, 2, 5]", [(0, 2, 5)]),
    ("[3]", [(3,)]),
    (" 0 ,1-2 ,\t[3-4]*2, 5 ", [(0,), (1,), (2,), (3, 4), (3, 4), (5,)]),
    ("((0-1)*2, 5)*2", [(0,), (1,), (0,), (1,), (5,)] * 2),
    ("ALL", [(i,) for i in range(6)]),
    ("all*2", [(i,) for i in range(6)] * 2),
])
def test_expands(text, expected):
    assert parse_steps(text, 6, "double_blocks") == tuple(expected)


@pytest.mark.parametrize("text, expected", [
    ("3@0.5", [Modified((3,), 0.5)]),
    ("3@0", []),
    ("3@-0", []),
    ("3@1", [(3,)]),
    ("3@1.0, 4:attn@1", [(3,), (4,)]),
    ("3:img@0, 4:txt@0", []),
    ("3@1.5, 4@-0.25", [Modified((3,), 1.5), Modified((4,), -0.25)]),
    ("3@.5", [Modified((3,), 0.5)]),
    ("1-2:attn", [Modified((1,), 0.0, "attn"), Modified((2,), 0.0, "attn")]),
    ("2:mlp@0.5", [Modified((2,), 0.5, "mlp")]),
    ("2@0.5:mlp", [Modified((2,), 0.5, "mlp")]),
    ("2:img, 3:txt@0.5", [Modified((2,), 1.0, "img"), Modified((3,), 0.5, "txt")]),
    ("[1-3]@0.5", [Modified((1, 2, 3), 0.5)]),
    ("[1-3]:attn*2", [Modified((1, 2, 3), 0.0, "attn")] * 2),
    ("(1, 3)@0.5*2", [Modified((1,), 0.5), Modified((3,), 0.5)] * 2),
    ("3 @ 0.5 : txt", [Modified((3,), 0.5, "txt")]),
    ("ALL:ATTN", [Modified((i,), 0.0, "attn") for i in range(6)]),
])
def test_modifiers_expand(text, expected):
    steps = parse_steps(text, 6, "double_blocks")
    assert steps == tuple(expected)
    assert [type(s) for s in steps] == [type(s) for s in expected]


def test_modified_steps_never_equal_plain_ones_and_survive_copies():
    step = Modified((3,), 0.5)
    assert step != (3,) and (3,) != step and step != Modified((3,), 0.5, "img")
    assert ((3,),) != (step,) and len({step, (3,)}) == 2
    assert copy.deepcopy(step) == step and pickle.loads(pickle.dumps(step)) == step
    assert (step.strength, step.part) == (0.5, "") and step[0] == 3 and len(step) == 1
    assert parse_steps("0-2, 3@1, 4-5", 6) == identity(6)


def test_leading_zeros_are_plain_integers():
    assert parse_steps("005", 6) == ((5,),)


def test_parse_needs_no_model_and_expands_per_stream():
    expr = parse_plan("0-2, [3-4]*2")
    assert expr.expand(5) == ((0,), (1,), (2,), (3, 4), (3, 4))
    with pytest.raises(PlanError, match="valid single_blocks indices are 0-3"):
        expr.expand(4, "single_blocks")


@pytest.mark.parametrize("text, token, position, fragment", [
    ("", "", 0, "empty plan"),
    ("   ", "", 0, "empty plan"),
    ("0-2,", "", 4, "expected a block index"),
    ("1, x", "x", 3, "unknown word 'x'"),
    ("1; 2", ";", 1, "unknown token ';'"),
    ("19", "19", 0, "block 19 is out of range"),
    ("2-25", "2-25", 0, "block 25 is out of range"),
    ("3*0", "0", 2, "repeat count 0"),
    ("(1-2", "", 4, "expected ',' or ')'"),
    ("1-2)", ")", 3, "expected ','"),
    ("[1-2", "", 4, "expected ']'"),
    ("[1,[2]]", "[", 3, "parallel group"),
    ("[1*2]", "*", 2, "repeats are not allowed inside"),
    ("[1, 1]", "1", 4, "appears twice"),
    ("none, 1", ",", 4, "'none' stands alone"),
    ("1, none", "none", 3, "'none' stands alone"),
    ("()", ")", 1, "expected a block inside"),
    ("1 2", "2", 2, "expected ','"),
    ("-1", "-", 0, "expected a block index"),
    ("1.5", "1.5", 0, "a block index is a whole number"),
    ("1 . 5", ".", 2, "unknown token '.'"),
    ("7@", "", 2, "expected a strength after '@'"),
    ("7@x", "x", 2, "unknown word 'x'"),
    ("7:", "", 2, "expected a part after ':'"),
    ("7:all", "all", 2, "expected a part after ':'"),
    ("7:attn:mlp", ":", 6, "one part per item"),
    ("7@0.5@1", "@", 5, "one strength per item"),
    ("[4@0.5, 5]", "@", 2, "carry no modifier"),
    ("[4, 5:attn]", ":", 5, "carry no modifier"),
    ("(3@0.5, 4)@0.5", "@", 2, "carries a modifier of its own"),
    ("((3:img)*2)@0.5", ":", 3, "carries a modifier of its own"),
    ("8*4@0.5", "@", 3, "a modifier goes before the repeat count"),
    ("attn", "attn", 0, "expected a block index"),
    ("7@19.5:attn, 25", "25", 13, "block 25 is out of range"),
])
def test_errors_name_token_position_and_valid_range(text, token, position, fragment):
    with pytest.raises(PlanError) as caught:
        parse_steps(text, 19, "double_blocks")
    error = caught.value
    assert fragment in str(error)
    assert (error.token, error.position) == (token, position)
    assert f"at position {position + 1}" in str(error)
    assert "valid double_blocks indices are 0-18" in str(error)


def test_step_limit_is_checked_before_expanding():
    with pytest.raises(PlanError, match=f"the limit is {MAX_STEPS}"):
        parse_steps("(0-18)*1000000000000", 19)


def test_nesting_limit():
    with pytest.raises(PlanError, match="nested deeper"):
        parse_steps("(" * 100 + "1" + ")" * 100, 19)


def test_stream_without_blocks():
    assert parse_steps("all", 0, "single_blocks") == ()
    with pytest.raises(PlanError, match="valid single_blocks indices are none"):
        parse_steps("0", 0, "single_blocks")


@pytest.mark.parametrize("steps, text", [
    (identity(5), "all"),
    ((), "none"),
    (((0,), (1,), (2,), (3, 4, 5), (3, 4, 5), (6,)), "0-2, [3-5]*2, 6"),
    (((4,), (4,), (4,)), "4*3"),
    (((6,), (5,), (4,)), "6-4"),
    (((0,), (1,), (2,), (1,), (0,)), "0-2, 1-0"),
    (((2,), (0,)), "2, 0"),
    ((Modified((1,), 0.5), Modified((2,), 0.5), (3,)), "1-2@0.5, 3"),
    ((Modified((3,), 0.0, "attn"), Modified((2,), 0.0, "attn"), Modified((1,), 0.0, "mlp")), "3-2:attn, 1:mlp"),
    ((Modified((1, 2), 0.25, "img"),) * 2, "[1-2]:img@0.25*2"),
    ((Modified((5,), 1.0, "txt"), Modified((6,), 1e-05)), "5:txt, 6@0.00001"),
])
def test_format(steps, text):
    assert format_steps(steps, 7 if steps != identity(5) else 5) == text


GRAMMAR_TEXT = st.text(alphabet="0123456789-*,()[] alnoe;.x@:", max_size=40)
# whole tokens of the language, so that modifiers and their combinations come up often
TOKENS = st.lists(st.sampled_from(["3", "12", "0", "-", "*", "2", ",", "(", ")", "[", "]", "all", "none", ":",
                                   "attn", "mlp", "img", "txt", "@", "0.5", ".25", "1", "1.0", "1.5", " ", "x"]),
                  max_size=24).map("".join)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(GRAMMAR_TEXT, TOKENS), st.integers(min_value=0, max_value=40))
def test_fuzz_any_text_parses_or_raises_plan_error(text, n_blocks):
    try:
        steps = parse_steps(text, n_blocks, "single_blocks")
    except PlanError as error:
        assert error.position is None or 0 <= error.position <= len(text)
        assert "valid single_blocks indices" in str(error)
    else:
        assert all(0 <= i < n_blocks for step in steps for i in step)
        assert all(type(step) is tuple or (step.strength, step.part) not in ((1.0, ""), (1.0, "attn"), (1.0, "mlp"))
                   for step in steps)
        assert parse_steps(format_steps(steps, n_blocks), n_blocks) == steps


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=30))
def test_fuzz_unicode_text(text):
    try:
        parse_steps(text, 10)
    except PlanError:
        pass


STRENGTHS = st.one_of(st.sampled_from([0.0, 0.5, 1.0, -0.25, 2.0]),
                      st.floats(allow_nan=False, allow_infinity=False, width=64))
PARTS = st.sampled_from(["", "attn", "mlp", "img", "txt"])


def _maybe_modified(step_strategy):
    plain = step_strategy
    changed = st.tuples(step_strategy, STRENGTHS, PARTS).map(lambda a: modified(*a)).filter(lambda s: s is not None)
    return st.one_of(plain, changed)


STEPS = st.integers(min_value=2, max_value=30).flatmap(lambda n: st.tuples(st.just(n), st.lists(
    _maybe_modified(st.one_of(st.tuples(st.integers(0, n - 1)),
                              st.lists(st.integers(0, n - 1), min_size=2, max_size=5, unique=True).map(tuple))),
    max_size=40)))


@settings(max_examples=1000, deadline=None)
@given(STEPS)
def test_format_round_trips(case):
    n_blocks, steps = case
    again = parse_steps(format_steps(tuple(steps), n_blocks), n_blocks)
    assert again == tuple(steps)
    assert [(getattr(s, "strength", 1.0), getattr(s, "part", "")) for s in again] == \
        [(getattr(s, "strength", 1.0), getattr(s, "part", "")) for s in steps]
