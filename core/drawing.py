"""Text and image helpers shared by the pack's Pillow drawings (heatmaps, plan grid, bar charts)."""

from __future__ import annotations

import numpy as np
from PIL import ImageFont

INK = (20, 20, 20)
ELLIPSIS = "..."


def font(size: int):
    """Pillow's built-in scalable font at ``size`` pixels (no font file needed)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its small bitmap font
        return ImageFont.load_default()


def text_size(draw, text: str, font) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn in ``font``."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def fit(draw, text: str, font, width: int) -> str:
    """``text`` if it fits in ``width`` pixels, else its longest prefix that fits with ``...`` appended."""
    if text_size(draw, text, font)[0] <= width:
        return text
    fits, too_long = 0, len(text)  # binary search: long plan texts would make a char-by-char loop slow
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if text_size(draw, text[:middle] + ELLIPSIS, font)[0] <= width:
            fits = middle
        else:
            too_long = middle
    return text[:fits].rstrip() + ELLIPSIS


def draw_text(draw, xy, text: str, font, anchor: str, fill=INK) -> None:
    """Draw ``text`` with ``anchor`` (l/m/r then t/m/b) at ``xy``, for bitmap fonts too."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = xy[0] - {"l": left, "m": (left + right) / 2, "r": right}[anchor[0]]
    y = xy[1] - {"t": top, "m": (top + bottom) / 2, "b": bottom}[anchor[1]]
    draw.text((round(x), round(y)), text, font=font, fill=fill)


def to_float_array(image) -> np.ndarray:
    """``[1, H, W, 3]`` float32 in 0..1, ComfyUI's IMAGE layout."""
    return (np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)[None]
