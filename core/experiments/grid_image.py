"""The plan grid picture: every variant's image under a caption with its label and effective order.

Layout: with one image per variant, the variants fill ``ceil(sqrt(n))`` columns row by row,
baseline first (top left). With a latent batch of several images, each column is one variant and
each row one batch item, so a row shares its noise and reads left to right as "what each plan
does to this image". Every cell is a caption band over the image, the image at its own size.
A column is at least ``MIN_CELL_W`` wide so that short images still get readable captions; the
image is centred in it.

The caption's first line is the label, the next ones the effective order, one line per stream
(and per part of the schedule for windowed plans). Text that does not fit the cell ends in
``...``; the full orders are in the node's report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..drawing import draw_text, fit, font

MIN_CELL_W = 192
GAP = 8  # between cells and around the grid
PAD = 4  # inside the caption band
MIN_TEXT, MAX_TEXT = 14, 40
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class Caption:
    label: str
    lines: tuple[str, ...]  # the effective order, e.g. ("double 0-2, 17-18", "single all")


@dataclass(frozen=True)
class Layout:
    columns: int
    rows: int
    variants: int
    batch: int
    image_w: int
    image_h: int
    cell_w: int
    caption_h: int
    text_size: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole grid."""
        return (GAP + self.columns * (self.cell_w + GAP),
                GAP + self.rows * (self.caption_h + self.image_h + GAP))

    def cell(self, variant: int, item: int = 0) -> tuple[int, int]:
        """(column, row) of a variant's batch item."""
        if self.batch > 1:
            return variant, item
        return variant % self.columns, variant // self.columns

    def cell_origin(self, variant: int, item: int = 0) -> tuple[int, int]:
        column, row = self.cell(variant, item)
        return GAP + column * (self.cell_w + GAP), GAP + row * (self.caption_h + self.image_h + GAP)

    def image_box(self, variant: int, item: int = 0) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), exclusive right/bottom, of the image in the grid."""
        x, y = self.cell_origin(variant, item)
        left, top = x + (self.cell_w - self.image_w) // 2, y + self.caption_h
        return left, top, left + self.image_w, top + self.image_h


def grid_shape(variants: int, batch: int) -> tuple[int, int]:
    """(columns, rows) of the grid."""
    if batch > 1:
        return variants, batch
    columns = max(1, math.ceil(math.sqrt(variants)))
    return columns, max(1, math.ceil(variants / columns))


def layout(variants: int, batch: int, image_h: int, image_w: int, caption_lines: int) -> Layout:
    """Where everything goes; ``caption_lines`` is the most order lines of any caption."""
    columns, rows = grid_shape(variants, batch)
    size = min(MAX_TEXT, max(MIN_TEXT, round(image_w / 32)))
    caption_h = 2 * PAD + _line_height(_title_size(size)) + caption_lines * _line_height(size)
    return Layout(columns, rows, variants, batch, image_w, image_h, max(MIN_CELL_W, image_w), caption_h, size)


def render(images: list[np.ndarray], captions: list[Caption]) -> Image.Image:
    """The grid of ``images[v]`` (``[batch, H, W, 3]``, float 0..1) under ``captions[v]``."""
    if len(images) != len(captions) or not images:
        raise ValueError(f"need one caption per variant and at least one variant; got {len(images)} image "
                         f"batches and {len(captions)} captions")
    shapes = {tuple(np.shape(batch)) for batch in images}
    if len(shapes) != 1:
        raise ValueError(f"every variant must have the same image shape; got {sorted(shapes)}")
    batch, height, width, _ = shapes.pop()
    grid = layout(len(images), batch, height, width, max(len(c.lines) for c in captions))
    image = Image.new("RGB", grid.size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    title_font, line_font = font(_title_size(grid.text_size)), font(grid.text_size)
    for v, (pixels, caption) in enumerate(zip(images, captions)):
        for item in range(batch):
            left, top, _, _ = grid.image_box(v, item)
            image.paste(Image.fromarray(to_uint8(pixels[item]), "RGB"), (left, top))
            x, y = grid.cell_origin(v, item)
            y += PAD
            draw_text(draw, (x + PAD, y), fit(draw, caption.label, title_font, grid.cell_w - 2 * PAD), title_font, "lt")
            y += _line_height(_title_size(grid.text_size))
            for line in caption.lines:
                draw_text(draw, (x + PAD, y), fit(draw, line, line_font, grid.cell_w - 2 * PAD), line_font, "lt")
                y += _line_height(grid.text_size)
    return image


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """What ComfyUI's SaveImage writes for an IMAGE: ``clip(255 * x, 0, 255)`` truncated to uint8."""
    return np.clip(255.0 * np.asarray(pixels, dtype=np.float32), 0, 255).astype(np.uint8)


def _title_size(size: int) -> int:
    return round(size * 1.25)


def _line_height(size: int) -> int:
    return round(size * 1.3)
