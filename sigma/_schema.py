"""sigma's data contract: dimension names, attributes and validation.

A *spectrum image* is an :class:`xarray.Dataset` with

- a variable ``counts`` with dims ``(y, x, energy)`` (integer counts as read, numpy or dask backed);
- coordinate ``energy`` in keV with CF attrs ``units="keV"`` and ``long_name``;
- coordinates ``y`` and ``x`` with ``units`` (nm, um, ... or ``"px"`` when the file has no scale);
- optional navigation images (``bse``, ``se``, ``haadf`` ...) with dims ``(y, x)``;
- attrs ``beam_energy_kev``, ``elements``, ``xray_lines``, ``energy_resolution_mnka_ev``,
  ``source`` and ``history`` (lists of str in memory; :func:`sigma.io.save` stores list and dict
  attrs as JSON strings and :func:`sigma.io.open_dataset` restores them exactly).

Feature datasets have a variable ``features`` with dims ``(y, x, feature)``; results add
``latent`` and ``cluster`` dims.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from typing import Any

import numpy as np
import xarray as xr

from sigma.exceptions import SchemaError

DIM_Y = "y"
DIM_X = "x"
DIM_ENERGY = "energy"
DIM_FEATURE = "feature"
DIM_LATENT = "latent"
DIM_CLUSTER = "cluster"
DIM_COMPONENT = "component"

COUNTS = "counts"
FEATURES = "features"

ENERGY_ATTRS = {"units": "keV", "long_name": "X-ray energy", "standard_name": "photon_energy"}
NAV_IMAGE_NAMES = ("bse", "se", "haadf", "adf", "bf", "image")

DEFAULT_MNKA_RESOLUTION_EV = 130.0

#: attrs every spectrum image carries, with their default values
DEFAULT_ATTRS: dict[str, Any] = {
    "beam_energy_kev": np.nan,
    "elements": [],
    "xray_lines": [],
    "energy_resolution_mnka_ev": DEFAULT_MNKA_RESOLUTION_EV,
    "source": "",
    "history": [],
}

#: metadata attrs that travel with the data from raw cube to features, latent and results
METADATA_ATTRS: tuple[str, ...] = (
    "source",
    "beam_energy_kev",
    "elements",
    "xray_lines",
    "energy_resolution_mnka_ev",
    "history",
)

_LENGTH_UNITS = {"pm", "nm", "um", "µm", "mm", "m", "px", "Å", "A"}

__all__ = [
    "DIM_Y",
    "DIM_X",
    "DIM_ENERGY",
    "DIM_FEATURE",
    "DIM_LATENT",
    "DIM_CLUSTER",
    "DIM_COMPONENT",
    "COUNTS",
    "FEATURES",
    "ENERGY_ATTRS",
    "NAV_IMAGE_NAMES",
    "DEFAULT_ATTRS",
    "METADATA_ATTRS",
    "energy_coord",
    "spatial_coord",
    "make_spectrum_image",
    "validate_spectrum_image",
    "validate_features",
    "append_history",
    "as_str_list",
    "finite_float_or_none",
    "energy_scale",
]


def finite_float_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is missing, not a number, NaN or inf.

    Examples
    --------
    >>> finite_float_or_none("15"), finite_float_or_none(float("nan")), finite_float_or_none(None)
    (15.0, None, None)
    """
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def as_str_list(value: Any) -> list[str]:
    """Return ``value`` (None, a str, or an iterable of str) as a list of str.

    NetCDF stores a one-element list attr as a plain string and an empty one may come back as
    an empty array; this undoes both.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, np.ndarray):
        return [str(v) for v in value.tolist()]
    if isinstance(value, Iterable):
        return [str(v) for v in value]
    return [str(value)]


def energy_coord(n_channels: int, scale_kev: float, offset_kev: float = 0.0) -> xr.DataArray:
    """Return an ``energy`` coordinate in keV of ``n_channels`` channels (channel centres)."""
    if not np.isfinite(scale_kev) or scale_kev <= 0:
        raise SchemaError(
            f"energy scale must be a positive number of keV per channel. Got {scale_kev!r} instead."
        )
    values = offset_kev + scale_kev * np.arange(n_channels, dtype=np.float64)
    return xr.DataArray(values, dims=DIM_ENERGY, attrs=dict(ENERGY_ATTRS))


def spatial_coord(
    dim: str, n: int, scale: float = 1.0, units: str = "px", offset: float = 0.0
) -> xr.DataArray:
    """Return a ``y`` or ``x`` coordinate with ``units`` (``"px"`` when the scale is unknown)."""
    values = offset + scale * np.arange(n, dtype=np.float64)
    long_name = {"y": "scan position y", "x": "scan position x"}.get(dim, dim)
    return xr.DataArray(values, dims=dim, attrs={"units": units, "long_name": long_name})


def make_spectrum_image(
    counts: Any,
    *,
    energy_scale_kev: float,
    energy_offset_kev: float = 0.0,
    pixel_size: tuple[float, float] = (1.0, 1.0),
    pixel_units: str = "px",
    attrs: dict[str, Any] | None = None,
    nav_images: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Build a valid spectrum image from a ``(y, x, energy)`` array (numpy or dask).

    Parameters
    ----------
    counts
        Array with axes ``(y, x, energy)``; kept as given (no copy, dtype unchanged).
    energy_scale_kev, energy_offset_kev
        Energy calibration in keV: channel ``i`` is centred on ``offset + i * scale``.
    pixel_size
        ``(dy, dx)`` in ``pixel_units``.
    attrs
        Extra attrs; missing contract attrs get their defaults.
    nav_images
        Navigation images with shape ``(y, x)``, e.g. ``{"bse": array}``.

    Returns
    -------
    xr.Dataset
        A dataset that passes :func:`validate_spectrum_image`.
    """
    if getattr(counts, "ndim", None) != 3:
        raise SchemaError(
            f"counts must be a 3-D array with axes (y, x, energy). Got shape "
            f"{getattr(counts, 'shape', None)!r} instead."
        )
    ny, nx, ne = counts.shape
    coords = {
        DIM_Y: spatial_coord(DIM_Y, ny, pixel_size[0], pixel_units),
        DIM_X: spatial_coord(DIM_X, nx, pixel_size[1], pixel_units),
        DIM_ENERGY: energy_coord(ne, energy_scale_kev, energy_offset_kev),
    }
    data_vars: dict[str, Any] = {
        COUNTS: xr.DataArray(
            counts,
            dims=(DIM_Y, DIM_X, DIM_ENERGY),
            attrs={"units": "counts", "long_name": "X-ray counts"},
        )
    }
    for name, img in (nav_images or {}).items():
        data_vars[name] = xr.DataArray(
            img, dims=(DIM_Y, DIM_X), attrs={"long_name": f"{name.upper()} navigation image"}
        )
    full_attrs = {k: (list(v) if isinstance(v, list) else v) for k, v in DEFAULT_ATTRS.items()}
    full_attrs.update(attrs or {})
    for key in ("elements", "xray_lines", "history"):
        full_attrs[key] = as_str_list(full_attrs.get(key))
    return xr.Dataset(data_vars, coords=coords, attrs=full_attrs)


def energy_scale(ds: xr.Dataset | xr.DataArray) -> tuple[float, float]:
    """Return ``(scale, offset)`` of the energy axis in keV (scale from the mean spacing)."""
    e = np.asarray(ds[DIM_ENERGY].values, dtype=np.float64)
    if e.size < 2:
        raise SchemaError(
            f"the energy axis needs at least 2 channels to have a scale. Got {e.size}."
        )
    return float((e[-1] - e[0]) / (e.size - 1)), float(e[0])


def _check_energy_coord(ds: xr.Dataset, where: str) -> None:
    if DIM_ENERGY not in ds.coords:
        raise SchemaError(
            f"{where}: coordinate 'energy' is missing. Give the energy axis in keV, e.g. "
            "ds.assign_coords(energy=sigma._schema.energy_coord(n, scale_kev, offset_kev))."
        )
    units = ds[DIM_ENERGY].attrs.get("units")
    if units != "keV":
        raise SchemaError(
            f"{where}: the 'energy' coordinate must be in keV (attrs['units'] == 'keV'). Got units "
            f"{units!r}. Convert it, e.g. ds.assign_coords(energy=ds.energy / 1000) for eV, and set "
            "attrs['units'] = 'keV'."
        )
    e = np.asarray(ds[DIM_ENERGY].values)
    if e.size > 1 and not np.all(np.diff(e) > 0):
        raise SchemaError(
            f"{where}: the 'energy' coordinate must increase strictly from channel to channel."
        )
    if not np.all(np.isfinite(e)):
        raise SchemaError(f"{where}: the 'energy' coordinate holds NaN or inf values.")


def validate_spectrum_image(
    ds: Any, *, check_values: bool = False, where: str = "spectrum image"
) -> xr.Dataset:
    """Check that ``ds`` follows the spectrum-image contract and return it unchanged.

    Parameters
    ----------
    ds
        The object to check.
    check_values
        Also scan the counts for NaN, inf and negative values (reads all data; for dask arrays
        it computes a reduction, chunk by chunk).
    where
        Name used at the start of error messages (e.g. the calling function).

    Raises
    ------
    SchemaError
        Naming the first problem found and how to fix it.
    """
    if isinstance(ds, xr.DataArray):
        raise SchemaError(
            f"{where}: expected an xarray.Dataset with a 'counts' variable, got a DataArray. "
            "Wrap it with da.to_dataset(name='counts')."
        )
    if not isinstance(ds, xr.Dataset):
        raise SchemaError(
            f"{where}: expected an xarray.Dataset (as returned by sigma.load), got {type(ds).__name__}."
        )
    if COUNTS not in ds.data_vars:
        raise SchemaError(
            f"{where}: variable 'counts' not found in dataset variables {list(ds.data_vars)!r}. "
            "Load files with sigma.load() or build datasets with sigma._schema.make_spectrum_image()."
        )
    dims = ds[COUNTS].dims
    if tuple(dims) != (DIM_Y, DIM_X, DIM_ENERGY):
        raise SchemaError(
            f"{where}: 'counts' must have dims ('y', 'x', 'energy'). Got {tuple(dims)!r}. "
            "Rename or transpose, e.g. ds.transpose('y', 'x', 'energy')."
        )
    _check_energy_coord(ds, where)
    for dim in (DIM_Y, DIM_X):
        if dim in ds.coords and "units" not in ds[dim].attrs:
            raise SchemaError(
                f"{where}: coordinate {dim!r} has no 'units' attribute (use 'px' if unknown)."
            )
    if check_values:
        _check_counts_values(ds[COUNTS], where)
    return ds


def _check_counts_values(counts: xr.DataArray, where: str) -> None:
    data = counts.data
    if np.issubdtype(counts.dtype, np.unsignedinteger):
        return
    if np.issubdtype(counts.dtype, np.floating):
        n_bad = int(np.asarray((~np.isfinite(data)).sum()))
        if n_bad:
            raise SchemaError(
                f"{where}: 'counts' holds {n_bad} NaN or inf values. Replace them "
                "(e.g. ds['counts'] = ds.counts.fillna(0)) or crop the affected pixels."
            )
    n_neg = int(np.asarray((data < 0).sum()))
    if n_neg:
        raise SchemaError(
            f"{where}: 'counts' holds {n_neg} negative values; X-ray counts cannot be negative. "
            "Check the file's offset/background subtraction, or clip with ds['counts'] = ds.counts.clip(min=0)."
        )


def validate_features(ds: Any, *, where: str = "features") -> xr.Dataset:
    """Check a feature dataset: variable ``features`` with dims ``(y, x, feature)``, finite values."""
    if not isinstance(ds, xr.Dataset) or FEATURES not in ds.data_vars:
        have = list(ds.data_vars) if isinstance(ds, xr.Dataset) else type(ds).__name__
        raise SchemaError(
            f"{where}: expected a Dataset with a 'features' variable (from sigma.preprocessing), got {have!r}."
        )
    dims = tuple(ds[FEATURES].dims)
    if dims != (DIM_Y, DIM_X, DIM_FEATURE):
        raise SchemaError(
            f"{where}: 'features' must have dims ('y', 'x', 'feature'). Got {dims!r}."
        )
    return ds


def append_history(attrs: dict[str, Any], step: str) -> dict[str, Any]:
    """Return a copy of ``attrs`` with ``step`` (one line) appended to ``attrs['history']``."""
    new = dict(attrs)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    new["history"] = [*as_str_list(attrs.get("history")), f"{stamp} {step}"]
    return new
