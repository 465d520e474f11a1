"""Read spectrum images from vendor files; save and reopen any sigma dataset.

- :func:`load` reads Bruker ``.bcf``/``.spx``, Velox ``.emd``, EDAX ``.spd``/``.spc``, JEOL
  ``.pts``, Ripple ``.rpl`` (+ ``.raw``), EMSA ``.msa``, HyperSpy ``.hspy``/``.zspy`` (all through
  RosettaSciIO) and sigma's own NetCDF/Zarr files, and returns a spectrum image: an
  :class:`xarray.Dataset` with integer ``counts`` (dims ``y, x, energy``, energy in keV),
  navigation images (``bse``, ``se``, ``haadf`` ...) and the contract attrs.
- :func:`save` writes any sigma dataset to NetCDF (h5netcdf) or Zarr; :func:`open_dataset`
  reads it back, identical (``xr.testing.assert_identical``), attrs with their Python types.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from sigma._schema import make_spectrum_image
>>> ds = make_spectrum_image(np.ones((4, 5, 32), dtype=np.uint16), energy_scale_kev=0.01,
...                          attrs={"elements": ["Fe"]})
>>> path = pathlib.Path(tempfile.mkdtemp()) / "cube.nc"
>>> _ = save(ds, path)
>>> back = load(path)
>>> back.counts.shape, back.attrs["elements"]
((4, 5, 32), ['Fe'])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from sigma._checks import check_int
from sigma._schema import COUNTS, append_history, validate_spectrum_image
from sigma.exceptions import SchemaError, UnsupportedFormatError
from sigma.io import _netcdf, _rsciio

__all__ = ["load", "save", "open_dataset", "READERS", "SUPPORTED_EXTENSIONS", "Reader"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reader:
    """One entry of :data:`READERS`: a format name and the function that reads it.

    ``read(path, lazy=..., options=..., select_signal=..., energy_calibration=...,
    reader_kwargs=...)`` returns ``(dataset, options_not_applied)``.
    """

    name: str
    description: str
    read: Callable[..., tuple[xr.Dataset, dict[str, Any]]]


def _rsciio_reader(plugin: str) -> Callable[..., tuple[xr.Dataset, dict[str, Any]]]:
    def read(path: Path, **kwargs: Any) -> tuple[xr.Dataset, dict[str, Any]]:
        return _rsciio.read_rsciio(path, plugin, **kwargs)

    read.__name__ = f"read_{plugin}"
    return read


def _read_own(
    path: Path,
    *,
    lazy: bool = False,
    options: dict[str, Any] | None = None,
    select_signal: int | str | None = None,
    energy_calibration: tuple[float, float] | None = None,
    reader_kwargs: dict[str, Any] | None = None,
) -> tuple[xr.Dataset, dict[str, Any]]:
    if reader_kwargs:
        raise TypeError(
            f"reader option(s) {sorted(reader_kwargs)!r} are not understood by sigma's NetCDF/Zarr "
            f"reader used for {os.fspath(path)!r}; it takes only lazy= and the sigma options."
        )
    if select_signal is not None or energy_calibration is not None:
        raise TypeError(
            "select_signal and energy_calibration apply to vendor files only; a sigma NetCDF/Zarr "
            f"file ({os.fspath(path)!r}) holds one dataset with its calibration."
        )
    ds = _netcdf.open_dataset(path, lazy=lazy)
    return ds, {k: v for k, v in (options or {}).items()}


_BRUKER = Reader("bruker", "Bruker Esprit hypermap / spectrum", _rsciio_reader("bruker"))
_EMD = Reader("emd", "Thermo Fisher Velox / FEI EMD", _rsciio_reader("emd"))
_EDAX = Reader("edax", "EDAX TEAM/Genesis", _rsciio_reader("edax"))
_JEOL = Reader("jeol", "JEOL Analysis Station", _rsciio_reader("jeol"))
_RIPPLE = Reader("ripple", "Lispix Ripple (.rpl header + .raw data)", _rsciio_reader("ripple"))
_MSA = Reader("msa", "EMSA/MSA single spectrum (loaded as a 1 x 1 map)", _rsciio_reader("msa"))
_HSPY = Reader("hspy", "HyperSpy HDF5", _rsciio_reader("hspy"))
_ZSPY = Reader("zspy", "HyperSpy Zarr", _rsciio_reader("zspy"))
_OWN = Reader("sigma", "sigma NetCDF (h5netcdf) or Zarr dataset", _read_own)

#: file extension (lower case, with dot) -> reader
READERS: dict[str, Reader] = {
    ".bcf": _BRUKER,
    ".spx": _BRUKER,
    ".emd": _EMD,
    ".spd": _EDAX,
    ".spc": _EDAX,
    ".pts": _JEOL,
    ".rpl": _RIPPLE,
    ".raw": _RIPPLE,
    ".msa": _MSA,
    ".ems": _MSA,
    ".emsa": _MSA,
    ".mas": _MSA,
    ".hspy": _HSPY,
    ".hdf5": _HSPY,
    ".zspy": _ZSPY,
    **{ext: _OWN for ext in (*_netcdf.NETCDF_EXTENSIONS, *_netcdf.ZARR_EXTENSIONS)},
}
#: names accepted by ``load(..., format=...)``: reader names and extensions without the dot
_FORMATS: dict[str, Reader] = {
    **{ext.lstrip("."): r for ext, r in READERS.items()},
    **{r.name: r for r in READERS.values()},
}
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(READERS)


def load(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,  # noqa: A002 - the name users expect (xarray, rsciio)
    lazy: bool = False,
    downsample: int | None = None,
    cutoff_at_kv: float | None = None,
    rebin_energy: int | None = None,
    sum_frames: bool = True,
    sum_eds_detectors: bool = True,
    select_signal: int | str | None = None,
    energy_calibration: tuple[float, float] | None = None,
    **reader_kwargs: Any,
) -> xr.Dataset:
    """Read a spectrum image (or a sigma NetCDF/Zarr dataset) from ``path``.

    Parameters
    ----------
    path
        The file (a ``.zarr`` folder for Zarr). See :data:`SUPPORTED_EXTENSIONS`.
    format
        Override the extension: a reader name (``"bruker"``, ``"emd"``, ``"edax"``, ``"jeol"``,
        ``"ripple"``, ``"msa"``, ``"hspy"``, ``"zspy"``, ``"sigma"``) or an extension without
        the dot (``"bcf"``, ``"nc"``, ``"zarr"`` ...).
    lazy
        Keep ``counts`` as a dask array (read chunk by chunk when computed). Formats whose reader
        cannot read lazily are read eagerly and then wrapped in dask.
    downsample
        Sum ``n x n`` pixel blocks while reading (Bruker and JEOL natively, where incomplete
        edge blocks are kept; other formats afterwards, trimming incomplete edge blocks).
        Navigation images are averaged over the same blocks.
    cutoff_at_kv
        Drop channels above this energy in keV (Bruker/JEOL natively).
    rebin_energy
        Sum groups of ``n`` channels (Velox/JEOL natively).
    sum_frames
        Velox/JEOL: sum the frames of a multi-frame acquisition (``False`` is accepted only when
        ``first_frame``/``last_frame`` select one frame).
    sum_eds_detectors
        Velox: sum the spectrum images of the detectors (e.g. the 4 of a Super-X). With
        ``False`` the file holds one map per detector; pick one with ``select_signal``.
    select_signal
        Index or title of the spectrum image to read when a file holds several.
    energy_calibration
        ``(scale_kev, offset_kev)`` to use instead of the file's energy axis (for files without
        a calibration).
    **reader_kwargs
        Passed to the RosettaSciIO reader, e.g. ``first_frame``/``last_frame``/``SI_dtype``
        (Velox), ``index``/``instrument`` (Bruker), ``chunks`` (EDAX/Ripple).

    Returns
    -------
    xr.Dataset
        ``counts`` (integer, dims ``y, x, energy``; numpy, or dask with ``lazy=True``),
        navigation images with dims ``(y, x)``, coordinates with units (``y``/``x`` in the
        file's length units, ``px`` when it has none; ``energy`` in keV, channel centres) and
        attrs ``beam_energy_kev`` (NaN when unknown), ``elements``, ``xray_lines`` (from the
        file; empty lists when it has none), ``energy_resolution_mnka_ev`` (130 when unknown),
        ``source``, ``history``. A single spectrum (``.msa``, ``.spx``) becomes a 1 x 1 map.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    UnsupportedFormatError
        The extension (or ``format``) is not one sigma reads.
    CorruptFileError
        The reader cannot parse the file.
    NoSpectrumImageError
        The file holds only images, or a spectrum image with axes sigma cannot map to
        ``(y, x, energy)``.
    MissingCalibrationError
        The energy axis has no units or scale (pass ``energy_calibration``).
    SignalSelectionError
        Several spectrum images and no (or a bad) ``select_signal``.

    See Also
    --------
    save, open_dataset

    Examples
    --------
    >>> ds = load("map.bcf", lazy=True, downsample=2)  # doctest: +SKIP
    >>> ds.counts.dims  # doctest: +SKIP
    ('y', 'x', 'energy')
    """
    source = Path(path)
    from sigma.io.maps import is_map_folder, load_maps

    if format is None and is_map_folder(source):  # exported element maps (sigma.io.maps)
        return load_maps(source)
    if format is None and source.is_dir() and source.suffix.lower() != ".zarr":
        from sigma.io.maps import IMAGE_SUFFIXES

        raise UnsupportedFormatError(
            f"{os.fspath(source)!r} is a folder with no element-map images "
            f"({', '.join(IMAGE_SUFFIXES)}). sigma reads a spectrum-image file, a .zarr store, or "
            "a folder of exported element maps ('Fe Ka.tif', 'Si.png', ...); give one of those."
        )
    reader = _pick_reader(source, format)
    if not source.exists():
        hint = ""
        if source.parent.is_dir():
            near = sorted(
                p.name for p in source.parent.iterdir() if p.suffix.lower() == source.suffix.lower()
            )[:5]
            hint = (
                f" Files with that extension in {os.fspath(source.parent)!r}: {near!r}."
                if near
                else ""
            )
        raise FileNotFoundError(
            f"{os.fspath(source)!r} does not exist (current folder: "
            f"{os.fspath(Path.cwd())!r}).{hint} Check "
            "the path and spelling."
        )
    if reader.name == "ripple" and source.suffix.lower() == ".raw":
        source = source.with_suffix(".rpl")
        if not source.exists():
            raise FileNotFoundError(
                f"{os.fspath(source)!r} does not exist: a Ripple .raw file needs its .rpl header "
                "next to it (same name). Load the .rpl file."
            )
    options: dict[str, Any] = {
        "downsample": check_int("downsample", downsample, 1, none_ok=True),
        "rebin_energy": check_int("rebin_energy", rebin_energy, 1, none_ok=True),
        "cutoff_at_kv": None if cutoff_at_kv is None else float(cutoff_at_kv),
    }
    if options["cutoff_at_kv"] is not None and not options["cutoff_at_kv"] > 0:
        raise ValueError(
            f"cutoff_at_kv must be a positive energy in keV or None. Got {cutoff_at_kv!r} instead."
        )
    if reader.name in ("emd", "jeol"):
        options["sum_frames"] = bool(sum_frames)
    if reader.name == "emd":
        options["sum_eds_detectors"] = bool(sum_eds_detectors)
    ds, remaining = reader.read(
        source,
        lazy=lazy,
        options=options,
        select_signal=select_signal,
        energy_calibration=energy_calibration,
        reader_kwargs=reader_kwargs,
    )
    if COUNTS in ds.data_vars:
        validate_spectrum_image(ds, where=os.fspath(source))
        ds = _rsciio.apply_options(ds, remaining)
    elif any(v not in (None, True) for v in remaining.values()):
        raise SchemaError(
            f"{os.fspath(source)!r} holds no 'counts' variable "
            f"(variables: {list(ds.data_vars)!r}), "
            "so downsample/cutoff_at_kv/rebin_energy cannot apply. Use sigma.io.open_dataset for "
            "feature or results files."
        )
    if lazy and COUNTS in ds.data_vars and ds[COUNTS].chunks is None:
        ds = ds.chunk({d: (-1 if d == "energy" else 128) for d in ds[COUNTS].dims})
    parts = [f"load {os.fspath(source)!r} format={reader.name}"]
    parts += [
        f"{k}={v!r}"
        for k, v in (("lazy", lazy), *options.items())
        if v not in (None, False) or k == "lazy"
    ]
    if select_signal is not None:
        parts.append(f"select_signal={select_signal!r}")
    if energy_calibration is not None:
        parts.append(f"energy_calibration={tuple(energy_calibration)!r}")
    parts += [f"{k}={v!r}" for k, v in reader_kwargs.items()]
    ds.attrs = append_history(ds.attrs, " ".join(parts))
    logger.info("loaded %s: %s", source, dict(ds.sizes))
    return ds


def _pick_reader(source: Path, format: str | None) -> Reader:  # noqa: A002
    if format is not None:
        reader = _FORMATS.get(format.lower().lstrip("."))
        if reader is None:
            raise UnsupportedFormatError(
                f"format={format!r} is not a format sigma reads. Use one of "
                f"{sorted({r.name for r in READERS.values()})!r} or an extension "
                f"{sorted({e.lstrip('.') for e in READERS})!r}."
            )
        return reader
    reader = READERS.get(source.suffix.lower())
    if reader is None:
        raise UnsupportedFormatError(
            f"{os.fspath(source)!r}: sigma cannot read files with extension {source.suffix!r}. "
            f"Supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}. If the file is one of these "
            "formats under another name, pass format=..., e.g. load(path, format='bcf'); otherwise "
            "export it from the acquisition software as .hspy, .rpl/.raw or .msa."
        )
    return reader


def save(ds: xr.Dataset, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write any sigma dataset to NetCDF (``.nc``, ``.nc4``, ``.h5``) or Zarr (``.zarr``).

    NetCDF is written with the h5netcdf engine; Zarr as format 3 without consolidated metadata.
    Dask-backed variables are written chunk by chunk without loading the whole array. Attrs that
    the formats cannot hold as such (lists, dicts, booleans, ``None``) are stored as JSON strings
    and restored by :func:`open_dataset`, so the round trip is exact. Never pickles.

    Parameters
    ----------
    ds
        The dataset (spectrum image, features, results ...). Not modified.
    path
        Target file; the extension picks the format.
    overwrite
        Replace an existing file or folder at ``path``. Without it an existing target is an error.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    UnsupportedFormatError
        The extension is not a NetCDF or Zarr one.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib, xarray as xr
    >>> from sigma._schema import make_spectrum_image
    >>> ds = make_spectrum_image(np.zeros((2, 3, 8), dtype=np.uint16), energy_scale_kev=0.01)
    >>> path = save(ds, pathlib.Path(tempfile.mkdtemp()) / "cube.zarr")
    >>> xr.testing.assert_identical(open_dataset(path), ds)
    """
    return _netcdf.save_dataset(ds, path, overwrite=overwrite)


def open_dataset(path: str | os.PathLike[str], *, lazy: bool = False) -> xr.Dataset:
    """Open a dataset written by :func:`save` (NetCDF or Zarr), exactly as it was saved.

    Parameters
    ----------
    path
        A ``.nc``/``.nc4``/``.h5`` file or a ``.zarr`` folder.
    lazy
        Return dask-backed variables chunked as stored (the file stays open); otherwise every
        variable is read into memory and the file closed.

    Returns
    -------
    xr.Dataset

    Raises
    ------
    FileNotFoundError, UnsupportedFormatError, CorruptFileError
    """
    return _netcdf.open_dataset(path, lazy=lazy)
