"""PCA features: Poisson-scaled principal components of the counts, computed in row batches."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._checks import check_int
from sigma._schema import COUNTS, DIM_ENERGY, DIM_FEATURE, DIM_X, DIM_Y, FEATURES
from sigma.preprocessing._common import (
    TOTAL_COUNTS,
    _fmt_kwargs,
    _history,
    _is_dask,
    _nav_vars,
    _require_counts,
    _total_dtype,
)

logger = logging.getLogger(__name__)


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
    n_components = check_int("n_components", n_components, 1)
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
    batch_size = check_int("batch_size", batch_size, 1)
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
