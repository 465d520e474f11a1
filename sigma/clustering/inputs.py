"""Clustering inputs: latents and features checked, flattened to (n, d) points, scaled, subsampled."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._schema import DIM_LATENT, DIM_X, DIM_Y
from sigma.exceptions import EmptySelectionError, SchemaError


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def _variable(ds: xr.Dataset, name: str, arg: str, dims: str) -> xr.DataArray:
    """``ds[name]``, or a SchemaError naming the argument and what to pass instead."""
    if name not in ds:
        raise SchemaError(
            f"{arg}: got a Dataset without a {name!r} variable (variables "
            f"{list(ds.data_vars)!r}). Pass the {dims} DataArray instead."
        )
    return ds[name]


def _as_points(latent: Any) -> tuple[npt.NDArray[np.float64], dict[str, Any] | None]:
    """Return ``(points (n, d) float64, spatial info or None)`` from an array or DataArray."""
    spatial: dict[str, Any] | None = None
    if isinstance(latent, xr.Dataset):
        latent = _variable(latent, "embedding", "latent", "(y, x, latent)")
    if isinstance(latent, xr.DataArray):
        if DIM_Y in latent.dims and DIM_X in latent.dims:
            if latent.ndim != 3 or DIM_LATENT not in latent.dims:
                raise SchemaError(
                    f"latent: a spatial DataArray must have dims ('y', 'x', 'latent'). Got "
                    f"{latent.dims!r}. Rename the latent dim, e.g. "
                    "da.rename({'dim_2': 'latent'})."
                )
            latent = latent.transpose(DIM_Y, DIM_X, DIM_LATENT)
            spatial = {
                "coords": {d: latent[d] for d in (DIM_Y, DIM_X) if d in latent.coords},
                "shape": latent.shape[:2],
            }
            arr = np.asarray(latent.values, dtype=np.float64).reshape(-1, latent.shape[2])
        else:
            if latent.ndim != 2:
                raise SchemaError(
                    f"latent: expected dims (pixel, latent) or (y, x, latent). Got {latent.dims!r}."
                )
            arr = np.asarray(latent.values, dtype=np.float64)
    else:
        arr = np.asarray(latent, dtype=np.float64)
        if arr.ndim == 3:
            spatial = {"coords": {}, "shape": arr.shape[:2]}
            arr = arr.reshape(-1, int(arr.shape[-1]))
        elif arr.ndim != 2:
            raise SchemaError(
                f"latent: expected an array of shape (n_pixels, n_latent) or (y, x, n_latent). Got "
                f"shape {arr.shape!r}."
            )
    if arr.shape[0] == 0:
        raise EmptySelectionError("latent: got 0 points; at least one pixel is needed to cluster.")
    if not np.all(np.isfinite(arr)):
        n_bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise SchemaError(
            f"latent: {n_bad} points hold NaN or inf. Drop or fill them before clustering "
            "(e.g. check the encoder input for empty pixels)."
        )
    return arr, spatial


def _as_feature_points(features: Any, n: int) -> npt.NDArray[np.float64]:
    if isinstance(features, xr.Dataset):
        features = _variable(features, "features", "features", "(y, x, feature)")
    if isinstance(features, xr.DataArray) and DIM_Y in features.dims and DIM_X in features.dims:
        other = [dim for dim in features.dims if dim not in (DIM_Y, DIM_X)]
        features = features.transpose(DIM_Y, DIM_X, *other)
    F = np.asarray(features, dtype=np.float64)
    F = F.reshape(F.shape[0], -1) if F.ndim == 2 else F.reshape(-1, int(F.shape[-1]))
    if F.shape[0] != n:
        raise SchemaError(
            f"features: {F.shape[0]} pixels, but the latent has {n}. Pass the features of the "
            "same pixels (the encoder's input), in the same (y, x) order."
        )
    if not np.all(np.isfinite(F)):
        raise SchemaError("features: some values are NaN or inf; fill them before clustering.")
    return F


class _Scaler:
    def __init__(self, X: npt.NDArray[np.float64], standardize: bool) -> None:
        self.c = X.mean(axis=0) if standardize else np.zeros(X.shape[1])
        s = X.std(axis=0) if standardize else np.ones(X.shape[1])
        self.s = np.where(s > 0, s, 1.0)

    def __call__(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return (X - self.c) / self.s


def _subsample_index(n: int, n_fit: int | None, random_state: int | None) -> npt.NDArray[np.int_]:
    if n_fit is None or n <= n_fit:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, n_fit, replace=False))


def _subsample(
    Z: npt.NDArray[np.float64], n_fit: int | None, random_state: int | None
) -> npt.NDArray[np.float64]:
    return Z[_subsample_index(Z.shape[0], n_fit, random_state)]
