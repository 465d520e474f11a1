"""Steps on counts: spatial binning, energy rebinning and cropping, the zero peak, normalisation."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._checks import check_int
from sigma._schema import COUNTS, DIM_ENERGY, DIM_X, DIM_Y
from sigma.preprocessing._common import (
    _COUNT_UNITS,
    TOTAL_COUNTS,
    _energy_kev,
    _fmt_kwargs,
    _history,
    _is_dask,
    _nav_vars,
    _require_counts,
    _sum_dtype,
    _total_dtype,
)

logger = logging.getLogger(__name__)


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
        fy, fx = (check_int("factor", f, 1) for f in factor)  # type: ignore[union-attr]
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
    factor = check_int("factor", factor, 1)
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
