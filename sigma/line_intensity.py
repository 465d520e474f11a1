"""Net X-ray line intensities per pixel, in counts, from the counts a results file keeps.

The features the model learns from are standardised (z-scores of line intensity over pixel
total): right for training, wrong to show. What a user reads is the number of counts in each
line above the background: for every feature (X-ray line) the counts in its window
``[window_lo, window_hi]`` (coordinates of ``feature`` written by ``sigma run``) minus the
background under it, estimated as the mean count per channel of two side windows, each half the
line window wide, just below and above it (a linear background under a narrow peak).

One sparse matrix product of the kept counts (:mod:`sigma.sparse_counts`) with a ``(channel,
feature)`` weight matrix gives every pixel's net intensities at once.

Examples
--------
>>> import numpy as np, xarray as xr
>>> e = np.arange(0, 2, 0.01)
>>> w = line_weights(e, [1.0], [1.1])
>>> abs(round(float(w[:, 0].sum()), 6))  # a flat background gives zero net counts
0.0
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma import sparse_counts

__all__ = [
    "INTENSITY_ATTRS",
    "line_weights",
    "net_line_intensities",
    "has_line_windows",
    "element_maps",
]

#: units of the standardised features, shown when no counts are kept
ZSCORE_UNITS = "z-score (no per-pixel counts kept)"

#: attrs of net line intensities
INTENSITY_ATTRS = {"units": "counts", "long_name": "net line intensity (background subtracted)"}


def line_weights(
    energy: npt.ArrayLike, window_lo: npt.ArrayLike, window_hi: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """``(channel, feature)`` weights: +1 in each line window, minus the side-window background.

    Side windows of half the line window's width sit just below and above it (clipped to the
    energy axis); the background per channel is their mean, times the window's channel count.
    """
    e = np.asarray(energy, dtype=np.float64)
    lo, hi = np.atleast_1d(window_lo).astype(float), np.atleast_1d(window_hi).astype(float)
    w = np.zeros((e.size, lo.size))
    for f, (a, b) in enumerate(zip(lo, hi, strict=True)):
        inside = (e >= a) & (e <= b)
        half = (b - a) / 2
        side = ((e >= a - half) & (e < a)) | ((e > b) & (e <= b + half))
        w[inside, f] = 1.0
        if side.any():
            w[side, f] -= inside.sum() / side.sum()
    return w


def has_line_windows(ds: xr.Dataset) -> bool:
    """True when ``ds`` has the counts and line windows :func:`net_line_intensities` needs."""
    return (
        sparse_counts.has_counts(ds)
        and "feature" in ds.coords
        and all(c in ds.coords for c in ("window_lo", "window_hi"))
    )


def net_line_intensities(ds: xr.Dataset) -> xr.DataArray:
    """Net counts of every feature's X-ray line in every pixel, ``(y, x, feature)``, units counts.

    Parameters
    ----------
    ds : xr.Dataset
        Results with kept counts (``counts_*``) and ``feature`` coordinates ``window_lo`` /
        ``window_hi`` in keV.

    Raises
    ------
    SchemaError
        If the counts or the line windows are missing (the message says how to get them).
    """
    from sigma.exceptions import SchemaError

    if not has_line_windows(ds):
        raise SchemaError(
            "net line intensities need the kept per-pixel counts and the line windows "
            "(feature coordinates window_lo/window_hi); run `sigma run` again with line features."
        )
    w = line_weights(ds["energy"].values, ds["window_lo"].values, ds["window_hi"].values)
    mat = sparse_counts.counts_matrix(ds)
    net = np.asarray(mat @ w, dtype=np.float32).reshape(ds.sizes["y"], ds.sizes["x"], -1)
    return xr.DataArray(
        net,
        dims=("y", "x", "feature"),
        coords={"y": ds["y"], "x": ds["x"], "feature": ds["feature"]},
        attrs=dict(INTENSITY_ATTRS),
        name="net_intensity",
    )


def element_maps(ds: xr.Dataset) -> tuple[xr.DataArray | None, str]:
    """The per-pixel line maps to show or export, ``(y, x, feature)``, and their units.

    Net line intensities in counts (:func:`net_line_intensities`) when the results keep their
    counts; else the standardised features, labelled as z-scores (:data:`ZSCORE_UNITS`); None
    when there are no features.
    """
    if has_line_windows(ds):
        return net_line_intensities(ds), "counts per pixel"
    if "features" in ds:
        return ds["features"].transpose("y", "x", "feature"), ZSCORE_UNITS
    return None, ""
