"""Similarity heatmaps drawn with Pillow and numpy: one panel per matrix, panels in a grid.

Layout, in pixels: every panel is ``PANEL_W`` x ``PANEL_H``; panels fill a grid of
ceil(sqrt(n)) columns row by row on a white background, so the image is
``columns * PANEL_W`` x ``grid_rows * PANEL_H``. In a panel: a title (in the text size when it is too
long for the title size) and a subtitle on top; the
``HEAT`` x ``HEAT`` heatmap at (``LEFT``, ``TOP``), row 0 at the top left; block labels left of
it (rows) and below it (columns), thinned to every k-th when they would overlap; group outlines
on the diagonal; right of it the colorbar (``BAR_W`` wide, ``HEAT`` high, the highest value on
top) with its values. The colour scale of each panel runs from its smallest to its largest value,
rounded outward to a multiple of 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..drawing import INK, to_float_array  # noqa: F401  (to_float_array is part of this module's API)
from ..drawing import draw_text as _text, fit as _fit, font as _font, text_size as _size

HEAT = 400
LEFT, TOP, BOTTOM = 76, 60, 52
GAP, BAR_W, BAR_LABELS = 14, 16, 64
PANEL_W = LEFT + HEAT + GAP + BAR_W + BAR_LABELS
PANEL_H = TOP + HEAT + BOTTOM
TITLE_SIZE, TEXT_SIZE = 18, 14
OUTLINE = (255, 45, 85)

# Viridis sampled at 0, 0.1, ..., 1 (its published 11-step values); interpolated linearly.
CONTROL_POINTS = np.array([
    (68, 1, 84), (72, 36, 117), (65, 68, 135), (53, 95, 141), (42, 120, 142), (33, 145, 140),
    (34, 168, 132), (68, 191, 112), (122, 209, 81), (189, 223, 38), (253, 231, 37)], dtype=np.float64)


def colormap(values: np.ndarray) -> np.ndarray:
    """uint8 RGB for values in 0..1 (clipped), shape ``values.shape + (3,)``."""
    t = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(CONTROL_POINTS))
    rgb = np.stack([np.interp(t, stops, CONTROL_POINTS[:, c]) for c in range(3)], axis=-1)
    return np.round(rgb).astype(np.uint8)


@dataclass(frozen=True)
class Panel:
    title: str
    subtitle: str
    labels: list[str]
    matrix: np.ndarray
    groups: list[tuple[int, int]] = field(default_factory=list)  # (first row, last row) to outline


def grid(n_panels: int) -> tuple[int, int]:
    """(columns, rows) of the panel grid."""
    columns = max(1, math.ceil(math.sqrt(n_panels)))
    return columns, max(1, math.ceil(n_panels / columns))


def image_size(n_panels: int) -> tuple[int, int]:
    columns, rows = grid(n_panels)
    return columns * PANEL_W, rows * PANEL_H


def panel_origin(index: int, n_panels: int) -> tuple[int, int]:
    columns, _ = grid(n_panels)
    return (index % columns) * PANEL_W, (index // columns) * PANEL_H


def colorbar_box(index: int, n_panels: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom), exclusive right/bottom, of a panel's colorbar in the image."""
    x, y = panel_origin(index, n_panels)
    left = x + LEFT + HEAT + GAP
    return left, y + TOP, left + BAR_W, y + TOP + HEAT


def value_range(matrix: np.ndarray) -> tuple[float, float]:
    values = np.round(np.asarray(matrix, dtype=np.float64), 6)
    lo, hi = math.floor(values.min() * 20) / 20, math.ceil(values.max() * 20) / 20
    return (hi - 0.05, hi) if hi - lo < 0.05 else (lo, hi)


def ticks(lo: float, hi: float) -> list[float]:
    """The multiples of a round step (0.05, 0.1, 0.2, 0.25, 0.5 or 1) in lo..hi, at most six of them."""
    step = next(s for s in (0.05, 0.1, 0.2, 0.25, 0.5, 1.0) if (hi - lo) / s <= 5 + 1e-9)
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(i * step, 6) for i in range(first, last + 1)]


def render(panels: list[Panel]) -> Image.Image:
    width, height = image_size(len(panels))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    fonts = _font(TITLE_SIZE), _font(TEXT_SIZE)
    for index, panel in enumerate(panels):
        _panel(image, draw, fonts, panel_origin(index, len(panels)), panel)
    return image


# ---------------------------------------------------------------------------------------- drawing


def _edge(row: int, n: int) -> int:
    """First pixel of ``row`` along the heatmap (pixel p shows row p * n // HEAT)."""
    return -(-row * HEAT // n)


def _panel(image, draw, fonts, origin, panel: Panel) -> None:
    title_font, font = fonts
    x0, y0 = origin
    matrix = np.asarray(panel.matrix, dtype=np.float64)
    n = matrix.shape[0]
    lo, hi = value_range(matrix)

    index = np.arange(HEAT) * n // HEAT
    cells = colormap((matrix[index[:, None], index[None, :]] - lo) / (hi - lo))
    image.paste(Image.fromarray(cells, "RGB"), (x0 + LEFT, y0 + TOP))

    bar = colormap(np.linspace(1.0, 0.0, HEAT))[:, None, :].repeat(BAR_W, axis=1)
    bar_left = x0 + LEFT + HEAT + GAP
    image.paste(Image.fromarray(np.ascontiguousarray(bar), "RGB"), (bar_left, y0 + TOP))
    draw.rectangle([bar_left - 1, y0 + TOP - 1, bar_left + BAR_W, y0 + TOP + HEAT], outline=INK)
    for value in ticks(lo, hi):
        y = y0 + TOP + round((hi - value) / (hi - lo) * (HEAT - 1))
        draw.line([bar_left + BAR_W, y, bar_left + BAR_W + 4, y], fill=INK)
        _text(draw, (bar_left + BAR_W + 7, y), f"{value:.2f}", font, "lm")

    for first, last in panel.groups:
        a, b = _edge(first, n), _edge(last + 1, n) - 1
        draw.rectangle([x0 + LEFT + a, y0 + TOP + a, x0 + LEFT + b, y0 + TOP + b], outline=OUTLINE, width=2)

    _axis_labels(draw, font, (x0, y0), panel.labels, n)
    if _size(draw, panel.title, title_font)[0] > PANEL_W - 12:  # a long title (frames, tokens) in the text size
        title_font = font
    _text(draw, (x0 + LEFT + HEAT // 2, y0 + 6), _fit(draw, panel.title, title_font, PANEL_W - 12), title_font, "mt")
    _text(draw, (x0 + LEFT + HEAT // 2, y0 + 32), _fit(draw, panel.subtitle, font, PANEL_W - 12), font, "mt")
    _text(draw, (x0 + LEFT + HEAT // 2, y0 + TOP + HEAT + BOTTOM - 6), "block, in execution order", font, "mb")


def _axis_labels(draw, font, origin, labels: list[str], n: int) -> None:
    x0, y0 = origin
    cell = HEAT / n
    line = _size(draw, "0", font)[1] + 3
    widest = max(_size(draw, label, font)[0] for label in labels) + 6
    every_row = _every(line / cell)
    every_column = max(every_row, _every(widest / cell))
    for row, label in enumerate(labels):
        centre = (_edge(row, n) + _edge(row + 1, n)) / 2
        if row % every_row == 0:
            _text(draw, (x0 + LEFT - 5, y0 + TOP + centre), label, font, "rm")
        if row % every_column == 0:
            _text(draw, (x0 + LEFT + centre, y0 + TOP + HEAT + 4), label, font, "mt")


def _every(ratio: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least ``ratio``."""
    step = 1
    while step < ratio:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step
