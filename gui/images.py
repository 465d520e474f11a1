"""Map images for HoloViews panes: scan-coordinate images and the scaled navigation image."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import numpy.typing as npt
import xarray as xr

hv.extension("bokeh", logo=False)

_PLOT = {
    "responsive": True,
    "min_height": 300,
    "toolbar": "above",
    "default_tools": ["pan", "wheel_zoom", "reset"],
}
_IMAGE = {**_PLOT, "data_aspect": 1, "xlabel": "x", "ylabel": "y"}


def _image(
    da: xr.DataArray | npt.NDArray[Any], ds: xr.Dataset, label: str, **opts: Any
) -> hv.Image:
    values = np.asarray(da)
    units = ds["x"].attrs.get("units", "px")
    x, y = ds["x"].values, ds["y"].values
    img = hv.Image((x, y, values), kdims=[hv.Dimension("x", unit=units), hv.Dimension("y", unit=units)],
                   vdims=[label])  # fmt: skip
    axes = {"xlabel": f"x ({units})", "ylabel": f"y ({units})"}
    return img.opts(invert_yaxis=True, **{**_IMAGE, **axes, "colorbar": True, **opts})


_GREY_CACHE: dict[int, tuple[Any, npt.NDArray[np.float64]]] = {}


def _grey(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    """The navigation image scaled to [0, 1] (1st-99th percentile), cached per image array."""
    src = ds["nav_image"].values if "nav_image" in ds else None
    key = id(src) if src is not None else -1
    hit = _GREY_CACHE.get(key)
    if hit is not None and hit[0] is src:
        return hit[1]
    grey = _grey_uncached(ds)
    if src is not None:
        if len(_GREY_CACHE) > 8:
            _GREY_CACHE.clear()
        _GREY_CACHE[key] = (src, grey)
    return grey


def _grey_uncached(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    if "nav_image" in ds:
        nav = ds["nav_image"].values.astype(np.float64)
    else:
        nav = (
            ds["total_counts"].values.astype(np.float64)
            if "total_counts" in ds
            else np.ones(ds["label"].shape)
        )
    lo, hi = np.percentile(nav, [1, 99])
    return np.clip((nav - lo) / max(hi - lo, 1e-12), 0, 1)


_GREY_U8: dict[int, tuple[Any, npt.NDArray[np.uint8]]] = {}


def _grey_u8(ds: xr.Dataset) -> npt.NDArray[np.uint8]:
    """:func:`_grey` as uint8 0..255, cached per navigation image."""
    src = ds["nav_image"].values if "nav_image" in ds else None
    hit = _GREY_U8.get(id(src))
    if src is not None and hit is not None and hit[0] is src:
        return hit[1]
    grey = np.round(_grey(ds) * 255).astype(np.uint8)
    if src is not None:
        if len(_GREY_U8) > 8:
            _GREY_U8.clear()
        _GREY_U8[id(src)] = (src, grey)
    return grey


def screen_extent(fig: Any, default: tuple[int, int]) -> tuple[int, int]:
    """The figure's drawing area in screen pixels as the browser reported it, else ``default``."""
    from bokeh.core.property.descriptors import UnsetValueError

    try:
        return int(fig.inner_width) or default[0], int(fig.inner_height) or default[1]
    except UnsetValueError:  # not shown in a browser yet
        return default


class ScreenImage:
    """A ``(y, x)`` map image sent at the plot's screen resolution, in full when zoomed in.

    A 1000 x 1000 map in a 300-pixel-high plot is drawn by the browser at one pixel in three:
    sending all 10^6 values on every edit, and colour-mapping them in the browser, was most of
    an edit's click-to-repaint time. The data source holds the visible window sampled at the
    nearest pixels to about ``oversample`` times the plot's drawing area (an integer stride, so
    every sent pixel is a real pixel of the map); zooming in (Bokeh's ``RangesUpdate``) sends
    the new window, at full resolution once it fits, as HoloViews' datashader ``rasterize``
    does. Maps that fit are sent whole and unchanged.

    Parameters
    ----------
    fig
        The Bokeh figure that shows the image (its ranges give the window).
    source
        The glyph's ``ColumnDataSource``: ``image``, ``x``, ``y``, ``dw``, ``dh`` are set here.
    place
        ``x, y, dw, dh`` (one-element lists) of the full image, as :func:`gui.cluster_figures.image_place`.
    image
        The full-resolution ``(y, x)`` array.
    default_size
        Drawing area assumed until the browser reports the figure's size.
    oversample
        Sent pixels per screen pixel (2 keeps a high-DPI screen sharp).
    margin
        When zoomed in, the window sent reaches this fraction of the visible one further on each
        side, so a short pan shows pixels before the new window comes.
    """

    def __init__(self, fig: Any, source: Any, place: dict[str, list[float]],
                 image: npt.NDArray[Any], *, default_size: tuple[int, int] = (600, 320),
                 oversample: float = 2.0, margin: float = 0.25) -> None:  # fmt: skip
        from bokeh.events import RangesUpdate

        self.fig, self.source = fig, source
        self.x0, self.y0 = float(place["x"][0]), float(place["y"][0])
        self.dw, self.dh = float(place["dw"][0]), float(place["dh"][0])
        self.default_size, self.oversample, self.margin = default_size, oversample, margin
        self.full = np.asarray(image)
        #: the visible window ``(x0, x1, y0, y1)`` in data coordinates; None: the whole map
        self.window: tuple[float, float, float, float] | None = None
        self._push()
        fig.on_event(RangesUpdate, self._on_ranges)

    def set(self, image: npt.NDArray[Any]) -> bool:
        """Show ``image`` (full resolution); False (nothing sent) when it is the one shown."""
        image = np.asarray(image)
        if image.shape == self.full.shape and np.array_equal(image, self.full):
            return False
        self.full = image
        self._push()
        return True

    def _on_ranges(self, event: Any) -> None:
        vals = (event.x0, event.x1, event.y0, event.y1)
        if any(v is None or not np.isfinite(v) for v in vals):
            return
        x0, x1, y0, y1 = (float(v) for v in vals)
        self.window = (min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1))
        self._push()

    @staticmethod
    def _span(lo: float, hi: float, origin: float, extent: float, n: int,
              margin: float = 0.0) -> tuple[int, int]:  # fmt: skip
        """Pixel index range ``[i0, i1)`` of the data interval ``[lo, hi]`` (at least one pixel).

        Widened by ``margin`` times its length on each side, clipped to the map; ``extent`` is
        negative for descending coordinates: the indices are ordered either way.
        """
        step = extent / n
        f0, f1 = sorted(((lo - origin) / step, (hi - origin) / step))
        pad = margin * (f1 - f0)
        i0 = int(np.clip(np.floor(f0 - pad), 0, n - 1))
        i1 = int(np.clip(np.ceil(f1 + pad), i0 + 1, n))
        return i0, i1

    def view(self) -> tuple[npt.NDArray[Any], dict[str, list[float]]]:
        """The image to send and its place: the window, strided to the screen's resolution."""
        full = self.full
        ny, nx = full.shape[:2]
        if (ny, nx) == (1, 1):  # a placeholder stretched over the map
            return full, {"x": [self.x0], "y": [self.y0], "dw": [self.dw], "dh": [self.dh]}
        if self.window is None:
            vx, vy = (0, nx), (0, ny)
            (ix0, ix1), (iy0, iy1) = vx, vy
        else:
            wx0, wx1, wy0, wy1 = self.window
            # the resolution of the visible window; a margin around it, so a pan shows pixels
            # at once (the new window follows when the pan ends)
            vx = self._span(wx0, wx1, self.x0, self.dw, nx)
            vy = self._span(wy0, wy1, self.y0, self.dh, ny)
            ix0, ix1 = self._span(wx0, wx1, self.x0, self.dw, nx, self.margin)
            iy0, iy1 = self._span(wy0, wy1, self.y0, self.dh, ny, self.margin)
        w, h = screen_extent(self.fig, self.default_size)
        stride = max(1, int(np.ceil(max((vx[1] - vx[0]) / (w * self.oversample),
                                        (vy[1] - vy[0]) / (h * self.oversample)))))  # fmt: skip
        if stride == 1:
            img = full[iy0:iy1, ix0:ix1]
        else:  # m blocks over the n pixels, each shown by the pixel nearest its centre: the
            # samples sit exactly where they are drawn
            def centres(i0: int, i1: int) -> npt.NDArray[np.intp]:
                m = -(-(i1 - i0) // stride)
                return i0 + ((np.arange(m) + 0.5) * ((i1 - i0) / m)).astype(np.intp)

            img = full[np.ix_(centres(iy0, iy1), centres(ix0, ix1))]
        px, py = self.dw / nx, self.dh / ny
        place = {"x": [self.x0 + ix0 * px], "y": [self.y0 + iy0 * py],
                 "dw": [(ix1 - ix0) * px], "dh": [(iy1 - iy0) * py]}  # fmt: skip
        return np.ascontiguousarray(img), place

    def _push(self) -> None:
        img, place = self.view()
        self.source.data = {"image": [img], **place}


def map_image(fig: Any, place: dict[str, list[float]], image: npt.NDArray[Any], *,
              rgba: bool = False, **glyph: Any) -> ScreenImage:  # fmt: skip
    """``image`` (``(y, x)``, at ``place``) on ``fig`` at screen resolution (:class:`ScreenImage`).

    An ``image`` glyph with ``glyph``'s options, or ``image_rgba`` for packed RGBA (``rgba``).
    """
    from bokeh.models import ColumnDataSource

    src = ColumnDataSource({"image": [np.zeros((1, 1), image.dtype)], **place})
    (fig.image_rgba if rgba else fig.image)(source=src, **glyph)
    return ScreenImage(fig, src, place, image)


def grey_rgba(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
    """A ``(y, x)`` uint8 grey image as opaque packed RGBA (``image_rgba``'s uint32 pixels)."""
    rgba = np.empty(grey.shape + (4,), np.uint8)
    rgba[..., :3] = grey[..., None]
    rgba[..., 3] = 255
    return rgba.view(np.uint32)[..., 0]


def full_extent_ranges(fig: Any, place: dict[str, list[float]]) -> None:
    """Make the figure's data ranges (and its reset) span the whole map, not the image sent.

    An invisible rectangle over the map is the only renderer the ranges follow: a
    :class:`ScreenImage` that holds a zoomed-in window must not become what "reset" returns to.
    """
    x0, y0 = place["x"][0], place["y"][0]
    bounds = fig.quad(left=[x0], right=[x0 + place["dw"][0]], bottom=[y0], top=[y0 + place["dh"][0]],
                      fill_alpha=0, line_alpha=0, name="map extent")  # fmt: skip
    fig.x_range.renderers = [bounds]
    fig.y_range.renderers = [bounds]
