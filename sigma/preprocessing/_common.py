"""Shared helpers of the preprocessing steps: input checks, dtypes, energy axis, history."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._schema import (
    COUNTS,
    DIM_ENERGY,
    DIM_FEATURE,
    DIM_X,
    DIM_Y,
    FEATURES,
    validate_spectrum_image,
)
from sigma._schema import append_history as _append_history
from sigma.exceptions import SchemaError

logger = logging.getLogger(__name__)

TOTAL_COUNTS = "total_counts"
#: (y, x) bool variable: pixels holding X-ray data (sigma.preprocessing.nodata)
_VALID = "valid_pixel"
_COUNT_UNITS = ("counts",)


def _is_dask(data: Any) -> bool:
    return type(data).__module__.startswith("dask")


def _require_counts(ds: Any, step: str) -> xr.Dataset:
    """Validate a spectrum image for a counts step, with a clear message for a features dataset."""
    if isinstance(ds, xr.Dataset) and COUNTS not in ds.data_vars and FEATURES in ds.data_vars:
        raise SchemaError(
            f"{step}: operates on 'counts' (y, x, energy) but the dataset holds 'features' "
            f"{tuple(ds[FEATURES].dims)!r}. Apply {step} before line_features / pca_features."
        )
    return validate_spectrum_image(ds, where=step)


def _require_features(ds: Any, step: str) -> xr.Dataset:
    if isinstance(ds, xr.Dataset) and FEATURES not in ds.data_vars and COUNTS in ds.data_vars:
        raise SchemaError(
            f"{step}: operates on 'features' (y, x, feature) but the dataset holds 'counts'. "
            "Compute features first with line_features(ds) or pca_features(ds)."
        )
    if not isinstance(ds, xr.Dataset) or FEATURES not in ds.data_vars:
        have = list(ds.data_vars) if isinstance(ds, xr.Dataset) else type(ds).__name__
        raise SchemaError(f"{step}: expected a Dataset with a 'features' variable, got {have!r}.")
    dims = tuple(ds[FEATURES].dims)
    if dims != (DIM_Y, DIM_X, DIM_FEATURE):
        raise SchemaError(
            f"{step}: 'features' must have dims ('y', 'x', 'feature'). Got {dims!r}; transpose "
            "with ds.transpose('y', 'x', 'feature')."
        )
    return ds


def _history(ds: xr.Dataset, line: str) -> dict[str, Any]:
    return _append_history(ds.attrs, line)


def _sum_dtype(
    dtype: np.dtype[Any], n_summed: int, max_value: float | None = None
) -> np.dtype[Any]:
    """Smallest dtype of the same kind that holds a sum of ``n_summed`` values of ``dtype``.

    With ``max_value`` (the largest value actually present) the bound uses it; otherwise the
    dtype's maximum. Floats are kept as they are.
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        return dtype
    if dtype == np.bool_:
        dtype = np.dtype(np.uint8)
    top = float(np.iinfo(dtype).max if max_value is None else max_value) * n_summed
    for cand in (
        (np.uint8, np.uint16, np.uint32, np.uint64)
        if dtype.kind == "u"
        else (np.int8, np.int16, np.int32, np.int64)
    ):
        if np.dtype(cand).itemsize >= dtype.itemsize and top <= np.iinfo(cand).max:
            return np.dtype(cand)
    return np.dtype(np.uint64 if dtype.kind == "u" else np.int64)


def _accumulator(dtype: np.dtype[Any], n_summed: int) -> np.dtype[Any]:
    """Narrowest safe accumulator for sums of ``n_summed`` values.

    uint32 sums of uint16 counts are twice as fast as int64 ones and cannot overflow for up to
    65 537 channels.
    """
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.dtype(np.float64)
    top = 1 if dtype.kind == "b" else int(np.iinfo(dtype).max) if dtype.kind in "iu" else None
    if top is not None and dtype.itemsize <= 2:
        if dtype.kind in "ub" and n_summed * top < 2**32:
            return np.dtype(np.uint32)
        if dtype.kind == "i" and n_summed * top < 2**31:
            return np.dtype(np.int32)
    return np.dtype(np.int64)


def _total_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    return np.dtype(np.float64) if np.dtype(dtype).kind == "f" else np.dtype(np.int64)


def _energy_kev(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    return np.asarray(ds[DIM_ENERGY].values, dtype=np.float64)


def _channel_width(energy: npt.NDArray[np.float64]) -> float:
    return float((energy[-1] - energy[0]) / (energy.size - 1)) if energy.size > 1 else 1.0


def _mnka(ds: xr.Dataset, mnka_resolution_ev: float | None) -> float:
    if mnka_resolution_ev is None:
        value = ds.attrs.get("energy_resolution_mnka_ev", 130.0)
        try:
            mnka_resolution_ev = float(value)
        except (TypeError, ValueError):
            mnka_resolution_ev = 130.0
        if not np.isfinite(mnka_resolution_ev) or mnka_resolution_ev <= 0:
            mnka_resolution_ev = 130.0
    if not (isinstance(mnka_resolution_ev, (int, float)) and mnka_resolution_ev > 0):
        raise ValueError(
            "mnka_resolution_ev must be a positive number of eV (e.g. 130). Got "
            f"{mnka_resolution_ev!r} instead."
        )
    return float(mnka_resolution_ev)


def _nav_vars(ds: xr.Dataset) -> list[str]:
    """Names of the (y, x) variables (navigation images, total_counts ...)."""
    return [str(n) for n, v in ds.data_vars.items() if tuple(v.dims) == (DIM_Y, DIM_X)]


def _counts_total(ds: xr.Dataset) -> xr.DataArray:
    """Per-pixel total counts: the ``total_counts`` variable when present, else summed."""
    if TOTAL_COUNTS in ds.data_vars:
        return ds[TOTAL_COUNTS]
    counts = ds[COUNTS]
    return counts.sum(DIM_ENERGY, dtype=_total_dtype(counts.dtype))


def _fmt_kwargs(**kwargs: Any) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
