"""Bar charts of the importance sweep, drawn with Pillow: one panel per stream, panels stacked.

Layout, in pixels: every panel is ``PANEL_W`` x ``PANEL_H`` on a white background. In a panel: a
title and a subtitle on top, the plot area (``PLOT_W`` x ``PLOT_H``) at (``LEFT``, ``TOP``) with the
distance axis on its left (0 at the bottom, ``hi`` at the top, round ticks) and one slot per window
along x, in block order, labelled below (thinned to every k-th when the labels would overlap).
A window's bar rises from 0 to its distance. Highlighted windows (the suggested skip set) are
orange, with a marker above them, the others blue; a distance that is not finite fills the slot to the top in dark red;
an excluded window has no bar and a grey cross on the axis. A dashed line marks ``threshold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from ..drawing import INK, draw_text, fit, font, text_size

PANEL_W = 960
LEFT, RIGHT, TOP, BOTTOM = 78, 24, 70, 64
PLOT_W = PANEL_W - LEFT - RIGHT
PLOT_H = 280
PANEL_H = TOP + PLOT_H + BOTTOM
TITLE_SIZE, TEXT_SIZE = 18, 14
GRID = (225, 225, 225)
BAR = (70, 120, 190)
HIGHLIGHT = (240, 120, 20)
OFF_SCALE = (150, 20, 30)
MUTED = (150, 150, 150)


@dataclass(frozen=True)
class BarPanel:
    title: str
    subtitle: str
    labels: list[str]  # one per window, in block order
    values: list[float | None]  # None: the window was excluded
    highlighted: frozenset[int] = field(default_factory=frozenset)  # indices of the suggested windows
    threshold: float | None = None
    axis_label: str = "distance to the unpatched result"
    x_label: str = "skipped block(s), original index"


def nice_step(span: float) -> float:
    """A step of 1, 2, 2.5 or 5 times a power of ten that cuts ``span`` into at most five parts."""
    raw = span / 5
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw - 1e-12 * power)


def axis_top(values: list[float | None], threshold: float | None = None) -> float:
    """The top of the distance axis: the largest finite value (or threshold) rounded up to a tick."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if threshold:
        finite.append(threshold)
    hi = max(finite, default=0.0)
    if hi <= 0:
        return 1.0
    step = nice_step(hi)
    return math.ceil(hi / step - 1e-9) * step


def panel_origin(index: int) -> tuple[int, int]:
    return 0, index * PANEL_H


def slot(index: int, n_bars: int) -> tuple[int, int]:
    """(left, right), exclusive right, of bar ``index``'s slot along x, relative to the plot."""
    return index * PLOT_W // n_bars, (index + 1) * PLOT_W // n_bars


def bar_box(panel_index: int, panel: BarPanel, bar: int) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom), inclusive, of a bar in the image; None when it has no bar."""
    value = panel.values[bar]
    if value is None:
        return None
    x0, y0 = panel_origin(panel_index)
    a, b = slot(bar, len(panel.values))
    gap = (b - a) // 6
    left, right = x0 + LEFT + a + gap, x0 + LEFT + b - 1 - gap
    bottom = y0 + TOP + PLOT_H - 1
    hi = axis_top(panel.values, panel.threshold)
    if not math.isfinite(value):
        height = PLOT_H
    else:
        height = round(min(max(value, 0.0), hi) / hi * PLOT_H)
        height = max(height, 1) if value > 0 else height  # a small distance still shows
    return left, bottom - height + 1, right, bottom


def bar_colour(panel: BarPanel, bar: int) -> tuple[int, int, int]:
    value = panel.values[bar]
    if value is not None and not math.isfinite(value):
        return OFF_SCALE
    return HIGHLIGHT if bar in panel.highlighted else BAR


def render(panels: list[BarPanel]) -> Image.Image:
    if not panels:
        raise ValueError("a chart needs at least one panel")
    image = Image.new("RGB", (PANEL_W, PANEL_H * len(panels)), "white")
    draw = ImageDraw.Draw(image)
    fonts = font(TITLE_SIZE), font(TEXT_SIZE)
    for index, panel in enumerate(panels):
        _panel(draw, fonts, index, panel)
    return image


def to_array(image: Image.Image) -> np.ndarray:
    """``[H, W, 3]`` float32 in 0..1 (one ComfyUI IMAGE item)."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


# ---------------------------------------------------------------------------------------- drawing


def _panel(draw, fonts, index: int, panel: BarPanel) -> None:
    title_font, text_font = fonts
    if len(panel.labels) != len(panel.values) or not panel.values:
        raise ValueError("a panel needs one label per value, and at least one value")
    x0, y0 = panel_origin(index)
    left, top, bottom = x0 + LEFT, y0 + TOP, y0 + TOP + PLOT_H - 1
    hi = axis_top(panel.values, panel.threshold)
    value_axis(draw, text_font, left, top, bottom, hi)

    n = len(panel.values)
    for bar in range(n):
        box = bar_box(index, panel, bar)
        if box is None:
            a, b = slot(bar, n)
            cx, cy, r = left + (a + b) // 2, bottom - 6, max(2, min(6, (b - a) // 3))
            draw.line([cx - r, cy - r, cx + r, cy + r], fill=MUTED, width=2)
            draw.line([cx - r, cy + r, cx + r, cy - r], fill=MUTED, width=2)
        else:
            if box[1] <= box[3]:
                draw.rectangle(box, fill=bar_colour(panel, bar))
            if bar in panel.highlighted:  # a marker above the bar, so that a zero-height bar shows too
                cx, tip = (box[0] + box[2]) // 2, box[1] - 3
                r = max(2, min(6, (box[2] - box[0]) // 2))
                draw.polygon([(cx - r, tip - r), (cx + r, tip - r), (cx, tip)], fill=HIGHLIGHT)

    threshold_line(draw, left, bottom, hi, panel.threshold)

    _x_labels(draw, text_font, left, bottom, panel.labels)
    draw_text(draw, (left + PLOT_W // 2, y0 + PANEL_H - 8), panel.x_label, text_font, "mb")
    draw_text(draw, (x0 + PANEL_W // 2, y0 + 8), fit(draw, panel.title, title_font, PANEL_W - 16), title_font, "mt")
    draw_text(draw, (x0 + PANEL_W // 2, y0 + 32), fit(draw, panel.subtitle, text_font, PANEL_W - 16), text_font, "mt")
    _legend(draw, text_font, (left, y0 + 52), panel)


def value_axis(draw, text_font, left: int, top: int, bottom: int, hi: float) -> None:
    """The distance axis from 0 at ``bottom`` to ``hi`` at the top: round ticks, their labels, grid lines."""
    step = nice_step(hi)
    for k in range(round(hi / step) + 1):
        value = k * step
        y = bottom - round(value / hi * PLOT_H) + (1 if k else 0)
        draw.line([left, y, left + PLOT_W - 1, y], fill=GRID if k else INK)
        draw.line([left - 4, y, left - 1, y], fill=INK)
        draw_text(draw, (left - 7, y), tick_label(value, step), text_font, "rm")
    draw.line([left - 1, top, left - 1, bottom], fill=INK)


def threshold_line(draw, left: int, bottom: int, hi: float, threshold: float | None) -> None:
    """A dashed line across the plot at ``threshold`` (at the top when it is above ``hi``); none when unset."""
    if not threshold:
        return
    y = bottom - round(min(threshold, hi) / hi * PLOT_H) + 1
    for x in range(left, left + PLOT_W, 12):
        draw.line([x, y, min(x + 6, left + PLOT_W - 1), y], fill=OFF_SCALE)


def tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step)) + (0 if float(step).is_integer() else 1))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _x_labels(draw, text_font, left: int, bottom: int, labels: list[str]) -> None:
    n = len(labels)
    widest = max(text_size(draw, label, text_font)[0] for label in labels) + 8
    every = _every(widest / (PLOT_W / n))
    for bar, label in enumerate(labels):
        if bar % every == 0:
            a, b = slot(bar, n)
            draw_text(draw, (left + (a + b) / 2, bottom + 6), label, text_font, "mt")


def _every(ratio: float) -> int:
    step = 1
    while step < ratio:
        step = step * 5 // 2 if str(step).startswith("2") else step * 2
    return step


def _legend(draw, text_font, xy, panel: BarPanel) -> None:
    x, y = xy
    items = [(HIGHLIGHT, "box", "suggested skip set"), (BAR, "box", "other windows")]
    if any(v is None for v in panel.values):
        items.append((MUTED, "box", "x = cannot be skipped"))
    if any(v is not None and not math.isfinite(v) for v in panel.values):
        items.append((OFF_SCALE, "box", "no finite distance"))
    if panel.threshold:
        items.append((OFF_SCALE, "line", f"max distance {panel.threshold:g}"))
    for colour, kind, text in items:
        if kind == "box":
            draw.rectangle([x, y - 5, x + 10, y + 5], fill=colour)
        else:
            draw.line([x, y, x + 4, y], fill=colour)
            draw.line([x + 7, y, x + 10, y], fill=colour)
        draw_text(draw, (x + 15, y), text, text_font, "lm")
        x += 15 + text_size(draw, text, text_font)[0] + 22
