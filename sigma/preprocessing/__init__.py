"""Preprocessing: from a spectrum image (counts) to per-pixel spectral features.

Every step is a pure function ``f(ds, *, ...) -> xr.Dataset``: the input is never modified, dims
are used by name, one line is appended to ``attrs["history"]``, and numpy-backed data stays numpy
while dask-backed data stays dask (lazy) unless a step says otherwise.

Steps on **counts** (``counts`` with dims ``(y, x, energy)``):
:func:`bin_spatial`, :func:`rebin_energy`, :func:`crop_energy`, :func:`remove_noise_peak`,
:func:`normalize_total`.

Steps from counts to **features** (``features`` with dims ``(y, x, feature)``, float32):
:func:`line_features` (counts in X-ray line windows) and :func:`pca_features` (Poisson-scaled PCA).

Steps on **features**: :func:`neighbor_average`, :func:`zscore`, :func:`softmax`.

:class:`Preprocessor` holds an ordered chain of steps as plain data (dict / JSON), applies it,
and records it in ``attrs["preprocessing"]`` of the result, so the same chain can be re-applied
to another file. ``Preprocessor.sigma_default()`` is the chain of the published SIGMA method.

Memory
------
The line-feature path never builds a float copy of the cube: the per-pixel total and the window
sums are integer reductions of slices of the counts (views for numpy, one ``map_blocks`` pass for
dask), and only the small ``(y, x, n_lines)`` result is divided by the total. A
``Preprocessor`` fuses ``remove_noise_peak`` and ``normalize_total`` that come right before
``line_features`` into that single pass (same numbers, no copy of the cube).
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma import xray
from sigma._schema import (
    COUNTS,
    DIM_ENERGY,
    DIM_FEATURE,
    DIM_X,
    DIM_Y,
    FEATURES,
    as_str_list,
    validate_spectrum_image,
)
from sigma._schema import append_history as _append_history
from sigma.exceptions import SchemaError, XrayLineError

logger = logging.getLogger(__name__)

__all__ = [
    "bin_spatial",
    "rebin_energy",
    "crop_energy",
    "remove_noise_peak",
    "normalize_total",
    "line_features",
    "line_windows",
    "pca_features",
    "neighbor_average",
    "zscore",
    "softmax",
    "Preprocessor",
    "STEPS",
]

TOTAL_COUNTS = "total_counts"
#: (y, x) bool variable: pixels holding X-ray data (sigma.preprocessing.nodata)
_VALID = "valid_pixel"
_COUNT_UNITS = ("counts",)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


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


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int in the range [1, inf). Got {value!r} instead.")
    return int(value)


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
    """Narrowest safe accumulator for sums of ``n_summed`` values (uint32 sums of uint16 counts
    are twice as fast as int64 ones and cannot overflow for up to 65 537 channels)."""
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


def _beam_energy(ds: xr.Dataset) -> float | None:
    try:
        value = float(ds.attrs.get("beam_energy_kev", np.nan))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


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


# ---------------------------------------------------------------------------------------------
# steps on counts
# ---------------------------------------------------------------------------------------------


def _block_sum(data: Any, factors: dict[int, int], dtype: np.dtype[Any]) -> Any:
    """Sum non-overlapping blocks of ``data`` (``factors``: axis -> factor, shape divisible)."""
    if _is_dask(data):
        import dask.array as da

        return da.coarsen(np.sum, data, factors, trim_excess=True, dtype=dtype)
    # numpy: add the f_y * f_x * ... strided views (one vectorised pass each); several times
    # faster than reshape(...).sum(axis) whose innermost reduced axes are tiny
    arr = np.asarray(data)
    offsets: list[tuple[int, ...]] = [()]
    for ax in range(arr.ndim):
        offsets = [(*o, k) for o in offsets for k in range(factors.get(ax, 1))]
    out: npt.NDArray[Any] | None = None
    for off in offsets:
        view = arr[tuple(slice(k, None, factors.get(ax, 1)) for ax, k in enumerate(off))]
        if out is None:
            out = view.astype(dtype, copy=True)
        else:
            np.add(out, view, out=out, casting="unsafe")
    assert out is not None
    return out


def bin_spatial(ds: xr.Dataset, factor: int | Sequence[int] = (2, 2)) -> xr.Dataset:
    """Sum the counts of ``factor = (fy, fx)`` neighbouring pixels into one.

    Parameters
    ----------
    ds : xr.Dataset
        Spectrum image with ``counts`` (y, x, energy).
    factor : int or (int, int)
        Binning factor along ``y`` and ``x`` (one int: the same for both).

    Returns
    -------
    xr.Dataset
        ``counts`` summed over blocks. The integer dtype is widened when the sum could overflow
        (numpy data: judged from the largest value present; dask: from the dtype, as the values
        are not read). The ``y``/``x`` coordinates become the block centres (same units);
        navigation images (float) are averaged; ``total_counts`` and other (y, x) variables in
        units of counts are summed. Rows/columns that do not fill a block are cropped, with a
        warning.

    Raises
    ------
    ValueError
        If a factor is not a positive int or exceeds the image size.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> ds = make_spectrum_image(np.ones((4, 4, 8), np.uint8), energy_scale_kev=0.01)
    >>> bin_spatial(ds, (2, 2)).counts.shape, int(bin_spatial(ds).counts[0, 0, 0])
    ((2, 2, 8), 4)
    """
    ds = _require_counts(ds, "bin_spatial")
    if isinstance(factor, (int, np.integer)) and not isinstance(factor, bool):
        factor = (int(factor), int(factor))
    try:
        fy, fx = (_positive_int(f, "factor") for f in factor)  # type: ignore[union-attr]
    except TypeError as err:
        raise ValueError(
            f"factor must be an int or a pair of ints (fy, fx). Got {factor!r} instead."
        ) from err
    ny, nx = ds.sizes[DIM_Y], ds.sizes[DIM_X]
    if fy > ny or fx > nx:
        raise ValueError(
            f"factor {(fy, fx)!r} exceeds the image size (y={ny}, x={nx}); use smaller factors."
        )
    if fy == 1 and fx == 1:
        return ds.assign_attrs(_history(ds, "bin_spatial(factor=(1, 1))"))
    ry, rx = ny % fy, nx % fx
    if ry or rx:
        warnings.warn(
            f"bin_spatial: image size (y={ny}, x={nx}) is not a multiple of factor {(fy, fx)!r}; "
            f"cropping the last {ry} row(s) and {rx} column(s).",
            stacklevel=2,
        )
    ds_c = ds.isel({DIM_Y: slice(0, ny - ry), DIM_X: slice(0, nx - rx)})
    counts = ds_c[COUNTS]
    data = counts.data
    max_value = (
        None if _is_dask(data) or counts.dtype.kind not in "iu" else float(np.max(data, initial=0))
    )
    dtype = _sum_dtype(counts.dtype, fy * fx, max_value)
    new_vars: dict[str, xr.DataArray] = {
        COUNTS: xr.DataArray(
            _block_sum(data, {0: fy, 1: fx}, dtype), dims=counts.dims, attrs=counts.attrs
        )
    }
    for name in _nav_vars(ds_c):
        var = ds_c[name]
        if var.attrs.get("units") in _COUNT_UNITS or name == TOTAL_COUNTS:
            vdtype = _sum_dtype(var.dtype, fy * fx) if var.dtype.kind in "iu" else var.dtype
            binned = _block_sum(var.data, {0: fy, 1: fx}, vdtype)
        else:
            vals = var.data.astype(np.float32) if var.dtype.kind != "f" else var.data
            binned = _block_sum(vals, {0: fy, 1: fx}, np.dtype(np.float64)) / (fy * fx)
            binned = binned.astype(vals.dtype)
        new_vars[name] = xr.DataArray(binned, dims=var.dims, attrs=var.attrs)
    coords = {}
    for dim, f in ((DIM_Y, fy), (DIM_X, fx)):
        c = ds_c[dim]
        vals = np.asarray(c.values, dtype=np.float64).reshape(-1, f).mean(axis=1)
        coords[dim] = xr.DataArray(vals, dims=dim, attrs=c.attrs)
    others = {
        n: v
        for n, v in ds_c.data_vars.items()
        if n not in new_vars and DIM_Y not in v.dims and DIM_X not in v.dims
    }
    out = xr.Dataset(
        {**new_vars, **others},
        coords={**coords, **{k: v for k, v in ds_c.coords.items() if k not in (DIM_Y, DIM_X)}},
        attrs=_history(ds, f"bin_spatial(factor=({fy}, {fx}))"),
    )
    return out


def rebin_energy(ds: xr.Dataset, factor: int = 2) -> xr.Dataset:
    """Sum ``factor`` neighbouring energy channels into one.

    The new channel energy is the mean of the summed channel centres (keV). Channels at the
    high-energy end that do not fill a group are cropped, with a warning. The integer dtype is
    widened when needed, as in :func:`bin_spatial`.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> ds = make_spectrum_image(np.ones((2, 2, 8), np.uint8), energy_scale_kev=0.01)
    >>> out = rebin_energy(ds, 4)
    >>> out.counts.shape, [round(float(e), 3) for e in out.energy.values]
    ((2, 2, 2), [0.015, 0.055])
    """
    ds = _require_counts(ds, "rebin_energy")
    factor = _positive_int(factor, "factor")
    ne = ds.sizes[DIM_ENERGY]
    if factor > ne // 2 and factor != 1:
        raise ValueError(
            f"factor {factor!r} leaves fewer than 2 energy channels out of {ne}; use factor <= "
            f"{ne // 2}."
        )
    if factor == 1:
        return ds.assign_attrs(_history(ds, "rebin_energy(factor=1)"))
    rem = ne % factor
    if rem:
        warnings.warn(
            f"rebin_energy: {ne} channels is not a multiple of factor {factor}; cropping the "
            f"last {rem} channel(s).",
            stacklevel=2,
        )
    ds_c = ds.isel({DIM_ENERGY: slice(0, ne - rem)})
    counts = ds_c[COUNTS]
    data = counts.data
    max_value = (
        None if _is_dask(data) or counts.dtype.kind not in "iu" else float(np.max(data, initial=0))
    )
    dtype = _sum_dtype(counts.dtype, factor, max_value)
    energy = _energy_kev(ds_c).reshape(-1, factor).mean(axis=1)
    binned = xr.DataArray(
        _block_sum(data, {2: factor}, dtype), dims=counts.dims, attrs=counts.attrs
    )
    out = ds_c.drop_vars([n for n, v in ds_c.data_vars.items() if DIM_ENERGY in v.dims]).drop_dims(
        DIM_ENERGY
    )
    out = out.assign_coords(
        {DIM_ENERGY: xr.DataArray(energy, dims=DIM_ENERGY, attrs=ds[DIM_ENERGY].attrs)}
    )
    out[COUNTS] = binned
    out = out[
        [COUNTS, *[n for n in ds_c.data_vars if n != COUNTS and DIM_ENERGY not in ds_c[n].dims]]
    ]
    return out.assign_attrs(_history(ds, f"rebin_energy(factor={factor})"))


def crop_energy(
    ds: xr.Dataset, min_kev: float | None = None, max_kev: float | None = None
) -> xr.Dataset:
    """Keep the channels whose energy lies in ``[min_kev, max_kev]`` (keV; None: no limit).

    Raises
    ------
    ValueError
        If ``min_kev > max_kev`` or fewer than 2 channels would remain.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> ds = make_spectrum_image(np.ones((2, 2, 100), np.uint8), energy_scale_kev=0.1)
    >>> crop_energy(ds, 1.0, 2.0).sizes["energy"]
    11
    """
    ds = _require_counts(ds, "crop_energy")
    if min_kev is not None and max_kev is not None and min_kev > max_kev:
        raise ValueError(f"min_kev ({min_kev!r}) must not exceed max_kev ({max_kev!r}).")
    e = _energy_kev(ds)
    half = 1e-9 * max(abs(float(e[-1])), 1.0)
    keep = np.ones(e.size, dtype=bool)
    if min_kev is not None:
        keep &= e >= float(min_kev) - half
    if max_kev is not None:
        keep &= e <= float(max_kev) + half
    idx = np.flatnonzero(keep)
    if idx.size < 2:
        raise ValueError(
            f"crop_energy(min_kev={min_kev!r}, max_kev={max_kev!r}) keeps {idx.size} channel(s) "
            "of the "
            f"range {e[0]:.3f} .. {e[-1]:.3f} keV; at least 2 are needed."
        )
    out = ds.isel({DIM_ENERGY: slice(int(idx[0]), int(idx[-1]) + 1)})
    return out.assign_attrs(
        _history(ds, f"crop_energy({_fmt_kwargs(min_kev=min_kev, max_kev=max_kev)})")
    )


def remove_noise_peak(ds: xr.Dataset, below_kev: float = 0.1) -> xr.Dataset:
    """Set the counts of the channels below ``below_kev`` (keV) to zero (detector noise peak).

    The dtype is kept. For numpy data this makes one integer copy of the cube; inside a
    :class:`Preprocessor` chain followed by :func:`line_features` the step is fused into the
    feature pass and no copy is made.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> ds = make_spectrum_image(np.ones((1, 1, 5), np.uint8), energy_scale_kev=0.05)
    >>> remove_noise_peak(ds, 0.1).counts.values.ravel().tolist()
    [0, 0, 1, 1, 1]
    """
    ds = _require_counts(ds, "remove_noise_peak")
    if not np.isfinite(below_kev):
        raise ValueError(
            f"below_kev must be a finite number of keV (e.g. 0.1). Got {below_kev!r} instead."
        )
    e = _energy_kev(ds)
    n_zero = int(np.searchsorted(e, float(below_kev), side="left"))
    counts = ds[COUNTS]
    if n_zero == 0:
        new = counts
    elif _is_dask(counts.data):
        mask = xr.DataArray(e >= below_kev, dims=DIM_ENERGY)
        new = counts.where(mask, 0).astype(counts.dtype).transpose(*counts.dims)
    else:
        data = np.array(counts.data, copy=True)
        data[..., :n_zero] = 0
        new = counts.copy(data=data)
    out = ds.assign({COUNTS: new})
    return out.assign_attrs(
        _history(ds, f"remove_noise_peak(below_kev={below_kev!r}) zeroed {n_zero} channel(s)")
    )


def normalize_total(ds: xr.Dataset) -> xr.Dataset:
    """Divide each pixel's spectrum by its total counts (float32); empty pixels become 0, not NaN.

    Adds ``total_counts`` (y, x) with the totals (kept by later steps). This step builds a float32
    cube; inside a :class:`Preprocessor` chain followed by :func:`line_features` it is fused into
    the feature pass (window sums divided by the total) and no float cube is made.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> counts = np.array([[[1, 3], [0, 0]]], dtype=np.uint8)
    >>> normalize_total(make_spectrum_image(counts, energy_scale_kev=0.01)).counts.values.tolist()
    [[[0.25, 0.75], [0.0, 0.0]]]
    """
    ds = _require_counts(ds, "normalize_total")
    counts = ds[COUNTS]
    total = counts.sum(DIM_ENERGY, dtype=_total_dtype(counts.dtype))
    if _is_dask(counts.data):
        safe = xr.where(total > 0, total, 1).astype(np.float32)
        norm = (counts.astype(np.float32) / safe).astype(np.float32).transpose(*counts.dims)
    else:  # one float32 allocation, scaled in place
        tot = np.asarray(total.values, dtype=np.float64)
        inv = np.where(tot > 0, 1.0 / np.where(tot > 0, tot, 1.0), 0.0).astype(np.float32)
        data = np.asarray(counts.data).astype(np.float32)
        data *= inv[..., None]
        norm = counts.copy(data=data)
    norm.attrs = {"units": "1", "long_name": "fraction of the pixel's total counts"}
    out = ds.assign({COUNTS: norm})
    if TOTAL_COUNTS not in ds.data_vars:
        out[TOTAL_COUNTS] = total.assign_attrs(units="counts", long_name="total counts per pixel")
    return out.assign_attrs(_history(ds, "normalize_total()"))


# ---------------------------------------------------------------------------------------------
# line features
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Window:
    name: str
    energy_kev: float
    lo_kev: float
    hi_kev: float
    i0: int
    i1: int  # exclusive
    bg: tuple[tuple[int, int], ...] = ()


def _resolve_lines(
    ds: xr.Dataset,
    lines: str | Sequence[str] | None,
    mnka: float,
    ignore_below_kev: float,
) -> tuple[list[str], list[str]]:
    """(line names, feature labels) for :func:`line_features` (see :func:`select_lines`)."""
    from sigma.preprocessing.lines import select_lines

    choices = select_lines(
        ds, lines, mnka_resolution_ev=mnka, ignore_below_kev=max(ignore_below_kev, 0.1)
    )
    for c in choices:
        logger.info("line_features: %s on %s (%s)", c.feature, c.line, c.reason)
    return [c.line for c in choices], [c.feature for c in choices]


def line_windows(
    energy_kev: npt.ArrayLike,
    lines: Sequence[str],
    *,
    width_fwhm: float = 1.0,
    mnka_resolution_ev: float = 130.0,
    background: bool = False,
) -> list[dict[str, Any]]:
    """Integration windows of X-ray lines on an energy axis.

    The window of a line at energy ``E`` covers the channels whose centres lie within
    ``E +/- width_fwhm * FWHM(E)`` (:func:`sigma.xray.fwhm_kev`); at least the nearest channel.
    With ``background=True`` each line also gets two side windows of the same number of channels
    right below and right above it (clipped at the ends of the axis).

    Returns
    -------
    list of dict
        ``name, energy_kev, lo_kev, hi_kev, i0, i1`` (channel slice ``i0:i1``) and ``bg`` (list
        of ``(i0, i1)`` slices).

    Raises
    ------
    XrayLineError
        If a line is unknown or its energy lies outside the energy axis.
    """
    return [
        w.__dict__ | {"bg": list(w.bg)}
        for w in _line_windows(
            np.asarray(energy_kev, dtype=np.float64),
            lines,
            width_fwhm,
            mnka_resolution_ev,
            background,
        )
    ]


def _line_windows(
    e: npt.NDArray[np.float64],
    lines: Sequence[str],
    width_fwhm: float,
    mnka: float,
    background: bool,
    warn_overlap: bool = True,
) -> list[_Window]:
    if not width_fwhm > 0:
        raise ValueError(
            f"width_fwhm must be a positive number of FWHM (e.g. 1.0). Got {width_fwhm!r} instead."
        )
    half_ch = 0.5 * _channel_width(e)
    e_lo, e_hi = float(e[0]) - half_ch, float(e[-1]) + half_ch
    out: list[_Window] = []
    seen: set[str] = set()
    for name in lines:
        if name in seen:
            raise XrayLineError(
                f"line_features: line {name!r} is given twice; give each line once."
            )
        seen.add(name)
        line = xray.get_line(name)
        if not e_lo <= line.energy_kev <= e_hi:
            raise XrayLineError(
                f"X-ray line {name!r} at {line.energy_kev:.3f} keV lies outside the energy range "
                f"{e_lo:.3f} .. {e_hi:.3f} keV of the data. Remove it from lines (or crop_energy "
                "less)."
            )
        half = width_fwhm * float(xray.fwhm_kev(line.energy_kev, mnka))
        lo, hi = line.energy_kev - half, line.energy_kev + half
        i0 = int(np.searchsorted(e, lo, side="left"))
        i1 = int(np.searchsorted(e, hi, side="right"))
        if i1 <= i0:  # window narrower than a channel: take the nearest channel
            i0 = int(np.clip(np.argmin(np.abs(e - line.energy_kev)), 0, e.size - 1))
            i1 = i0 + 1
        bg: tuple[tuple[int, int], ...] = ()
        if background:
            n = i1 - i0
            sides = ((max(i0 - n, 0), i0), (i1, min(i1 + n, e.size)))
            bg = tuple(s for s in sides if s[1] > s[0])
            if not bg:
                raise XrayLineError(
                    f"X-ray line {name!r}: its window covers the whole energy axis, so there is no "
                    "room for background windows; use background=False or a smaller width_fwhm."
                )
        out.append(_Window(name, float(line.energy_kev), float(lo), float(hi), i0, i1, bg))
    overlaps = [
        (a.name, b.name)
        for k, a in enumerate(out)
        for b in out[k + 1 :]
        if a.i0 < b.i1 and b.i0 < a.i1
    ]
    if overlaps:
        pairs = ", ".join(f"{a}/{b}" for a, b in overlaps)
        msg = (
            "line_features: the windows of these lines overlap, so their features share counts: "
            f"{pairs}. "
            "Drop one line of each pair or use a smaller width_fwhm."
        )
        if warn_overlap:
            warnings.warn(msg, stacklevel=3)
        else:  # sigma chose them (elements of the file, identified peaks): nothing to act on
            logger.info(msg)
    return out


def _window_sums(
    block: npt.NDArray[Any],
    windows: Sequence[_Window],
    n_skip: int,
    total_is_given: bool,
) -> npt.NDArray[np.float64]:
    """Per-pixel window sums (and background estimates) of one ``(y, x, energy)`` block.

    Returns ``(by, bx, 2 * n_lines + 1)`` float64: window sums, background estimates, and the
    pixel total (over channels ``n_skip:``) last. Sums are exact integer sums of slices (views).
    """
    acc = _accumulator(block.dtype, block.shape[-1])
    n = len(windows)
    out = np.zeros((*block.shape[:2], 2 * n + 1), dtype=np.float64)
    for k, w in enumerate(windows):
        i0 = max(w.i0, n_skip)
        if w.i1 > i0:
            out[..., k] = block[..., i0 : w.i1].sum(axis=-1, dtype=acc)
        if w.bg:
            side_sum = np.zeros(block.shape[:2], dtype=np.float64)
            n_side = 0
            for b0, b1 in w.bg:
                b0 = max(b0, n_skip)
                if b1 > b0:
                    side_sum += block[..., b0:b1].sum(axis=-1, dtype=acc)
                    n_side += b1 - b0
            if n_side:
                out[..., n + k] = side_sum * ((w.i1 - i0) / n_side)
    if not total_is_given:
        out[..., -1] = block[..., n_skip:].sum(axis=-1, dtype=acc)
    return out


def line_features(
    ds: xr.Dataset,
    lines: str | Sequence[str] | None = None,
    *,
    width_fwhm: float = 1.0,
    background: bool = False,
    mnka_resolution_ev: float | None = None,
    normalize: bool = False,
    ignore_below_kev: float | None = None,
) -> xr.Dataset:
    """Counts integrated over X-ray line windows: one feature per line.

    Parameters
    ----------
    ds : xr.Dataset
        Spectrum image, ``counts`` (y, x, energy) with energy in keV; integer counts (or the
        output of :func:`normalize_total`).
    lines : None, "auto", str or list of str
        Chosen by :func:`sigma.preprocessing.lines.select_lines`. ``None``: one feature per
        element of the file (``attrs["elements"]``, ``attrs["xray_lines"]``) on its best line,
        plus elements identified for the peaks they do not explain (sum and maximum-pixel
        spectra; for dask data this computes them, one pass each); ``"auto"``: identified
        elements only; or elements and lines such as ``["Fe", "Pb_Ma"]`` (an element gives a
        feature named by the element, a line one named by the line).
    width_fwhm : float
        Window half-width in FWHM(E) of the detector (SIGMA: 1.0).
    background : bool
        Subtract a background from every window: the mean counts per channel of two side windows
        (as many channels as the line window, right below and right above it) times the window's
        channel count. Net values below 0 are clipped to 0 (noise in empty regions would otherwise
        give negative features). Side windows may catch a neighbouring line; check
        :func:`line_windows`.
    mnka_resolution_ev : float, optional
        Detector FWHM at Mn Ka in eV; default ``attrs["energy_resolution_mnka_ev"]`` (or 130).
    normalize : bool
        Divide the window sums by the pixel's total counts (same numbers as
        :func:`normalize_total` before, without building a float cube). Empty pixels give 0.
    ignore_below_kev : float, optional
        Treat channels below this energy as zero (same as :func:`remove_noise_peak` before,
        without a copy of the cube).

    Returns
    -------
    xr.Dataset
        ``features`` (y, x, feature) float32 with coordinate ``feature`` = line names and
        ``line_energy``/``window_lo``/``window_hi`` (feature, keV); ``total_counts`` (y, x); the
        navigation images; the input's attrs with ``xray_lines`` set to the lines used and one
        history line. Dask input gives dask output (one ``map_blocks`` pass over the cube).

    Raises
    ------
    XrayLineError
        If a line is unknown, lies outside the energy range, or none can be found.

    Warns
    -----
    UserWarning
        If two lines the caller named have overlapping windows (the pairs are listed; for lines
        sigma chose itself the overlap is logged).

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> counts = np.zeros((1, 2, 1000), np.uint16)
    >>> counts[0, 0, 640] = 7  # 6.40 keV: Fe Ka
    >>> ds = make_spectrum_image(counts, energy_scale_kev=0.01)
    >>> line_features(ds, ["Fe_Ka"]).features.values.ravel().tolist()
    [7.0, 0.0]
    """
    ds = _require_counts(ds, "line_features")
    mnka = _mnka(ds, mnka_resolution_ev)
    e = _energy_kev(ds)
    skip_kev = float(ignore_below_kev) if ignore_below_kev is not None else -np.inf
    n_skip = int(np.searchsorted(e, skip_kev, side="left")) if ignore_below_kev is not None else 0
    names, labels = _resolve_lines(
        ds, lines, mnka, skip_kev if ignore_below_kev is not None else 0.1
    )
    chosen = lines is None or (isinstance(lines, str) and lines.strip().lower() == "auto")
    windows = _line_windows(e, names, width_fwhm, mnka, background, warn_overlap=not chosen)
    counts = ds[COUNTS]
    n = len(windows)
    given_total = TOTAL_COUNTS in ds.data_vars and n_skip == 0
    data = counts.data
    if _is_dask(data):
        import dask.array as da

        if data.numblocks[2] > 1:
            data = data.rechunk({2: -1})
        sums = da.map_blocks(
            _window_sums,
            data,
            windows,
            n_skip,
            given_total,
            dtype=np.float64,
            chunks=(data.chunks[0], data.chunks[1], (2 * n + 1,)),
        )
        xp: Any = da
    else:
        sums = _window_sums(np.asarray(data), windows, n_skip, given_total)
        xp = np
    raw = sums[..., :n]
    if background:
        raw = xp.clip(raw - sums[..., n : 2 * n], 0, None)
    if given_total:
        total_da = ds[TOTAL_COUNTS]
        total = total_da.data
    else:
        tdtype = _total_dtype(counts.dtype)
        total = sums[..., -1].astype(tdtype)
        total_da = None
    if normalize:
        tot = total[..., None].astype(np.float64)
        feats = xp.where(tot > 0, raw / xp.where(tot > 0, tot, 1.0), 0.0).astype(np.float32)
    else:
        feats = raw.astype(np.float32)
    out_vars: dict[str, Any] = {
        FEATURES: xr.DataArray(
            feats,
            dims=(DIM_Y, DIM_X, DIM_FEATURE),
            attrs={
                "units": "1" if normalize else "counts",
                "long_name": "X-ray line intensity" + (" / pixel total" if normalize else ""),
                "kind": "xray_lines",
            },
        ),
        TOTAL_COUNTS: total_da
        if total_da is not None
        else xr.DataArray(
            total,
            dims=(DIM_Y, DIM_X),
            attrs={"units": "counts", "long_name": "total counts per pixel"},
        ),
    }
    for name in _nav_vars(ds):
        if name != TOTAL_COUNTS:
            out_vars[name] = ds[name]
    coords = {
        DIM_Y: ds[DIM_Y],
        DIM_X: ds[DIM_X],
        DIM_FEATURE: xr.DataArray(
            np.array(labels, dtype=str),
            dims=DIM_FEATURE,
            attrs={"long_name": "element or X-ray line"},
        ),
        "xray_line": (DIM_FEATURE, np.array(names, dtype=str), {"long_name": "X-ray line"}),
        "line_energy": (
            DIM_FEATURE,
            [w.energy_kev for w in windows],
            {"units": "keV", "long_name": "line energy"},
        ),
        "window_lo": (
            DIM_FEATURE,
            [w.lo_kev for w in windows],
            {"units": "keV", "long_name": "window start"},
        ),
        "window_hi": (
            DIM_FEATURE,
            [w.hi_kev for w in windows],
            {"units": "keV", "long_name": "window end"},
        ),
    }
    attrs = _history(
        ds,
        "line_features("
        + _fmt_kwargs(
            lines=labels,
            width_fwhm=width_fwhm,
            background=background,
            mnka_resolution_ev=mnka,
            normalize=normalize,
            ignore_below_kev=ignore_below_kev,
        )
        + ")",
    )
    attrs["xray_lines"] = list(names)
    attrs["feature_lines"] = list(labels)
    return xr.Dataset(out_vars, coords=coords, attrs=attrs)


# ---------------------------------------------------------------------------------------------
# PCA features
# ---------------------------------------------------------------------------------------------


def _row_batches(ny: int, nx: int, batch_size: int) -> list[tuple[int, int]]:
    rows = max(batch_size // max(nx, 1), 1)
    return [(r, min(r + rows, ny)) for r in range(0, ny, rows)]


def pca_features(
    ds: xr.Dataset,
    n_components: int = 8,
    *,
    poisson_scale: bool = True,
    batch_size: int | None = None,
    solver: Literal["covariance", "incremental"] = "covariance",
    show_progress: bool = True,
) -> xr.Dataset:
    """Principal-component scores of every pixel's spectrum, streamed over pixel batches.

    Parameters
    ----------
    ds : xr.Dataset
        Spectrum image, ``counts`` (y, x, energy).
    n_components : int
        Number of components (features ``PC1`` ...).
    poisson_scale : bool
        Weight the data for Poisson noise (Keenan & Kotula 2004): divide ``D[i, j]`` by
        ``sqrt(g[i] * h[j])`` with ``g`` the mean image (mean counts per channel of each pixel)
        and ``h`` the mean spectrum. Empty pixels and empty channels get weight 0 (not NaN).
    batch_size : int, optional
        Pixels per batch (whole rows). Default: about 64 MB of float32 per batch.
    solver : {"covariance", "incremental"}
        ``"covariance"`` (default): accumulate the exact covariance matrix over batches (sparse
        products for sparse counts, so a 2048-channel cube with tens of counts per pixel costs
        little) and take its eigenvectors. ``"incremental"``: scikit-learn's IncrementalPCA on
        the same batches (slower for many channels: one SVD per batch).
    show_progress : bool
        Show a tqdm progress bar over the batches.

    Returns
    -------
    xr.Dataset
        ``features`` (y, x, feature) float32 (scores, centred), ``pca_loading`` (feature,
        energy), ``explained_variance_ratio`` (feature), ``total_counts`` and the navigation
        images. The fit reads the data (two passes for dask: statistics, then covariance); the
        scores of dask input are a lazy ``map_blocks``. Component signs are fixed so that the
        largest loading of each component is positive.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> rng = np.random.default_rng(0)
    >>> ds = make_spectrum_image(rng.poisson(2, (8, 8, 32)).astype(np.uint16), energy_scale_kev=0.1)
    >>> pca_features(ds, 3).features.shape
    (8, 8, 3)
    """
    from tqdm.auto import tqdm

    ds = _require_counts(ds, "pca_features")
    n_components = _positive_int(n_components, "n_components")
    if solver not in ("covariance", "incremental"):
        raise ValueError(f"solver must be 'covariance' or 'incremental'. Got {solver!r} instead.")
    counts = ds[COUNTS]
    ny, nx, ne = counts.shape
    if n_components > min(ne, ny * nx):
        raise ValueError(
            f"n_components must be at most min(n_channels, n_pixels) = {min(ne, ny * nx)}. Got "
            f"{n_components!r}."
        )
    if batch_size is None:
        batch_size = max(int(64e6 // (4 * ne)), n_components + 1)
    batch_size = _positive_int(batch_size, "batch_size")
    data = counts.data
    is_dask = _is_dask(data)
    tdtype = _total_dtype(counts.dtype)
    total = counts.sum(DIM_ENERGY, dtype=tdtype)
    spectrum = counts.sum((DIM_Y, DIM_X), dtype=tdtype)
    if is_dask:
        import dask

        total_np, spectrum_np = dask.compute(total.data, spectrum.data)
    else:
        total_np, spectrum_np = np.asarray(total.data), np.asarray(spectrum.data)
    total_np = np.asarray(total_np, dtype=np.float64)
    if poisson_scale:
        g = total_np / ne
        h = np.asarray(spectrum_np, dtype=np.float64) / (ny * nx)
        row_w = np.where(g > 0, 1.0 / np.sqrt(np.where(g > 0, g, 1.0)), 0.0)
        col_w = np.where(h > 0, 1.0 / np.sqrt(np.where(h > 0, h, 1.0)), 0.0)
    else:
        row_w = np.ones((ny, nx))
        col_w = np.ones(ne)
    batches = _row_batches(ny, nx, batch_size)

    def get_rows(r0: int, r1: int) -> npt.NDArray[Any]:
        block = data[r0:r1]
        return np.asarray(block.compute() if is_dask else block)

    def sparse_rows(flat: npt.NDArray[Any], rw: npt.NDArray[np.float64]) -> Any:
        """Scaled rows as a CSR matrix built from the non-zeros only (no dense float copy)."""
        import scipy.sparse as sp

        r, c = np.nonzero(flat)
        vals = flat[r, c].astype(np.float64) * rw[r] * col_w[c]
        return sp.csr_array((vals, (r, c)), shape=flat.shape)

    def scaled(r0: int, r1: int) -> Any:
        flat = get_rows(r0, r1).reshape(-1, ne)
        rw = row_w[r0:r1].reshape(-1)
        if np.count_nonzero(flat) < 0.1 * flat.size:
            return sparse_rows(flat, rw)
        return (flat.astype(np.float32) * rw[:, None].astype(np.float32)) * col_w.astype(
            np.float32
        )[None, :]

    n_pix = ny * nx
    it = tqdm(batches, desc="pca_features fit", disable=not show_progress)
    if solver == "covariance":
        s1 = np.zeros(ne)
        s2 = np.zeros((ne, ne))
        for r0, r1 in it:
            x = scaled(r0, r1)
            s1 += np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
            xtx = x.T @ x
            s2 += xtx.toarray() if hasattr(xtx, "toarray") else np.asarray(xtx, dtype=np.float64)
        mean = s1 / n_pix
        cov = (s2 - n_pix * np.outer(mean, mean)) / max(n_pix - 1, 1)
        from scipy.linalg import eigh

        # only the top n_components eigenpairs; the total variance is the trace
        evals, evecs = eigh(cov, subset_by_index=[ne - n_components, ne - 1])
        order = np.argsort(evals)[::-1]
        evals = np.clip(evals[order], 0, None)
        comps = evecs[:, order].T
        total_var = float(np.trace(cov))
        ratio = evals / total_var if total_var > 0 else np.zeros(n_components)
    else:
        from sklearn.decomposition import IncrementalPCA

        ipca = IncrementalPCA(n_components=n_components)
        pending: list[npt.NDArray[np.float32]] = []
        n_pending = 0
        for r0, r1 in it:
            x = scaled(r0, r1)
            x = x.toarray() if hasattr(x, "toarray") else x
            pending.append(np.asarray(x, dtype=np.float32))
            n_pending += x.shape[0]
            if n_pending >= n_components:
                ipca.partial_fit(np.concatenate(pending))
                pending, n_pending = [], 0
        if pending:
            ipca.partial_fit(np.concatenate(pending))
        mean = ipca.mean_
        comps = ipca.components_.astype(np.float64)
        ratio = ipca.explained_variance_ratio_
    signs = np.sign(comps[np.arange(comps.shape[0]), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    offset = mean @ comps.T

    def transform(block: npt.NDArray[Any], r0: int = 0) -> npt.NDArray[np.float32]:
        by, bx = block.shape[:2]
        flat = block.reshape(-1, ne)
        rw = row_w[r0 : r0 + by].reshape(-1)
        if np.count_nonzero(flat) < 0.1 * flat.size:
            scores = np.asarray(sparse_rows(flat, rw) @ comps.T)
        else:
            weighted = flat.astype(np.float32) * col_w.astype(np.float32)[None, :]
            scores = (weighted @ comps.T.astype(np.float32)) * rw[:, None]
        return (scores - offset).astype(np.float32).reshape(by, bx, -1)

    if is_dask:
        import dask.array as da

        d = data.rechunk({1: -1, 2: -1}) if data.numblocks[1] > 1 or data.numblocks[2] > 1 else data

        def _tx(
            block: npt.NDArray[Any], block_info: dict[Any, Any] | None = None
        ) -> npt.NDArray[np.float32]:
            r0 = block_info[0]["array-location"][0][0] if block_info else 0
            return transform(block, r0)

        feats: Any = da.map_blocks(
            _tx, d, dtype=np.float32, chunks=(d.chunks[0], d.chunks[1], (n_components,))
        )
    else:
        feats = np.empty((ny, nx, n_components), dtype=np.float32)
        for r0, r1 in tqdm(batches, desc="pca_features transform", disable=not show_progress):
            feats[r0:r1] = transform(np.asarray(data[r0:r1]), r0)
    names = [f"PC{k + 1}" for k in range(n_components)]
    out_vars: dict[str, Any] = {
        FEATURES: xr.DataArray(
            feats,
            dims=(DIM_Y, DIM_X, DIM_FEATURE),
            attrs={
                "units": "1",
                "long_name": "PCA score",
                "kind": "pca",
                "poisson_scale": int(poisson_scale),
            },
        ),
        "pca_loading": xr.DataArray(
            comps.astype(np.float32),
            dims=(DIM_FEATURE, DIM_ENERGY),
            attrs={
                "long_name": "PCA loading" + (" (Poisson-scaled space)" if poisson_scale else "")
            },
        ),
        "explained_variance_ratio": xr.DataArray(
            np.asarray(ratio, dtype=np.float64), dims=DIM_FEATURE
        ),
        TOTAL_COUNTS: xr.DataArray(
            total.data if TOTAL_COUNTS not in ds.data_vars else ds[TOTAL_COUNTS].data,
            dims=(DIM_Y, DIM_X),
            attrs={"units": "counts", "long_name": "total counts per pixel"},
        ),
    }
    for name in _nav_vars(ds):
        if name != TOTAL_COUNTS:
            out_vars[name] = ds[name]
    coords = {DIM_Y: ds[DIM_Y], DIM_X: ds[DIM_X], DIM_ENERGY: ds[DIM_ENERGY], DIM_FEATURE: names}
    attrs = _history(
        ds,
        "pca_features("
        + _fmt_kwargs(n_components=n_components, poisson_scale=poisson_scale, solver=solver)
        + ")",
    )
    return xr.Dataset(out_vars, coords=coords, attrs=attrs)


# ---------------------------------------------------------------------------------------------
# steps on features
# ---------------------------------------------------------------------------------------------


def neighbor_average(
    ds: xr.Dataset,
    *,
    kind: Literal["mean3x3", "gaussian"] = "mean3x3",
    sigma: float = 1.0,
    mode: Literal["nearest", "reflect"] = "nearest",
) -> xr.Dataset:
    """Average every feature map over neighbouring pixels (scipy.ndimage, all features at once).

    Parameters
    ----------
    kind : {"mean3x3", "gaussian"}
        ``"mean3x3"``: mean of the 3x3 neighbourhood (SIGMA's smoothing);
        ``"gaussian"``: Gaussian of standard deviation ``sigma`` pixels (truncated at 4 sigma).
    mode : {"nearest", "reflect"}
        Edge handling: ``"nearest"`` repeats the edge pixel, ``"reflect"`` mirrors the image
        about its edge (``d c b a | a b c d``). For the 3x3 mean both give the same result.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> f = np.zeros((3, 3, 1), np.float32)
    >>> f[1, 1, 0] = 9
    >>> ds = xr.Dataset({"features": (("y", "x", "feature"), f)})
    >>> float(neighbor_average(ds).features[0, 0, 0])
    1.0
    """
    from scipy import ndimage

    ds = _require_features(ds, "neighbor_average")
    if kind not in ("mean3x3", "gaussian"):
        raise ValueError(f"kind must be 'mean3x3' or 'gaussian'. Got {kind!r} instead.")
    if mode not in ("nearest", "reflect"):
        raise ValueError(f"mode must be 'nearest' or 'reflect'. Got {mode!r} instead.")
    if kind == "gaussian" and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number of pixels. Got {sigma!r} instead.")
    feats = ds[FEATURES]
    dtype = feats.dtype if feats.dtype.kind == "f" else np.dtype(np.float32)
    masked = _VALID in ds.data_vars and not bool(np.all(np.asarray(ds[_VALID].values)))

    def smooth(block: npt.NDArray[Any]) -> npt.NDArray[Any]:
        b = np.asarray(block, dtype=dtype)
        if kind == "mean3x3":
            # same numbers as ndimage.uniform_filter(b, size=(3, 3, 1), mode=mode) (for a
            # 1-pixel border 'nearest' and 'reflect' coincide), 3-4x faster on (y, x, feature)
            # data: two shifted sums over a padded copy, vectorised over all features
            p = np.pad(b, ((1, 1), (1, 1), (0, 0)), mode="edge")
            rows = p[:-2] + p[1:-1] + p[2:]
            out = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
            out *= np.asarray(1.0 / 9.0, dtype=out.dtype)
            return out
        return ndimage.gaussian_filter(b, sigma=(sigma, sigma, 0), mode=mode, truncate=4.0)

    data = feats.data
    if masked:
        # mean over valid neighbours only (normalised convolution): no-data pixels never
        # spread into their neighbours; they themselves get 0
        w = np.asarray(ds[_VALID].values, dtype=dtype)[..., None]
        num = smooth(np.asarray(data, dtype=dtype) * w)
        den = smooth(w)
        new = np.where((den > 0) & (w > 0), num / np.where(den > 0, den, 1), 0).astype(dtype)
        out = ds.assign({FEATURES: feats.copy(data=new)})
        return out.assign_attrs(_history(ds, f"neighbor_average(kind={kind!r}, masked)"))
    if _is_dask(data):
        radius = 1 if kind == "mean3x3" else int(math.ceil(4.0 * sigma))
        d = data.rechunk({2: -1}) if data.numblocks[2] > 1 else data
        depth: dict[int, int] = {2: 0}
        for ax in (0, 1):
            # an axis in one chunk needs no overlap (scipy handles its edges); otherwise every
            # chunk must be at least as large as the overlap
            if d.numblocks[ax] > 1 and min(d.chunks[ax]) < radius:
                size = d.shape[ax]
                d = d.rechunk({ax: -1 if size < 2 * radius else radius})
            depth[ax] = radius if d.numblocks[ax] > 1 else 0
        new = d.map_overlap(smooth, depth=depth, boundary=mode, dtype=dtype)
    else:
        new = smooth(data)
    out = ds.assign({FEATURES: feats.copy(data=new)})
    desc = (
        f"kind={kind!r}" + (f", sigma={sigma!r}" if kind == "gaussian" else "") + f", mode={mode!r}"
    )
    return out.assign_attrs(_history(ds, f"neighbor_average({desc})"))


def zscore(ds: xr.Dataset) -> xr.Dataset:
    """Standardise each feature map to mean 0 and standard deviation 1 (over y, x; ddof=0).

    A feature with zero variance (constant map) becomes 0 everywhere, with a warning (numpy data;
    for dask data the check would force a computation, so it is logged at debug level instead).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> f = np.array([[[1.0], [3.0]]], np.float32)
    >>> ds = xr.Dataset({"features": (("y", "x", "feature"), f)})
    >>> zscore(ds).features.values.ravel().tolist()
    [-1.0, 1.0]
    """
    ds = _require_features(ds, "zscore")
    feats = ds[FEATURES]
    f64 = feats.astype(np.float64)
    stats = f64.where(ds[_VALID]) if _VALID in ds.data_vars else f64  # no-data pixels left out
    mean = stats.mean((DIM_Y, DIM_X))
    std = stats.std((DIM_Y, DIM_X))
    if not _is_dask(feats.data):
        zero = np.asarray(std.values) <= 1e-12 * np.maximum(np.abs(np.asarray(mean.values)), 1.0)
        if zero.any():
            names = (
                [str(v) for v in np.asarray(feats[DIM_FEATURE].values)[zero]]
                if DIM_FEATURE in feats.coords
                else np.flatnonzero(zero).tolist()
            )
            warnings.warn(
                f"zscore: feature(s) {names!r} are constant over the image (zero variance) and "
                "are set to 0. "
                "Consider dropping them from the line list.",
                stacklevel=2,
            )
        safe = xr.where(std.copy(data=~zero), std, 1.0)
        valid = xr.DataArray(~zero, dims=std.dims, coords=std.coords)
    else:
        logger.debug("zscore: dask data; zero-variance features become 0 without a warning")
        valid = std > 0
        safe = xr.where(valid, std, 1.0)
    z = xr.where(valid, (f64 - mean) / safe, 0.0)
    if _VALID in ds.data_vars:
        z = z.where(ds[_VALID], 0.0)
    z = z.astype(np.float32).transpose(*feats.dims)
    out = ds.assign(
        {
            FEATURES: z.assign_attrs(
                units="1", long_name="z-score of " + str(feats.attrs.get("long_name", "feature"))
            )
        }
    )
    return out.assign_attrs(_history(ds, "zscore()"))


def softmax(ds: xr.Dataset) -> xr.Dataset:
    """Softmax over the features of each pixel: ``exp(f - max) / sum(exp(f - max))``.

    Subtracting the per-pixel maximum keeps it finite for any finite input.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> f = np.array([[[1000.0, 1000.0]]], np.float32)
    >>> ds = xr.Dataset({"features": (("y", "x", "feature"), f)})
    >>> softmax(ds).features.values.ravel().tolist()
    [0.5, 0.5]
    """
    ds = _require_features(ds, "softmax")
    feats = ds[FEATURES]
    f64 = feats.astype(np.float64)
    ex = np.exp(f64 - f64.max(DIM_FEATURE))
    sm = (ex / ex.sum(DIM_FEATURE)).astype(np.float32).transpose(*feats.dims)
    out = ds.assign(
        {
            FEATURES: sm.assign_attrs(
                units="1", long_name="softmax of " + str(feats.attrs.get("long_name", "feature"))
            )
        }
    )
    return out.assign_attrs(_history(ds, "softmax()"))


# ---------------------------------------------------------------------------------------------
# Preprocessor
# ---------------------------------------------------------------------------------------------

#: step name -> (function, kind): "counts" (counts -> counts), "to_features", "features"
STEPS: dict[str, tuple[Callable[..., xr.Dataset], str]] = {
    "bin_spatial": (bin_spatial, "counts"),
    "rebin_energy": (rebin_energy, "counts"),
    "crop_energy": (crop_energy, "counts"),
    "remove_noise_peak": (remove_noise_peak, "counts"),
    "normalize_total": (normalize_total, "counts"),
    "line_features": (line_features, "to_features"),
    "pca_features": (pca_features, "to_features"),
    "neighbor_average": (neighbor_average, "features"),
    "zscore": (zscore, "features"),
    "softmax": (softmax, "features"),
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Preprocessor:
    """An ordered chain of preprocessing steps, stored as plain data.

    Parameters
    ----------
    steps : list of dict
        Each dict has ``"name"`` (a key of :data:`STEPS`) and that function's keyword
        arguments. Steps on counts come first, then exactly one of ``line_features`` /
        ``pca_features``, then steps on features.

    Examples
    --------
    >>> steps = [{"name": "line_features", "lines": ["Fe_Ka"]}, {"name": "zscore"}]
    >>> pre = Preprocessor(steps=steps)
    >>> Preprocessor.from_json(pre.to_json()) == pre
    True
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    version: int = 1

    def __post_init__(self) -> None:
        self.steps = [_jsonable(dict(s)) for s in self.steps]
        stage = 0  # 0: counts, 1: features
        n_feat = 0
        for k, step in enumerate(self.steps):
            name = step.get("name")
            if name not in STEPS:
                raise ValueError(
                    f"Preprocessor step {k}: unknown name {name!r}; use one of {sorted(STEPS)}."
                )
            func, kind = STEPS[name]
            params = inspect.signature(func).parameters
            allowed = [p for p in params if p != "ds"]
            unknown = [p for p in step if p != "name" and p not in allowed]
            if unknown:
                raise ValueError(
                    f"Preprocessor step {k} ({name}): unknown parameter(s) {unknown!r}; {name} "
                    f"takes {allowed!r}."
                )
            if kind == "counts" and stage == 1:
                raise ValueError(
                    f"Preprocessor step {k} ({name}) works on counts but comes after the features "
                    "were computed; move it before line_features / pca_features."
                )
            if kind == "features" and stage == 0:
                raise ValueError(
                    f"Preprocessor step {k} ({name}) works on features; put line_features or "
                    "pca_features before it."
                )
            if kind == "to_features":
                n_feat += 1
                stage = 1
        if self.steps and n_feat != 1:
            raise ValueError(
                "Preprocessor needs exactly one feature step (line_features or pca_features); "
                f"got {n_feat}."
            )

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def sigma_default(
        cls, lines: str | Sequence[str] | None = None, bin_factor: int | Sequence[int] | None = None
    ) -> Preprocessor:
        """SIGMA's chain: (binning), zero < 0.1 keV, normalise, line windows +/- 1 FWHM, 3x3 mean,
        z-score, softmax.

        ``lines=None`` uses the file's ``xray_lines`` (identified automatically when empty).
        """
        steps: list[dict[str, Any]] = []
        if bin_factor is not None:
            steps.append({"name": "bin_spatial", "factor": bin_factor})
        steps += [
            {"name": "remove_noise_peak", "below_kev": 0.1},
            {"name": "normalize_total"},
            {
                "name": "line_features",
                "lines": lines if isinstance(lines, (str, type(None))) else list(lines),
                "width_fwhm": 1.0,
            },
            {"name": "neighbor_average", "kind": "mean3x3"},
            {"name": "zscore"},
            {"name": "softmax"},
        ]
        return cls(steps=steps)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form: ``{"version": 1, "steps": [...]}``."""
        return {"version": self.version, "steps": copy.deepcopy(self.steps)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Inverse of :meth:`to_dict` (also accepts a bare list of steps)."""
        if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
            return cls(steps=[dict(s) for s in data])
        if not isinstance(data, Mapping) or "steps" not in data:
            raise ValueError(
                f"Preprocessor.from_dict expects a dict with a 'steps' list. Got {data!r}."
            )
        return cls(steps=[dict(s) for s in data["steps"]], version=int(data.get("version", 1)))

    def to_json(self, **kwargs: Any) -> str:
        """JSON text of :meth:`to_dict` (kwargs go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        """Inverse of :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"Preprocessor.from_json: not valid JSON ({err}). Got {text[:80]!r}."
            ) from err
        return cls.from_dict(data)

    # -- application --------------------------------------------------------------------------
    def __call__(self, ds: xr.Dataset) -> xr.Dataset:
        """Apply the chain; see :meth:`apply`."""
        return self.apply(ds)

    def apply(self, ds: xr.Dataset) -> xr.Dataset:
        """Apply the chain to a spectrum image and return the features dataset.

        ``remove_noise_peak`` / ``normalize_total`` steps directly before ``line_features``
        are fused into it (``ignore_below_kev`` / ``normalize``): same numbers, no copy of the
        cube. The result's ``attrs["preprocessing"]`` holds the chain as JSON with
        ``lines="auto"``/``None`` replaced by the lines actually used.
        """
        if not self.steps:
            raise ValueError(
                "Preprocessor has no steps; add at least a line_features or pca_features step."
            )
        _require_counts(ds, "Preprocessor")
        resolved = copy.deepcopy(self.steps)
        out = ds
        k = 0
        while k < len(resolved):
            step = resolved[k]
            name = step["name"]
            func = STEPS[name][0]
            if name in ("remove_noise_peak", "normalize_total"):
                j = k
                fused: dict[str, Any] = {}
                while j < len(resolved) and resolved[j]["name"] in (
                    "remove_noise_peak",
                    "normalize_total",
                ):
                    s = resolved[j]
                    if s["name"] == "remove_noise_peak":
                        if fused.get("normalize"):
                            break  # zeroing after normalising changes the totals: no fusion
                        below = s.get("below_kev", 0.1)
                        fused["ignore_below_kev"] = max(
                            below, fused.get("ignore_below_kev", -np.inf)
                        )
                    else:
                        fused["normalize"] = True
                    j += 1
                if j < len(resolved) and resolved[j]["name"] == "line_features" and j > k:
                    lf = resolved[j]
                    if not lf.get("normalize") and lf.get("ignore_below_kev") is None:
                        kwargs = {p: v for p, v in lf.items() if p != "name"} | fused
                        out = line_features(out, **kwargs)
                        lf["lines"] = as_str_list(
                            out.attrs.get("feature_lines") or out.attrs.get("xray_lines")
                        )
                        k = j + 1
                        continue
            kwargs = {p: v for p, v in step.items() if p != "name"}
            if name == "bin_spatial" and isinstance(kwargs.get("factor"), list):
                kwargs["factor"] = tuple(kwargs["factor"])
            out = func(out, **kwargs)
            if name == "line_features":
                step["lines"] = as_str_list(
                    out.attrs.get("feature_lines") or out.attrs.get("xray_lines")
                )
            k += 1
        out.attrs["preprocessing"] = json.dumps(
            {"version": self.version, "steps": _jsonable(resolved)}
        )
        return out
