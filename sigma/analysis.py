"""Phase analysis: cluster spectra from raw counts, areas, lines, NMF, particles.

The functions take and return :class:`xarray.Dataset` objects that follow the results layout of
``docs/results_schema.md`` and never modify their input; :class:`sigma.results.SigmaResults`
wraps them as methods. This module imports neither torch nor Lightning (the GUI uses it). The
edits (merge, split, rename, recolour, new cluster from a mask) live in :mod:`sigma.edits` and
are re-exported here.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr

from sigma._checks import check_int
from sigma._schema import (
    COUNTS,
    DIM_CLUSTER,
    DIM_COMPONENT,
    DIM_ENERGY,
    DIM_X,
    DIM_Y,
    as_str_list,
)
from sigma.edits import (
    add_cluster_from_mask,
    merge_clusters,
    recolor_cluster,
    rename_cluster,
    split_cluster,
)
from sigma.exceptions import EmptySelectionError, SchemaError

logger = logging.getLogger(__name__)

__all__ = [
    "default_colors",
    "cluster_spectra",
    "add_count_summaries",
    "add_nmf",
    "line_names",
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

    n_components = check_int("n_components", n_components, 1)
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


def add_count_summaries(
    ds: xr.Dataset, counts: Any, *, keep_counts: bool | int = True, show_progress: bool = False
) -> xr.Dataset:
    """``ds`` (labels of a clustering) with what the raw counts say about its phases.

    Adds ``total_counts`` (counts per pixel), ``sum_spectrum``, the cluster spectra of
    :func:`cluster_spectra` (from the raw counts, chunk by chunk) and, when ``keep_counts`` is
    not False and the counts are integers, the per-pixel counts as a sparse matrix
    (:mod:`sigma.sparse_counts`: True within its default budget, an int within that many bytes;
    past the budget they are left out, logged).
    """
    counts = _counts_da(counts)
    out = ds.copy()
    out["total_counts"] = (
        counts.sum(DIM_ENERGY)
        .astype(np.float32)
        .compute()
        .assign_attrs(units="counts", long_name="counts per pixel")
    )
    out["sum_spectrum"] = (
        counts.sum((DIM_Y, DIM_X), dtype=np.float64)
        .compute()
        .assign_attrs(units="counts", long_name="sum spectrum")
    )
    spectra = cluster_spectra(
        counts, out["label"], n_clusters=out.sizes[DIM_CLUSTER], show_progress=show_progress
    )
    for var in spectra.data_vars:
        out[var] = spectra[var]
    if keep_counts is not False and counts.dtype.kind in "iu":
        from sigma import sparse_counts

        budget = sparse_counts.DEFAULT_MAX_BYTES if keep_counts is True else int(keep_counts)
        packed = sparse_counts.pack_counts(counts, max_bytes=budget)
        if packed is not None:
            for var in packed.data_vars:
                out[var] = packed[var]
    return out


def add_nmf(ds: xr.Dataset, n_components: int | str, *, random_state: int | None = 0) -> xr.Dataset:
    """``ds`` with its cluster mean spectra unmixed by :func:`nmf_unmix`.

    ``n_components="auto"`` takes the spectra's numerical rank (:func:`spectral_rank`); at most
    the number of clusters. Adds ``nmf_spectrum``, ``nmf_weight``, ``nmf_abundance`` and the
    ``nmf_reconstruction_error`` attribute.
    """
    if "cluster_mean_spectrum" not in ds:
        raise SchemaError("nmf_components needs the cluster spectra: pass spectrum_image=.")
    if n_components == "auto":
        n_components = spectral_rank(ds["cluster_mean_spectrum"].values)
    nmf = nmf_unmix(
        ds["cluster_mean_spectrum"],
        n_components=min(int(n_components), ds.sizes[DIM_CLUSTER]),
        probability=ds["probability"],
        random_state=random_state,
    )
    out = ds.assign({var: nmf[var] for var in ("nmf_spectrum", "nmf_weight", "nmf_abundance")})
    out.attrs["nmf_reconstruction_error"] = nmf.attrs["nmf_reconstruction_error"]
    return out


def line_names(ds: xr.Dataset, n: int = 2) -> list[str]:
    """Names from each cluster's top ``n`` elements (:func:`top_elements`), e.g. ``"Fe, Ti"``.

    ``"phase i"`` where a cluster has no enriched line or the dataset has no cluster spectra.
    """
    k = ds.sizes[DIM_CLUSTER]
    names = [f"phase {i}" for i in range(k)]
    if "cluster_mean_spectrum" in ds and DIM_ENERGY in ds.coords:
        try:
            top = top_elements(ds, n=n)
            names = [", ".join(top[i]) or f"phase {i}" for i in range(k)]
        except EmptySelectionError:
            pass
    return names
