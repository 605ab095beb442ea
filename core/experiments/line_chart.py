"""Line charts in the bar chart's look, drawn with Pillow: measured distance against blocks removed.

Layout, in pixels: one panel of ``bar_chart.PANEL_W`` x ``bar_chart.PANEL_H`` on a white
background, with the bar chart's margins, title, subtitle, legend row and distance axis (0 at the
bottom, ``hi`` at the top, round ticks). Along x, one slot per count 0..``x_max``, labelled below
(thinned when the labels would overlap); a point sits at the centre of its slot and at its
distance. Each series joins its points in order with a line and marks every point: a circle,
square or diamond of ``RADIUS[marker]`` pixels, filled with the series' colour, or hollow (a ring
of that colour around white) when the point is marked as fast. A distance that is not finite is
drawn at the top of the axis in dark red. A dashed line marks ``threshold``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from ..drawing import draw_text, fit, font, text_size
from .bar_chart import (INK, LEFT, OFF_SCALE, PANEL_H, PANEL_W, PLOT_H, PLOT_W, TEXT_SIZE, TITLE_SIZE, TOP,
                        axis_top, slot, threshold_line, value_axis)

RADIUS = {"circle": 5, "square": 6, "diamond": 8}
RING = 2  # width of a hollow marker's ring
LINE = 2


@dataclass(frozen=True)
class Point:
    x: int
    value: float
    fast: bool = False


@dataclass(frozen=True)
class Series:
    name: str
    colour: tuple[int, int, int]
    points: tuple[Point, ...]
    marker: str = "circle"
    joined: bool = True


@dataclass(frozen=True)
class LinePanel:
    title: str
    subtitle: str
    series: tuple[Series, ...]
    x_max: int
    threshold: float | None = None
    fast_note: str = "hollow = fast (one model evaluation)"
    axis_label: str = "distance to the unpatched result"
    x_label: str = "blocks removed"
    extra: tuple[str, ...] = field(default_factory=tuple)  # more legend text, after the series


def values_of(panel: LinePanel) -> list[float]:
    return [p.value for s in panel.series for p in s.points]


def point_xy(panel: LinePanel, point: Point) -> tuple[int, int]:
    """The pixel at the centre of ``point``'s marker."""
    a, b = slot(point.x, panel.x_max + 1)
    hi = axis_top(values_of(panel), panel.threshold)
    value = hi if not math.isfinite(point.value) else min(max(point.value, 0.0), hi)
    return LEFT + (a + b) // 2, TOP + PLOT_H - 1 - round(value / hi * (PLOT_H - 1))


def render(panel: LinePanel) -> Image.Image:
    for s in panel.series:
        if s.marker not in RADIUS:
            raise ValueError(f"unknown marker {s.marker!r}: choose one of {', '.join(RADIUS)}")
        if any(not 0 <= p.x <= panel.x_max for p in s.points):
            raise ValueError(f"a point of {s.name!r} lies outside 0..{panel.x_max}")
    image = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    title_font, text_font = font(TITLE_SIZE), font(TEXT_SIZE)
    left, top, bottom = LEFT, TOP, TOP + PLOT_H - 1
    hi = axis_top(values_of(panel), panel.threshold)
    value_axis(draw, text_font, left, top, bottom, hi)
    threshold_line(draw, left, bottom, hi, panel.threshold)

    for s in panel.series:
        if s.joined and len(s.points) > 1:
            draw.line([point_xy(panel, p) for p in s.points], fill=s.colour, width=LINE)
    for s in sorted(panel.series, key=lambda s: -RADIUS[s.marker]):  # larger markers below smaller ones
        for p in s.points:
            colour = s.colour if math.isfinite(p.value) else OFF_SCALE
            _marker(draw, point_xy(panel, p), s.marker, colour, p.fast)

    _x_labels(draw, text_font, panel)
    draw_text(draw, (left + PLOT_W // 2, PANEL_H - 8), panel.x_label, text_font, "mb")
    draw_text(draw, (PANEL_W // 2, 8), fit(draw, panel.title, title_font, PANEL_W - 16), title_font, "mt")
    draw_text(draw, (PANEL_W // 2, 32), fit(draw, panel.subtitle, text_font, PANEL_W - 16), text_font, "mt")
    _legend(draw, text_font, (left, 52), panel)
    return image


def _marker(draw, centre, kind: str, colour, hollow: bool, r: int | None = None) -> None:
    x, y = centre
    r = RADIUS[kind] if r is None else r
    fill = "white" if hollow else colour
    width = RING if hollow else 1
    if kind == "circle":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=width)
    elif kind == "square":
        draw.rectangle([x - r, y - r, x + r, y + r], fill=fill, outline=colour, width=width)
    else:
        corners = [(x, y - r), (x + r, y), (x, y + r), (x - r, y)]
        draw.polygon(corners, fill=fill, outline=colour)
        if hollow:  # Pillow's polygon outline is one pixel wide
            draw.polygon([(x, y - r + 1), (x + r - 1, y), (x, y + r - 1), (x - r + 1, y)], outline=colour)


def _x_labels(draw, text_font, panel: LinePanel) -> None:
    n = panel.x_max + 1
    labels = [str(i) for i in range(n)]
    widest = max(text_size(draw, label, text_font)[0] for label in labels) + 8
    every = 1
    while every * PLOT_W / n < widest:
        every += 1
    for i, label in enumerate(labels):
        if i % every == 0:
            a, b = slot(i, n)
            draw_text(draw, (LEFT + (a + b) // 2, TOP + PLOT_H + 5), label, text_font, "mt")


def _legend(draw, text_font, xy, panel: LinePanel) -> None:
    x, y = xy
    items = [(s.colour, s.marker, s.name) for s in panel.series if s.points]
    if any(p.fast for s in panel.series for p in s.points):
        items.append((INK, "hollow", panel.fast_note))
    if any(not math.isfinite(v) for v in values_of(panel)):
        items.append((OFF_SCALE, "circle", "no finite distance"))
    if panel.threshold:
        items.append((OFF_SCALE, "line", f"max distance {panel.threshold:g}"))
    items += [(None, None, text) for text in panel.extra]
    for colour, kind, text in items:
        if kind == "line":
            draw.line([x, y, x + 4, y], fill=colour)
            draw.line([x + 7, y, x + 10, y], fill=colour)
        elif kind == "hollow":
            _marker(draw, (x + 5, y), "circle", colour, True)
        elif kind is not None:
            _marker(draw, (x + 5, y), kind, colour, False, r=5)
        shift = 15 if kind is not None else 0
        draw_text(draw, (x + shift, y), text, text_font, "lm")
        x += shift + text_size(draw, text, text_font)[0] + 22

