"""Pure, vectorised functions behind the GUI: load, select, edit and export results.

Nothing here imports panel or torch; the views in :mod:`gui.views` call these and turn their
exceptions into notifications. Every function returns new objects and never modifies its input.

The loader goes through ``sigma.results.SigmaResults.load`` (no torch), with a plain xarray
fallback for an install without it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

from sigma import analysis, line_intensity, sparse_counts
from sigma._checks import check_int
from sigma._schema import append_history, as_str_list
from sigma.exceptions import CorruptFileError, EmptySelectionError, SchemaError

__all__ = [
    "REQUIRED_VARIABLES",
    "PALETTE",
    "load_results",
    "validate_results",
    "n_clusters",
    "latent_xy",
    "pixel_xy",
    "select_polygon",
    "select_bounds",
    "mean_spectrum",
    "SelectionMeans",
    "selection_mean_spectrum",
    "selection_sum_spectrum",
    "exact_cluster_spectra",
    "with_source_counts",
    "feature_means",
    "feature_maps",
    "small_clusters",
    "display_channels",
    "add_cluster_from_mask",
    "merge_clusters",
    "rename_cluster",
    "recolor_cluster",
    "recolour_cluster",
    "check_name_free",
    "matched_names",
    "bic_sweep",
    "refit_clusters",
    "particle_table",
    "phase_rgba",
    "cluster_spectra_frame",
    "write_image",
    "save_results",
]

logger = logging.getLogger(__name__)

#: variables a results file must hold for the GUI to open it
REQUIRED_VARIABLES: tuple[str, ...] = ("embedding", "label")

#: colours of clusters without one: sigma's (:func:`sigma.analysis.default_colors`)
PALETTE: tuple[str, ...] = tuple(analysis.default_colors(20))


# --------------------------------------------------------------------------------------- loading
def load_results(path: str | os.PathLike[str]) -> xr.Dataset:
    """Read a results file (NetCDF via h5netcdf, or a ``.zarr`` store) fully into memory.

    Parameters
    ----------
    path
        A ``results.nc`` / ``results.zarr`` written by ``sigma run`` or ``SigmaResults.save``.

    Returns
    -------
    xr.Dataset
        Validated by :func:`validate_results`; string variables come back as ``str``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CorruptFileError
        If the file cannot be read as NetCDF/Zarr.
    SchemaError
        If it lacks what the GUI needs (see :func:`validate_results`).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"results file {str(path)!r} does not exist. Give the path of a results.nc written by "
            "`sigma run` (or run `sigma gui` with no path to open the demo)."
        )
    from sigma.results import SigmaResults

    try:
        ds = SigmaResults.load(path).dataset
    except SchemaError:
        raise
    except (OSError, ValueError) as err:  # CorruptFileError, UnsupportedFormatError
        raise CorruptFileError(
            f"could not read results file {str(path)!r}: {err}. Check that it is a results file "
            "written by `sigma run`, not a raw spectrum image."
        ) from err
    if "feature" in ds.variables:
        ds["feature"] = ds["feature"].astype(str)
    return validate_results(ds, where=str(path))


def validate_results(ds: xr.Dataset, *, where: str = "results") -> xr.Dataset:
    """Check that ``ds`` holds what the GUI needs and return it unchanged.

    Required: ``embedding`` with dims ``(y, x, latent)`` and 2 latent dims, ``label`` with dims
    ``(y, x)``. Everything else in ``docs/results_schema.md`` is optional: views whose data is
    missing say so instead of failing.

    Raises
    ------
    SchemaError
        Naming the missing variable or wrong dims and the fix.
    """
    if not isinstance(ds, xr.Dataset):
        raise SchemaError(
            f"{where}: expected an xarray.Dataset. Got {type(ds).__name__!r} instead."
        )
    missing = [v for v in REQUIRED_VARIABLES if v not in ds.variables]
    if missing:
        raise SchemaError(
            f"{where}: variable(s) {missing!r} missing; a results file needs {list(REQUIRED_VARIABLES)!r} "
            "(see docs/results_schema.md). Is this a raw spectrum image? Run `sigma run` on it first."
        )
    if ds["embedding"].dims != ("y", "x", "latent"):
        raise SchemaError(
            f"{where}: 'embedding' must have dims ('y', 'x', 'latent'). Got {ds['embedding'].dims!r}; "
            "transpose it with ds.embedding.transpose('y', 'x', 'latent')."
        )
    if ds.sizes["latent"] != 2:
        raise SchemaError(
            f"{where}: the GUI shows a 2-D latent space. Got {ds.sizes['latent']!r} latent dims."
        )
    if ds["label"].dims != ("y", "x"):
        raise SchemaError(f"{where}: 'label' must have dims ('y', 'x'). Got {ds['label'].dims!r}.")
    if not np.all(np.isfinite(ds["embedding"].values)):
        raise SchemaError(
            f"{where}: 'embedding' holds NaN or inf values; the encoder output is broken."
        )
    return ds


def n_clusters(ds: xr.Dataset) -> int:
    """Number of clusters: the ``cluster`` dim, else ``max(label) + 1``."""
    if "cluster" in ds.sizes:
        return int(ds.sizes["cluster"])
    return int(ds["label"].max()) + 1


def latent_xy(ds: xr.Dataset) -> npt.NDArray[np.float32]:
    """Latent coordinates as an ``(n_pixels, 2)`` array in C order of ``(y, x)``."""
    emb = ds["embedding"].transpose("y", "x", "latent").values
    return np.ascontiguousarray(emb.reshape(-1, emb.shape[-1]), dtype=np.float32)


def pixel_xy(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    """Scan coordinates ``(x, y)`` (in the coords' units) of every pixel, ``(n_pixels, 2)``."""
    xx, yy = np.meshgrid(ds["x"].values, ds["y"].values)
    return np.stack([xx.ravel(), yy.ravel()], axis=1)


# ------------------------------------------------------------------------------------- selection
#: at most this many cells per side when a lasso's bounding box is cut into a grid
_GRID_MAX_CELLS = 512
#: below this many points in the bounding box every one goes through the exact test
_GRID_MIN_POINTS = 20_000


def select_polygon(points: npt.ArrayLike, polygon: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Boolean mask of the ``points`` inside ``polygon`` (vectorised, exact as shapely ``contains_xy``).

    Only the points in the polygon's bounding box are looked at. With many of them, the box is
    cut into a grid of cells: a cell no polygon edge touches is wholly inside or outside, so its
    centre decides for all its points, and only the points of the cells along the edges go
    through the exact (shapely) test. Points on the boundary count as outside.

    Parameters
    ----------
    points
        ``(n, 2)`` array of ``(x, y)`` (float32 is used as it is, not copied).
    polygon
        ``(m, 2)`` vertices of a lasso, closed implicitly; fewer than 3 vertices select nothing. A
        self-crossing lasso is repaired with ``shapely.make_valid``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool.

    Examples
    --------
    >>> select_polygon([[0.5, 0.5], [2, 2]], [[0, 0], [1, 0], [1, 1], [0, 1]]).tolist()
    [True, False]
    """
    import shapely

    pts = np.asarray(points)
    if pts.dtype.kind != "f":
        pts = pts.astype(np.float64)
    poly = np.asarray(polygon, dtype=np.float64)
    mask = np.zeros(len(pts), dtype=bool)
    if poly.ndim != 2 or len(poly) < 3 or not np.all(np.isfinite(poly)):
        return mask
    shape = shapely.Polygon(poly)
    if not shape.is_valid:  # self-crossing lasso: repair instead of failing
        shape = shapely.make_valid(shape)
    shapely.prepare(shape)
    (x0, y0), (x1, y1) = poly.min(axis=0), poly.max(axis=0)
    # bounding-box prefilter, widened by a float32 step so no inside point is lost to rounding
    lo = np.nextafter(np.array([x0, y0], pts.dtype), np.array(-np.inf, pts.dtype))
    hi = np.nextafter(np.array([x1, y1], pts.dtype), np.array(np.inf, pts.dtype))
    px, py = pts[:, 0], pts[:, 1]
    inbox = px >= lo[0]
    inbox &= px <= hi[0]
    inbox &= py >= lo[1]
    inbox &= py <= hi[1]
    cand = np.flatnonzero(inbox)
    if cand.size == 0:
        return mask
    cx, cy = px[cand].astype(np.float64), py[cand].astype(np.float64)
    if cand.size < _GRID_MIN_POINTS or x1 <= x0 or y1 <= y0:
        mask[cand] = shapely.contains_xy(shape, cx, cy)
        return mask
    from scipy import ndimage

    g = int(np.clip(np.sqrt(cand.size) / 3, 16, _GRID_MAX_CELLS))
    sx, sy = g / (x1 - x0), g / (y1 - y0)
    cell = _grid_index(cy, y0, sy, g)
    cell *= g
    cell += _grid_index(cx, x0, sx, g)
    # cells whose closure an edge touches: sample every edge at under half a cell, grow by one cell
    closed = np.vstack([poly, poly[:1]])
    steps = np.ceil(2 * np.hypot(np.diff(closed[:, 0]) * sx, np.diff(closed[:, 1]) * sy))
    steps = np.maximum(steps, 1).astype(np.int64)
    seg = np.repeat(np.arange(len(poly)), steps)
    frac = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(
        steps, steps
    )
    ex = closed[seg, 0] + frac * (closed[seg + 1, 0] - closed[seg, 0])
    ey = closed[seg, 1] + frac * (closed[seg + 1, 1] - closed[seg, 1])
    edge = np.zeros((g + 2, g + 2), dtype=bool)
    edge[np.clip(((ey - y0) * sy).astype(np.int64), 0, g - 1) + 1,
         np.clip(((ex - x0) * sx).astype(np.int64), 0, g - 1) + 1] = True  # fmt: skip
    touched = np.zeros((g, g), dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            touched |= edge[dy : dy + g, dx : dx + g]
    # no edge crosses a region of untouched cells, so one centre decides the whole region
    region, n_regions = ndimage.label(~touched)
    first = ndimage.find_objects(region)
    rows = np.array([sl[0].start for sl in first], dtype=np.int64)
    cols = np.array([np.flatnonzero(region[r, sl[1]] == i + 1)[0] + sl[1].start
                     for i, (r, sl) in enumerate(zip(rows, first, strict=True))], dtype=np.int64)  # fmt: skip
    inside_region = np.zeros(n_regions + 1, dtype=np.uint8)
    if n_regions:
        inside_region[1:] = shapely.contains_xy(
            shape, x0 + (cols + 0.5) / sx, y0 + (rows + 0.5) / sy
        )
    status = np.where(touched, np.uint8(2), inside_region[region]).ravel()[cell]
    result = status == 1
    exact = np.flatnonzero(status == 2)
    result[exact] = shapely.contains_xy(shape, cx[exact], cy[exact])
    mask[cand] = result
    return mask


def _grid_index(
    v: npt.NDArray[np.float64], v0: float, scale: float, g: int
) -> npt.NDArray[np.int32]:
    """Cell ``floor((v - v0) * scale)`` clipped to ``[0, g - 1]``, computed in place on a temporary."""
    t = v - v0
    t *= scale
    out = t.astype(np.int32)  # truncation: the few values just below v0 land in cell 0
    np.clip(out, 0, g - 1, out=out)
    return out


def select_bounds(points: npt.ArrayLike, bounds: Sequence[float]) -> npt.NDArray[np.bool_]:
    """Boolean mask of the ``points`` inside the box ``(x0, y0, x1, y1)`` (edges included).

    Examples
    --------
    >>> select_bounds([[0.5, 0.5], [2, 2]], (0, 0, 1, 1)).tolist()
    [True, False]
    """
    pts = np.asarray(points, dtype=np.float64)
    if len(bounds) != 4:
        raise ValueError(f"bounds must be (x0, y0, x1, y1). Got {bounds!r} instead.")
    x0, y0, x1, y1 = bounds
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    return (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)


def mean_spectrum(ds: xr.Dataset) -> xr.DataArray:
    """Mean counts spectrum per pixel of the whole scan (from ``sum_spectrum``)."""
    n = ds.sizes["y"] * ds.sizes["x"]
    if "counts" in ds:
        return ds["counts"].mean(("y", "x"))
    if "sum_spectrum" in ds:
        return ds["sum_spectrum"] / n
    if "cluster_mean_spectrum" in ds and "n_pixels" in ds:
        return (ds["cluster_mean_spectrum"] * ds["n_pixels"]).sum("cluster") / n
    raise SchemaError(
        "results: no 'sum_spectrum' or 'cluster_mean_spectrum' to show a spectrum from."
    )


def _mask2d(ds: xr.Dataset, mask: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    m = np.asarray(mask, dtype=bool)
    shape = (ds.sizes["y"], ds.sizes["x"])
    if m.size != shape[0] * shape[1]:
        raise ValueError(
            f"mask must have {shape[0] * shape[1]} pixels (y*x = {shape}). Got {m.size}."
        )
    return m.reshape(shape)


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # scikit-learn brings it; without it BLAS keeps its own threads
        return None
    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread, for memory-bound matrix-vector products over a million rows.

    On a busy machine a second BLAS thread waits for a core (measured 2-3x slower on 2 shared
    cores).
    """
    controller = _blas_controller()
    return (
        controller.limit(limits=1, user_api="blas")
        if controller is not None
        else contextlib.nullcontext()
    )


class SelectionMeans:
    """Means over selections of one results dataset, with its arrays pulled out once.

    A view keeps one per results version and calls :meth:`spectrum` and :meth:`features` for
    every new selection: each is a BLAS matrix-vector product of the selection's 0/1 weights
    with a ``(pixels, n)`` array, no copy of the selected rows.

    Parameters
    ----------
    ds
        Results (see ``docs/results_schema.md``).

    Examples
    --------
    >>> from gui.demo import scene_results
    >>> ds = scene_results((16, 16), n_phases=3, n_channels=256, energy_scale_kev=0.04)
    >>> means = SelectionMeans(ds)
    >>> mask = ds["label"].values.ravel() == 1
    >>> spec, exact = means.spectrum(mask)
    >>> bool(np.allclose(spec, ds["cluster_mean_spectrum"][1], rtol=1e-3)), exact
    (True, True)
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self.shape = (int(ds.sizes["y"]), int(ds.sizes["x"]))
        n = self.shape[0] * self.shape[1]
        self.feature_names = as_str_list(ds["feature"].values) if "feature" in ds.variables else []
        # net line counts per pixel when the results keep counts; z-scores only as a fallback
        shown, self.feature_units = feature_maps(ds)
        self._features = shown.values.reshape(n, -1) if shown is not None else None
        self._counts = (
            ds["counts"].transpose("y", "x", "energy").values.reshape(n, -1)
            if "counts" in ds
            else None
        )
        self._prob = (ds["probability"].transpose("y", "x", "cluster").values.reshape(n, -1)
                      if "probability" in ds else None)  # fmt: skip
        self._label = ds["label"].values.reshape(n)
        self._k = n_clusters(ds)
        self._cms = (ds["cluster_mean_spectrum"].transpose("cluster", "energy").values
                     if "cluster_mean_spectrum" in ds else None)  # fmt: skip
        self._ds = ds
        self._sums: sparse_counts.SelectionSums | None = None
        #: why the counts of the referenced input file could not be read ("" when they could)
        self.source_error = ""
        #: True when the results keep per-pixel counts (or name the input file they are in):
        #: spectra of selections are exact
        self.exact = (
            self._counts is not None or sparse_counts.has_counts(ds) or sparse_counts.has_source(ds)
        )

    def _selection_sums(self) -> sparse_counts.SelectionSums | None:
        """The kept counts (or those of the referenced input file), None when there are none."""
        if self._sums is None and self.exact and self._counts is None:
            try:
                self._sums = sparse_counts.SelectionSums(with_source_counts(self._ds))
            except SchemaError as err:  # the input file moved or changed: estimate, and say why
                logger.warning("selection spectra are estimates: %s", err)
                self.source_error, self.exact = str(err), False
        return self._sums

    def sum_spectrum(self, mask: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], bool]:
        """Summed counts spectrum of the selection and whether it is exact (kept counts)."""
        m, n = self._mask(mask)
        if self._counts is None and (sums := self._selection_sums()) is not None:
            return sums.sum(m), True
        mean, exact = self.spectrum(m)
        return mean * n, exact

    def _mask(self, mask: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], int]:
        m = np.asarray(mask, dtype=bool).reshape(-1)
        if m.size != self.shape[0] * self.shape[1]:
            raise ValueError(f"mask must have {m.size} pixels (y*x = {self.shape}). Got {m.size}.")
        n = int(np.count_nonzero(m))
        if n == 0:
            raise EmptySelectionError(
                "the selection is empty: draw a lasso or box around some pixels first."
            )
        return m, n

    def _mean(self, values: npt.NDArray[Any], mask: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Mean of the rows of ``values`` where ``mask``: 0/1 weights times ``values``, no row copy."""
        m, n = self._mask(mask)
        w = m.astype(values.dtype if values.dtype.kind == "f" else np.float64)
        with _one_blas_thread():
            return np.asarray(w @ values, dtype=np.float64) / n

    def spectrum(self, mask: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], bool]:
        """Mean counts spectrum per pixel of the selection and whether it is exact.

        Exact with per-pixel ``counts``; otherwise the selection's mean cluster probability (or
        label histogram) times the cluster mean spectra.
        """
        if self._counts is not None:
            return self._mean(self._counts, mask), True
        if (sums := self._selection_sums()) is not None:
            m, n = self._mask(mask)
            return sums.sum(m) / n, True
        if self._cms is None:
            raise SchemaError(
                "results: no 'cluster_mean_spectrum' to estimate the selection's spectrum from."
            )
        if self._prob is not None:
            p = self._mean(self._prob, mask)
        else:
            m, n = self._mask(mask)
            p = np.bincount(self._label[m].clip(0), minlength=self._k)[: self._k] / n
        return p @ self._cms, False

    def features(self, mask: npt.ArrayLike | None = None) -> npt.NDArray[np.float64]:
        """Mean of each feature over the selection (all pixels when ``mask`` is None)."""
        if self._features is None:
            raise SchemaError("results: no 'features' variable to average.")
        if mask is None:
            return np.asarray(self._features.mean(axis=0), dtype=np.float64)
        return self._mean(self._features, mask)


#: counts read from a results' input file: (reference JSON, kept-counts variables)
_SOURCE_CACHE: list[tuple[str, xr.Dataset]] = []


def with_source_counts(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with per-pixel counts: its own, else those of the input file it refers to.

    Results whose counts were over ``sigma run``'s budget (``--keep-counts-mb``) name their
    input file instead (:func:`sigma.sparse_counts.source_reference`); the first selection reads
    it (checked: same size and content), bins it as the run did and keeps the counts sparse in
    memory for this server process, so selection spectra are exact as with kept counts.

    Raises
    ------
    SchemaError
        If the file is missing or changed (:func:`sigma.sparse_counts.check_source`).
    """
    if sparse_counts.has_counts(ds) or not sparse_counts.has_source(ds):
        return ds
    key = str(ds.attrs[sparse_counts.SOURCE_ATTR])
    if not _SOURCE_CACHE or _SOURCE_CACHE[0][0] != key:
        logger.info("reading the counts of the results' input file")
        _SOURCE_CACHE[:] = [(key, sparse_counts.source_counts(ds))]
    return ds.assign(_SOURCE_CACHE[0][1].data_vars)


def selection_mean_spectrum(ds: xr.Dataset, mask: npt.ArrayLike) -> tuple[xr.DataArray, bool]:
    """Mean counts spectrum per pixel of the selected pixels.

    With a ``counts`` variable in ``ds`` the mean is exact. A results file holds no per-pixel
    spectra, so otherwise it is estimated as the selection's mean cluster probability times the
    cluster mean spectra (exact when every pixel of a cluster has that cluster's mean spectrum).
    A view that asks for many selections keeps a :class:`SelectionMeans` instead.

    Returns
    -------
    (spectrum, exact)
        The spectrum over ``energy`` and whether it is exact.

    Raises
    ------
    EmptySelectionError
        If the mask selects no pixel.
    """
    spec, exact = SelectionMeans(ds).spectrum(_mask2d(ds, mask))
    return xr.DataArray(spec, coords={"energy": ds["energy"]}, dims="energy"), exact


#: clusters with fewer than this share of the pixels start hidden in plots (still listed)
SMALL_CLUSTER_SHARE = 0.001


def small_clusters(ds: xr.Dataset, share: float = SMALL_CLUSTER_SHARE) -> list[int]:
    """Clusters holding fewer than ``share`` of the assigned pixels, in index order.

    Their spiky spectra and wide ellipses would swamp the others.

    Examples
    --------
    >>> ds = xr.Dataset({"label": (("y", "x"), np.array([[0] * 999 + [1]]))})
    >>> small_clusters(ds, 0.01)
    [1]
    """
    lab = ds["label"].values.ravel()
    k = n_clusters(ds)
    n = np.bincount(lab[lab >= 0], minlength=k)[:k]
    total = max(int(n.sum()), 1)
    return [int(i) for i in np.flatnonzero(n < share * total)]


def display_channels(ds: xr.Dataset) -> npt.NDArray[np.bool_]:
    """Channels worth plotting: above the zero (noise) peak, up to the beam energy or the last line.

    The lower edge is the preprocessing's ``ignore_below_kev`` (default 0.1 keV); the upper one
    the smallest of the energy axis' end, the beam energy and 2 keV past the highest X-ray line
    of the results' elements that the beam excites.
    """
    import json

    from sigma.xray import lines_in_range

    e = ds["energy"].values.astype(np.float64)
    lo = 0.1
    try:
        steps = json.loads(ds.attrs.get("preprocessing") or "{}").get("steps", [])
        lo = float(next((st["ignore_below_kev"] for st in steps if "ignore_below_kev" in st), lo))
    except (ValueError, TypeError, AttributeError):
        pass
    hi = float(e[-1])
    beam = ds.attrs.get("beam_energy_kev")
    if beam is not None and np.isfinite(float(beam)) and float(beam) > lo:
        hi = min(hi, float(beam))
    elements = as_str_list(ds.attrs.get("elements"))
    if elements:
        lines = lines_in_range(elements, (lo, hi), beam_energy_kev=None, min_weight=0.1)
        if lines:
            hi = min(hi, max(ln.energy_kev for ln in lines) + 2.0)
    keep = (e >= lo) & (e <= hi)
    return keep if keep.sum() >= 2 else np.ones_like(keep)


#: the last maps shown, keyed by the arrays they come from (edits share those arrays)
_FEATURE_CACHE: list[tuple[tuple[Any, ...], xr.DataArray | None, str]] = []
_FEATURE_SOURCES = (*sparse_counts.COUNTS_VARIABLES, "features", "window_lo", "window_hi")


def _feature_sources(ds: xr.Dataset) -> tuple[Any, ...]:
    return tuple(ds.variables[v].values if v in ds.variables else None for v in _FEATURE_SOURCES)


def feature_maps(ds: xr.Dataset) -> tuple[xr.DataArray | None, str]:
    """The per-pixel line maps to show, ``(y, x, feature)``, and their units.

    Net line intensities in counts (:func:`sigma.line_intensity.net_line_intensities`) when the
    results keep their counts; else the standardised features, labelled as z-scores; None when
    there are no features. Cached while the results hold the same counts and features: an edit
    (merge, rename, new cluster, refit) changes clusters, not the per-pixel maps, and shares
    those arrays, so it costs no new sparse product (1.5 s on a million pixels).
    """
    sources = _feature_sources(ds)
    for key, maps, units in _FEATURE_CACHE:
        if all(a is b for a, b in zip(key, sources, strict=True)):
            return maps, units
    maps, units = line_intensity.element_maps(ds)
    _FEATURE_CACHE[:] = [(sources, maps, units)]
    return maps, units


def selection_sum_spectrum(ds: xr.Dataset, mask: npt.ArrayLike) -> tuple[xr.DataArray, bool]:
    """Summed counts spectrum of the selected pixels (units counts) and whether it is exact.

    Exact when the results keep per-pixel counts (:mod:`sigma.sparse_counts`), else estimated as
    in :func:`selection_mean_spectrum`, times the number of pixels.

    Raises
    ------
    EmptySelectionError
        If the mask selects no pixel.
    """
    spec, exact = SelectionMeans(ds).sum_spectrum(_mask2d(ds, mask))
    da = xr.DataArray(spec, coords={"energy": ds["energy"]}, dims="energy")
    return da.assign_attrs(units="counts", long_name="summed counts of the selection"), exact


def _counts_source(ds: xr.Dataset) -> xr.Dataset | None:
    """``ds``'s per-pixel counts: kept, else read from the input file it refers to; else None.

    A referenced file that moved or changed gives None (logged): spectra are then estimates.
    """
    if sparse_counts.has_counts(ds):
        return ds
    if not sparse_counts.has_source(ds):
        return None
    try:
        return with_source_counts(ds)
    except SchemaError as err:
        logger.warning("cluster spectra are estimates: %s", err)
        return None


def exact_cluster_spectra(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with cluster sum and mean spectra recomputed from its per-pixel counts.

    The counts are the kept ones, else those of the input file the results refer to
    (:func:`with_source_counts`); without either, ``ds`` is returned unchanged.
    """
    src = _counts_source(ds)
    if src is None or "cluster" not in ds.sizes:
        return ds
    return _with_sums(ds, sparse_counts.cluster_sums(src, ds["label"].values, n_clusters(ds)))


def _with_sums(ds: xr.Dataset, sums: np.ndarray) -> xr.Dataset:
    """``ds`` with cluster sum spectra ``sums`` ``(cluster, energy)`` and the mean spectra from them."""
    k = n_clusters(ds)
    n = np.bincount(ds["label"].values.ravel().clip(-1) + 1, minlength=k + 1)[1 : k + 1]
    coords = {"cluster": ds["cluster"], "energy": ds["energy"]}
    return ds.assign(
        cluster_sum_spectrum=xr.DataArray(sums, dims=("cluster", "energy"), coords=coords,
                                          attrs={"units": "counts", "long_name": "summed raw counts of the cluster"}),
        cluster_mean_spectrum=xr.DataArray(sums / np.maximum(n, 1)[:, None], dims=("cluster", "energy"),
                                           coords=coords, attrs={"units": "counts / pixel",
                                                                 "long_name": "mean raw counts per pixel"}),
    )  # fmt: skip


def feature_means(ds: xr.Dataset, mask: npt.ArrayLike | None = None) -> pd.DataFrame:
    """Mean of each feature over all pixels and (if ``mask``) over the selection.

    Returns
    -------
    pandas.DataFrame
        Index ``feature``; columns ``all`` and, with a mask, ``selection``.
    """
    means = SelectionMeans(ds)
    out = pd.DataFrame(
        {"all": means.features()}, index=pd.Index(means.feature_names, name="feature")
    )
    if mask is not None:
        out["selection"] = means.features(_mask2d(ds, mask))
    return out


# --------------------------------------------------------------------------------------- editing
def _nnls_weights(spectra: np.ndarray, components: np.ndarray) -> np.ndarray:
    from scipy.optimize import nnls

    return np.stack([nnls(components.T, s)[0] for s in spectra])


def _recompute(
    ds: xr.Dataset,
    label: np.ndarray,
    prob: np.ndarray | None,
    names: list[str],
    colors: list[str],
    cms: np.ndarray | None,
    step: str,
    gmm: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> xr.Dataset:
    """New dataset with per-cluster variables rebuilt for ``label`` (k clusters).

    ``gmm`` gives the clusters' latent means, covariances and weights (a fitted mixture); without
    it they are the moments of each cluster's pixels.
    """
    k = len(names)
    flat = label.ravel()
    n_pixels = np.bincount(flat[flat >= 0], minlength=k)[:k].astype(np.int64)
    if gmm is not None:
        means, covs, weights = gmm
    else:
        emb = latent_xy(ds).astype(np.float64)
        means = np.zeros((k, 2))
        covs = np.tile(np.eye(2) * 1e-6, (k, 1, 1))
        for j in range(k):
            members = emb[flat == j]
            if len(members):
                means[j] = members.mean(axis=0)
            if len(members) > 2:
                covs[j] = np.cov(members, rowvar=False) + np.eye(2) * 1e-9
        weights = n_pixels / max(int(n_pixels.sum()), 1)
    drop = [v for v in ds.data_vars if "cluster" in ds[v].dims]
    out = ds.drop_vars(drop).drop_vars(["cluster"], errors="ignore")
    coords = {"cluster": np.arange(k)}
    out = out.assign_coords(coords)
    new = {
        "label": (("y", "x"), label.astype(np.int16), ds["label"].attrs),
        "cluster_name": ("cluster", np.array(names, dtype=object)),
        "cluster_color": ("cluster", np.array(colors, dtype=object)),
        "gmm_mean": (("cluster", "latent"), means),
        "gmm_covariance": (("cluster", "latent", "latent_b"), covs),
        "gmm_weight": ("cluster", np.asarray(weights, dtype=np.float64)),
        "n_pixels": ("cluster", n_pixels),
    }
    if "latent_b" not in out.coords:
        out = out.assign_coords(latent_b=np.arange(2))
    if prob is not None:
        new["probability"] = (("y", "x", "cluster"), prob.astype(np.float32))
    if cms is not None:
        new["cluster_mean_spectrum"] = (("cluster", "energy"), cms, {"units": "counts / pixel"})
        new["cluster_sum_spectrum"] = (
            ("cluster", "energy"),
            cms * n_pixels[:, None],
            {"units": "counts"},
        )
        if "nmf_spectrum" in ds:
            comps = ds["nmf_spectrum"].transpose("component", "energy").values
            new["nmf_weight"] = (("cluster", "component"), _nnls_weights(cms, comps))
    out = out.assign(new)
    out.attrs = append_history(ds.attrs, step)
    return out


def _names_colors(ds: xr.Dataset) -> tuple[list[str], list[str]]:
    k = n_clusters(ds)
    names = (
        as_str_list(ds["cluster_name"].values)
        if "cluster_name" in ds
        else [f"phase {i}" for i in range(k)]
    )
    colors = (
        as_str_list(ds["cluster_color"].values)
        if "cluster_color" in ds
        else analysis.default_colors(k)
    )
    return names, colors


def _cms(ds: xr.Dataset) -> np.ndarray | None:
    if "cluster_mean_spectrum" not in ds:
        return None
    return ds["cluster_mean_spectrum"].transpose("cluster", "energy").values.astype(np.float64)


def check_name_free(ds: xr.Dataset, name: str, *, keep: Sequence[int] = ()) -> str:
    """Return ``name`` stripped; raise if another cluster (not in ``keep``) already has it.

    Two phases of one name would be one phase in every table made from the saved file.

    Raises
    ------
    ValueError
        Naming the cluster that holds the name and the fix (merge them, or another name).
    """
    new = str(name).strip()
    names, _ = _names_colors(ds)
    for i, old in enumerate(names):
        if i not in keep and old == new:
            raise ValueError(
                f"cluster {i} is already called {new!r}; choose another name, or merge the two "
                "clusters if they are one phase."
            )
    return new


def add_cluster_from_mask(ds: xr.Dataset, mask: npt.ArrayLike, *, name: str | None = None,
                          color: str | None = None) -> xr.Dataset:  # fmt: skip
    """Return a copy of ``ds`` where the selected pixels form a new cluster (the last one).

    :func:`sigma.analysis.add_cluster_from_mask`: the pixels leave their old clusters
    (probability one for the new cluster); its mean spectrum is exact with ``counts``, else the
    pixel-weighted mean of the old clusters' spectra it took pixels from.

    Raises
    ------
    EmptySelectionError
        If the mask selects no pixel.

    Examples
    --------
    >>> from gui.demo import scene_results
    >>> ds = scene_results((16, 16), n_phases=3, n_channels=256, energy_scale_kev=0.04)
    >>> mask = np.zeros(256, bool); mask[:10] = True
    >>> new = add_cluster_from_mask(ds, mask, name="grain")
    >>> int(new.sizes["cluster"]), int(new.n_pixels[-1])
    (4, 10)
    """
    m = _mask2d(ds, mask)
    if not m.any():
        raise EmptySelectionError(
            "cannot make a cluster from an empty selection: select some pixels first."
        )
    if name is not None and name.strip():
        name = check_name_free(ds, name)
    out = analysis.add_cluster_from_mask(ds, m, name=name, color=color)  # None: sigma's next colour
    return _moved_cluster_spectra(ds, out, m)  # the new cluster's own counts, not an estimate


def _sums_are_counts(ds: xr.Dataset, src: xr.Dataset) -> bool:
    """Whether ``ds``'s cluster sum spectra are sums of ``src``'s counts (not estimates).

    Checked cheaply: whole numbers whose total is the total count of the labelled pixels.
    """
    if "cluster_sum_spectrum" not in ds:
        return False
    sums = np.asarray(ds["cluster_sum_spectrum"].values, dtype=np.float64)
    if not np.array_equal(sums, np.round(sums)):
        return False
    mat = sparse_counts.counts_matrix(src)
    total = float(mat.data.sum(dtype=np.float64))
    outside = np.flatnonzero(ds["label"].values.ravel() < 0)
    if outside.size:
        total -= float(mat[outside].sum())
    return abs(total - float(sums.sum())) < 0.5


def _moved_cluster_spectra(before: xr.Dataset, after: xr.Dataset, mask: np.ndarray) -> xr.Dataset:
    """``after`` (``before`` with the ``mask`` pixels made a new, last cluster) with exact spectra.

    When ``before``'s sums are exact, only the moved pixels are summed (grouped by the cluster
    they left): a seventh of a 1M-pixel map takes a seventh of the time of summing every pixel
    again (:func:`exact_cluster_spectra`, the fallback).
    """
    src = _counts_source(before)
    if src is None or "cluster" not in after.sizes:
        return after
    if not _sums_are_counts(before, src):  # every cluster summed again, from the same counts
        return _with_sums(
            after, sparse_counts.cluster_sums(src, after["label"].values, n_clusters(after))
        )
    k = n_clusters(before)
    old_lab = before["label"].values.ravel()
    moved = sparse_counts.cluster_sums(
        src, np.where(old_lab >= 0, old_lab, k), k + 1, pixels=np.flatnonzero(mask.ravel())
    )  # row k: pixels that were in no cluster
    sums = np.empty((k + 1, moved.shape[1]))
    sums[:k] = before["cluster_sum_spectrum"].transpose("cluster", "energy").values - moved[:k]
    sums[k] = moved.sum(axis=0)
    return _with_sums(after, sums)


def merge_clusters(
    ds: xr.Dataset, clusters: Sequence[int], *, name: str | None = None
) -> xr.Dataset:
    """Return a copy of ``ds`` with ``clusters`` merged into the lowest of them, named ``name`` if given.

    :func:`sigma.analysis.merge_clusters` (probabilities, summed spectra and pixel counts add; the
    other clusters are removed and the rest renumbered in order), then
    :func:`sigma.analysis.rename_cluster`.

    Examples
    --------
    >>> from gui.demo import scene_results
    >>> ds = scene_results((16, 16), n_phases=3, n_channels=256, energy_scale_kev=0.04)
    >>> new = merge_clusters(ds, [1, 2])
    >>> int(new.sizes["cluster"]), int(new.n_pixels[1]) == int(ds.n_pixels[1] + ds.n_pixels[2])
    (2, True)
    """
    members = [int(c) for c in clusters]
    if name and name.strip():
        name = check_name_free(ds, name, keep=members)
    out = analysis.merge_clusters(ds, members)
    if name and name.strip():
        out = analysis.rename_cluster(out, min(members), name)
    return out


def rename_cluster(ds: xr.Dataset, cluster: int, name: str) -> xr.Dataset:
    """Return a copy of ``ds`` with ``cluster`` called ``name`` (:func:`sigma.analysis.rename_cluster`).

    Raises
    ------
    ValueError
        If another cluster already has that name (:func:`check_name_free`).
    """
    return analysis.rename_cluster(ds, cluster, check_name_free(ds, name, keep=[int(cluster)]))


def recolor_cluster(ds: xr.Dataset, cluster: int, color: str) -> xr.Dataset:
    """Return a copy of ``ds`` with ``cluster`` drawn in ``color`` (:func:`sigma.analysis.recolor_cluster`).

    ``color`` is ``#rrggbb`` (what the colour picker gives) or any matplotlib colour name.
    """
    return analysis.recolor_cluster(ds, cluster, str(color).strip())


#: the former name (the API spells it as :func:`sigma.edits.recolor_cluster` does)
recolour_cluster = recolor_cluster


def _check_cluster(ds: xr.Dataset, cluster: int) -> int:
    k = n_clusters(ds)
    if not isinstance(cluster, (int, np.integer)) or not 0 <= cluster < k:
        raise ValueError(f"cluster must be an int in [0, {k - 1}]. Got {cluster!r} instead.")
    return int(cluster)


def _latent(ds: xr.Dataset) -> xr.DataArray:
    return ds["embedding"].transpose("y", "x", "latent")


def bic_sweep(
    ds: xr.Dataset, n_components: Sequence[int], *, random_state: int = 0, max_samples: int = 50_000
) -> pd.Series:
    """BIC of a full-covariance Gaussian mixture on the embedding for each k.

    :class:`sigma.clustering.AutoGaussianMixture`'s BIC sweep (``criterion="bic_overlap"``, the
    latent standardised as in ``sigma run``, so the curve compares with the stored one), fitted
    on at most ``max_samples`` randomly chosen pixels so the GUI stays responsive.
    """
    from sigma.clustering import AutoGaussianMixture

    ks = sorted({int(k) for k in n_components})
    if not ks or ks[0] < 1:
        raise ValueError(f"n_components must be ints >= 1. Got {list(n_components)!r} instead.")
    valid = ds["label"].values.reshape(-1) >= 0
    emb = latent_xy(ds)[valid]
    est = AutoGaussianMixture(k_max=ks[-1], n_init=1, n_fit=max_samples, random_state=random_state,
                              criterion="bic_overlap").fit(emb)  # fmt: skip
    scores = dict(zip((int(k) for k in est.k_tried_), est.bic_, strict=True))
    return pd.Series({k: float(scores[k]) for k in ks if k in scores}, name="bic").rename_axis(
        "n_components"
    )


def refit_clusters(
    ds: xr.Dataset, n_components: int, *, random_state: int = 0, max_samples: int = 20_000
) -> xr.Dataset:
    """Return a copy of ``ds`` re-clustered by a ``n_components`` Gaussian mixture on the embedding.

    :func:`sigma.clustering.fit_gmm` (as ``sigma run`` clusters): the mixture is fitted on at most
    ``max_samples`` random pixels (a 2-D latent space needs no more; it keeps a refit of a
    million pixels around a second), then labels and probabilities come from it for every pixel
    with data (no-data pixels keep label -1). Cluster spectra are exact when the results keep
    per-pixel counts or refer to their input file (:func:`with_source_counts`), else estimated
    from the old probabilities and spectra. Names and colours
    carry over to the new clusters that match old ones (:func:`matched_names`).
    """
    from sigma.clustering import fit_gmm

    n_components = check_int("n_components", n_components, 1)
    k = int(n_components)
    valid = ds["label"].values >= 0
    fit = fit_gmm(_latent(ds), n_components=k, n_init=1, random_state=random_state,
                  n_fit=max_samples, valid=None if valid.all() else valid)  # fmt: skip
    label = fit["label"].transpose("y", "x").values
    prob = fit["probability"].transpose("y", "x", "cluster").values
    cms = _cms(ds)
    sums = None
    src = _counts_source(ds)
    if src is not None:  # exact: one sparse product of the kept (or referenced) counts
        n_new = np.bincount(label.ravel()[label.ravel() >= 0], minlength=k)[:k]
        sums = sparse_counts.cluster_sums(src, label, k)
        cms = sums / np.maximum(n_new, 1)[:, None]
    elif cms is not None:  # estimate: the old clusters' mix of each new cluster
        if "probability" in ds:
            old = ds["probability"].transpose("y", "x", "cluster").values.reshape(-1, cms.shape[0])
        else:
            old = np.eye(cms.shape[0])[ds["label"].values.ravel().clip(0)]
        flat = label.ravel()
        ok = flat >= 0
        onehot = np.zeros((flat.size, k), np.float32)
        onehot[np.flatnonzero(ok), flat[ok]] = 1.0
        n = np.maximum(onehot.sum(axis=0), 1.0)
        cms = ((onehot.T @ old) / n[:, None]) @ cms
    names, colors = matched_names(ds, label, k)
    gmm = (fit["gmm_mean"].values, fit["gmm_covariance"].values, fit["gmm_weight"].values)
    out = _recompute(ds, label, prob, names, colors, cms, f"gui: refit GMM with k={k}", gmm=gmm)
    if sums is not None:  # the summed counts as summed, not mean x n
        out["cluster_sum_spectrum"] = out["cluster_sum_spectrum"].copy(data=sums)
    if "nmf_abundance" in out and "nmf_weight" in out:
        out["nmf_abundance"] = analysis.abundance_maps(
            out["nmf_weight"], out["probability"]
        ).assign_attrs(ds["nmf_abundance"].attrs)
    return out


def matched_names(
    ds: xr.Dataset, label: npt.NDArray[np.integer[Any]], k: int
) -> tuple[list[str], list[str]]:
    """Names and colours for ``k`` new clusters ``label``, carried over from ``ds``'s clusters.

    Old and new clusters are paired to share the most pixels (Hungarian assignment on their
    overlap, :func:`scipy.optimize.linear_sum_assignment`); a paired new cluster keeps the old
    name and colour, the others get ``"phase j"`` (a free name) and an unused colour.

    Examples
    --------
    >>> import xarray as xr
    >>> old = xr.Dataset({"label": (("y", "x"), [[0, 0, 1, 1]]),
    ...                   "cluster_name": ("cluster", ["matrix", "grain"]),
    ...                   "cluster_color": ("cluster", ["#000000", "#ff0000"])})
    >>> matched_names(old, np.array([[2, 2, 0, 1]]), 3)
    (['grain', 'phase 1', 'matrix'], ['#ff0000', '#1f77b4', '#000000'])
    """
    from scipy.optimize import linear_sum_assignment

    old_names, old_colors = _names_colors(ds)
    old = ds["label"].values.ravel().astype(np.int64)
    new = np.asarray(label).ravel().astype(np.int64)
    ok = (old >= 0) & (new >= 0)
    k_old = len(old_names)
    overlap = np.bincount(old[ok] * k + new[ok], minlength=k_old * k).reshape(k_old, k)
    rows, cols = linear_sum_assignment(-overlap)
    names: list[str | None] = [None] * k
    colors: list[str | None] = [None] * k
    for r, c in zip(rows, cols, strict=True):
        if overlap[r, c] > 0:
            names[c], colors[c] = old_names[r], old_colors[r]
    used_names = {n for n in names if n}
    palette = analysis.default_colors(k_old + k)
    free_colors = iter([c for c in palette if c not in set(colors)] + palette * k)
    for c in range(k):
        if names[c] is None:
            j = c
            while f"phase {j}" in used_names:
                j += 1
            name = f"phase {j}"
            names[c] = name
            used_names.add(name)
            colors[c] = next(free_colors)
    return [str(n) for n in names], [str(c) for c in colors]


# -------------------------------------------------------------------------------------- analysis
def particle_table(ds: xr.Dataset, cluster: int) -> pd.DataFrame:
    """Connected regions ("particles") of one cluster: :func:`sigma.analysis.particle_statistics`.

    The library's table (8-connectivity, sizes and lengths in the scan units, mean net line
    counts per pixel from the shown feature maps, :func:`feature_maps`), indexed by
    ``particle``, with the units in the names of the area and length columns. A cluster with
    no pixel gives an empty table.
    """
    c = _check_cluster(ds, cluster)
    lengths = ("equivalent_diameter", "major_axis_length", "minor_axis_length")
    if not np.any(ds["label"].values == c):
        units = str(ds["x"].attrs.get("units", "px"))
        cols = ["n_pixels", f"area ({units}^2)", *(f"{n} ({units})" for n in lengths)]
        return pd.DataFrame(columns=[*cols, "centroid_y", "centroid_x"],
                            index=pd.RangeIndex(0, name="particle"))  # fmt: skip
    maps, _ = feature_maps(ds)
    table = analysis.particle_statistics(ds, c, features=maps)
    units = table.attrs["length_units"]
    named = {
        "area": f"area ({table.attrs['area_units']})",
        **{n: f"{n} ({units})" for n in lengths},
    }
    return table.set_index("particle").rename(columns=named)


def _hex_to_rgb(colors: Sequence[str]) -> np.ndarray:
    return np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colors], dtype=np.float64)


def phase_rgba(
    ds: xr.Dataset, *, opacity: float = 0.6, colors: Sequence[str] | None = None
) -> npt.NDArray[np.uint8]:
    """Phase map in cluster colours blended over the grey navigation image, ``(y, x, 4)`` uint8.

    ``opacity`` 0 shows only the navigation image, 1 only the phase colours; unassigned pixels
    (label -1) show the navigation image.
    """
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1]. Got {opacity!r} instead.")
    _, default_colors = _names_colors(ds)
    rgb = _hex_to_rgb(list(colors) if colors is not None else default_colors)
    label = ds["label"].values
    if "nav_image" in ds:
        nav = ds["nav_image"].values.astype(np.float64)
        lo, hi = np.percentile(nav, [1, 99])
        grey = np.clip((nav - lo) / max(hi - lo, 1e-12), 0, 1)[..., None] * 255
    else:
        grey = np.full(label.shape + (1,), 255.0)
    colour = rgb[label.clip(0)]
    alpha = np.where(label[..., None] >= 0, opacity, 0.0)
    out = np.empty(label.shape + (4,), dtype=np.uint8)
    out[..., :3] = np.round(alpha * colour + (1 - alpha) * grey)
    out[..., 3] = 255
    return out


def cluster_spectra_frame(ds: xr.Dataset, variable: str = "cluster_mean_spectrum") -> pd.DataFrame:
    """Cluster spectra as a table: index energy (keV), one column per cluster name."""
    if variable not in ds:
        raise SchemaError(f"results: no {variable!r} variable to export.")
    names, _ = _names_colors(ds)
    data = ds[variable].transpose("energy", ...).values
    cols = [f"{i}: {n}" for i, n in enumerate(names)] if data.ndim == 2 else [variable]
    return pd.DataFrame(
        data.reshape(len(ds["energy"]), -1),
        columns=cols,
        index=pd.Index(ds["energy"].values, name="energy (keV)"),
    )


# ---------------------------------------------------------------------------------------- export
def write_image(image: npt.ArrayLike, path: str | os.PathLike[str]) -> Path:
    """Write an image array (``(y, x)`` float or ``(y, x, 3|4)`` uint8) as PNG or TIFF.

    Float maps keep their values in TIFF; PNG scales them to 8 bits.
    """
    path = Path(path)
    arr = np.asarray(image)
    suffix = path.suffix.lower()
    tmp = path.with_name(
        f".{path.stem}.tmp{path.suffix}"
    )  # written whole, then renamed: no half files
    if suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(tmp, arr)
    elif suffix == ".png":
        from PIL import Image

        if arr.dtype != np.uint8:
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = np.round(255 * (arr - lo) / max(hi - lo, 1e-12)).astype(np.uint8)
        Image.fromarray(arr).save(tmp, format="PNG")
    else:
        raise ValueError(
            f"path {str(path)!r}: the image format must be .png, .tif or .tiff. Got {suffix!r}."
        )
    tmp.replace(path)
    return path


def save_results(ds: xr.Dataset, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write (edited) results with :meth:`sigma.results.SigmaResults.save`; refuse to replace a file unless asked.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path).expanduser()
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists. Choose another name (e.g. results_edited.nc) or tick "
            "'overwrite' to replace it."
        )
    if path.suffix not in (".nc", ".zarr", ".h5", ".nc4"):
        raise ValueError(f"path {str(path)!r}: save results as .nc or .zarr. Got {path.suffix!r}.")
    from sigma.results import SigmaResults

    return SigmaResults(ds).save(path, overwrite=overwrite)  # sigma.io.save: atomic, exact attrs
