import pytest
from hypothesis import given, settings, strategies as st

from dit_layer_lab.core.plan import PlanError
from dit_layer_lab.core.selection import format_selection, parse_selection


@pytest.mark.parametrize("text, expected", [
    ("all", tuple(range(19))),
    ("ALL", tuple(range(19))),
    ("none", ()),
    ("3", (3,)),
    ("3-9", tuple(range(3, 10))),
    ("9-3", tuple(range(3, 10))),
    ("0-2, 17-18", (0, 1, 2, 17, 18)),
    (" 17-18 ,0-2 ", (0, 1, 2, 17, 18)),
    ("(1-2), 5", (1, 2, 5)),
    ("18", (18,)),
])
def test_selects_original_indices(text, expected):
    assert parse_selection(text, 19, "double_blocks") == expected


@pytest.mark.parametrize("text, token, position, fragment", [
    ("19", "19", 0, "block 19 is out of range: valid double_blocks indices are 0-18"),
    ("0-2, 17-19", "17-19", 5, "block 19 is out of range: valid double_blocks indices are 0-18"),
    ("[4-7]", "[", 0, "parallel groups '[...]' only mean something in a plan"),
    ("1, [4-7]*3", "[", 3, "parallel groups"),
    ("8*4", "*", 1, "repeats '*n' only mean something in a plan"),
    ("(3-5)*2", "*", 5, "repeats"),
    ("all*2", "*", 3, "repeats"),
    ("3, 2-4", "2-4", 3, "block 3 is selected twice"),
    ("all, 7", "7", 5, "block 7 is selected twice"),
    ("5-3, 3", "3", 5, "block 3 is selected twice"),
    ("", "", 0, "empty selection"),
    ("  ", "", 0, "empty selection"),
    ("1, x", "x", 3, "unknown word 'x'"),
    ("1;2", ";", 1, "unknown token ';'"),
    ("none, 1", ",", 4, "'none' stands alone"),
])
def test_errors_name_token_position_and_valid_range(text, token, position, fragment):
    with pytest.raises(PlanError) as caught:
        parse_selection(text, 19, "double_blocks")
    error = caught.value
    assert fragment in str(error)
    assert "valid double_blocks indices are 0-18" in str(error)
    assert (error.token, error.position) == (token, position)


def test_a_stream_the_model_lacks():
    assert parse_selection("all", 0, "single_blocks") == ()
    assert parse_selection("none", 0, "single_blocks") == ()
    with pytest.raises(PlanError, match="valid single_blocks indices are none: this model has no such blocks"):
        parse_selection("0", 0, "single_blocks")


def test_text_is_required():
    with pytest.raises(PlanError, match="a plan is text"):
        parse_selection(3, 19, "double_blocks")


@pytest.mark.parametrize("indices, text", [
    (range(19), "all"), ((), "none"), ((0, 1, 2, 17, 18), "0-2, 17-18"), ((5,), "5"), ((7, 3, 4), "3-4, 7"),
])
def test_format(indices, text):
    assert format_selection(indices, 19) == text


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1)))))
def test_format_parses_back(case):
    n, chosen = case
    assert parse_selection(format_selection(chosen, n), n, "single_blocks") == tuple(sorted(chosen))
