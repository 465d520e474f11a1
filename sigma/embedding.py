"""UMAP as an alternative to the autoencoder: ``sigma run --embedding umap``.

SIGMA offers UMAP (McInnes et al. 2018) beside its autoencoder. Here it embeds the same
per-pixel features in 2-D; clustering, refinement and results are the same downstream. It
needs the optional package ``umap-learn`` (``pip install umap-learn``).

For large maps UMAP is fitted on a random subset of pixels (:data:`MAX_FIT_PIXELS`) and the
rest are placed with ``transform``: UMAP's cost grows faster than linearly with the number of
points, and the autoencoder is the better choice for multi-megapixel maps.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["umap_embedding", "check_embedding", "EMBEDDINGS", "MAX_FIT_PIXELS"]

EMBEDDINGS = ("autoencoder", "umap")
#: UMAP is fitted on at most this many pixels; the others are transformed
MAX_FIT_PIXELS = 40_000


def check_embedding(embedding: Any) -> None:
    """Check the ``embedding`` config value (and that umap-learn is installed for ``"umap"``)."""
    if embedding not in EMBEDDINGS:
        raise ConfigurationError(
            f"embedding must be one of {list(EMBEDDINGS)!r}. Got {embedding!r} instead."
        )
    if embedding == "umap":
        try:
            import umap  # noqa: F401
        except ImportError as err:
            raise ConfigurationError(
                "embedding 'umap' needs the package umap-learn: pip install umap-learn "
                "(or use the default embedding 'autoencoder')."
            ) from err


def umap_embedding(
    features: xr.Dataset | xr.DataArray,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.0,
    random_state: int | None = 0,
    max_fit_pixels: int = MAX_FIT_PIXELS,
) -> npt.NDArray[np.float32]:
    """2-D UMAP embedding of per-pixel features.

    Parameters
    ----------
    features : xr.Dataset or xr.DataArray
        ``features`` with dims ``(y, x, feature)``.
    n_neighbors, min_dist : int, float
        UMAP's parameters (``min_dist=0`` packs clusters tightly, which suits clustering).
    random_state : int, optional
        Seed (makes UMAP single-threaded and reproducible).
    max_fit_pixels : int
        Fit on at most this many random pixels and transform the others.

    Returns
    -------
    numpy.ndarray
        float32 ``(y * x, 2)``.
    """
    check_embedding("umap")
    import umap

    da = features["features"] if isinstance(features, xr.Dataset) else features
    x = np.asarray(da.transpose("y", "x", "feature").values, dtype=np.float32)
    x = x.reshape(-1, x.shape[-1])
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, max(2, x.shape[0] - 1)),
        min_dist=min_dist,
        random_state=random_state,
    )
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # seeded: single thread
        if x.shape[0] <= max_fit_pixels:
            out = reducer.fit_transform(x)
        else:
            rng = np.random.default_rng(random_state)
            idx = rng.choice(x.shape[0], max_fit_pixels, replace=False)
            reducer.fit(x[idx])
            out = reducer.transform(x)
    return np.asarray(out, dtype=np.float32)
