"""Spatial smoothing of the phase probabilities over neighbouring pixels."""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
import xarray as xr
from scipy import ndimage

from sigma._checks import check_int
from sigma._schema import DIM_CLUSTER, DIM_X, DIM_Y
from sigma.exceptions import SchemaError


# --------------------------------------------------------------------------------------------
# spatial regularisation
# --------------------------------------------------------------------------------------------
def smooth_probabilities(
    clustering: xr.Dataset | xr.DataArray,
    *,
    sigma: float = 1.0,
    mode: Literal["gaussian", "uniform"] = "gaussian",
    size: int = 3,
) -> xr.Dataset:
    """Smooth the ``(y, x, cluster)`` probabilities over neighbouring pixels, renormalise, relabel.

    Noisy low-count pixels then no longer salt the phase map; regions larger than the kernel keep
    their labels.

    Parameters
    ----------
    clustering : xr.Dataset or xr.DataArray
        A dataset with ``probability`` (and optionally ``label``) with dims ``(y, x, cluster)``,
        or the probability DataArray itself.
    sigma : float
        Gaussian standard deviation in pixels (``mode="gaussian"``).
    mode : {"gaussian", "uniform"}
        :func:`scipy.ndimage.gaussian_filter` or :func:`scipy.ndimage.uniform_filter`.
    size : int
        Window size in pixels (``mode="uniform"``).

    Returns
    -------
    xr.Dataset
        A copy with smoothed ``probability`` (rows sum to 1) and ``label`` = argmax; unassigned
        pixels (label -1) stay unassigned.

    Notes
    -----
    Apply it to the output of :func:`cluster`, before
    :meth:`sigma.results.SigmaResults.from_parts`, so that pixel counts and cluster spectra are
    computed from the smoothed labels.

    Examples
    --------
    >>> p = np.zeros((5, 5, 2), np.float32); p[..., 0] = 1; p[2, 2] = (0, 1)
    >>> ds = xr.Dataset({"probability": (("y", "x", "cluster"), p)})
    >>> int(smooth_probabilities(ds).label[2, 2])
    0
    """
    if isinstance(clustering, xr.DataArray):
        ds = clustering.to_dataset(name="probability")
    else:
        ds = clustering
    if "probability" not in ds:
        raise SchemaError(f"clustering: no 'probability' variable (got {list(ds.data_vars)!r}).")
    p = ds["probability"]
    if set(p.dims) != {DIM_Y, DIM_X, DIM_CLUSTER}:
        raise SchemaError(
            f"smooth_probabilities needs probability dims ('y', 'x', 'cluster'). Got {p.dims!r}."
        )
    p = p.transpose(DIM_Y, DIM_X, DIM_CLUSTER)
    arr = np.asarray(p.values, dtype=np.float64)
    if mode == "gaussian":
        if not sigma > 0:
            raise ValueError(f"sigma must be a positive number of pixels. Got {sigma!r} instead.")
        sm = ndimage.gaussian_filter(arr, sigma=(sigma, sigma, 0), mode="nearest")
    elif mode == "uniform":
        check_int("size", size, 1)
        sm = ndimage.uniform_filter(arr, size=(size, size, 1), mode="nearest")
    else:
        raise ValueError(f"mode must be 'gaussian' or 'uniform'. Got {mode!r} instead.")
    total = sm.sum(axis=2, keepdims=True)
    sm = np.divide(sm, total, out=np.full_like(sm, 1.0 / sm.shape[2]), where=total > 0)
    label = np.argmax(sm, axis=2).astype(np.int16)
    if "label" in ds:
        old = np.asarray(ds["label"].transpose(DIM_Y, DIM_X).values)
        label = np.where(old < 0, old, label).astype(np.int16)
    out = ds.copy()
    out["probability"] = p.copy(data=sm.astype(p.dtype))
    attrs = (
        dict(ds["label"].attrs) if "label" in ds else {"long_name": "cluster label", "units": "1"}
    )
    out["label"] = xr.DataArray(
        label,
        dims=(DIM_Y, DIM_X),
        coords={d: p[d] for d in (DIM_Y, DIM_X) if d in p.coords},
        attrs=attrs,
    )
    info = json.loads(ds.attrs.get("clustering", "{}"))
    info["smoothing"] = {"mode": mode, "sigma": sigma, "size": size}
    out.attrs["clustering"] = json.dumps(info)
    return out
