"""Map images sent at screen resolution (gui.images.ScreenImage): what is sent, and where."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

from gui.images import ScreenImage, full_extent_ranges


def _map(ny: int = 1000, nx: int = 1200) -> np.ndarray:
    """A map whose value says where it came from: row * nx + column."""
    return np.arange(ny * nx, dtype=np.int64).reshape(ny, nx)


def _screen(image: np.ndarray, size: tuple[int, int] = (300, 250), margin: float = 0.0,
            place: dict | None = None) -> ScreenImage:  # fmt: skip
    fig = figure()
    place = place or {"x": [-0.5], "y": [-0.5], "dw": [float(image.shape[1])],
                      "dh": [float(image.shape[0])]}  # fmt: skip
    src = ColumnDataSource({"image": [np.zeros((1, 1), image.dtype)], **place})
    fig.image(source=src)
    return ScreenImage(fig, src, place, image, default_size=size, oversample=1.0, margin=margin)


def test_a_large_map_is_sent_at_screen_resolution_as_real_pixels():
    full = _map()
    img = _screen(full)  # 1200 x 1000 px into 300 x 250 screen px: every 4th pixel
    sent = img.source.data["image"][0]
    assert sent.shape == (250, 300)
    rows, cols = np.divmod(sent, full.shape[1])
    # each sent pixel is the map pixel nearest its 4 x 4 block's centre, in order
    np.testing.assert_array_equal(rows[:, 0], np.arange(250) * 4 + 2)
    np.testing.assert_array_equal(cols[0], np.arange(300) * 4 + 2)
    # placed over the whole map
    assert img.source.data["x"] == [-0.5]
    assert img.source.data["dw"] == [1200.0]
    assert img.source.data["y"] == [-0.5]
    assert img.source.data["dh"] == [1000.0]


def test_zooming_in_sends_the_window_at_full_resolution():
    full = _map()
    img = _screen(full)
    # the browser shows x 100..300, y 50..200 (pixel centres 100..299 and 50..199)
    img._on_ranges(SimpleNamespace(x0=99.5, x1=299.5, y0=199.5, y1=49.5))  # y flipped
    sent = img.source.data["image"][0]
    np.testing.assert_array_equal(sent, full[50:200, 100:300])
    assert img.source.data["x"] == [99.5]
    assert img.source.data["dw"] == [200.0]
    assert img.source.data["y"] == [49.5]
    assert img.source.data["dh"] == [150.0]
    # a window partly outside the map is clipped to it
    img._on_ranges(SimpleNamespace(x0=-50.0, x1=20.0, y0=-10.0, y1=30.0))
    np.testing.assert_array_equal(img.source.data["image"][0], full[0:31, 0:21])
    # zooming out again (reset) sends the whole map at screen resolution
    img._on_ranges(SimpleNamespace(x0=-0.5, x1=1199.5, y0=-0.5, y1=999.5))
    assert img.source.data["image"][0].shape == (250, 300)


def test_a_map_that_fits_is_sent_whole_and_unchanged_images_are_not_sent_again():
    small = _map(40, 60)
    img = _screen(small)
    np.testing.assert_array_equal(img.source.data["image"][0], small)
    before = img.source.data["image"][0]
    assert img.set(small.copy()) is False  # same values: nothing sent
    assert img.source.data["image"][0] is before
    assert img.set(small + 1) is True
    np.testing.assert_array_equal(img.source.data["image"][0], small + 1)
    # a (1, 1) placeholder (no selection) is stretched over the whole map
    assert img.set(np.zeros((1, 1), np.int64)) is True
    assert img.source.data["image"][0].shape == (1, 1)
    assert img.source.data["dw"] == [60.0]
    assert img.source.data["dh"] == [40.0]


@pytest.mark.parametrize("size", [(300, 250), (64, 64)])
def test_every_label_of_a_large_map_keeps_its_place(size):
    """Labels are sampled, never averaged: a phase map keeps only real labels."""
    labels = np.zeros((900, 900), np.uint8)
    labels[:, 450:] = 3
    img = _screen(labels, size)
    sent = img.source.data["image"][0]
    assert set(np.unique(sent)) == {0, 3}
    half = sent.shape[1] // 2
    assert (sent[:, : half - 1] == 0).all()
    assert (sent[:, half + 1 :] == 3).all()


def test_map_ranges_follow_the_whole_map_not_the_sent_window():
    fig = figure()
    place = {"x": [0.0], "y": [0.0], "dw": [10.0], "dh": [5.0]}
    full_extent_ranges(fig, place)
    (bounds,) = fig.x_range.renderers
    assert fig.y_range.renderers == [bounds]
    assert bounds.data_source.data["right"] == [10.0]
    assert bounds.data_source.data["top"] == [5.0]
    assert bounds.glyph.fill_alpha == 0
    assert bounds.glyph.line_alpha == 0


def test_a_zoomed_window_comes_with_a_margin_for_panning_and_odd_sizes_stay_in_place():
    full = _map()
    img = _screen(full, margin=0.25)
    img._on_ranges(SimpleNamespace(x0=99.5, x1=299.5, y0=49.5, y1=199.5))
    # 200 x 150 visible pixels fit the screen: full resolution, 50 / 37.5 more on each side
    np.testing.assert_array_equal(img.source.data["image"][0], full[12:238, 50:350])
    assert img.source.data["x"] == [49.5]
    assert img.source.data["y"] == [11.5]
    # a window that is not a multiple of the stride: samples spread over all of it, in place
    odd = _map(1001, 1003)
    img = _screen(odd)
    sent = img.source.data["image"][0]
    rows, cols = np.divmod(sent, odd.shape[1])
    m = sent.shape[1]
    drawn_at = (np.arange(m) + 0.5) * (1003 / m) - 0.5  # the sent pixel's centre, map pixels
    assert np.abs(cols[0] - drawn_at).max() <= 1.0
    assert rows[-1, 0] >= 1001 - 4


def test_descending_coordinates_and_bad_ranges():
    full = _map(100, 200)
    # x runs from 199.5 down to -0.5 (a negative step), y as usual
    img = _screen(
        full, (1000, 1000), place={"x": [199.5], "y": [-0.5], "dw": [-200.0], "dh": [100.0]}
    )
    img._on_ranges(SimpleNamespace(x0=150.0, x1=100.0, y0=10.0, y1=20.0))
    sent = img.source.data["image"][0]
    cols = sent[0] % 200
    assert cols.min() == 49
    assert cols.max() == 99  # map column j is centred on x = 199 - j: 49..99 hold x 150..100
    assert sent.shape == (11, 51)
    assert img.source.data["x"] == [150.5]  # the edge of column 49, drawn leftwards
    assert img.source.data["dw"] == [-51.0]
    before = img.source.data
    img._on_ranges(SimpleNamespace(x0=float("nan"), x1=1.0, y0=0.0, y1=1.0))  # ignored
    img._on_ranges(SimpleNamespace(x0=None, x1=1.0, y0=0.0, y1=1.0))
    assert img.source.data is before
