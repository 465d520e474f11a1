"""Refinement in feature space: pixels reassigned to the latent's phases by a tied feature mixture."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from sklearn.mixture import GaussianMixture

from sigma.clustering.gmm import _fit_quietly
from sigma.clustering.inputs import _as_feature_points, _subsample_index

logger = logging.getLogger(__name__)


def _mixed_clusters(
    means: npt.NDArray[np.float64],
    precision: npt.NDArray[np.float64],
    label_map: npt.NDArray[np.int_],
    *,
    max_residual: float = 0.25,
    min_boundary: float = 0.85,
    min_ring_share: float = 0.1,
) -> list[list[int]]:
    """Clusters made of mixed pixels on the boundaries between other clusters.

    Cluster ``c`` is a mixed-pixel cluster when (1) it lies between other clusters in the image:
    at least ``min_boundary`` of its pixels touch another cluster (it has almost no interior);
    its *neighbours* are the clusters holding at least ``min_ring_share`` of the pixels around
    it; and (2) its mean feature vector is a mixture of its neighbours' means: the Mahalanobis
    distance (``precision``) from their convex hull is at most ``max_residual`` times the
    distance to the nearest of them. A genuine phase of intermediate composition fails (1): it
    has an interior. Smallest clusters are tested first, against clusters not yet dropped.
    Returns ``[c, neighbour, ...]`` lists.
    """
    from scipy.optimize import nnls

    k = means.shape[0]
    M = means @ np.linalg.cholesky(precision)
    sizes = np.bincount(label_map[label_map >= 0].ravel(), minlength=k)
    square = np.ones((3, 3), dtype=bool)
    dropped: list[list[int]] = []
    gone: set[int] = set()
    for c in np.argsort(sizes, kind="stable"):
        if sizes[c] == 0 or k - len(gone) < 3:
            continue
        mask = label_map == c
        interior = ndimage.binary_erosion(mask, square, border_value=1)
        if 1.0 - interior.sum() / mask.sum() < min_boundary:
            continue
        ring = label_map[ndimage.binary_dilation(mask, square) & ~mask]
        share = np.bincount(ring[ring >= 0], minlength=k) / max(ring.size, 1)
        nbrs = [j for j in range(k) if j != c and j not in gone and share[j] >= min_ring_share]
        if len(nbrs) < 2:
            continue
        # convex combination of the neighbours' means (weights >= 0 summing to one)
        A = np.vstack([M[nbrs].T, 1e3 * np.ones(len(nbrs))])
        w, _ = nnls(A, np.append(M[c], 1e3))
        resid = np.linalg.norm(M[c] - w @ M[nbrs])
        near = np.min(np.linalg.norm(M[nbrs] - M[c], axis=1))
        if resid <= max_residual * near:
            dropped.append([int(c), *(int(j) for j in nbrs)])
            gone.add(int(c))
    return dropped


def refine_in_features(
    features: Any,
    probability: npt.ArrayLike,
    *,
    shape: tuple[int, int] | None = None,
    adjust_k: bool = True,
    n_fit: int | None = 20_000,
    max_iter: int = 100,
    random_state: int | None = 0,
    merge_valley: float = 1.0,
    interior: bool = True,
) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """Reassign pixels to phases in feature space, keeping the phases found in the latent.

    The autoencoder squeezes the features into two dimensions, and the squeeze is not linear:
    a pixel that is a 50:50 mixture of two phases does not land half way between them, and
    the boundary the latent mixture draws between two phases is off the true one. Mixing *is*
    linear in count-based features (line intensities as fractions of the counts, PCA scores),
    so there a mixture with one shared covariance (``tied``, invariant to any linear rescaling
    of the features) draws it where it belongs. The latent still decides how many phases there
    are and where the mixture starts: means at each phase's probability-weighted feature mean,
    weights its share, covariance the pooled within-phase covariance; EM on (a subsample of)
    the standardised features then refines them.

    With ``adjust_k`` the number of phases is corrected where the latent got it wrong:

    - at high counts the boundary pixels between two phases can form a density peak of their
      own in the latent (a spurious phase). With a ``shape`` (the pixels form a ``(y, x)``
      image), such clusters are dropped first; their pixels go to the phase nearest them
      (:func:`_mixed_clusters` gives the rule);
    - the encoder can fold one phase so that it makes two latent peaks. After the fit, two
      phases are merged (and the mixture refitted) when the feature density has no valley
      between them: along their discriminant direction (pixels of the two, histogram smoothed
      over 2 of 80 bins) it never drops below ``merge_valley`` (default 1: not at all) times
      the lower of its values at the two means, so both means sit on one mode. On two seeds of
      the four demo scenes, distinct phases dip to 0.05-0.93 of it, split ones not at all.

    With ``interior`` and a ``shape``, a last step takes each phase's mean and the shared
    covariance from its *interior* pixels only (those whose 3x3 neighbourhood holds the same
    phase) and reassigns every pixel with them, repeated until fewer than 0.1 % of the pixels
    change (:func:`_interior_reassign`). Boundary pixels are mixtures of two phases, not samples
    of either: in the fit above they stretch the shared covariance along the lines between
    phases, which tilts the boundaries it draws. On the demo scenes this step raised the ARI
    by 0.001-0.006, except at 10 counts/pixel (-0.002).

    Parameters
    ----------
    features : array or xr.DataArray
        ``(y, x, feature)`` or ``(n_pixels, feature)``.
    probability : array, shape (n_pixels, k)
        Phase probabilities from the latent clustering.
    shape : (ny, nx) or None
        Image shape of the pixels: needed to drop clusters of mixed pixels (``adjust_k``) and by
        ``interior``; without it both steps are skipped.
    adjust_k : bool
        Drop clusters of mixed boundary pixels and merge split phases.
    n_fit : int or None
        Fit on a random subsample of this many pixels (all pixels are assigned).
    merge_valley : float
        Two phases whose density between their means stays at or above this fraction of its
        lower end (see above) are one.
    interior : bool
        Finish with phase statistics from interior pixels (needs ``shape``; see above). With
        ``adjust_k=False`` it stops before a phase would lose all its pixels.
    max_iter : int
        EM iterations.
    random_state : int or None
        Seed of the subsample.

    Returns
    -------
    probability : ndarray, shape (n_pixels, k')
        Refined probabilities (``k' <= k``; phases renumbered by decreasing weight).
    info : dict
        ``n_features``, ``dropped`` (``[cluster, its neighbours ...]`` in the input numbering),
        ``merged`` (number of merges), ``n_iter``, ``converged``, ``interior_iterations``
        (0 when the interior step did not run).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> F = np.concatenate([rng.normal(0, 1, (200, 3)), rng.normal(4, 1, (200, 3))])
    >>> P = np.zeros((400, 2)); P[:210, 0] = 1; P[210:, 1] = 1  # 10 pixels wrong
    >>> Pr, _ = refine_in_features(F, P)
    >>> int((Pr.argmax(1) != np.repeat([0, 1], 200)).sum()) < 5
    True
    """
    R = np.asarray(probability, dtype=np.float64)
    n, k = R.shape
    F = _as_feature_points(features, n)
    scale = F.std(axis=0)
    F = (F - F.mean(axis=0)) / np.where(scale > 0, scale, 1.0)
    d = F.shape[1]
    info: dict[str, Any] = {"n_features": int(d), "dropped": []}
    info["merged"] = 0
    mass = R.sum(axis=0)
    R = R[:, mass > 0]
    if adjust_k and shape is not None and R.shape[1] >= 3:
        means, precision = _tied_moments(F, R)
        label_map = np.argmax(R, axis=1).reshape(shape)
        mixed = _mixed_clusters(means, precision, label_map)
        if mixed:
            info["dropped"] = mixed
            R = R[:, np.setdiff1d(np.arange(R.shape[1]), [m[0] for m in mixed])]
            logger.info("refine_in_features: dropped %d mixed-pixel clusters", len(mixed))
    idx = _subsample_index(n, n_fit, random_state)
    while True:
        model = _fit_tied(F[idx], R[idx], max_iter, random_state)
        prob = model.predict_proba(F)
        pair = _split_pair(F, prob, merge_valley) if adjust_k and prob.shape[1] > 1 else None
        if pair is None:
            break
        i, j = pair
        prob[:, i] += prob[:, j]
        R = np.delete(prob, j, axis=1)
        info["merged"] += 1
    info.update(n_iter=int(model.n_iter_), converged=bool(model.converged_))
    info["interior_iterations"] = 0
    if interior and shape is not None and prob.shape[1] > 1:
        prob, info["interior_iterations"] = _interior_reassign(F, prob, shape, keep_k=not adjust_k)
    order = np.argsort(-prob.sum(axis=0), kind="stable")
    return prob[:, order], info


def _interior_reassign(
    F: npt.NDArray[np.float64],
    prob: npt.NDArray[np.float64],
    shape: tuple[int, int],
    *,
    max_iter: int = 10,
    tol: float = 1e-3,
    min_interior: int = 10,
    keep_k: bool = False,
) -> tuple[npt.NDArray[np.float64], int]:
    """Phase means and shared covariance from interior pixels, then every pixel reassigned.

    A pixel is interior when its whole 3x3 neighbourhood (edges repeated) has its label. Each
    phase's mean comes from its interior pixels (from all its pixels when it has fewer than
    ``min_interior``), the covariance is pooled over all interior pixels, and the weights are
    the phases' shares of all pixels. Repeats until fewer than ``tol`` of the pixels change
    label or ``max_iter`` rounds. Phases left empty are removed, or with ``keep_k`` the
    previous round is returned instead. Returns the probabilities and the number of rounds
    kept (0 when there are too few interior pixels to estimate).
    """
    n, d = F.shape
    label = np.argmax(prob, axis=1)
    rounds = 0
    for _ in range(max_iter):
        k = prob.shape[1]
        img = label.reshape(shape)
        inner = (
            (ndimage.minimum_filter(img, size=3, mode="nearest") == img)
            & (ndimage.maximum_filter(img, size=3, mode="nearest") == img)
        ).ravel()
        if inner.sum() <= d + k:
            break
        counts = np.bincount(label, minlength=k)
        # per phase: mean (interior pixels, or all when too few) and the interior scatter
        # about it, from the moments of one copy of its interior rows (no n x d temporaries)
        means = np.zeros((k, d))
        scatter = np.zeros((d, d))
        for j in range(k):
            own = label == j
            X = F[own & inner]
            if X.shape[0] >= min_interior:
                means[j] = X.mean(axis=0)
            elif own.any():
                means[j] = F[own].mean(axis=0)
            else:
                means[j] = F.mean(axis=0)
            if X.shape[0]:
                s_j = X.sum(axis=0)
                scatter += X.T @ X - np.outer(s_j, means[j]) - np.outer(means[j], s_j)
                scatter += X.shape[0] * np.outer(means[j], means[j])
        cov = scatter / inner.sum() + 1e-6 * np.eye(d)
        # Gaussian log-likelihoods up to a per-pixel constant (the pixel's own quadratic term
        # cancels in the normalisation): x'P m - m'P m / 2 + log weight
        A = means @ np.linalg.inv(cov)
        with np.errstate(divide="ignore"):
            logp = F @ A.T + (np.log(counts / n) - 0.5 * np.einsum("kd,kd->k", A, means))
        logp -= logp.max(axis=1, keepdims=True)
        new_prob = np.exp(logp)
        new_prob /= new_prob.sum(axis=1, keepdims=True)
        new = np.argmax(new_prob, axis=1)
        keep = np.bincount(new, minlength=k) > 0
        if not keep.all() and keep_k:  # a phase would lose all its pixels: stop before
            break
        changed = int((new != label).sum())
        prob, label = new_prob, new
        rounds += 1
        if not keep.all():  # a phase lost all its pixels
            prob = prob[:, keep] / prob[:, keep].sum(axis=1, keepdims=True)
            label = np.argmax(prob, axis=1)
        if changed < tol * n:
            break
    return prob, rounds


def _tied_moments(
    F: npt.NDArray[np.float64], R: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Probability-weighted means ``(k, d)`` and the pooled within-cluster precision."""
    mass = np.maximum(R.sum(axis=0), 1e-12)
    means = (R.T @ F) / mass[:, None]
    d = F.shape[1]
    cov = np.zeros((d, d))
    for j in range(R.shape[1]):
        D = F - means[j]
        cov += (R[:, j, None] * D).T @ D
    cov = cov / F.shape[0] + 1e-6 * np.eye(d)
    return means, np.linalg.inv(cov)


def _fit_tied(
    F: npt.NDArray[np.float64], R: npt.NDArray[np.float64], max_iter: int, seed: int | None
) -> GaussianMixture:
    """Tied GMM on ``F`` started from the soft assignment ``R``."""
    means, precision = _tied_moments(F, R)
    mass = np.maximum(R.sum(axis=0), 1e-12)
    model = GaussianMixture(
        n_components=R.shape[1],
        covariance_type="tied",
        init_params="random",
        weights_init=mass / mass.sum(),
        means_init=means,
        precisions_init=precision,
        max_iter=max_iter,
        random_state=seed,
        reg_covar=1e-6,
    )
    return _fit_quietly(model, F)


def _split_pair(
    F: npt.NDArray[np.float64], prob: npt.NDArray[np.float64], merge_valley: float
) -> tuple[int, int] | None:
    """The pair of phases with the shallowest feature-density valley, if above merge_valley."""
    means, precision = _tied_moments(F, prob)
    lab = np.argmax(prob, axis=1)
    k = prob.shape[1]
    best: tuple[float, int, int] = (merge_valley, -1, -1)
    for i in range(k):
        for j in range(i + 1, k):
            w = precision @ (means[i] - means[j])
            sel = (lab == i) | (lab == j)
            if sel.sum() < 10:
                continue
            p = F[sel] @ w
            H, edges = np.histogram(p, bins=80)
            H = ndimage.gaussian_filter1d(H.astype(np.float64), 2.0)
            c = (edges[:-1] + edges[1:]) / 2
            ia, ib = sorted(int(np.argmin(np.abs(c - float(m @ w)))) for m in means[[i, j]])
            ends = min(H[ia], H[ib])
            if ends <= 0:
                continue
            # 1.0 when the density never drops below its lower end between the two means
            ratio = float(H[ia : ib + 1].min() / ends)
            if ratio >= best[0] - 1e-12:
                best = (ratio, i, j)
    return None if best[1] < 0 else (best[1], best[2])


#: principal components of the counts the ``"pca"`` refinement works in
REFINE_PCA_COMPONENTS = 8


def refinement_features(
    refine: str,
    counts_ds: Any,
    features: Any,
    *,
    method: str = "gmm",
    smoothing: dict[str, Any] | None = None,
) -> Any:
    """The per-pixel features a latent clustering is refined in, or None (no refinement).

    Parameters
    ----------
    refine : {"pca", "features", "none"}
        ``"pca"``: :data:`REFINE_PCA_COMPONENTS` Poisson-scaled principal components of the
        (binned) counts, on channels about a third of the detector's Mn Ka FWHM wide, above the
        zero peak; ``"features"``: the autoencoder's input features; ``"none"``: no refinement.
        A lazy (dask) cube falls back to ``"features"``.
    counts_ds, features : xr.Dataset
        The (binned) spectrum image and the features dataset of the same pixels.
    method : str
        The clustering method; methods the registry marks as not refinable give None.
    smoothing : dict or None
        Keyword arguments of :func:`sigma.preprocessing.neighbor_average` when the features
        were averaged, so the components get the same smoothing.
    """
    from sigma._schema import COUNTS, DIM_ENERGY
    from sigma.clustering.registry import refinable

    if refine == "none" or not refinable(method):
        return None  # (e.g. HDBSCAN's density clusters, with noise labels, are not refined)
    if refine == "features" or counts_ds[COUNTS].chunks is not None:
        if refine == "pca":
            logger.info("refine='pca' needs the binned cube in memory; refining in the features")
        return features["features"]
    from sigma.preprocessing import (
        _mnka,
        crop_energy,
        neighbor_average,
        pca_features,
        rebin_energy,
    )

    # channels a third of the Mn Ka FWHM wide keep every peak's shape and make the PCA's
    # (energy x energy) covariance ~16x cheaper on a 10 eV, 2048-channel cube (3 s -> 0.4 s)
    energy = np.asarray(counts_ds[DIM_ENERGY].values, dtype=np.float64)
    width_ev = 1000.0 * float(np.median(np.diff(energy))) if energy.size > 1 else 0.0
    fwhm_ev = _mnka(counts_ds, None)  # unknown detector: a typical SDD
    factor = int(fwhm_ev / 3.0 // width_ev) if width_ev > 0 else 1
    # the zero (noise) peak is no feature: a scan line with extra zero-peak counts is no phase
    cube = crop_energy(counts_ds, 0.1, None) if float(energy[0]) < 0.1 else counts_ds
    energy = np.asarray(cube[DIM_ENERGY].values, dtype=np.float64)
    factor = max(1, min(factor, energy.size // (2 * REFINE_PCA_COMPONENTS)))
    if factor > 1:
        usable = energy.size - energy.size % factor
        cube = rebin_energy(cube.isel({DIM_ENERGY: slice(0, usable)}), factor)
    n_pixels = cube.sizes["y"] * cube.sizes["x"]
    n_pcs = min(REFINE_PCA_COMPONENTS, cube.sizes[DIM_ENERGY], n_pixels)
    pcs = pca_features(cube, n_components=n_pcs, show_progress=False)
    if smoothing is not None:  # the same smoothing as the autoencoder's input
        pcs = neighbor_average(pcs, **smoothing)
    return pcs["features"]
