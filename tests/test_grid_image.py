import numpy as np
import pytest
from PIL import Image, ImageDraw

from dit_layer_lab.core import drawing
from dit_layer_lab.core.experiments import grid_image as gi

WHITE = np.array(gi.BACKGROUND, dtype=np.uint8)


def images(n, batch=1, h=64, w=96, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((batch, h, w, 3), dtype=np.float32) for _ in range(n)]


def captions(n, lines=("double: all", "single: all")):
    return [gi.Caption("baseline" if i == 0 else f"variant {i}", tuple(lines)) for i in range(n)]


@pytest.mark.parametrize("variants, batch, shape", [
    (1, 1, (1, 1)), (2, 1, (2, 1)), (3, 1, (2, 2)), (4, 1, (2, 2)), (5, 1, (3, 2)), (10, 1, (4, 3)),
    (3, 2, (3, 2)), (1, 4, (1, 4)),
])
def test_grid_shape(variants, batch, shape):
    assert gi.grid_shape(variants, batch) == shape


@pytest.mark.parametrize("variants, batch", [(1, 1), (5, 1), (3, 2)])
def test_every_image_is_pasted_exactly_where_the_layout_says(variants, batch):
    pictures = images(variants, batch, h=40, w=200)
    picture = np.asarray(gi.render(pictures, captions(variants)))
    layout = gi.layout(variants, batch, 40, 200, 2)
    assert picture.shape == (layout.size[1], layout.size[0], 3)
    for v in range(variants):
        for item in range(batch):
            left, top, right, bottom = layout.image_box(v, item)
            assert np.array_equal(picture[top:bottom, left:right], gi.to_uint8(pictures[v][item]))


def test_batch_rows_are_items_and_columns_are_variants():
    layout = gi.layout(3, 2, 64, 256, 1)
    assert [layout.cell(v, item) for v in range(3) for item in range(2)] == [
        (0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
    single = gi.layout(5, 1, 64, 256, 1)
    assert [single.cell(v) for v in range(5)] == [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)]


def test_small_images_get_a_readable_column_and_are_centred():
    layout = gi.layout(2, 1, 32, 32, 1)
    assert layout.cell_w == gi.MIN_CELL_W and layout.text_size == gi.MIN_TEXT
    left, _, right, _ = layout.image_box(0)
    x, _ = layout.cell_origin(0)
    assert left - x == x + layout.cell_w - right == (gi.MIN_CELL_W - 32) // 2


def test_text_grows_with_the_image_up_to_a_limit():
    assert gi.layout(1, 1, 1024, 1024, 2).text_size == 32
    assert gi.layout(1, 1, 4096, 4096, 2).text_size == gi.MAX_TEXT


def test_every_cell_has_a_caption_above_its_image():
    pictures = images(3)
    picture = np.asarray(gi.render(pictures, captions(3)))
    layout = gi.layout(3, 1, 64, 96, 2)
    for v in range(3):
        x, y = layout.cell_origin(v)
        band = picture[y:y + layout.caption_h, x:x + layout.cell_w]
        assert (band != WHITE).any(axis=-1).mean() > 0.02, f"no caption ink in cell {v}"
        title = picture[y:y + gi.PAD + gi._line_height(gi._title_size(layout.text_size)), x:x + layout.cell_w]
        assert (title != WHITE).any()


def test_captions_are_exactly_the_label_and_lines():
    """Rendering is deterministic and the caption is what changes between two renderings."""
    pictures = images(2)
    a = np.asarray(gi.render(pictures, captions(2, ("double: 0-2", "single: all"))))
    b = np.asarray(gi.render(pictures, captions(2, ("double: 0-3", "single: all"))))
    assert np.array_equal(a, np.asarray(gi.render(pictures, captions(2, ("double: 0-2", "single: all")))))
    layout = gi.layout(2, 1, 64, 96, 2)
    differs = np.argwhere((a != b).any(axis=-1))
    assert len(differs) and differs[:, 0].max() < layout.caption_h + gi.GAP  # only inside the caption bands


def test_a_long_order_is_shortened_with_a_visible_ellipsis_and_stays_in_its_cell():
    long = "single: " + ", ".join(f"[{i}-{i + 2}]*3" for i in range(0, 300, 3))
    pictures = images(2)
    layout = gi.layout(2, 1, 64, 96, 1)
    shown = drawing.fit(ImageDraw.Draw(Image.new("RGB", (1, 1))), long, drawing.font(layout.text_size),
                        layout.cell_w - 2 * gi.PAD)
    assert shown.endswith("...") and len(shown) < len(long) // 10 and long.startswith(shown[:-3])
    drawn = np.asarray(gi.render(pictures, [gi.Caption("a", (long,)), gi.Caption("b", ("x",))]))
    expected = np.asarray(gi.render(pictures, [gi.Caption("a", (shown,)), gi.Caption("b", ("x",))]))
    assert np.array_equal(drawn, expected)
    x, y = layout.cell_origin(0)
    gap = drawn[y:y + layout.caption_h, x + layout.cell_w:x + layout.cell_w + gi.GAP]
    assert (gap == WHITE).all()  # nothing spills into the gap to the next cell


def test_fit_keeps_text_that_fits_and_finds_the_longest_prefix_that_does():
    draw, font = ImageDraw.Draw(Image.new("RGB", (1, 1))), drawing.font(14)
    assert drawing.fit(draw, "double: all", font, 500) == "double: all"
    text = "0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15"
    for width in (40, 80, 120, 160):
        shown = drawing.fit(draw, text, font, width)
        assert shown.endswith("...") and drawing.text_size(draw, shown, font)[0] <= width
        prefix = shown[:-3]
        longer = text[:len(prefix) + 1] + "..."
        assert text.startswith(prefix) and (drawing.text_size(draw, longer, font)[0] > width or
                                            text[len(prefix)] == " ")


def test_to_uint8_is_what_saveimage_writes():
    values = np.array([[[-0.1, 0.0, 0.5], [0.999, 1.0, 1.2]]], dtype=np.float32)
    assert gi.to_uint8(values).tolist() == [[[0, 0, 127], [254, 255, 255]]]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same image shape"):
        gi.render(images(1, h=64) + images(1, h=32), captions(2))
    with pytest.raises(ValueError, match="one caption per variant"):
        gi.render(images(2), captions(1))
