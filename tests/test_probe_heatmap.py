import numpy as np
import pytest

from dit_layer_lab.core.probe import heatmap as hm


def panel(n=6, lo=0.2, groups=((1, 2), (3, 4), (5, 5)), title="Flux double_blocks - image"):
    i = np.arange(n)
    matrix = 1.0 - (1.0 - lo) * np.abs(i[:, None] - i[None, :]) / (n - 1)
    return hm.Panel(title, "middle 2-3", ["in", *map(str, range(n - 1))], matrix, list(groups))


def luminance(rgb):
    return np.asarray(rgb, dtype=float) @ [0.2126, 0.7152, 0.0722]


@pytest.mark.parametrize("count, grid", [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 2))])
def test_image_size_follows_the_documented_grid(count, grid):
    image = hm.render([panel() for _ in range(count)])
    assert hm.grid(count) == grid
    assert image.size == (grid[0] * hm.PANEL_W, grid[1] * hm.PANEL_H) == hm.image_size(count)


def test_comfy_image_layout_and_range():
    array = hm.to_float_array(hm.render([panel(), panel()]))
    assert array.shape == (1, hm.PANEL_H, 2 * hm.PANEL_W, 3)
    assert array.dtype == np.float32
    assert 0.0 <= array.min() and array.max() <= 1.0
    assert array.max() == 1.0  # white background


def test_colormap_is_perceptual_from_dark_to_light():
    values = hm.colormap(np.linspace(0, 1, 101))
    assert tuple(values[0]) == tuple(hm.CONTROL_POINTS[0]) and tuple(values[-1]) == tuple(hm.CONTROL_POINTS[-1])
    assert np.all(np.diff(luminance(values)) > 0)
    assert tuple(hm.colormap(np.array([-3.0, 7.0]))[0]) == tuple(hm.CONTROL_POINTS[0])


@pytest.mark.parametrize("index", [0, 2])
def test_colorbar_runs_from_the_highest_value_on_top_to_the_lowest(index):
    image = np.asarray(hm.render([panel(), panel(), panel()]))
    left, top, right, bottom = hm.colorbar_box(index, 3)
    column = image[top:bottom, (left + right) // 2].astype(int)
    assert bottom - top == hm.HEAT
    assert np.abs(column[0] - hm.colormap(np.array(1.0))).max() <= 1
    assert np.abs(column[-1] - hm.colormap(np.array(0.0))).max() <= 1
    assert np.all(np.diff(luminance(column)) < 0.25)  # darker downwards, but for uint8 rounding


def test_cells_show_their_value_on_the_colour_scale():
    p = panel(lo=0.2)
    lo, hi = hm.value_range(p.matrix)
    assert (lo, hi) == (0.2, 1.0)
    image = np.asarray(hm.render([p]))
    n, cell = 6, hm.HEAT / 6
    for row, col in [(0, 5), (2, 4), (3, 3)]:
        y, x = hm.TOP + int((row + 0.5) * cell), hm.LEFT + int((col + 0.5) * cell) + 3
        expected = hm.colormap(np.array((p.matrix[row, col] - lo) / (hi - lo)))
        assert np.abs(image[y, x].astype(int) - expected).max() <= 1, (row, col)


def test_group_outlines_are_drawn_on_the_diagonal():
    image = np.asarray(hm.render([panel()]))
    corner = hm.TOP + hm._edge(3, 6), hm.LEFT + hm._edge(3, 6)
    assert tuple(image[corner]) == hm.OUTLINE
    no_groups = np.asarray(hm.render([panel(groups=())]))
    assert tuple(no_groups[corner]) != hm.OUTLINE


def test_ticks_are_round_values_inside_the_range():
    assert hm.ticks(0.2, 1.0) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert hm.ticks(0.85, 1.0) == [0.85, 0.9, 0.95, 1.0]
    assert hm.ticks(-1.0, 1.0) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert hm.value_range(np.array([[0.97, 1.0]])) == (0.95, 1.0)


def test_many_blocks_and_long_titles_still_render():
    n = 58
    matrix = np.random.default_rng(0).uniform(0.3, 1.0, (n, n))
    labels = ["in", *[f"[{i}-{i + 2}]#2" for i in range(n - 1)]]
    image = hm.render([hm.Panel("x" * 300, "y" * 300, labels, matrix, [(1, 20), (21, 57)])])
    assert image.size == hm.image_size(1)
