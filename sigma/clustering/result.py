"""The clustering result Dataset: labels, probabilities, per-phase latent moments and the sweep."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._schema import DIM_CLUSTER, DIM_LATENT, DIM_X, DIM_Y
from sigma.clustering.inputs import _as_points

#: dim of flat (non-spatial) inputs
DIM_PIXEL = "pixel"
#: dim of the model-selection curve
DIM_K = "n_components_tried"

logger = logging.getLogger(__name__)


def _prob_moments(
    X: npt.NDArray[np.float64], prob: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Probability-weighted mean, covariance and weight of each cluster in the units of X."""
    n, d = X.shape
    k = prob.shape[1]
    mass = np.maximum(prob.sum(axis=0), 1e-12)
    means = (prob.T @ X) / mass[:, None]
    covs = np.empty((k, d, d))
    for c in range(k):
        D = X - means[c]
        covs[c] = (prob[:, c, None] * D).T @ D / mass[c] + 1e-12 * np.eye(d)
    return means, covs, mass / n


def _label_moments(
    X: npt.NDArray[np.float64], lab: npt.NDArray[np.int_], k: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    d = X.shape[1]
    means = np.zeros((k, d))
    covs = np.zeros((k, d, d))
    weights = np.zeros(k)
    for c in range(k):
        pts = X[lab == c]
        weights[c] = pts.shape[0] / X.shape[0]
        means[c] = pts.mean(axis=0)
        covs[c] = np.cov(pts, rowvar=False).reshape(d, d) if pts.shape[0] > 1 else np.eye(d) * 1e-12
    return means, covs, weights


def _repackage(
    clustering: xr.Dataset,
    latent: Any,
    label: npt.NDArray[np.int_],
    prob: npt.NDArray[np.float64],
    info: dict[str, Any],
) -> xr.Dataset:
    """A clustering result for new ``label``/``prob`` (flat pixels): latent moments recomputed.

    For steps after :func:`cluster` that move pixels between phases (split, spatial
    assignment); the model-selection sweep of ``clustering`` is kept. A phase left without
    pixels (e.g. when an added phase takes all of them) is dropped and the others renumbered
    (``info["added_phases"]`` follows), so no result reports a phase of 0 pixels.
    """
    X, spatial = _as_points(latent)
    label, prob = _drop_empty(np.asarray(label), np.asarray(prob, dtype=np.float64), info)
    ok = label >= 0
    means, covs, weights = _prob_moments(X[ok], prob[ok])
    sweep = None
    if "model_selection_score" in clustering:
        sweep = tuple(
            np.asarray(clustering[v].values)
            for v in (
                "n_components_tried",
                "model_selection_score",
                "model_selection_icl",
                "model_selection_n_phases",
            )
        )
    info["n_components"] = int(prob.shape[1])
    return _package(label, prob, means, covs, weights, sweep, spatial, X.shape[1], info)


def _drop_empty(
    label: npt.NDArray[np.int_], prob: npt.NDArray[np.float64], info: dict[str, Any]
) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.float64]]:
    """``label`` and ``prob`` without the phases no pixel is labelled with, renumbered in order."""
    ok = label >= 0
    held = np.bincount(label[ok], minlength=prob.shape[1]) > 0
    if held.all() or not held.any():
        return label, prob
    keep = np.flatnonzero(held)
    renumber = np.full(prob.shape[1], -1, dtype=np.int64)
    renumber[keep] = np.arange(keep.size)
    logger.info(
        "phases %s hold no pixel after reassignment; dropped",
        [int(c) for c in np.flatnonzero(~held)],
    )
    label = np.where(ok, renumber[np.where(ok, label, 0)], -1)
    prob = prob[:, keep]
    total = prob.sum(axis=1, keepdims=True)
    prob = np.divide(prob, total, out=np.zeros_like(prob), where=total > 0)
    if info.get("added_phases"):
        added = [dict(rec, phase=int(renumber[rec["phase"]])) for rec in info["added_phases"]]
        info["added_phases"] = [rec for rec in added if rec["phase"] >= 0]
    return label, prob


def _package(
    label: Any,
    prob: Any,
    means: Any,
    covs: Any,
    weights: Any,
    sweep: Any,
    spatial: dict[str, Any] | None,
    d: int,
    info: dict[str, Any],
) -> xr.Dataset:
    k = prob.shape[1]
    coords: dict[str, Any] = {
        DIM_CLUSTER: np.arange(k),
        DIM_LATENT: np.arange(d),
        "latent_b": np.arange(d),
    }
    if spatial is not None:
        ny, nx = spatial["shape"]
        coords.update(spatial["coords"])
        label_da = xr.DataArray(label.reshape(ny, nx).astype(np.int16), dims=(DIM_Y, DIM_X))
        prob_da = xr.DataArray(
            prob.reshape(ny, nx, k).astype(np.float32), dims=(DIM_Y, DIM_X, DIM_CLUSTER)
        )
    else:
        label_da = xr.DataArray(label.astype(np.int16), dims=(DIM_PIXEL,))
        prob_da = xr.DataArray(prob.astype(np.float32), dims=(DIM_PIXEL, DIM_CLUSTER))
    label_da.attrs = {"long_name": "cluster label", "units": "1", "description": "-1 = unassigned"}
    prob_da.attrs = {"long_name": "cluster membership probability", "units": "1"}
    data = {
        "label": label_da,
        "probability": prob_da,
        "gmm_mean": xr.DataArray(
            np.asarray(means, dtype=np.float64),
            dims=(DIM_CLUSTER, DIM_LATENT),
            attrs={"long_name": "cluster mean in latent units"},
        ),
        "gmm_covariance": xr.DataArray(
            np.asarray(covs, dtype=np.float64),
            dims=(DIM_CLUSTER, DIM_LATENT, "latent_b"),
            attrs={"long_name": "cluster covariance in latent units"},
        ),
        "gmm_weight": xr.DataArray(
            np.asarray(weights, dtype=np.float64),
            dims=(DIM_CLUSTER,),
            attrs={"long_name": "mixture weight", "units": "1"},
        ),
    }
    if sweep is not None:
        ks, bic, icl, nph = sweep
        coords[DIM_K] = np.asarray(ks, dtype=np.int64)
        data["model_selection_score"] = xr.DataArray(
            np.asarray(bic, dtype=np.float64),
            dims=(DIM_K,),
            attrs={"long_name": "BIC", "units": "1"},
        )
        data["model_selection_icl"] = xr.DataArray(
            np.asarray(icl, dtype=np.float64),
            dims=(DIM_K,),
            attrs={"long_name": "ICL", "units": "1"},
        )
        data["model_selection_n_phases"] = xr.DataArray(
            np.asarray(nph, dtype=np.int64),
            dims=(DIM_K,),
            attrs={"long_name": "phases after merging"},
        )
        info["n_components_tried"] = [int(v) for v in ks]
    return xr.Dataset(data, coords=coords, attrs={"clustering": json.dumps(info)})
