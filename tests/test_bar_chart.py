"""The sweep's bar chart, checked pixel by pixel against its documented layout."""

import math

import numpy as np
import pytest

from dit_layer_lab.core.experiments import bar_chart as bc
from dit_layer_lab.core.experiments.bar_chart import BarPanel, axis_top, bar_box, nice_step, render, to_array


def pixels(panels):
    return np.asarray(render(panels))


def panel(values, highlighted=(), threshold=None, labels=None):
    return BarPanel("title", "subtitle", labels or [str(i) for i in range(len(values))], values,
                    frozenset(highlighted), threshold)


def test_image_size_and_float_layout():
    panels = [panel([0.1, 0.2]), panel([0.3] * 38)]
    image = render(panels)
    assert image.size == (bc.PANEL_W, 2 * bc.PANEL_H)
    array = to_array(image)
    assert array.shape == (2 * bc.PANEL_H, bc.PANEL_W, 3) and array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0
    assert np.array_equal(np.round(array * 255).astype(np.uint8), np.asarray(image))


@pytest.mark.parametrize("n", [1, 4, 19, 38, 200])
def test_bars_rise_from_zero_to_their_value_in_their_colour(n):
    values = [(i % 7) / 10 + 0.05 for i in range(n)]
    highlighted = {0, n // 2}
    p = panel(values, highlighted)
    image = pixels([p, p])
    hi = axis_top(values)
    for index in (0, 1):
        for bar, value in enumerate(values):
            left, top, right, bottom = bar_box(index, p, bar)
            assert bottom == index * bc.PANEL_H + bc.TOP + bc.PLOT_H - 1
            assert bottom - top + 1 == max(1, round(value / hi * bc.PLOT_H))
            colour = bc.HIGHLIGHT if bar in highlighted else bc.BAR
            assert (image[top:bottom + 1, left:right + 1] == colour).all(), (index, bar)
            assert (image[top - 1, left:right + 1] != colour).any() or bar in highlighted


def test_bars_do_not_touch_their_neighbours():
    p = panel([0.5] * 19)
    image = pixels([p])
    boxes = [bar_box(0, p, i) for i in range(19)]
    for a, b in zip(boxes, boxes[1:]):
        assert a[2] < b[0] - 1
        gap = image[a[1]:a[3] + 1, a[2] + 1:b[0]]
        assert not (gap == bc.BAR).all(axis=-1).any()


def test_highlighted_bars_get_a_marker_even_at_zero():
    p = panel([0.0, 0.4], highlighted={0})
    image = pixels([p])
    left, top, right, bottom = bar_box(0, p, 0)
    assert top == bottom + 1  # no bar at all for a zero distance
    above = image[bottom - 12:bottom - 1, left:right + 1]
    assert (above == bc.HIGHLIGHT).all(axis=-1).any()


def test_excluded_windows_have_no_bar_and_a_grey_cross():
    p = panel([0.2, None, 0.3])
    assert bar_box(0, p, 1) is None
    image = pixels([p])
    a, b = bc.slot(1, 3)
    column = image[bc.TOP:bc.TOP + bc.PLOT_H, bc.LEFT + a:bc.LEFT + b]
    assert not (column == bc.BAR).all(axis=-1).any()
    assert (column == bc.MUTED).all(axis=-1).any()


def test_distances_that_are_not_finite_fill_the_slot_in_dark_red_and_leave_the_scale_alone():
    p = panel([0.2, math.inf, math.nan])
    assert axis_top(p.values) == pytest.approx(0.2)
    image = pixels([p])
    for bar in (1, 2):
        left, top, right, bottom = bar_box(0, p, bar)
        assert bottom - top + 1 == bc.PLOT_H
        assert (image[top:bottom + 1, left:right + 1] == bc.OFF_SCALE).all()


def test_axis_top_and_ticks_are_round():
    assert axis_top([0.0, 0.0]) == 1.0
    assert axis_top([0.013]) == pytest.approx(0.015)  # step 0.005
    assert axis_top([0.61, 0.2]) == pytest.approx(0.8)
    assert axis_top([0.1], threshold=0.35) == pytest.approx(0.4)
    assert axis_top([7.0]) == pytest.approx(8.0)
    for span in (0.003, 0.07, 0.61, 1.0, 7.0, 230.0):
        step = nice_step(span)
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert round(mantissa, 9) in (1, 2, 2.5, 5) and span / step <= 5 + 1e-9


def test_the_threshold_is_a_dashed_line_at_its_value():
    p = panel([0.1, 0.4], threshold=0.2)
    image = pixels([p])
    hi = axis_top(p.values, 0.2)
    y = bc.TOP + bc.PLOT_H - round(0.2 / hi * bc.PLOT_H)
    row = image[y, bc.LEFT:bc.LEFT + bc.PLOT_W]
    red = (row == bc.OFF_SCALE).all(axis=-1)
    assert 0.3 < red.mean() < 0.8  # dashes, not a solid line


def test_bad_panels_are_refused():
    with pytest.raises(ValueError, match="one label per value"):
        render([BarPanel("t", "s", ["0"], [0.1, 0.2])])
    with pytest.raises(ValueError, match="at least one panel"):
        render([])
