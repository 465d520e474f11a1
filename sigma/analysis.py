"""Phase analysis: cluster spectra from raw counts, areas, lines, NMF, particles, edits.

The functions take and return :class:`xarray.Dataset` objects that follow the results layout of
``docs/results_schema.md`` and never modify their input; :class:`sigma.results.SigmaResults`
wraps them as methods. This module imports neither torch nor Lightning (the GUI uses it).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr
from scipy.optimize import nnls

from sigma._schema import (
    COUNTS,
    DIM_CLUSTER,
    DIM_COMPONENT,
    DIM_ENERGY,
    DIM_LATENT,
    DIM_X,
    DIM_Y,
    as_str_list,
)
from sigma.exceptions import EmptySelectionError, SchemaError

logger = logging.getLogger(__name__)

__all__ = [
    "default_colors",
    "cluster_spectra",
    "spectral_rank",
    "pixel_area",
    "phase_table",
    "binary_maps",
    "line_enrichment",
    "top_lines",
    "top_elements",
    "nmf_unmix",
    "abundance_maps",
    "particle_statistics",
    "merge_clusters",
    "split_cluster",
    "rename_cluster",
    "recolor_cluster",
    "add_cluster_from_mask",
]

_TAB20 = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip


def default_colors(n: int) -> list[str]:
    """``n`` distinct ``#rrggbb`` colours (matplotlib's tab10 then tab20, then HSV).

    Examples
    --------
    >>> default_colors(2)
    ['#1f77b4', '#ff7f0e']
    """
    if n <= len(_TAB20):
        return list(_TAB20[:n])
    import colorsys

    extra = [colorsys.hsv_to_rgb(i / (n - 20), 0.65, 0.85) for i in range(n - 20)]
    return [*_TAB20, *("#{:02x}{:02x}{:02x}".format(*(int(255 * c) for c in rgb)) for rgb in extra)]


# --------------------------------------------------------------------------------------------
# cluster spectra
# --------------------------------------------------------------------------------------------
def _counts_da(counts: Any) -> xr.DataArray:
    if isinstance(counts, xr.Dataset):
        if COUNTS not in counts:
            raise SchemaError(
                f"counts: dataset has no 'counts' variable (got {list(counts.data_vars)!r})."
            )
        counts = counts[COUNTS]
    if not isinstance(counts, xr.DataArray) or set(counts.dims) != {DIM_Y, DIM_X, DIM_ENERGY}:
        raise SchemaError(
            "counts must be a DataArray (or spectrum-image Dataset) with dims "
            "('y', 'x', 'energy'). "
            f"Got {getattr(counts, 'dims', type(counts).__name__)!r}."
        )
    return counts.transpose(DIM_Y, DIM_X, DIM_ENERGY)


def _label_array(label: Any) -> npt.NDArray[np.int64]:
    if isinstance(label, xr.Dataset):
        label = label["label"]
    if isinstance(label, xr.DataArray):
        label = label.transpose(DIM_Y, DIM_X).values
    return np.asarray(label).astype(np.int64)


def cluster_spectra(
    counts: xr.DataArray | xr.Dataset,
    label: xr.DataArray | npt.ArrayLike,
    *,
    n_clusters: int | None = None,
    chunk_pixels: int = 16_384,
    show_progress: bool = False,
) -> xr.Dataset:
    """Summed and mean raw-count spectrum of every cluster, computed chunk by chunk.

    Each block of rows is grouped by label and summed per cluster into float64 (exact for
    counts), so only one block and one cluster's rows of it (both in the counts' own dtype) are
    in memory at a time; dask-backed counts are computed block by block.

    Parameters
    ----------
    counts : xr.DataArray or xr.Dataset
        Raw counts with dims ``(y, x, energy)`` (numpy or dask), or a spectrum image.
    label : xr.DataArray or array
        Cluster index per pixel, dims ``(y, x)``; ``-1`` (unassigned) pixels are left out.
    n_clusters : int, optional
        Number of clusters (default ``label.max() + 1``).
    chunk_pixels : int
        Pixels per block.
    show_progress : bool
        Show a progress bar over blocks.

    Returns
    -------
    xr.Dataset
        ``cluster_sum_spectrum`` and ``cluster_mean_spectrum`` ``(cluster, energy)`` float64,
        ``n_pixels`` ``(cluster)`` int64. Empty clusters get a zero mean spectrum and a warning.

    Examples
    --------
    >>> from sigma._schema import make_spectrum_image
    >>> c = np.zeros((2, 2, 3), np.uint16); c[0, :, 0] = 2; c[1, :, 2] = 4
    >>> ds = cluster_spectra(make_spectrum_image(c, energy_scale_kev=0.01), [[0, 0], [1, 1]])
    >>> ds.cluster_mean_spectrum.values.tolist()
    [[2.0, 0.0, 0.0], [0.0, 0.0, 4.0]]
    """
    da = _counts_da(counts)
    lab = _label_array(label)
    ny, nx, ne = da.shape
    if lab.shape != (ny, nx):
        raise SchemaError(f"label has shape {lab.shape!r} but counts have (y, x) = {(ny, nx)!r}.")
    k = int(n_clusters) if n_clusters is not None else int(lab.max()) + 1
    if k <= 0:
        raise EmptySelectionError(
            "cluster_spectra: no pixel has a cluster label >= 0; nothing to sum."
        )
    total = np.zeros((k, ne), dtype=np.float64)
    rows = max(1, int(chunk_pixels) // max(nx, 1))
    starts = range(0, ny, rows)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="cluster spectra", unit="block")
    for y0 in starts:
        block = np.asarray(da.isel({DIM_Y: slice(y0, y0 + rows)}).values).reshape(-1, ne)
        lb = lab[y0 : y0 + rows].reshape(-1)
        # pixels grouped by cluster; each cluster's rows (a copy in the counts' own dtype) are
        # summed into float64 with numpy's buffered cast, never a float64 copy of the block
        order = np.argsort(lb, kind="stable")
        sorted_lb = lb[order]
        first = np.searchsorted(sorted_lb, np.arange(k), side="left")
        last = np.searchsorted(sorted_lb, np.arange(k), side="right")
        for c in np.nonzero(last > first)[0]:
            total[c] += block[order[first[c] : last[c]]].sum(axis=0, dtype=np.float64)
    n = np.bincount(lab[(lab >= 0) & (lab < k)], minlength=k).astype(np.int64)
    empty = np.nonzero(n == 0)[0]
    if empty.size:
        warnings.warn(
            f"clusters {empty.tolist()!r} have no pixels; their mean spectrum is set to 0.",
            stacklevel=2,
        )
    mean = total / np.maximum(n, 1)[:, None]
    coords = (
        {DIM_CLUSTER: np.arange(k), DIM_ENERGY: da[DIM_ENERGY]}
        if DIM_ENERGY in da.coords
        else {DIM_CLUSTER: np.arange(k)}
    )
    return xr.Dataset(
        {
            "cluster_sum_spectrum": (
                (DIM_CLUSTER, DIM_ENERGY),
                total,
                {"units": "counts", "long_name": "summed raw counts of the cluster"},
            ),
            "cluster_mean_spectrum": (
                (DIM_CLUSTER, DIM_ENERGY),
                mean,
                {"units": "counts / pixel", "long_name": "mean raw counts per pixel"},
            ),
            "n_pixels": ((DIM_CLUSTER,), n, {"units": "1", "long_name": "pixels per cluster"}),
        },
        coords=coords,
    )


# --------------------------------------------------------------------------------------------
# areas and maps
# --------------------------------------------------------------------------------------------
def pixel_area(ds: xr.Dataset | xr.DataArray) -> tuple[float, str, tuple[float, float]]:
    """Return ``(area of one pixel, area units, (dy, dx))`` from the ``y``/``x`` coordinates.

    Examples
    --------
    >>> from sigma._schema import spatial_coord
    >>> yx = {d: spatial_coord(d, 3, 0.5, "um") for d in ("y", "x")}
    >>> ds = xr.Dataset(coords=yx)
    >>> pixel_area(ds)
    (0.25, 'um^2', (0.5, 0.5))
    """
    steps = []
    units = []
    for dim in (DIM_Y, DIM_X):
        if dim in ds.coords and ds.sizes[dim] > 1:
            v = np.asarray(ds[dim].values, dtype=np.float64)
            steps.append(float(abs(v[1] - v[0])))
            units.append(str(ds[dim].attrs.get("units", "px")))
        else:
            steps.append(1.0)
            units.append(str(ds[dim].attrs.get("units", "px")) if dim in ds.coords else "px")
    if units[0] != units[1]:
        raise SchemaError(
            f"coordinates y and x have different units {units!r}; convert one of them."
        )
    return steps[0] * steps[1], f"{units[0]}^2", (steps[0], steps[1])


def phase_table(ds: xr.Dataset) -> pd.DataFrame:
    """One row per cluster: name, colour, pixel count, area (physical units) and area fraction.

    Parameters
    ----------
    ds : xr.Dataset
        Results dataset with ``label`` ``(y, x)``; ``cluster_name`` / ``cluster_color`` if present.
    """
    lab = _label_array(ds["label"])
    k = ds.sizes[DIM_CLUSTER] if DIM_CLUSTER in ds.sizes else int(lab.max()) + 1
    n = np.bincount(lab[lab >= 0], minlength=k)[:k]
    a, units, _ = pixel_area(ds)
    names = (
        [str(v) for v in ds["cluster_name"].values]
        if "cluster_name" in ds
        else [f"phase {i}" for i in range(k)]
    )
    colors = (
        [str(v) for v in ds["cluster_color"].values] if "cluster_color" in ds else default_colors(k)
    )
    return pd.DataFrame(
        {
            "cluster": np.arange(k),
            "name": names,
            "color": colors,
            "n_pixels": n.astype(np.int64),
            f"area_{units}": n * a,
            "area_fraction": n / max(lab.size, 1),
        }
    )


def binary_maps(ds: xr.Dataset) -> xr.DataArray:
    """Boolean maps ``(cluster, y, x)``: True where the pixel's label is the cluster."""
    lab = ds["label"]
    k = ds.sizes[DIM_CLUSTER]
    clusters = xr.DataArray(np.arange(k), dims=DIM_CLUSTER)
    out = (lab == clusters).transpose(DIM_CLUSTER, DIM_Y, DIM_X)
    out.attrs = {"long_name": "cluster membership (label == cluster)"}
    return out


# --------------------------------------------------------------------------------------------
# X-ray lines
# --------------------------------------------------------------------------------------------
def _candidate_line_names(ds: xr.Dataset, lines: Iterable[str] | None) -> list[str]:
    from sigma.xray import element_lines

    if lines is not None:
        return list(lines)
    names = as_str_list(ds.attrs.get("xray_lines"))
    if names:
        return names
    if "feature" in ds.coords:
        names = [str(v) for v in ds["feature"].values if "_" in str(v)]
        if names:
            return names
    e = ds[DIM_ENERGY].values
    out = []
    for el in as_str_list(ds.attrs.get("elements")):
        out += [
            n
            for n, ln in element_lines(el).items()
            if e[0] <= ln.energy_kev <= e[-1] and ln.weight >= 0.5
        ]
    return out


def line_enrichment(
    ds: xr.Dataset,
    *,
    lines: Iterable[str] | None = None,
    mnka_resolution_ev: float | None = None,
) -> pd.DataFrame:
    """Share of each cluster's counts inside each X-ray line window, relative to the whole map.

    The window is the line energy +/- 1 FWHM (:func:`sigma.xray.fwhm_kev`). ``fraction`` is the
    share of the cluster's mean spectrum inside the window; ``enrichment`` divides it by the
    same share in the map's sum spectrum (1 = like the average pixel, > 1 = richer).

    Parameters
    ----------
    ds : xr.Dataset
        Results with ``cluster_mean_spectrum`` ``(cluster, energy)`` (and ``sum_spectrum``).
    lines : iterable of str, optional
        Line names (default: attrs ``xray_lines``, else the ``feature`` names, else the
        strong lines of attrs ``elements`` inside the energy range).
    mnka_resolution_ev : float, optional
        Detector resolution (default attrs ``energy_resolution_mnka_ev`` or 130 eV).

    Returns
    -------
    pd.DataFrame
        Columns ``cluster, line, energy_kev, fraction, enrichment``.
    """
    from sigma.xray import fwhm_kev, get_line

    names = _candidate_line_names(ds, lines)
    if not names:
        raise EmptySelectionError(
            "line_enrichment: no X-ray lines to compare. Pass lines=['Fe_Ka', ...] or set "
            "attrs['xray_lines'] / attrs['elements']."
        )
    res = float(mnka_resolution_ev or ds.attrs.get("energy_resolution_mnka_ev", 130.0) or 130.0)
    e = np.asarray(ds[DIM_ENERGY].values, dtype=np.float64)
    spec = np.asarray(
        ds["cluster_mean_spectrum"].transpose(DIM_CLUSTER, DIM_ENERGY).values, dtype=np.float64
    )
    ref = (
        np.asarray(ds["sum_spectrum"].values, dtype=np.float64)
        if "sum_spectrum" in ds
        else spec.sum(axis=0)
    )
    spec_n = spec / np.maximum(spec.sum(axis=1, keepdims=True), 1e-300)
    ref_n = ref / max(ref.sum(), 1e-300)
    rows = []
    for name in names:
        line = get_line(name)
        w = float(fwhm_kev(line.energy_kev, res))
        win = (e >= line.energy_kev - w) & (e <= line.energy_kev + w)
        if not win.any():
            continue
        f_ref = float(ref_n[win].sum())
        for c in range(spec.shape[0]):
            f = float(spec_n[c, win].sum())
            rows.append(
                (c, name, line.energy_kev, f, f / f_ref if f_ref > 0 else np.inf if f > 0 else 1.0)
            )
    return pd.DataFrame(rows, columns=["cluster", "line", "energy_kev", "fraction", "enrichment"])


def top_elements(
    ds: xr.Dataset, *, n: int = 2, lines: Iterable[str] | None = None
) -> dict[int, list[str]]:
    """The ``n`` elements whose lines are most enriched in each cluster, best first.

    Like :func:`top_lines`, but an element counts once (its best line), so a phase reads
    ``["Fe", "Ti"]`` rather than ``["Fe_Ka", "Fe_Kb"]``.
    """
    ranked = top_lines(ds, n=10_000, lines=lines)
    return {
        c: list(dict.fromkeys(name.split("_", 1)[0] for name in names))[:n]
        for c, names in ranked.items()
    }


def top_lines(
    ds: xr.Dataset, *, n: int = 3, lines: Iterable[str] | None = None
) -> dict[int, list[str]]:
    """The ``n`` lines most enriched in each cluster (enrichment > 1 only), best first."""
    table = line_enrichment(ds, lines=lines)
    out: dict[int, list[str]] = {}
    for c in range(ds.sizes[DIM_CLUSTER]):
        sub = table[(table.cluster == c) & (table.enrichment > 1.0)].sort_values(
            "enrichment", ascending=False
        )
        out[c] = sub.line.head(n).tolist()
    return out


# --------------------------------------------------------------------------------------------
# NMF
# --------------------------------------------------------------------------------------------
def spectral_rank(spectra: npt.ArrayLike, rel: float = 0.05) -> int:
    """Numerical rank of a stack of spectra ``(n, energy)``: the NMF components they hold.

    Clusters of mixed (boundary) pixels are combinations of the pure ones, so asking NMF for
    one component per cluster is rank-deficient (it never converges). The rank is the number of
    singular values of the unit-sum spectra above ``rel`` of the largest (at least 1).

    Examples
    --------
    >>> a, b = np.array([1.0, 0, 0, 2]), np.array([0, 3.0, 1, 0])
    >>> spectral_rank([a, b, 0.5 * a + 0.5 * b])
    2
    """
    x = np.atleast_2d(np.asarray(spectra, dtype=np.float64))
    if x.shape[0] <= 1:
        return 1
    x = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)
    s = np.linalg.svd(x, compute_uv=False)
    if not s[0] > 0:
        return 1
    return int(max(1, min(x.shape[0], int(np.sum(s > rel * s[0])))))


def nmf_unmix(
    spectra: xr.DataArray,
    *,
    n_components: int,
    probability: xr.DataArray | None = None,
    random_state: int | None = 0,
    max_iter: int = 2000,
) -> xr.Dataset:
    """Unmix cluster spectra into non-negative components (:class:`sklearn.decomposition.NMF`).

    ``spectra ~ nmf_weight @ nmf_spectrum``; component spectra are scaled to unit sum, so a
    weight is the counts per pixel a component contributes to a cluster's mean spectrum.

    Parameters
    ----------
    spectra : xr.DataArray
        Non-negative ``(cluster, energy)`` spectra (e.g. ``cluster_mean_spectrum``).
    n_components : int
        Number of components.
    probability : xr.DataArray, optional
        ``(y, x, cluster)`` probabilities; gives ``nmf_abundance`` ``(component, y, x)``: each
        pixel's share of every component (the probability-weighted component fractions of the
        clusters; sums to 1 over components).
    random_state, max_iter
        Passed to NMF (``init="nndsvda"``).

    Returns
    -------
    xr.Dataset
        ``nmf_spectrum`` ``(component, energy)``, ``nmf_weight`` ``(cluster, component)`` and,
        with ``probability``, ``nmf_abundance``; attr ``nmf_reconstruction_error``.
    """
    from sklearn.decomposition import NMF

    if (
        isinstance(n_components, bool)
        or not isinstance(n_components, (int, np.integer))
        or n_components < 1
    ):
        raise ValueError(
            f"n_components must be an int in the range [1, inf). Got {n_components!r} instead."
        )
    X = np.asarray(spectra.transpose(DIM_CLUSTER, DIM_ENERGY).values, dtype=np.float64)
    if X.shape[0] == 0:
        raise EmptySelectionError("nmf_unmix: no cluster spectra given.")
    if np.any(X < 0) or not np.all(np.isfinite(X)):
        raise SchemaError(
            "nmf_unmix: spectra must be finite and non-negative (use raw-count spectra)."
        )
    if n_components > min(X.shape):
        raise ValueError(
            f"n_components={n_components} exceeds min(n_clusters, n_energy) = "
            f"{min(X.shape)}; use fewer."
        )
    model = NMF(
        n_components=n_components, init="nndsvda", random_state=random_state, max_iter=max_iter
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        W = model.fit_transform(X)
    if any("converge" in str(w.message).lower() for w in caught):
        warnings.warn(
            f"NMF did not converge in max_iter={max_iter} iterations; raise max_iter.", stacklevel=2
        )
    H = model.components_
    s = H.sum(axis=1)
    s = np.where(s > 0, s, 1.0)
    H = H / s[:, None]
    W = W * s[None, :]
    comp = np.arange(n_components)
    out = xr.Dataset(
        {
            "nmf_spectrum": (
                (DIM_COMPONENT, DIM_ENERGY),
                H,
                {"long_name": "NMF component spectrum (unit sum)"},
            ),
            "nmf_weight": (
                (DIM_CLUSTER, DIM_COMPONENT),
                W,
                {"long_name": "NMF weight", "units": "counts / pixel"},
            ),
        },
        coords={DIM_COMPONENT: comp, DIM_CLUSTER: spectra[DIM_CLUSTER].values},
        attrs={"nmf_reconstruction_error": float(model.reconstruction_err_)},
    )
    if DIM_ENERGY in spectra.coords:
        out = out.assign_coords({DIM_ENERGY: spectra[DIM_ENERGY]})
    if probability is not None:
        out["nmf_abundance"] = abundance_maps(out["nmf_weight"], probability)
    return out


def abundance_maps(weight: xr.DataArray, probability: xr.DataArray) -> xr.DataArray:
    """``(component, y, x)`` float32: probability-weighted component fractions of the clusters."""
    W = np.asarray(weight.transpose(DIM_CLUSTER, DIM_COMPONENT).values, dtype=np.float64)
    rs = W.sum(axis=1, keepdims=True)
    frac = np.divide(W, rs, out=np.zeros_like(W), where=rs > 0)
    P = probability.transpose(DIM_Y, DIM_X, DIM_CLUSTER)
    ny, nx, k = P.shape
    # (component, cluster) @ (cluster, pixels): one BLAS product (an einsum took 0.4 s on 1M px)
    flat = np.asarray(P.values, dtype=np.float32).reshape(ny * nx, k)
    A = (frac.T.astype(np.float32) @ flat.T).reshape(-1, ny, nx)
    coords = {d: P[d] for d in (DIM_Y, DIM_X) if d in P.coords}
    coords[DIM_COMPONENT] = weight[DIM_COMPONENT].values
    return xr.DataArray(
        A,
        dims=(DIM_COMPONENT, DIM_Y, DIM_X),
        coords=coords,
        attrs={"long_name": "NMF abundance", "units": "1"},
    )


# --------------------------------------------------------------------------------------------
# particles
# --------------------------------------------------------------------------------------------
def particle_statistics(
    ds: xr.Dataset,
    cluster: int,
    *,
    features: xr.DataArray | None = None,
    connectivity: int = 2,
    min_area_px: int = 1,
) -> pd.DataFrame:
    """Connected regions (particles) of one cluster with their size, shape and mean features.

    Regions are :func:`skimage.measure.label`'s; their sizes, centroids, axis lengths and mean
    features are what :func:`skimage.measure.regionprops_table` gives with the pixel spacing of
    the ``y``/``x`` coordinates (lengths and areas in physical units), computed for all regions
    at once from pixel moments, so a noisy cluster of 40 000 specks takes a fraction of a second.

    Parameters
    ----------
    ds : xr.Dataset
        Results with ``label`` ``(y, x)`` (and ``features`` ``(y, x, feature)``).
    cluster : int
        The cluster.
    features : xr.DataArray, optional
        ``(y, x, feature)`` intensities to average per particle (default ``ds.features``).
    connectivity : {1, 2}
        4- or 8-connectivity.
    min_area_px : int
        Drop particles with fewer pixels.

    Returns
    -------
    pd.DataFrame
        One row per particle: ``particle, n_pixels, area, equivalent_diameter,
        major_axis_length, minor_axis_length, centroid_y, centroid_x`` (units in ``df.attrs``)
        and ``mean_<feature>`` columns: the mean net line intensity per pixel in counts
        (:func:`sigma.line_intensity.net_line_intensities`) when the results keep their counts,
        else the standardised features (``df.attrs["intensity_units"]`` says which).
    """
    from skimage.measure import label as sk_label

    lab = _label_array(ds["label"])
    k = ds.sizes.get(DIM_CLUSTER, int(lab.max()) + 1)
    if not 0 <= int(cluster) < k:
        raise EmptySelectionError(f"cluster {cluster!r} does not exist; choose one of 0..{k - 1}.")
    mask = lab == int(cluster)
    if not mask.any():
        raise EmptySelectionError(f"cluster {cluster!r} has no pixels, so it has no particles.")
    regions = sk_label(mask, connectivity=connectivity)
    _, area_units, (dy, dx) = pixel_area(ds)
    length_units = area_units[:-2]
    units = "counts"
    feats: xr.DataArray | None
    if features is not None:
        feats = features
        units = str(features.attrs.get("units", ""))
    else:  # net line counts when the results keep counts; z-scores only as a labelled fallback
        from sigma import line_intensity

        if line_intensity.has_line_windows(ds):
            feats = line_intensity.net_line_intensities(ds)
        else:
            feats = ds["features"] if "features" in ds else None
            units = "z-score"
    # the moments of every region at once (bincounts over the pixels): the same numbers as
    # skimage's regionprops_table with spacing (dy, dx), which loops over the regions in Python
    # (13 s for the 40 000 specks of a noisy cluster on a million pixels; this takes 0.1 s)
    r = regions.ravel()
    n_reg = int(r.max())
    rows, cols = np.divmod(np.arange(r.size), lab.shape[1])
    inside = r > 0
    r, y, x = r[inside], rows[inside] * float(dy), cols[inside] * float(dx)
    n = np.bincount(r, minlength=n_reg + 1)[1:].astype(np.float64)

    def mean(w: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.bincount(r, weights=w, minlength=n_reg + 1)[1:] / n

    cy, cx = mean(y), mean(x)
    vyy = np.maximum(mean(y * y) - cy**2, 0.0)
    vxx = np.maximum(mean(x * x) - cx**2, 0.0)
    vxy = mean(x * y) - cx * cy
    half_gap = np.sqrt(((vyy - vxx) / 2) ** 2 + vxy**2)  # eigenvalues of the 2 x 2 covariance
    ev_major = np.maximum((vyy + vxx) / 2 + half_gap, 0.0)
    ev_minor = np.maximum((vyy + vxx) / 2 - half_gap, 0.0)
    area = n * abs(float(dy) * float(dx))
    df = pd.DataFrame(
        {
            "particle": np.arange(1, n_reg + 1),
            "n_pixels": n.astype(np.int64),
            "area": area,
            "equivalent_diameter": np.sqrt(4 * area / np.pi),
            "major_axis_length": 4 * np.sqrt(ev_major),
            "minor_axis_length": 4 * np.sqrt(ev_minor),
            "centroid_y": cy,
            "centroid_x": cx,
        }
    )
    if feats is not None:
        feats = feats.transpose(DIM_Y, DIM_X, ...)
        values = np.asarray(feats.values, dtype=np.float64)
        if values.ndim == 2:
            values = values[..., None]
        names = [str(v) for v in feats[feats.dims[2]].values] if feats.ndim == 3 else ["intensity"]
        flat = values.reshape(-1, values.shape[-1])[inside]
        for i, name in enumerate(names):
            df[f"mean_{name}"] = mean(flat[:, i])
    df = df[df.n_pixels >= min_area_px].reset_index(drop=True)
    df.attrs = {"cluster": int(cluster), "area_units": area_units, "length_units": length_units,
                "intensity_units": units}  # fmt: skip
    return df


# --------------------------------------------------------------------------------------------
# edits: merge, split, rename, recolour
# --------------------------------------------------------------------------------------------
def _check_cluster(ds: xr.Dataset, c: Any, arg: str = "cluster") -> int:
    k = ds.sizes[DIM_CLUSTER]
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < k:
        raise EmptySelectionError(f"{arg}={c!r} is not a cluster; choose an int in 0..{k - 1}.")
    return int(c)


def _log_edit(ds: xr.Dataset, entry: dict[str, Any]) -> dict[str, Any]:
    from sigma._schema import append_history

    attrs = append_history(dict(ds.attrs), json.dumps(entry))
    info = json.loads(attrs.get("clustering", "{}") or "{}")
    info.setdefault("edits", []).append(entry)
    info["n_components"] = None  # set by the caller
    attrs["clustering"] = json.dumps(info)
    return attrs


def _finish(ds: xr.Dataset, attrs: dict[str, Any]) -> xr.Dataset:
    info = json.loads(attrs["clustering"])
    info["n_components"] = int(ds.sizes[DIM_CLUSTER])
    attrs["clustering"] = json.dumps(info)
    ds.attrs = attrs
    ds = ds.assign_coords({DIM_CLUSTER: np.arange(ds.sizes[DIM_CLUSTER])})
    if "nmf_weight" in ds and "nmf_abundance" in ds and "probability" in ds:
        ds["nmf_abundance"] = abundance_maps(ds["nmf_weight"], ds["probability"]).assign_attrs(
            ds["nmf_abundance"].attrs
        )
    return ds


def merge_clusters(ds: xr.Dataset, clusters: Sequence[int]) -> xr.Dataset:
    """Merge ``clusters`` into the lowest of them; returns a new dataset, clusters renumbered.

    Probabilities, summed spectra, pixel counts and NMF weights add (weights pixel-weighted);
    the mean spectrum is the new sum over the new count; GMM mean and covariance are moment
    matched. Name and colour of the lowest cluster are kept.
    """
    idx = sorted({_check_cluster(ds, c, "clusters") for c in clusters})
    if len(idx) < 2:
        raise EmptySelectionError(
            f"merge_clusters needs at least 2 distinct clusters. Got {list(clusters)!r}."
        )
    target, others = idx[0], idx[1:]
    k = ds.sizes[DIM_CLUSTER]
    keep = [c for c in range(k) if c not in others]
    attrs = _log_edit(ds, {"edit": "merge", "clusters": idx})
    out = ds.copy(
        deep=False
    )  # every variable changed below gets a new array: no copy of the counts
    sel = xr.DataArray(idx, dims=DIM_CLUSTER)
    n = (
        out["n_pixels"].isel({DIM_CLUSTER: sel}).values.astype(np.float64)
        if "n_pixels" in out
        else np.ones(len(idx))
    )
    # merged cluster = sum of its members, for every additive per-cluster variable
    for var in ("probability", "cluster_sum_spectrum", "n_pixels"):
        if var in out:
            v = out[var]
            out[var] = (
                xr.where(
                    v[DIM_CLUSTER] == target,
                    v.isel({DIM_CLUSTER: sel}).sum(DIM_CLUSTER),
                    v,
                    keep_attrs=True,
                )
                .astype(v.dtype)
                .transpose(*v.dims)
            )
    if "label" in out:
        lab = out["label"].values.copy()
        lab[np.isin(lab, others)] = target
        remap = -np.ones(k + 1, dtype=np.int64)
        remap[keep] = np.arange(len(keep))
        out["label"] = out["label"].copy(
            data=np.where(lab >= 0, remap[lab], -1).astype(out["label"].dtype)
        )
    if "cluster_mean_spectrum" in out and "cluster_sum_spectrum" in out and "n_pixels" in out:
        m = out["cluster_mean_spectrum"]
        merged = out["cluster_sum_spectrum"].sel({DIM_CLUSTER: target}) / max(float(n.sum()), 1.0)
        out["cluster_mean_spectrum"] = xr.where(
            m[DIM_CLUSTER] == target, merged, m, keep_attrs=True
        ).transpose(*m.dims)
    w_n = n / n.sum() if n.sum() > 0 else np.full(len(idx), 1 / len(idx))
    if "nmf_weight" in out:
        W = out["nmf_weight"].values.copy()
        W[target] = w_n @ W[idx]
        out["nmf_weight"] = out["nmf_weight"].copy(data=W)
    if "gmm_mean" in out and "gmm_covariance" in out:
        wts = out["gmm_weight"].values[idx] if "gmm_weight" in out else w_n
        wts = wts / wts.sum()
        M = out["gmm_mean"].values.copy()
        C = out["gmm_covariance"].values.copy()
        mu = wts @ M[idx]
        diff = M[idx] - mu
        C[target] = np.einsum("k,kij->ij", wts, C[idx]) + np.einsum("k,ki,kj->ij", wts, diff, diff)
        M[target] = mu
        out["gmm_mean"] = out["gmm_mean"].copy(data=M)
        out["gmm_covariance"] = out["gmm_covariance"].copy(data=C)
        if "gmm_weight" in out:
            gw = out["gmm_weight"].values.copy()
            gw[target] = out["gmm_weight"].values[idx].sum()
            out["gmm_weight"] = out["gmm_weight"].copy(data=gw)
    out = out.isel({DIM_CLUSTER: keep})
    return _finish(out, attrs)


def split_cluster(
    ds: xr.Dataset,
    cluster: int,
    *,
    counts: xr.DataArray | xr.Dataset | None = None,
    random_state: int | None = 0,
) -> xr.Dataset:
    """Split one cluster in two by refitting a 2-component GMM on its pixels' embedding.

    The first half keeps the index, name and colour; the second is appended as the last
    cluster. The cluster's probability is shared between the halves by the 2-component
    responsibilities of every pixel, so probabilities still sum to 1.

    Parameters
    ----------
    ds : xr.Dataset
        Results with ``embedding`` ``(y, x, latent)``, ``label`` and ``probability``.
    cluster : int
        The cluster to split.
    counts : xr.DataArray or xr.Dataset, optional
        Raw counts ``(y, x, energy)``: needed to recompute the spectra of the halves (and their
        NMF weights). Without them those spectra are NaN, with a warning.
    random_state : int, optional
        Seed of the 2-component fit.
    """
    from sklearn.mixture import GaussianMixture

    c = _check_cluster(ds, cluster)
    for var in ("embedding", "label", "probability"):
        if var not in ds:
            raise SchemaError(
                f"split_cluster needs the variable {var!r}; the dataset has {list(ds.data_vars)!r}."
            )
    lab = _label_array(ds["label"])
    emb = ds["embedding"].transpose(DIM_Y, DIM_X, DIM_LATENT)
    E = np.asarray(emb.values, dtype=np.float64).reshape(-1, emb.shape[2])
    mask = (lab == c).reshape(-1)
    if mask.sum() < 2:
        raise EmptySelectionError(
            f"cluster {c} has {int(mask.sum())} pixel(s); at least 2 are needed to split it."
        )
    center = E[mask].mean(axis=0)
    scale = E[mask].std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    g = GaussianMixture(2, n_init=2, random_state=random_state).fit((E[mask] - center) / scale)
    r = g.predict_proba((E - center) / scale)
    k = ds.sizes[DIM_CLUSTER]
    new = k
    attrs = _log_edit(ds, {"edit": "split", "cluster": c, "random_state": random_state})

    # extend every cluster variable by one (copy of cluster c, then fix)
    out = xr.concat(
        [ds, ds.isel({DIM_CLUSTER: [c]})],
        dim=DIM_CLUSTER,
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="override",
    )
    for vname, variable in ds.data_vars.items():  # variables without a cluster dim: unchanged
        if DIM_CLUSTER not in variable.dims:
            out[vname] = variable
    out.attrs = dict(ds.attrs)
    out = out.assign_coords({DIM_CLUSTER: np.arange(k + 1)})
    ny, nx = lab.shape
    P = np.asarray(
        out["probability"].transpose(DIM_Y, DIM_X, DIM_CLUSTER).values, dtype=np.float64
    ).copy()
    pc = P[..., c].copy()
    P[..., c] = pc * r[:, 0].reshape(ny, nx)
    P[..., new] = pc * r[:, 1].reshape(ny, nx)
    out["probability"] = xr.DataArray(
        P.astype(ds["probability"].dtype),
        dims=(DIM_Y, DIM_X, DIM_CLUSTER),
        coords=out["probability"].transpose(DIM_Y, DIM_X, DIM_CLUSTER).coords,
        attrs=ds["probability"].attrs,
    ).transpose(*ds["probability"].dims)
    lab2 = lab.copy()
    half = np.argmax(r, axis=1).reshape(ny, nx)
    lab2[(lab == c) & (half == 1)] = new
    lab_da = ds["label"].transpose(DIM_Y, DIM_X)
    out["label"] = lab_da.copy(data=lab2.astype(lab_da.dtype))
    if "n_pixels" in out:
        out["n_pixels"] = out["n_pixels"].copy(
            data=np.bincount(lab2[lab2 >= 0], minlength=k + 1)[: k + 1].astype(
                out["n_pixels"].dtype
            )
        )
    if "gmm_mean" in out:
        S = np.diag(scale)
        M = out["gmm_mean"].values.copy()
        C = out["gmm_covariance"].values.copy()
        for j, tgt in enumerate((c, new)):
            M[tgt] = center + scale * g.means_[j]
            C[tgt] = S @ g.covariances_[j] @ S
        out["gmm_mean"] = out["gmm_mean"].copy(data=M)
        out["gmm_covariance"] = out["gmm_covariance"].copy(data=C)
        if "gmm_weight" in out:
            gw = out["gmm_weight"].values.copy()
            total = ds["gmm_weight"].values[c]
            gw[c], gw[new] = total * g.weights_[0], total * g.weights_[1]
            out["gmm_weight"] = out["gmm_weight"].copy(data=gw)
    if "cluster_name" in out:
        names = [str(v) for v in out["cluster_name"].values]
        names[new] = f"{names[c]} (split)"
        out["cluster_name"] = out["cluster_name"].copy(data=np.array(names))
    if "cluster_color" in out:
        cols = [str(v) for v in out["cluster_color"].values]
        cols[new] = next(
            (col for col in default_colors(k + 21) if col not in cols[:new]), "#000000"
        )
        out["cluster_color"] = out["cluster_color"].copy(data=np.array(cols))
    spectra_vars = [v for v in ("cluster_sum_spectrum", "cluster_mean_spectrum") if v in out]
    if spectra_vars:
        if counts is not None:
            fresh = cluster_spectra(counts, lab2, n_clusters=k + 1)
            for v in spectra_vars:
                arr = out[v].values.copy()
                arr[[c, new]] = fresh[v].values[[c, new]]
                out[v] = out[v].copy(data=arr)
            if "nmf_weight" in out and "nmf_spectrum" in out:
                H = np.asarray(out["nmf_spectrum"].transpose(DIM_COMPONENT, DIM_ENERGY).values)
                W = out["nmf_weight"].values.copy()
                for tgt in (c, new):
                    W[tgt] = nnls(H.T, fresh["cluster_mean_spectrum"].values[tgt])[0]
                out["nmf_weight"] = out["nmf_weight"].copy(data=W)
        else:
            warnings.warn(
                "split_cluster: no raw counts given, so the spectra (and NMF weights) of "
                f"clusters {c} "
                f"and {new} are set to NaN. Pass counts=<the spectrum image> to recompute them.",
                stacklevel=2,
            )
            for v in [*spectra_vars, *(["nmf_weight"] if "nmf_weight" in out else [])]:
                arr = out[v].values.astype(np.float64).copy()
                arr[[c, new]] = np.nan
                out[v] = out[v].copy(data=arr)
    return _finish(out, attrs)


def rename_cluster(ds: xr.Dataset, cluster: int, name: str) -> xr.Dataset:
    """Return a copy with ``cluster_name[cluster] = name``."""
    c = _check_cluster(ds, cluster)
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str. Got {name!r} instead.")
    k = ds.sizes[DIM_CLUSTER]
    names = (
        [str(v) for v in ds["cluster_name"].values]
        if "cluster_name" in ds
        else [f"phase {i}" for i in range(k)]
    )
    names[c] = name.strip()
    out = ds.copy()
    out["cluster_name"] = xr.DataArray(
        np.array(names),
        dims=DIM_CLUSTER,
        coords={DIM_CLUSTER: ds[DIM_CLUSTER]},
        attrs={"long_name": "cluster name"},
    )
    attrs = _log_edit(ds, {"edit": "rename", "cluster": c, "name": name.strip()})
    return _finish(out, attrs)


def recolor_cluster(ds: xr.Dataset, cluster: int, color: str) -> xr.Dataset:
    """Return a copy with ``cluster_color[cluster] = color`` (any matplotlib colour)."""
    from matplotlib.colors import to_hex

    c = _check_cluster(ds, cluster)
    try:
        hexcol = to_hex(color, keep_alpha=False)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"color {color!r} is not a colour; use '#rrggbb' or a matplotlib name like 'tab:red'."
        ) from err
    k = ds.sizes[DIM_CLUSTER]
    cols = (
        [str(v) for v in ds["cluster_color"].values] if "cluster_color" in ds else default_colors(k)
    )
    cols[c] = hexcol
    out = ds.copy()
    out["cluster_color"] = xr.DataArray(
        np.array(cols),
        dims=DIM_CLUSTER,
        coords={DIM_CLUSTER: ds[DIM_CLUSTER]},
        attrs={"long_name": "cluster colour"},
    )
    attrs = _log_edit(ds, {"edit": "recolor", "cluster": c, "color": hexcol})
    return _finish(out, attrs)


def add_cluster_from_mask(
    ds: xr.Dataset,
    mask: xr.DataArray | npt.ArrayLike,
    *,
    name: str | None = None,
    color: str | None = None,
    counts: xr.DataArray | xr.Dataset | None = None,
) -> xr.Dataset:
    """Make the pixels of ``mask`` a new cluster (the last one); returns a new dataset.

    The pixels leave their old clusters: their label becomes the new index and their probability
    is 1 for it (0 for the others), so probabilities still sum to 1. Pixel counts are recounted.
    The spectra are exact with ``counts`` (or a ``counts`` variable in ``ds``); otherwise each old
    cluster keeps its mean spectrum (its summed spectrum shrinks with its pixel count) and the new
    cluster's mean spectrum is the pixel-weighted mean of the mean spectra of the clusters it took
    pixels from. NMF weights of the new cluster come from a non-negative least-squares fit of its
    mean spectrum to ``nmf_spectrum``; GMM mean and covariance from its pixels' ``embedding``.

    Parameters
    ----------
    ds : xr.Dataset
        Results with ``label`` ``(y, x)`` and a ``cluster`` dimension.
    mask : xr.DataArray or array-like of bool
        The pixels: dims ``(y, x)``, or a flat array of ``y * x`` in C order.
    name, color : str, optional
        Name and colour (any matplotlib colour) of the new cluster; default ``"phase {k}"`` and
        the first default colour not in use.
    counts : xr.DataArray or xr.Dataset, optional
        Raw counts ``(y, x, energy)`` to compute the spectra exactly.

    Raises
    ------
    EmptySelectionError
        If ``mask`` selects no pixel.
    ValueError
        If ``mask`` does not have one value per pixel, or ``color`` is not a colour.

    Examples
    --------
    >>> ds = xr.Dataset({"label": (("y", "x"), np.zeros((4, 4), int)), "n_pixels": ("cluster", [16])})
    >>> new = add_cluster_from_mask(ds, np.eye(4, dtype=bool), name="grain")
    >>> new.label.values[0].tolist(), new.n_pixels.values.tolist(), str(new.cluster_name.values[1])
    ([1, 0, 0, 0], [12, 4], 'grain')
    """
    from matplotlib.colors import to_hex

    lab = _label_array(ds["label"])
    ny, nx = lab.shape
    if isinstance(mask, xr.DataArray):
        mask = mask.transpose(DIM_Y, DIM_X).values
    m = np.asarray(mask, dtype=bool)
    if m.size != ny * nx:
        raise ValueError(
            f"mask must have one value per pixel ({ny} x {nx} = {ny * nx}). Got shape {m.shape!r}."
        )
    m = m.reshape(ny, nx)
    n_new = int(m.sum())
    if n_new == 0:
        raise EmptySelectionError("mask selects no pixel; select some pixels to make a cluster.")
    k = int(ds.sizes[DIM_CLUSTER])
    attrs = _log_edit(ds, {"edit": "add_from_mask", "n_pixels": n_new})
    taken = np.bincount(lab[m][lab[m] >= 0], minlength=k)[:k].astype(np.float64)
    lab2 = lab.copy()
    lab2[m] = k
    new_n = np.bincount(lab2[lab2 >= 0], minlength=k + 1)[: k + 1]

    # every cluster variable grows by one entry (a copy of cluster 0's, then set below)
    out = xr.concat(
        [ds, ds.isel({DIM_CLUSTER: [0]})],
        dim=DIM_CLUSTER,
        data_vars="minimal",
        coords="minimal",
        compat="override",
        join="override",
    )
    for vname, variable in ds.data_vars.items():
        if DIM_CLUSTER not in variable.dims:
            out[vname] = variable
    out.attrs = dict(ds.attrs)
    out = out.assign_coords({DIM_CLUSTER: np.arange(k + 1)})

    def put(var: str, values: npt.ArrayLike) -> None:
        v = out[var].transpose(DIM_CLUSTER, ...)
        out[var] = v.copy(data=np.asarray(values).astype(v.dtype)).transpose(*out[var].dims)

    lab_da = ds["label"].transpose(DIM_Y, DIM_X)
    out["label"] = lab_da.copy(data=lab2.astype(lab_da.dtype)).transpose(*ds["label"].dims)
    if "probability" in out:
        p = out["probability"].transpose(DIM_Y, DIM_X, DIM_CLUSTER)
        P = p.values.copy()
        P[..., k] = 0
        P[m] = 0
        P[m, k] = 1
        out["probability"] = p.copy(data=P).transpose(*ds["probability"].dims)
    if "n_pixels" in out:
        put("n_pixels", new_n)
    if counts is None and COUNTS in ds:
        counts = ds[COUNTS]
    mean_spec: npt.NDArray[np.float64] | None = None
    if counts is not None:
        fresh = cluster_spectra(counts, lab2, n_clusters=k + 1)
        for v in ("cluster_sum_spectrum", "cluster_mean_spectrum"):
            if v in out:
                put(v, fresh[v].transpose(DIM_CLUSTER, DIM_ENERGY).values)
        mean_spec = np.asarray(
            fresh["cluster_mean_spectrum"].transpose(DIM_CLUSTER, DIM_ENERGY).values
        )
    elif "cluster_mean_spectrum" in out:
        old = np.asarray(
            ds["cluster_mean_spectrum"].transpose(DIM_CLUSTER, DIM_ENERGY).values, dtype=np.float64
        )
        mean_spec = np.vstack([old, taken @ old / max(taken.sum(), 1.0)])
        put("cluster_mean_spectrum", mean_spec)
        if "cluster_sum_spectrum" in out:
            put("cluster_sum_spectrum", mean_spec * new_n[:, None])
    if "nmf_weight" in out:
        W = np.asarray(
            ds["nmf_weight"].transpose(DIM_CLUSTER, DIM_COMPONENT).values, dtype=np.float64
        )
        if mean_spec is not None and "nmf_spectrum" in ds:
            H = np.asarray(
                ds["nmf_spectrum"].transpose(DIM_COMPONENT, DIM_ENERGY).values, dtype=np.float64
            )
            w_new = nnls(H.T, mean_spec[k])[0]
        else:
            w_new = taken @ W / max(taken.sum(), 1.0)
        put("nmf_weight", np.vstack([W, w_new]))
    if "gmm_mean" in out and "gmm_covariance" in out and "embedding" in ds:
        E = np.asarray(
            ds["embedding"].transpose(DIM_Y, DIM_X, DIM_LATENT).values, dtype=np.float64
        )[m]
        M = out["gmm_mean"].transpose(DIM_CLUSTER, ...).values.copy()
        C = out["gmm_covariance"].transpose(DIM_CLUSTER, ...).values.copy()
        M[k] = E.mean(axis=0)
        d = E.shape[1]
        C[k] = (
            np.cov(E, rowvar=False).reshape(d, d) if n_new > 1 else np.zeros((d, d))
        ) + 1e-6 * np.eye(d)
        put("gmm_mean", M)
        put("gmm_covariance", C)
    if "gmm_weight" in out:
        gw = np.asarray(ds["gmm_weight"].values, dtype=np.float64)
        share = n_new / (ny * nx)
        put("gmm_weight", np.append(gw * (1 - share) / max(gw.sum(), 1e-12), share))
    names = (
        [str(v) for v in ds["cluster_name"].values]
        if "cluster_name" in ds
        else [f"phase {i}" for i in range(k)]
    )
    names.append(name.strip() if name and name.strip() else f"phase {k}")
    cols = (
        [str(v) for v in ds["cluster_color"].values] if "cluster_color" in ds else default_colors(k)
    )
    try:
        new_color = (
            to_hex(color, keep_alpha=False)
            if color
            else next((c for c in default_colors(k + 21) if c not in cols), "#000000")
        )
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"color {color!r} is not a colour; use '#rrggbb' or a matplotlib name like 'tab:red'."
        ) from err
    cols.append(new_color)
    cluster_coord = {DIM_CLUSTER: np.arange(k + 1)}
    out["cluster_name"] = xr.DataArray(
        np.array(names), dims=DIM_CLUSTER, coords=cluster_coord, attrs={"long_name": "cluster name"}
    )
    out["cluster_color"] = xr.DataArray(
        np.array(cols),
        dims=DIM_CLUSTER,
        coords=cluster_coord,
        attrs={"long_name": "cluster colour"},
    )
    return _finish(out, attrs)
