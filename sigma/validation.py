"""Checks that run before any work: the output path, and the loaded cube's values, axis and size.

Each check raises one :class:`~sigma.exceptions.SigmaError` (or ``FileExistsError``) whose message
names the problem and the fix, so ``sigma run`` can stop in the first seconds instead of after
training. :func:`check_output_path` runs before the input is read; :func:`check_loaded_cube`
right after it is read (and binned), before features are computed.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> from sigma._schema import make_spectrum_image
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> check_output_path(folder / "results.nc", inputs=[folder / "map.bcf"]).name
'results.nc'
>>> cube = make_spectrum_image(np.ones((8, 8, 64), dtype=np.uint16), energy_scale_kev=0.01)
>>> check_loaded_cube(cube)
4096.0
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sigma._schema import COUNTS, DIM_ENERGY, DIM_X, DIM_Y, finite_float_or_none
from sigma.exceptions import ConfigurationError, OutputPathError, SchemaError

logger = logging.getLogger(__name__)

__all__ = [
    "check_output_path",
    "check_loaded_cube",
    "check_n_components_for_pixels",
    "check_lines_excited",
    "check_fits_in_memory",
    "check_bin_factor",
    "sources_of",
    "MIN_PIXELS",
    "MAX_ENERGY_KEV",
    "PIXELS_PER_PHASE",
]

#: fewest pixels (after binning) a run can train and cluster on
MIN_PIXELS = 16
#: an energy axis reaching beyond this (keV) is almost surely in eV (no SEM/TEM beam exceeds 300)
MAX_ENERGY_KEV = 500.0
#: a fixed number of phases needs at least this many pixels per phase on average
PIXELS_PER_PHASE = 10
#: largest relative spread of channel widths accepted as a uniform energy axis
_UNIFORM_TOLERANCE = 1e-3

_OUT_SUFFIXES = (".nc", ".zarr")


def check_output_path(
    out: str | os.PathLike[str],
    *,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    overwrite: bool = False,
    what: str = "--out",
) -> Path:
    """Check that results can be written to ``out``, before anything is read or computed.

    ``what`` names it in messages. ``out`` must end in ``.nc`` or ``.zarr``, must not be (or lie inside) one of ``inputs``, must
    not exist unless ``overwrite``, and its folder must exist (or be creatable) and be writable.

    Returns
    -------
    Path
        ``out`` as a Path.

    Raises
    ------
    OutputPathError
        A bad suffix, ``out`` is an input, its parent is a file, or the folder is not writable.
    FileExistsError
        ``out`` exists and ``overwrite`` is False.
    """
    path = Path(out).expanduser()
    suffix = path.suffix.lower()
    if suffix not in _OUT_SUFFIXES:
        raise OutputPathError(
            f"{what} {os.fspath(out)!r}: sigma writes NetCDF (.nc) or Zarr (.zarr), got extension "
            f"{suffix!r}. Use e.g. {path.with_suffix('.nc').name!r}."
        )
    resolved = path.resolve()
    for src in inputs:
        if src is None:
            continue
        src_path = Path(src).expanduser().resolve()
        if resolved == src_path:
            raise OutputPathError(
                f"{what} {os.fspath(out)!r} is the input file; writing the results there would "
                "destroy the spectrum image. Choose another path, e.g. "
                f"{src_path.stem + '_sigma.nc'!r}."
            )
        if src_path in resolved.parents:
            raise OutputPathError(
                f"{what} {os.fspath(out)!r} lies inside the input {os.fspath(src)!r}. Write the "
                "results next to it instead."
            )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{what} {os.fspath(out)!r} already exists; choose another path or pass "
            "--overwrite (overwrite=True) to replace it."
        )
    if path.exists() and path.is_dir() != (suffix == ".zarr"):
        kind = "folder" if path.is_dir() else "file"
        raise OutputPathError(
            f"{what} {os.fspath(out)!r} exists as a {kind}, which a {suffix} result cannot replace. "
            "Choose another path."
        )
    parent = resolved.parent
    existing = parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(
            f"{what} {os.fspath(out)!r}: {os.fspath(existing)!r} is a file, not a folder. Choose "
            "an --out inside a folder."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"{what} {os.fspath(out)!r}: the folder {os.fspath(existing)!r} is not writable. "
            "Choose a folder you can write to."
        )
    return path


def sources_of(data: Any) -> list[str]:
    """The file(s) ``data`` comes from: the path itself, or the files a dataset was read from."""
    if not isinstance(data, xr.Dataset):
        return [os.fspath(data)]
    found = {data.encoding.get("source")}
    found |= {var.encoding.get("source") for var in data.variables.values()}
    return sorted(str(s) for s in found if s)


def check_fits_in_memory(nbytes: int, *, where: str) -> None:
    """Raise when reading ``nbytes`` eagerly would need more than the memory now available."""
    available = _available_memory()
    if available is not None and nbytes > 0.8 * available:
        raise SchemaError(
            f"{where}: the cube needs {nbytes / 1024**3:.1f} GiB but only "
            f"{available / 1024**3:.1f} GiB of memory is available. Read it lazily (--lazy, or "
            "load(..., lazy=True)), bin it (--bin 2), or convert it once with `sigma convert`."
        )


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_loaded_cube(ds: xr.Dataset, *, where: str = "spectrum image") -> float:
    """Check a loaded (and binned) cube before any work: counts, energy axis and size.

    - counts hold no NaN, inf or negative values and are not all zero; float counts that are
      not whole numbers give a warning (they are not raw X-ray counts);
    - the energy axis is uniform and in keV (a maximum above :data:`MAX_ENERGY_KEV` means eV);
    - there are at least :data:`MIN_PIXELS` pixels and 2 channels.

    The value checks are one pass over the counts (one ``dask.compute`` for a lazy cube).

    Returns
    -------
    float
        The total counts of the cube.

    Raises
    ------
    SchemaError
        Naming the problem and the fix.
    """
    from sigma._schema import validate_spectrum_image

    validate_spectrum_image(ds, where=where)
    ny, nx, ne = (int(ds.sizes[d]) for d in (DIM_Y, DIM_X, DIM_ENERGY))
    if ny * nx < MIN_PIXELS:
        raise SchemaError(
            f"{where}: {ny} x {nx} pixels is too small to find phases in (at least {MIN_PIXELS} "
            "pixels are needed); a single spectrum or a tiny map holds no spatial phases. Give a "
            "spectrum image, or bin less (--bin)."
        )
    if ne < 2:
        raise SchemaError(f"{where}: the cube has {ne} energy channel(s); at least 2 are needed.")
    energy = np.asarray(ds[DIM_ENERGY].values, dtype=np.float64)
    if energy[-1] > MAX_ENERGY_KEV:
        raise SchemaError(
            f"{where}: the energy axis reaches {energy[-1]:.6g} keV, beyond any electron beam; it "
            "is most likely in eV but labelled keV. Fix the calibration (divide by 1000) or pass "
            "energy_calibration=(scale_kev, offset_kev) to sigma.load."
        )
    widths = np.diff(energy)
    spread = float((widths.max() - widths.min()) / abs(np.median(widths)))
    if spread > _UNIFORM_TOLERANCE:
        raise SchemaError(
            f"{where}: the energy axis is not uniform (channel widths from "
            f"{widths.min() * 1000:.4g} to {widths.max() * 1000:.4g} eV); sigma's line windows "
            "and binning need equal channels. Resample the spectra onto a uniform axis first."
        )
    v = _count_stats(ds[COUNTS].data)
    if v.get("nonfinite"):
        raise SchemaError(
            f"{where}: 'counts' holds {int(v['nonfinite'])} NaN or inf values. Replace them "
            "(e.g. ds['counts'] = ds.counts.fillna(0)) or crop the affected pixels."
        )
    if v.get("negative"):
        raise SchemaError(
            f"{where}: 'counts' holds {int(v['negative'])} negative values; X-ray counts cannot "
            "be negative. Check the file's offset/background subtraction, or clip with "
            "ds['counts'] = ds.counts.clip(min=0)."
        )
    if v["total"] <= 0:
        raise SchemaError(
            f"{where}: every count in the cube is zero, so there is nothing to cluster. Check "
            "that the file holds the spectrum image (not an empty acquisition) and the signal "
            "chosen with select_signal."
        )
    if v.get("off", 0.0) > 1e-6:
        warnings.warn(
            f"{where}: 'counts' holds non-integer values (up to {v['off']:.3g} from a whole "
            "number): they are not raw X-ray counts (normalised, background-subtracted or "
            "interpolated?). The Poisson-based steps assume raw counts; results may be off.",
            UserWarning,
            stacklevel=2,
        )
    return float(v["total"])


def _count_stats(data: Any) -> dict[str, float]:
    """Total, and for signed/float counts the NaN/inf, negative and non-integer extent, in one pass."""
    xp: Any = np
    if not isinstance(data, np.ndarray):
        import dask.array as xp
    out: dict[str, Any] = {"total": data.sum(dtype=np.float64)}
    kind = np.dtype(data.dtype).kind
    if kind == "f":
        out["nonfinite"] = (~xp.isfinite(data)).sum()
        finite = xp.where(xp.isfinite(data), data, 0)  # (inf - inf would warn)
        out["off"] = abs(finite - xp.round(finite)).max()
    if kind in "fi":
        out["negative"] = (data < 0).sum()
    if not isinstance(data, np.ndarray):
        import dask

        (out,) = dask.compute(out)
    return {k: float(np.asarray(val)) for k, val in out.items()}


def check_bin_factor(bin_factor: Any, ds: xr.Dataset) -> None:
    """A binning factor must fit the map (checked before binning)."""
    if bin_factor is None:
        return
    fy, fx = (bin_factor, bin_factor) if isinstance(bin_factor, int) else tuple(bin_factor)
    ny, nx = int(ds.sizes[DIM_Y]), int(ds.sizes[DIM_X])
    if fy > ny or fx > nx:
        raise ConfigurationError(
            f"--bin {bin_factor} is larger than the {ny} x {nx} pixel map; give --bin of at most "
            f"{min(ny, nx)} (and small enough to leave at least {MIN_PIXELS} pixels)."
        )


def check_n_components_for_pixels(n_components: Any, n_pixels: int) -> None:
    """A fixed number of phases must leave at least :data:`PIXELS_PER_PHASE` pixels per phase."""
    if n_components == "auto" or n_components is None:
        return
    k = int(n_components)
    if k * PIXELS_PER_PHASE > n_pixels:
        raise ConfigurationError(
            f"--k {k} asks for {k} phases in {n_pixels} pixels; at most "
            f"{max(1, n_pixels // PIXELS_PER_PHASE)} fit ({PIXELS_PER_PHASE} pixels per phase). "
            "Give a smaller --k, or --k auto."
        )


def check_lines_excited(lines: Sequence[str] | str | None, beam_energy_kev: Any) -> list[str]:
    """Warn about user-given X-ray lines the beam cannot excite; returns their names."""
    if not isinstance(lines, (list, tuple)):
        return []
    beam = finite_float_or_none(beam_energy_kev)
    if beam is None or beam <= 0:
        return []
    from sigma.xray import get_line

    above = []
    from sigma.exceptions import XrayLineError

    for name in lines:
        if "_" not in str(name):  # an element: its line is chosen for the beam later
            continue
        try:
            line = get_line(str(name))
        except XrayLineError:  # reported, with the fix, where the lines are used
            continue
        if line.edge_kev >= beam:
            above.append(f"{name} (edge {line.edge_kev:.2f} keV)")
    if above:
        warnings.warn(
            f"X-ray line(s) {', '.join(above)} need more than the {beam:g} keV beam: the beam "
            "cannot excite them, so their features hold only background. Drop them from --lines.",
            UserWarning,
            stacklevel=2,
        )
    return above


def load_checked(path: str | os.PathLike[str], **options: Any) -> xr.Dataset:
    """:func:`sigma.load` for a run: advice instead of a MemoryError, results files refused.

    A sigma NetCDF/Zarr cube read eagerly is first opened lazily to compare its size with the
    memory available; any reader's ``MemoryError`` becomes advice to use ``--lazy``.

    Raises
    ------
    NoSpectrumImageError
        The file holds no ``counts`` (e.g. a results or features file).
    SchemaError
        The cube does not fit in memory (with the fix).
    """
    from sigma.exceptions import NoSpectrumImageError
    from sigma.io import load, open_dataset

    source = Path(path)
    own = source.suffix.lower() in (".nc", ".nc4", ".h5", ".netcdf", ".zarr")
    if own and source.exists() and not options.get("lazy"):
        peek = open_dataset(source, lazy=True)
        try:
            if COUNTS in peek:
                check_fits_in_memory(int(peek[COUNTS].nbytes), where=os.fspath(source))
        finally:
            peek.close()
    try:
        ds = load(source, **options)
    except MemoryError as err:
        raise SchemaError(
            f"{os.fspath(source)!r} does not fit in memory. Read it lazily (--lazy, or "
            "load(..., lazy=True)), bin it (--bin 2), or convert it once with `sigma convert`."
        ) from err
    if COUNTS not in ds.data_vars:
        what = (
            "a sigma results file"
            if "label" in ds.data_vars
            else "a features or embedding file"
            if "features" in ds.data_vars or "embedding" in ds.data_vars
            else "no spectrum image"
        )
        raise NoSpectrumImageError(
            f"{os.fspath(source)!r} is {what} (variables {sorted(map(str, ds.data_vars))!r}), "
            "not a spectrum image with 'counts'. Give the raw map (.bcf, .emd, ... or a cube "
            "saved with sigma.save)"
            + ("; open results with `sigma gui`." if "label" in ds.data_vars else ".")
        )
    return ds
