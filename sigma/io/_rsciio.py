"""Vendor spectrum-image files through RosettaSciIO, turned into sigma spectrum images.

One generic reader serves every RosettaSciIO plugin: it calls the plugin's ``file_reader``,
picks the spectrum image among the signals the file holds, keeps navigation images of the same
shape, converts the energy axis to keV and fills the contract attrs from the metadata. Reader
options that a plugin implements natively (Bruker ``downsample``/``cutoff_at_kV``, Velox
``rebin_energy``/``sum_frames``/``sum_EDS_detectors``, JEOL ...) are passed to it; for the other
plugins :mod:`sigma.io` applies the same options to the loaded dataset (see ``apply_options``).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sigma._schema import (
    COUNTS,
    DEFAULT_MNKA_RESOLUTION_EV,
    DIM_ENERGY,
    DIM_X,
    DIM_Y,
    NAV_IMAGE_NAMES,
    as_str_list,
    finite_float_or_none,
    make_spectrum_image,
    spatial_coord,
)
from sigma.exceptions import (
    CorruptFileError,
    MissingCalibrationError,
    NoSpectrumImageError,
    SignalSelectionError,
)

__all__ = ["read_rsciio", "apply_options", "NATIVE_OPTIONS"]

logger = logging.getLogger(__name__)

#: sigma option -> (rsciio keyword, plugins that implement it natively)
NATIVE_OPTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "downsample": ("downsample", ("bruker", "jeol")),
    "cutoff_at_kv": ("cutoff_at_kV", ("bruker", "jeol")),
    "rebin_energy": ("rebin_energy", ("emd", "jeol")),
    "sum_frames": ("sum_frames", ("emd", "jeol")),
    "sum_eds_detectors": ("sum_EDS_detectors", ("emd",)),
}

_ENERGY_UNITS_TO_KEV = {"kev": 1.0, "ev": 1e-3}
_UNDEFINED_UNITS = {"", "<undefined>", "undefined", "none", "t.b.d.", "tbd"}
_LENGTH_UNITS_NORMALISED = {"µm": "um", "μm": "um", "micron": "um", "Å": "A", "angstrom": "A"}


def _reader(plugin: str) -> Callable[..., list[dict[str, Any]]]:
    module = importlib.import_module(f"rsciio.{plugin}")
    _one_log_line_per_message()
    return module.file_reader  # type: ignore[no-any-return]


def _one_log_line_per_message() -> None:
    """Drop RosettaSciIO's own console handler where the root logger already prints.

    RosettaSciIO adds a stream handler to its ``rsciio`` logger on import; under a sigma
    command (root handler configured) each of its warnings would print twice, once in each
    format. In a notebook without a root handler, its handler stays.
    """
    import logging

    if not logging.getLogger().handlers:
        return
    log = logging.getLogger("rsciio")
    for handler in list(log.handlers):
        if type(handler) is logging.StreamHandler:
            log.removeHandler(handler)


def _get(tree: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return default
        node = node[key]
    return node


def _sorted_axes(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    axes = [dict(a) for a in obj.get("axes", [])]
    if axes and all("index_in_array" in a for a in axes):
        axes.sort(key=lambda a: a["index_in_array"])
    return axes


def _units(axis: Mapping[str, Any]) -> str:
    units = axis.get("units")
    return "" if units is None else str(units).strip()


def _is_energy_axis(axis: Mapping[str, Any]) -> bool:
    return (
        _units(axis).lower() in _ENERGY_UNITS_TO_KEV
        or "energy" in str(axis.get("name", "")).lower()
    )


def _is_spectral(obj: Mapping[str, Any]) -> bool:
    """True when a signal's last array axis is spectral (a spectrum, line scan or spectrum image).

    The last axis must be a signal axis in keV/eV or named like an energy, or the signal type must
    be a spectroscopy one (EDS, EELS, CL). A 2-D signal counts only when its first axis is a
    navigation axis (a line scan); otherwise it is an image.
    """
    axes = _sorted_axes(obj)
    ndim = np.ndim(obj["data"])
    if not axes or len(axes) != ndim:
        return False
    last = axes[-1]
    if last.get("navigate", False):
        return False
    if ndim == 2 and not axes[0].get("navigate", False):
        return False
    signal_type = str(_get(obj.get("metadata", {}), "Signal.signal_type", "") or "")
    return _is_energy_axis(last) or signal_type.upper().startswith(("EDS", "EELS", "CL"))


def _title(obj: Mapping[str, Any]) -> str:
    return str(_get(obj.get("metadata", {}), "General.title", "") or "")


def _describe(objs: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"#{i} {_title(o)!r} shape {tuple(np.shape(o['data']))}" for i, o in enumerate(objs)
    )


def _select(
    candidates: list[dict[str, Any]], select_signal: int | str | None, path: Path, kind: str
) -> dict[str, Any]:
    if select_signal is None:
        if len(candidates) == 1:
            return candidates[0]
        raise SignalSelectionError(
            f"{os.fspath(path)!r} holds {len(candidates)} {kind}s: {_describe(candidates)}. "
            "Choose one with select_signal=<index or title> (e.g. select_signal=0)"
            + (
                ", or sum the detectors with sum_eds_detectors=True."
                if kind == "spectrum image"
                else "."
            )
        )
    if isinstance(select_signal, (int, np.integer)) and not isinstance(select_signal, bool):
        if -len(candidates) <= select_signal < len(candidates):
            return candidates[int(select_signal)]
    elif isinstance(select_signal, str):
        hits = [o for o in candidates if _title(o).lower() == select_signal.lower()]
        if len(hits) == 1:
            return hits[0]
    raise SignalSelectionError(
        f"select_signal={select_signal!r} does not pick exactly one of the {len(candidates)} "
        f"{kind}s in {os.fspath(path)!r}: {_describe(candidates)}. Give an index in "
        f"[0, {len(candidates)}) or a unique title."
    )


def _energy_calibration(
    axis: Mapping[str, Any], path: Path, override: tuple[float, float] | None
) -> tuple[float, float]:
    """Return ``(scale_kev, offset_kev)`` of the file's energy axis (or the override)."""
    if override is not None:
        try:
            scale, offset = (float(v) for v in override)
        except (TypeError, ValueError) as err:
            raise MissingCalibrationError(
                f"energy_calibration must be (scale_kev, offset_kev), two numbers in keV. Got "
                f"{override!r}."
            ) from err
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(offset)):
            raise MissingCalibrationError(
                f"energy_calibration must hold a positive, finite scale in keV per channel and a "
                f"finite offset in keV. Got {override!r}."
            )
        return scale, offset
    units = _units(axis)
    factor = _ENERGY_UNITS_TO_KEV.get(units.lower())
    scale = float(axis.get("scale", np.nan) or np.nan)
    offset = float(axis.get("offset", 0.0) or 0.0)
    fix = (
        "Pass the calibration yourself: sigma.io.load(path, energy_calibration=(scale_kev, "
        "offset_kev)), e.g. (0.01, -0.48) for 10 eV channels."
    )
    if factor is None:
        problem = (
            "has no units"
            if units.lower() in _UNDEFINED_UNITS
            else f"is in {units!r}, not keV or eV"
        )
        raise MissingCalibrationError(
            f"{os.fspath(path)!r}: the spectral axis {axis.get('name')!r} {problem} "
            f"(scale {axis.get('scale')!r}, offset {axis.get('offset')!r}), so sigma cannot place "
            f"X-ray lines on it. {fix}"
        )
    if not (np.isfinite(scale) and scale > 0 and np.isfinite(offset)):
        raise MissingCalibrationError(
            f"{os.fspath(path)!r}: the energy axis has scale {axis.get('scale')!r} and offset "
            f"{axis.get('offset')!r} {units}; the scale must be a positive number. {fix}"
        )
    return scale * factor, offset * factor


def _spatial(axis: Mapping[str, Any] | None) -> tuple[float, float, str]:
    """Return ``(scale, offset, units)`` of a navigation axis (``(1, 0, "px")`` when unknown)."""
    if axis is None:
        return 1.0, 0.0, "px"
    units = _units(axis)
    scale = axis.get("scale", 1.0)
    offset = axis.get("offset", 0.0) or 0.0
    if (
        units.lower() in _UNDEFINED_UNITS
        or scale is None
        or not np.isfinite(float(scale))
        or float(scale) <= 0
    ):
        return 1.0, 0.0, "px"
    return float(scale), float(offset), _LENGTH_UNITS_NORMALISED.get(units, units)


def _nav_name(title: str, taken: set[str]) -> str:
    """Variable name of a navigation image from its title (``"BSE"`` -> ``"bse"``)."""
    slug = re.sub(r"[^0-9a-z]+", "_", title.lower()).strip("_")
    name = slug if slug in NAV_IMAGE_NAMES else "image"
    candidate, i = name, 2
    while candidate in taken or candidate == COUNTS:
        candidate, i = f"{name}{i}", i + 1
    return candidate


def _fit_image(img: Any, ny: int, nx: int) -> Any | None:
    """Return ``img`` block-averaged to ``(ny, nx)`` when it is an integer multiple (ceil) of it."""
    if img.shape == (ny, nx):
        return img
    fy, fx = -(-img.shape[0] // ny), -(-img.shape[1] // nx)
    if fy != fx or fy < 2 or -(-img.shape[0] // fy) != ny or -(-img.shape[1] // fx) != nx:
        return None
    da = xr.DataArray(np.asarray(img, dtype=np.float64), dims=(DIM_Y, DIM_X))
    return da.coarsen({DIM_Y: fy, DIM_X: fx}, boundary="pad").mean().values


def _attrs_from_metadata(
    md: Mapping[str, Any], path: Path, original: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Contract attrs from RosettaSciIO ``metadata`` (and vendor ``original_metadata``)."""
    instrument = next(
        (k for k in ("SEM", "TEM") if isinstance(_get(md, f"Acquisition_instrument.{k}"), Mapping)),
        None,
    )
    attrs: dict[str, Any] = {}
    beam = _get(md, f"Acquisition_instrument.{instrument}.beam_energy") if instrument else None
    beam_kev = finite_float_or_none(beam)
    if beam_kev is None:
        # Velox files: rsciio leaves the high tension in original_metadata, in volts
        volts = finite_float_or_none(_get(original or {}, "Optics.AccelerationVoltage"))
        beam_kev = volts / 1000.0 if volts else None
    attrs["beam_energy_kev"] = beam_kev if beam_kev is not None else float("nan")
    attrs["elements"] = sorted(as_str_list(_get(md, "Sample.elements")))
    attrs["xray_lines"] = sorted(as_str_list(_get(md, "Sample.xray_lines")))
    eds = _get(md, f"Acquisition_instrument.{instrument}.Detector.EDS", {}) if instrument else {}
    res = eds.get("energy_resolution_MnKa") if isinstance(eds, Mapping) else None
    attrs["energy_resolution_mnka_ev"] = (
        float(res) if res is not None else DEFAULT_MNKA_RESOLUTION_EV
    )
    attrs["source"] = os.fspath(path.resolve())
    if instrument:
        attrs["instrument"] = instrument
    for key, name in (
        ("live_time", "live_time_s"),
        ("real_time", "real_time_s"),
        ("elevation_angle", "elevation_angle_deg"),
        ("azimuth_angle", "azimuth_angle_deg"),
    ):
        value = eds.get(key) if isinstance(eds, Mapping) else None
        if isinstance(value, (int, float, np.number)) and np.isfinite(value):
            attrs[name] = float(value)
    for key, name in (
        ("General.title", "title"),
        ("Signal.signal_type", "signal_type"),
        ("General.date", "acquisition_date"),
        ("General.time", "acquisition_time"),
    ):
        value = _get(md, key)
        if isinstance(value, str) and value:
            attrs[name] = value
    return attrs


def _corrupt(path: Path, plugin: str, err: BaseException) -> CorruptFileError:
    return CorruptFileError(
        f"{os.fspath(path)!r}: the RosettaSciIO {plugin!r} reader could not parse it "
        f"({type(err).__name__}: {err}). The file may be truncated, damaged or not really a "
        f"{path.suffix} file; check it opens in the vendor software, or export it again."
    )


def _reader_call(plugin: str, path: Path, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    reader = _reader(plugin)
    accepted = inspect.signature(reader).parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [k for k in kwargs if k not in accepted and not takes_var_kw]
    if unknown:
        allowed = [k for k in accepted if k != "filename"]
        raise TypeError(
            f"reader option(s) {unknown!r} are not understood by the RosettaSciIO {plugin!r} "
            "reader "
            f"used for {os.fspath(path)!r}. Its options are {allowed!r}."
        )
    try:
        objs = reader(os.fspath(path), **kwargs)
    except FileNotFoundError:
        raise
    except TypeError as err:
        extra = [k for k in kwargs if k not in accepted]
        if any(repr(k) in str(err) or k in str(err) for k in extra):
            allowed = [k for k in accepted if k not in ("filename", "kwds", "kwargs")]
            raise TypeError(
                f"reader option(s) {extra!r} are not understood by the RosettaSciIO {plugin!r} "
                f"reader used for {os.fspath(path)!r} ({err}). Its options are {allowed!r}."
            ) from err
        raise _corrupt(path, plugin, err) from err
    except MemoryError as err:
        raise MemoryError(
            f"{os.fspath(path)!r} does not fit in memory. Load it with lazy=True, or reduce it "
            "while "
            "reading (downsample=2, cutoff_at_kv=..., rebin_energy=2)."
        ) from err
    except Exception as err:  # any parser failure: the file is not what its extension says
        raise _corrupt(path, plugin, err) from err
    if not isinstance(objs, list):
        objs = [objs]
    return objs


def read_rsciio(
    path: Path,
    plugin: str,
    *,
    lazy: bool = False,
    options: Mapping[str, Any] | None = None,
    select_signal: int | str | None = None,
    energy_calibration: tuple[float, float] | None = None,
    reader_kwargs: Mapping[str, Any] | None = None,
) -> tuple[xr.Dataset, dict[str, Any]]:
    """Read ``path`` with the RosettaSciIO plugin ``plugin`` into a spectrum image.

    Parameters
    ----------
    path
        The file.
    plugin
        Module name under ``rsciio`` (``"bruker"``, ``"emd"``, ``"edax"``, ...).
    lazy
        Ask the reader for dask arrays (where it supports that).
    options
        sigma options (``downsample``, ``cutoff_at_kv``, ``rebin_energy``, ``sum_frames``,
        ``sum_eds_detectors``) with their values; the plugin gets those it implements.
    select_signal, energy_calibration, reader_kwargs
        As in :func:`sigma.io.load`.

    Returns
    -------
    ds, remaining
        The spectrum image, and the options the plugin did not apply (to apply afterwards).
    """
    kwargs: dict[str, Any] = dict(reader_kwargs or {})
    remaining: dict[str, Any] = {}
    for name, value in (options or {}).items():
        keyword, plugins = NATIVE_OPTIONS[name]
        if plugin in plugins:
            if value is not None:
                kwargs[keyword] = value
        else:
            remaining[name] = value
    reader = _reader(plugin)
    if "lazy" in inspect.signature(reader).parameters:
        kwargs["lazy"] = lazy
    if plugin == "bruker":
        kwargs.setdefault("select_type", None)  # keep the BSE/SE images next to the hypermap

    try:
        objs = _reader_call(plugin, path, kwargs)
    except CorruptFileError as err:
        # some readers take lazy= but refuse it (msa): read eagerly, wrap in dask below
        if not (kwargs.get("lazy") and isinstance(err.__cause__, NotImplementedError)):
            raise
        logger.info("%s: the %r reader cannot read lazily; reading it eagerly", path, plugin)
        objs = _reader_call(plugin, path, {**kwargs, "lazy": False})
    spectral = [o for o in objs if _is_spectral(o)]
    maps = [o for o in spectral if np.ndim(o["data"]) >= 3]
    if maps:
        chosen = _select(maps, select_signal, path, "spectrum image")
    elif spectral:
        chosen = _select(spectral, select_signal, path, "spectrum")
    else:
        raise NoSpectrumImageError(
            f"{os.fspath(path)!r} holds no spectrum image, only {_describe(objs) or 'no signals'}. "
            "sigma needs a map with a spectrum in every pixel (dims y, x, energy); export the "
            "spectrum image (not only images or maps of elements) from the acquisition software."
        )
    data = chosen["data"]
    axes = _sorted_axes(chosen)
    while np.ndim(data) > 3 and data.shape[0] == 1:  # e.g. one frame read with sum_frames=False
        data, axes = data[0], axes[1:]
    if np.ndim(data) == 1:
        logger.info("%s holds a single spectrum; loading it as a 1 x 1 pixel map", path)
        data = data[None, None, :]
        axes = [None, None, axes[-1]]  # type: ignore[list-item]
    elif np.ndim(data) == 2:
        data = data[None, :, :]
        axes = [None, *axes]  # type: ignore[list-item]
    elif np.ndim(data) > 3:
        raise NoSpectrumImageError(
            f"{os.fspath(path)!r}: the spectrum image has {np.ndim(data)} axes "
            f"{[a['name'] for a in axes]!r}; sigma needs (y, x, energy). For frame-resolved files "
            "keep sum_frames=True, or read one frame with first_frame=i, last_frame=i + 1."
        )
    scale_kev, offset_kev = _energy_calibration(axes[-1], path, energy_calibration)
    dx, ox, ux = _spatial(axes[1])
    dy, oy, uy = _spatial(axes[0]) if axes[0] is not None else (dx, 0.0, ux)  # 1-row maps
    if uy != ux:
        logger.warning("%s: y axis in %r but x axis in %r; using pixels for both", path, uy, ux)
        dy, oy, uy, dx, ox, ux = 1.0, 0.0, "px", 1.0, 0.0, "px"

    ny, nx = data.shape[0], data.shape[1]
    nav_images: dict[str, Any] = {}
    nav_titles: dict[str, str] = {}
    for obj in objs:
        if obj is chosen or _is_spectral(obj) or np.ndim(obj["data"]) != 2:
            continue
        img = _fit_image(obj["data"] if not lazy else np.asarray(obj["data"]), ny, nx)
        if img is None:
            logger.info(
                "%s: skipping image %r of shape %s (map is %d x %d)",
                path,
                _title(obj),
                np.shape(obj["data"]),
                ny,
                nx,
            )
            continue
        name = _nav_name(_title(obj), set(nav_images))
        nav_images[name] = img
        nav_titles[name] = _title(obj)

    attrs = _attrs_from_metadata(chosen.get("metadata", {}), path, chosen.get("original_metadata"))
    if lazy:
        import dask.array as da

        if not isinstance(data, da.Array):
            data = da.from_array(np.asarray(data), chunks=(128, 128, -1))
    ds = make_spectrum_image(
        data,
        energy_scale_kev=scale_kev,
        energy_offset_kev=offset_kev,
        pixel_size=(dy, dx),
        pixel_units=uy,
        attrs=attrs,
        nav_images=nav_images,
    )
    ds = ds.assign_coords(
        {
            DIM_Y: spatial_coord(DIM_Y, ny, dy, uy, oy),
            DIM_X: spatial_coord(DIM_X, nx, dx, ux, ox),
        }
    )
    for name, title in nav_titles.items():
        ds[name].attrs["title"] = title
    return ds, remaining


def apply_options(ds: xr.Dataset, options: Mapping[str, Any]) -> xr.Dataset:
    """Apply reader options the format did not implement, on the loaded dataset (lazy-safe).

    ``downsample`` sums ``n x n`` pixel blocks (trimming incomplete blocks at the edges; nav
    images are averaged), ``cutoff_at_kv`` keeps channels up to that energy, ``rebin_energy``
    sums groups of ``n`` channels (energy coordinate: mean of the channel centres).
    """
    out = ds
    cutoff = options.get("cutoff_at_kv")
    if cutoff is not None:
        out = out.sel({DIM_ENERGY: out[DIM_ENERGY] <= float(cutoff)})
        if out.sizes[DIM_ENERGY] < 2:
            raise ValueError(
                f"cutoff_at_kv={cutoff!r} keeps {out.sizes[DIM_ENERGY]} channel(s): the energy "
                f"axis starts at {float(ds[DIM_ENERGY][0]):.4f} keV. Give a higher cutoff."
            )
    for name, dims in (("rebin_energy", (DIM_ENERGY,)), ("downsample", (DIM_Y, DIM_X))):
        factor = options.get(name)
        too_small = [d for d in dims if factor is not None and out.sizes[d] < int(factor)]
        if too_small:
            raise ValueError(
                f"{name}={factor!r} is larger than the {too_small[0]!r} axis "
                f"({out.sizes[too_small[0]]}); nothing would be left. Use a smaller factor."
            )
    factor = options.get("rebin_energy")
    if factor is not None and int(factor) > 1:
        counts = (
            out[COUNTS].coarsen({DIM_ENERGY: int(factor)}, boundary="trim", coord_func="mean").sum()
        )
        out = out.drop_vars(COUNTS).drop_dims(DIM_ENERGY).assign({COUNTS: counts})
        out[DIM_ENERGY].attrs = dict(ds[DIM_ENERGY].attrs)
        out[COUNTS].attrs = dict(ds[COUNTS].attrs)
    step = options.get("downsample")
    if step is not None and int(step) > 1:
        n = int(step)
        new_vars: dict[Hashable, xr.DataArray] = {}
        for var_name, var in out.data_vars.items():
            if DIM_Y in var.dims and DIM_X in var.dims:
                coarse = var.coarsen({DIM_Y: n, DIM_X: n}, boundary="trim", coord_func="mean")
                new_vars[var_name] = coarse.sum() if var_name == COUNTS else coarse.mean()
                new_vars[var_name].attrs = dict(var.attrs)
        others = out.drop_vars(list(new_vars)).drop_dims([DIM_Y, DIM_X])
        out = xr.merge([others, xr.Dataset(new_vars)], combine_attrs="override")
        out.attrs = dict(ds.attrs)
        for dim in (DIM_Y, DIM_X):
            out[dim].attrs = dict(ds[dim].attrs)
    # sum_frames / sum_eds_detectors: files without frames or detectors are summed already
    return out
