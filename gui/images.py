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
