"""The skip search's line chart, checked pixel by pixel against its documented layout."""

import numpy as np
import pytest

from dit_layer_lab.core.experiments import bar_chart as bc
from dit_layer_lab.core.experiments import line_chart as lc
from dit_layer_lab.core.experiments.line_chart import LinePanel, Point, Series, point_xy, render

BLUE, ORANGE, RED = bc.BAR, bc.HIGHLIGHT, bc.OFF_SCALE
WHITE = (255, 255, 255)


def panel(search=(0.0, 0.01, 0.03, 0.05), top=((1, 0.01), (2, 0.04), (3, 0.08)), fast=True, x_max=6, threshold=None,
          final=None):
    series = [Series("search", BLUE, tuple(Point(k, v, fast) for k, v in enumerate(search))),
              Series("top-k", ORANGE, tuple(Point(k, v, fast) for k, v in top), "square")]
    if final is not None:
        series.append(Series("full", RED, (Point(*final),), "diamond", joined=False))
    return LinePanel("title", "subtitle", tuple(series), x_max, threshold)


def test_size_and_points_at_their_slot_and_distance():
    p = panel()
    image = np.asarray(render(p))
    assert image.shape == (bc.PANEL_H, bc.PANEL_W, 3)
    hi = bc.axis_top([0.0, 0.01, 0.03, 0.05, 0.01, 0.04, 0.08])
    assert hi == pytest.approx(0.08)
    bottom = bc.TOP + bc.PLOT_H - 1
    for k, value in enumerate((0.0, 0.01, 0.03, 0.05)):
        x, y = point_xy(p, Point(k, value))
        a, b = bc.slot(k, 7)
        assert x == bc.LEFT + (a + b) // 2
        assert y == bottom - round(value / hi * (bc.PLOT_H - 1))
    assert point_xy(p, Point(3, 0.08))[1] == bc.TOP  # the largest value at the top of the axis


def test_fast_points_are_hollow_rings_and_full_points_are_filled():
    for fast in (True, False):
        p = panel(fast=fast, top=())
        image = np.asarray(render(p))
        for k, value in enumerate((0.0, 0.01, 0.03, 0.05)):
            x, y = point_xy(p, Point(k, value))
            r = lc.RADIUS["circle"]
            assert tuple(image[y, x]) == (WHITE if fast else BLUE), (fast, k)
            assert tuple(image[y, x + r]) == BLUE and tuple(image[y - r, x]) == BLUE  # the ring / the disc's edge


def test_the_smaller_marker_is_drawn_over_the_larger_and_the_final_full_point_is_a_red_diamond():
    p = panel(fast=False, final=(3, 0.06))
    image = np.asarray(render(p))
    x, y = point_xy(p, Point(1, 0.01))  # search and top-k at the same point: the circle on the square
    assert tuple(image[y, x]) == BLUE
    r = lc.RADIUS["square"]
    assert tuple(image[y - r, x - r]) == ORANGE  # a corner of the square shows around the circle
    x, y = point_xy(p, Point(3, 0.06))
    assert tuple(image[y, x]) == RED and tuple(image[y - lc.RADIUS["diamond"] + 1, x]) == RED
    assert tuple(image[y - lc.RADIUS["diamond"] + 1, x - 4]) == WHITE  # a diamond, not a square


def test_lines_join_a_series_and_a_threshold_is_dashed():
    p = panel(fast=False, top=(), threshold=0.04)
    image = np.asarray(render(p))
    (x0, y0), (x1, y1) = point_xy(p, Point(1, 0.01)), point_xy(p, Point(2, 0.03))
    mx, my = (x0 + x1) // 2, (y0 + y1) // 2
    assert (image[my - 2:my + 3, mx] == BLUE).all(axis=-1).any()
    hi = bc.axis_top([0.0, 0.01, 0.03, 0.05], 0.04)
    y = bc.TOP + bc.PLOT_H - 1 - round(0.04 / hi * bc.PLOT_H) + 1
    row = image[y, bc.LEFT + 300:bc.LEFT + 400]
    red = (row == RED).all(axis=-1)
    assert red.any() and not red.all()


def test_a_broken_result_sits_at_the_top_in_dark_red():
    p = panel(search=(0.0, 0.01, float("inf")), top=(), fast=False)
    image = np.asarray(render(p))
    x, y = point_xy(p, Point(2, float("inf")))
    assert y == bc.TOP and tuple(image[y, x]) == RED


@pytest.mark.parametrize("bad, message", [
    (Series("s", BLUE, (Point(7, 0.1),)), "outside 0..6"),
    (Series("s", BLUE, (Point(1, 0.1),), "star"), "unknown marker 'star'"),
])
def test_bad_series_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        render(LinePanel("t", "s", (bad,), 6))
