"""The clustering entry point: :func:`cluster`, latent -> phase labels and probabilities."""

from __future__ import annotations

import inspect
import json
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._checks import check_int
from sigma._schema import DIM_CLUSTER
from sigma.clustering.gmm import CovarianceType
from sigma.clustering.inputs import (
    _as_feature_points,
    _as_points,
)
from sigma.clustering.refine import refine_in_features
from sigma.clustering.registry import get_method
from sigma.clustering.result import DIM_K, _label_moments, _package, _prob_moments
from sigma.exceptions import EmptySelectionError, SchemaError

#: a clustering method's name: a key of :data:`sigma.clustering.registry.METHODS`
Method = str


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------
def _single_threaded(func: Any) -> Any:
    """Run ``func`` with BLAS and OpenMP limited to one thread.

    The mixtures here are small (2-D latents, subsamples of 4,000-20,000 points, a few dozen
    EM steps): thread start-up and, on a busy machine, threads spinning for a core cost more
    than they save (demo latent, 2 cores: 1.3 s in one thread, 1.6-1.7 s and twice the CPU in
    two). Results do not depend on it.
    """
    import functools

    from threadpoolctl import threadpool_limits

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(limits=1):
            return func(*args, **kwargs)

    return wrapper


@_single_threaded
def cluster(
    latent: Any,
    *,
    method: Method = "gmm",
    n_components: int | Literal["auto"] = "auto",
    covariance_type: CovarianceType = "full",
    n_init: int = 2,
    k_max: int = 16,
    random_state: int | None = 0,
    standardize: bool = True,
    n_fit: int | None = 20_000,
    overlap_threshold: float = 0.02,
    min_cluster_size: int = 50,
    n_jobs: int | None = None,
    criterion: Literal["density_peaks", "bic_overlap"] = "density_peaks",
    features: Any = None,
    adjust_k: bool = True,
    valid: Any = None,
) -> xr.Dataset:
    """Cluster latent points into phases.

    Parameters
    ----------
    latent : array or xr.DataArray
        ``(n_pixels, n_latent)`` array, or DataArray with dims ``(y, x, latent)`` (or an
        ``(y, x, n_latent)`` array); spatial input gives spatial outputs.
    method : str
        A name in :data:`sigma.clustering.registry.METHODS` (how to add one: there). Built in:
        ``gmm``: :class:`AutoGaussianMixture` (BIC sweep + phase merging when ``"auto"``);
        ``bgmm``: the same with a Dirichlet-process Bayesian GMM instead of the sweep;
        ``kmeans``: k-means (``"auto"`` takes ``k`` from the ``gmm`` rule), hard probabilities;
        ``hdbscan``: density clustering, ``n_components`` must be ``"auto"``; noise gets label -1
        and uniform probabilities.
    n_components : "auto" or int
        Number of phases.
    covariance_type, n_init, k_max, random_state, standardize, n_fit, overlap_threshold, criterion
        See :class:`AutoGaussianMixture`.
    min_cluster_size : int
        HDBSCAN's ``min_cluster_size`` (on the fitted subsample).
    n_jobs : int or None
        Parallel fits of the BIC sweep (joblib); does not change the result.
    features : array or xr.DataArray, optional
        Per-pixel features of the same pixels, ``(y, x, feature)`` or ``(n_pixels, feature)``,
        e.g. the autoencoder's input or PCA scores of the spectra. When given (``method`` gmm,
        bgmm or kmeans), the phases found in the latent are *refined* in feature space (see
        :func:`refine_in_features`): the number of phases comes from the latent, the assignment
        of every pixel from a tied Gaussian mixture on the features started at the phases'
        feature means. A 2-D latent loses some of the separation the features hold; mixed
        pixels at phase boundaries suffer most.
    adjust_k : bool
        With ``features`` and ``n_components="auto"``: drop clusters of mixed boundary pixels
        (spatial input only) and merge phases the latent split (:func:`refine_in_features`).
    valid : bool array, optional
        Pixels holding data (``(y, x)`` or ``(n_pixels,)``). The others (no data,
        :func:`sigma.preprocessing.nodata.no_data_mask`) take no part: label -1 and
        probability 0. The spatial refinement steps (mixed-pixel clusters, interior pixels)
        need a complete image and are skipped when pixels are left out.

    Returns
    -------
    xr.Dataset
        ``label`` (int16; dims ``(y, x)`` or ``(pixel,)``), ``probability`` (float32; dims
        ``(y, x, cluster)`` or ``(pixel, cluster)``), ``gmm_mean`` ``(cluster, latent)`` and
        ``gmm_covariance`` ``(cluster, latent, latent_b)`` in latent units, ``gmm_weight``
        ``(cluster)``, the sweep ``model_selection_score`` (BIC), ``model_selection_icl`` and
        ``model_selection_n_phases`` along ``n_components_tried``, and attr ``clustering`` (JSON).

    Raises
    ------
    EmptySelectionError
        If ``latent`` has no points.
    ValueError
        For a bad ``method`` or ``n_components``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.3, (300, 2)), rng.normal(5, 0.3, (100, 2))])
    >>> ds = cluster(X, k_max=4, n_init=1)
    >>> ds.sizes["cluster"], float(ds.probability.sum("cluster").min()) > 0.999
    (2, True)
    """
    estimator = get_method(method)
    if n_components != "auto":
        check_int("n_components", n_components, 1)
    if valid is not None:
        keep = np.asarray(valid, dtype=bool).ravel()
        if not keep.all():
            return _cluster_valid_only(
                latent,
                keep,
                features=features,
                method=method,
                n_components=n_components,
                covariance_type=covariance_type,
                n_init=n_init,
                k_max=k_max,
                random_state=random_state,
                standardize=standardize,
                n_fit=n_fit,
                overlap_threshold=overlap_threshold,
                min_cluster_size=min_cluster_size,
                n_jobs=n_jobs,
                criterion=criterion,
                adjust_k=adjust_k,
            )
    X, spatial = _as_points(latent)
    d = X.shape[1]
    params = {
        "n_components": n_components,
        "covariance_type": covariance_type,
        "n_init": n_init,
        "k_max": k_max,
        "random_state": random_state,
        "standardize": standardize,
        "n_fit": n_fit,
        "overlap_threshold": overlap_threshold,
        "min_cluster_size": min_cluster_size,
        "n_jobs": n_jobs,
        "criterion": criterion,
    }
    est = estimator(**_accepted(estimator, params)).fit(X)
    prob, label, means, covs, weights = _phases(est, X)
    sweep = None
    if all(hasattr(est, a) for a in ("k_tried_", "bic_", "icl_", "n_phases_")):
        sweep = (est.k_tried_, est.bic_, est.icl_, est.n_phases_)
    info: dict[str, Any] = {
        "method": method,
        "random_state": random_state,
        "standardize": standardize,
        "n_fit": n_fit,
        **getattr(est, "clustering_info_", {"n_components": int(prob.shape[1])}),
    }
    if features is not None and getattr(estimator, "refinable", True):
        prob, refine_info = refine_in_features(
            features,
            prob,
            shape=None if spatial is None else spatial["shape"],
            adjust_k=adjust_k and n_components == "auto",
            n_fit=n_fit,
            random_state=random_state,
        )
        info["refinement"] = refine_info
        info["n_components"] = int(prob.shape[1])
        means, covs, weights = _prob_moments(X, prob)
        best = np.argmax(prob, axis=1)  # (its value picked, not a second max: 1M points 4x faster)
        label = np.where(prob[np.arange(prob.shape[0]), best] > 0, best, -1)
    return _package(label, prob, means, covs, weights, sweep, spatial, d, info)


def _accepted(estimator: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``params`` that ``estimator``'s constructor accepts."""
    sig = inspect.signature(estimator).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
        return params
    return {k: v for k, v in params.items() if k in sig}


def _phases(est: Any, X: npt.NDArray[np.float64]) -> tuple[Any, Any, Any, Any, Any]:
    """Probabilities, labels and latent moments (mean, covariance, weight) of a fitted method.

    The probabilities are the estimator's ``probabilities_`` of the fitted points when it has
    them (no second pass over the points), else ``predict_proba(X)`` (labels: the argmax), else
    one-hot from ``labels_`` (noise, label -1: uniform). The moments are the estimator's
    ``means_``, ``covariances_`` and ``weights_`` when it has all three, else computed from the
    labels (or the probabilities).
    """
    soft = getattr(est, "probabilities_", None)
    if soft is None or np.ndim(soft) != 2 or len(soft) != X.shape[0]:
        soft = est.predict_proba(X) if hasattr(est, "predict_proba") else None
    if soft is not None:
        prob = np.asarray(soft, dtype=np.float64)
        best = np.argmax(prob, axis=1)  # (its value picked, not a second max: 1M points 4x faster)
        label = np.where(prob[np.arange(prob.shape[0]), best] > 0, best, -1)
    else:
        label = np.asarray(est.labels_).astype(int)
        k = int(getattr(est, "n_components_", label.max() + 1))
        prob = np.zeros((X.shape[0], k))
        prob[label >= 0, label[label >= 0]] = 1.0
        prob[label < 0] = 1.0 / k
    k, d = prob.shape[1], X.shape[1]
    moments = [getattr(est, a, None) for a in ("means_", "covariances_", "weights_")]
    if all(m is not None for m in moments) and getattr(moments[1], "shape", None) == (k, d, d):
        means, covs, weights = moments
    elif soft is not None:
        means, covs, weights = _prob_moments(X, prob)
    else:
        means, covs, weights = _label_moments(X, label, k)
    return prob, label, means, covs, weights


def _cluster_valid_only(latent: Any, keep: npt.NDArray[np.bool_], **kwargs: Any) -> xr.Dataset:
    """:func:`cluster` on the ``keep`` pixels only; the rest get label -1 and probability 0."""
    X, spatial = _as_points(latent)
    if keep.size != X.shape[0]:
        raise SchemaError(
            f"valid: {keep.size} pixels, but the latent has {X.shape[0]}. Pass one flag per pixel."
        )
    if not keep.any():
        raise EmptySelectionError(
            "valid: no pixel holds data, so there is nothing to cluster. Check the map's counts."
        )
    features = kwargs.pop("features")
    if features is not None:
        features = _as_feature_points(features, X.shape[0])[keep]
    sub = cluster.__wrapped__(X[keep], features=features, **kwargs)
    k = sub.sizes[DIM_CLUSTER]
    label = np.full(X.shape[0], -1, dtype=np.int16)
    label[keep] = sub["label"].values
    prob = np.zeros((X.shape[0], k), dtype=np.float32)
    prob[keep] = sub["probability"].values
    info = json.loads(sub.attrs.get("clustering", "{}"))
    info["n_no_data"] = int((~keep).sum())
    sweep = None
    if DIM_K in sub.dims:
        sweep = tuple(
            sub[v].values
            for v in (
                "model_selection_score",
                "model_selection_icl",
                "model_selection_n_phases",
            )
        )
        sweep = (sub[DIM_K].values, *sweep)
    return _package(
        label,
        prob,
        sub["gmm_mean"].values,
        sub["gmm_covariance"].values,
        sub["gmm_weight"].values,
        sweep,
        spatial,
        X.shape[1],
        info,
    )


def fit_gmm(
    latent: Any,
    *,
    n_components: int | Literal["auto"] = "auto",
    covariance_type: CovarianceType = "full",
    n_init: int = 2,
    random_state: int | None = 0,
    standardize: bool = True,
    **kwargs: Any,
) -> xr.Dataset:
    """Gaussian-mixture clustering; ``cluster(latent, method="gmm", ...)``.

    Examples
    --------
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> int(fit_gmm(X, n_components=2).sizes["cluster"])
    2
    """
    return cluster(
        latent,
        method="gmm",
        n_components=n_components,
        covariance_type=covariance_type,
        n_init=n_init,
        random_state=random_state,
        standardize=standardize,
        **kwargs,
    )


def fit_bgmm(
    latent: Any,
    *,
    n_components: int | Literal["auto"] = "auto",
    k_max: int = 16,
    random_state: int | None = 0,
    **kwargs: Any,
) -> xr.Dataset:
    """Bayesian (Dirichlet-process) Gaussian mixture; ``cluster(latent, method="bgmm", ...)``."""
    return cluster(
        latent,
        method="bgmm",
        n_components=n_components,
        k_max=k_max,
        random_state=random_state,
        **kwargs,
    )
