"""The Gaussian-mixture phase finder: :class:`AutoGaussianMixture`, and how it counts the phases.

``n_components="auto"`` finds the phases in one of two ways (``criterion``; the reasons and the
measurements behind them are in ``docs/clustering.md``):

- ``"density_peaks"`` (default, 2-D latents): the phases are the significant maxima of the
  smoothed latent density (:func:`density_peaks`); a tied Gaussian mixture with one component
  per peak, started at the peaks, assigns every point. A BIC sweep of tied mixtures with
  1 .. ``k_max`` components on a fixed 4,000-point subsample is computed for display only.
- ``"bic_overlap"`` (and any latent that is not 2-D): a BIC sweep over ``k = 1 .. k_max``
  Gaussians picks the number of Gaussians (elbow rule, ``bic_tolerance``); Gaussians whose
  responsibility overlap ``sum_n min(r_ni, r_nj) / min(sum_n r_ni, sum_n r_nj)`` reaches
  ``overlap_threshold`` belong to one phase (connected components of that graph), and phases
  holding less than ``min_cluster_fraction`` of the points join the phase they overlap most.
  With ``bayesian=True`` a Dirichlet-process mixture with ``k_max`` components replaces the
  sweep.

A phase's probability is the summed responsibility of its Gaussians; its mean and covariance are
the moment-matched mean and covariance of its Gaussians, in the original latent units.
"""

from __future__ import annotations

import functools
import logging
import warnings
from numbers import Integral, Real
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator, ClusterMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sigma._runtime import blocks_in_threads
from sigma.clustering.inputs import _subsample_index

CovarianceType = Literal["full", "tied", "diag", "spherical"]

#: points the displayed BIC sweep of ``criterion="density_peaks"`` fits each ``k`` on
_SWEEP_N_FIT = 4_000

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# the estimator
# --------------------------------------------------------------------------------------------
class AutoGaussianMixture(ClusterMixin, BaseEstimator):
    """Gaussian mixture whose components are merged into phases, found automatically.

    See the module docstring for the rule. Follows scikit-learn: ``__init__`` only stores,
    :meth:`fit` returns ``self``, learned attributes end in ``_``.

    Parameters
    ----------
    n_components : "auto" or int
        Number of phases. An int fits exactly that many Gaussians and merges nothing.
    k_max : int
        Largest number of Gaussians tried by the sweep.
    covariance_type : {"full", "tied", "diag", "spherical"}
        As in :class:`~sklearn.mixture.GaussianMixture`.
    n_init : int
        Initialisations per fit (best kept).
    standardize : bool
        Scale each latent dim to zero mean, unit variance before fitting.
    bayesian : bool
        Use :class:`~sklearn.mixture.BayesianGaussianMixture` (Dirichlet-process prior) with
        ``k_max`` components instead of a BIC sweep; components with weight below
        ``1 / (10 * k_max)`` are pruned before merging.
    n_fit : int or None
        Fit on a random subsample of this many points (``None``: all).
    bic_tolerance : float
        Elbow rule: smallest ``k`` whose BIC is within this fraction of the total improvement of
        the sweep's minimum (0: the minimum itself).
    overlap_threshold : float
        Gaussians whose responsibility overlap (module docstring) reaches this value, in (0, 1),
        belong to the same phase.
    min_cluster_fraction : float
        Phases with a smaller fraction of the points are merged into a neighbour.
    max_iter : int
        EM iterations per fit.
    random_state : int or None
        Seed for subsampling and initialisation.
    n_jobs : int or None
        Fit the sweep's mixtures in parallel with joblib (``-1``: all cores); results do not
        depend on it.
    criterion : {"density_peaks", "bic_overlap"}
        How ``"auto"`` finds the phases (module docstring). ``density_peaks`` needs a 2-D latent
        and falls back to ``bic_overlap`` otherwise.

    Attributes
    ----------
    gaussian_ : GaussianMixture or BayesianGaussianMixture
        The fitted mixture (in standardised units when ``standardize``).
    component_cluster_ : ndarray of int, shape (n_gaussians,)
        Phase of each Gaussian.
    n_components_ : int
        Number of phases.
    means_, covariances_ : ndarray
        Moment-matched mean ``(n_components_, d)`` and covariance ``(n_components_, d, d)`` of
        each phase, in the original latent units.
    weights_ : ndarray, shape (n_components_,)
        Mixture weight of each phase.
    k_tried_, bic_, icl_, n_phases_ : ndarray
        The sweep: number of Gaussians, BIC, ICL and the number of phases after merging.
    n_gaussians_ : int
        Number of Gaussians chosen by the elbow rule.
    center_, scale_ : ndarray, shape (d,)
        Standardisation.
    labels_ : ndarray of int, shape (n_samples,)
        Phase of each point ``fit`` was given.
    probabilities_ : ndarray, shape (n_samples, n_components_)
        Phase probabilities of the points ``fit`` was given (``predict_proba`` of them).
    n_iter_ : int
        EM iterations of the best start of the chosen mixture.
    n_features_in_ : int
        Number of latent dimensions seen by ``fit``.
    clustering_info_ : dict
        How the phases were found, as recorded by :func:`~sigma.clustering.cluster`.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 0.3, (300, 2)), rng.normal(5, 0.3, (200, 2))])
    >>> AutoGaussianMixture(k_max=4, n_init=1).fit(X).n_components_
    2
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_components": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "k_max": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical"})],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "bayesian": ["boolean"],
        "n_fit": [Interval(Integral, 2, None, closed="left"), None],
        "bic_tolerance": [Interval(Real, 0, 1, closed="left")],
        "overlap_threshold": [Interval(Real, 0, 1, closed="neither")],
        "min_cluster_fraction": [Interval(Real, 0, 1, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "n_jobs": [Integral, None],
        "criterion": [StrOptions({"density_peaks", "bic_overlap"})],
    }

    def __init__(
        self,
        n_components: int | Literal["auto"] = "auto",
        *,
        k_max: int = 16,
        covariance_type: CovarianceType = "full",
        n_init: int = 2,
        standardize: bool = True,
        bayesian: bool = False,
        n_fit: int | None = 20_000,
        bic_tolerance: float = 0.0,
        overlap_threshold: float = 0.02,
        min_cluster_fraction: float = 0.002,
        max_iter: int = 200,
        random_state: int | None = 0,
        n_jobs: int | None = None,
        criterion: Literal["density_peaks", "bic_overlap"] = "density_peaks",
    ) -> None:
        self.n_components = n_components
        self.criterion = criterion
        self.k_max = k_max
        self.covariance_type = covariance_type
        self.n_init = n_init
        self.standardize = standardize
        self.bayesian = bayesian
        self.n_fit = n_fit
        self.bic_tolerance = bic_tolerance
        self.overlap_threshold = overlap_threshold
        self.min_cluster_fraction = min_cluster_fraction
        self.max_iter = max_iter
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- helpers -------------------------------------------------------------------------------
    def _transform(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return (np.asarray(X, dtype=np.float64) - self.center_) / self.scale_

    def _new_gmm(self, k: int, seed: int) -> GaussianMixture | BayesianGaussianMixture:
        common = dict(
            covariance_type=self.covariance_type,
            n_init=self.n_init,
            max_iter=self.max_iter,
            random_state=seed,
            reg_covar=1e-6,
        )
        if self.bayesian:
            return BayesianGaussianMixture(
                n_components=k, weight_concentration_prior_type="dirichlet_process", **common
            )
        return GaussianMixture(n_components=k, **common)

    def _fit_one(self, Z: npt.NDArray[np.float64], k: int, seed: int) -> GaussianMixture:
        return self._fit_many(Z, [k], seed)[0]

    def _fit_many(self, Z: npt.NDArray[np.float64], ks: Any, seed: int) -> list[Any]:
        models = [self._new_gmm(int(k), seed) for k in ks]
        if self.n_jobs in (None, 1) or len(models) == 1:
            fitted = [_fit_quietly(m, Z) for m in models]
        else:
            from joblib import Parallel, delayed

            fitted = Parallel(n_jobs=self.n_jobs)(delayed(_fit_quietly)(m, Z) for m in models)
        bad = [int(k) for k, m in zip(ks, fitted, strict=True) if not m.converged_]
        if bad:
            warnings.warn(
                f"the Gaussian mixtures with {bad} components did not converge in max_iter="
                f"{self.max_iter} iterations; results may be poor. Raise max_iter.",
                ConvergenceWarning,
                stacklevel=4,
            )
        return list(fitted)

    # -- fit -----------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: npt.ArrayLike, y: Any = None) -> AutoGaussianMixture:
        """Fit the mixture, find the phases and label the points; returns ``self``."""
        points: npt.NDArray[np.float64] = validate_data(self, X, dtype=np.float64)
        rng = np.random.default_rng(self.random_state)
        if self.standardize:
            self.center_ = points.mean(axis=0)
            scale = points.std(axis=0)
            self.scale_ = np.where(scale > 0, scale, 1.0)
        else:
            self.center_ = np.zeros(points.shape[1])
            self.scale_ = np.ones(points.shape[1])
        # the subsample first, then its standardised copy (the same rows: 1M points, 16 ms saved)
        if self.n_fit is not None and points.shape[0] > self.n_fit:
            Z = self._transform(
                points[np.sort(rng.choice(points.shape[0], self.n_fit, replace=False))]
            )
        else:
            Z = self._transform(points)
        seed = int(rng.integers(2**31 - 1))
        n = Z.shape[0]

        if self.n_components != "auto":
            k = int(self.n_components)
            if k > n:
                raise ValueError(
                    f"n_components={k} is larger than the number of points ({n}). "
                    "Use fewer components."
                )
            self.gaussian_ = self._fit_one(Z, k, seed)
            self.component_cluster_ = np.arange(k)
            self.k_tried_ = np.array([k])
            self.bic_ = np.array([self._bic(self.gaussian_, Z)])
            self.icl_ = np.array([self._icl(self.gaussian_, Z, self.bic_[0])])
            self.n_phases_ = np.array([k])
            self.n_gaussians_ = k
        elif self.criterion == "density_peaks" and Z.shape[1] == 2 and not self.bayesian:
            self._fit_density_peaks(self._transform(points), Z, seed)
        elif self.bayesian:
            k = min(self.k_max, n)
            model = self._fit_one(Z, k, seed)
            keep = model.weights_ >= 1.0 / (10 * k)
            self.gaussian_ = model
            self.k_tried_ = np.array([k])
            self.bic_ = np.array([np.nan])
            self.icl_ = np.array([np.nan])
            self.n_gaussians_ = int(keep.sum())
            self.component_cluster_ = self._merge(model, Z, active=keep)
            self.n_phases_ = np.array([int(self.component_cluster_.max()) + 1])
        else:
            ks = np.arange(1, min(self.k_max, n) + 1)
            models = self._fit_many(Z, ks, seed)
            resps = [m.predict_proba(Z) for m in models]
            bic = np.array([self._bic(m, Z) for m in models])
            icl = np.array(
                [self._icl(m, Z, b, r) for m, b, r in zip(models, bic, resps, strict=True)]
            )
            k_best = self._elbow(ks, bic)
            phases = [self._merge(m, Z, resp=r) for m, r in zip(models, resps, strict=True)]
            self.k_tried_, self.bic_, self.icl_ = ks, bic, icl
            self.n_phases_ = np.array([int(p.max()) + 1 for p in phases])
            self.n_gaussians_ = int(k_best)
            self.gaussian_ = models[k_best - 1]
            self.component_cluster_ = phases[k_best - 1]
        self._set_cluster_params()
        self.n_iter_ = int(self.gaussian_.n_iter_)
        # probabilities_ and labels_ of the fitted points: computed on first access (one pass
        # over all points; a caller that only needs the phases, e.g. k-means' k, skips it)
        self._fitted_points: npt.NDArray[np.float64] | None = points
        self._fitted_proba: npt.NDArray[np.float64] | None = None
        self.clustering_info_ = self._info(points.shape[1])
        logger.info(
            "AutoGaussianMixture: %d Gaussians -> %d phases", self.n_gaussians_, self.n_components_
        )
        return self

    def _info(self, n_features: int) -> dict[str, Any]:
        """How the phases were found, for the ``clustering`` attribute of a result."""
        if self.n_components != "auto":
            criterion = "user"
        elif self.bayesian:
            criterion = "bgmm-pruning+mode-merging"
        elif self.criterion == "density_peaks" and n_features == 2:
            criterion = "density-peaks+tied-gmm"
        else:
            criterion = "bic-elbow+mode-merging"
        return {
            "n_components": int(self.n_components_),
            "n_gaussians": int(self.n_gaussians_),
            "criterion": criterion,
            "covariance_type": self.covariance_type,
            "n_init": self.n_init,
            "k_max": self.k_max,
            "overlap_threshold": self.overlap_threshold,
            "component_cluster": [int(c) for c in self.component_cluster_],
        }

    def _fit_density_peaks(
        self, Z_all: npt.NDArray[np.float64], Z: npt.NDArray[np.float64], seed: int
    ) -> None:
        """Phases = significant maxima of the smoothed 2-D latent density (module docstring)."""
        peaks = density_peaks(Z_all, min_fraction=self.min_cluster_fraction)
        k = max(1, len(peaks))
        if len(peaks) == 0:
            peaks = Z.mean(axis=0, keepdims=True)
        # start at the peaks; weights and the shared covariance from the nearest-peak partition
        # (scikit-learn would otherwise run a k-means only to throw its means away)
        near = np.argmin(((Z[:, None, :] - peaks[None]) ** 2).sum(axis=2), axis=1)
        frac = np.bincount(near, minlength=k) / Z.shape[0]
        dev = Z - peaks[near]
        cov = dev.T @ dev / Z.shape[0] + 1e-6 * np.eye(Z.shape[1])
        model = GaussianMixture(
            n_components=k,
            covariance_type="tied",
            init_params="random",
            weights_init=(frac + 1e-6) / (frac + 1e-6).sum(),
            means_init=peaks,
            precisions_init=np.linalg.inv(cov),
            max_iter=self.max_iter,
            random_state=seed,
            reg_covar=1e-6,
        )
        self.gaussian_ = _fit_quietly(model, Z)
        if not self.gaussian_.converged_:
            warnings.warn(
                f"the Gaussian mixture anchored at {k} density peaks did not converge in "
                f"max_iter={self.max_iter} iterations; results may be poor. Raise max_iter.",
                ConvergenceWarning,
                stacklevel=3,
            )
        # the BIC curve is only shown (and lets the user override k): fit and score each k on a
        # small fixed-seed subsample (_SWEEP_N_FIT points), one start each
        ks = np.arange(1, min(self.k_max, Z.shape[0]) + 1)
        Zs = Z[_subsample_index(Z.shape[0], _SWEEP_N_FIT, seed)]
        sweep = [
            _fit_quietly(
                GaussianMixture(
                    int(kk),
                    covariance_type="tied",
                    n_init=1,
                    max_iter=100,
                    random_state=seed,
                ),
                Zs,
            )
            for kk in ks
        ]
        self.k_tried_ = ks
        self.bic_ = np.array([self._bic(m, Zs) for m in sweep])
        self.icl_ = np.array([self._icl(m, Zs, b) for m, b in zip(sweep, self.bic_, strict=True)])
        self.n_phases_ = np.full(ks.shape, k)
        self.n_gaussians_ = k
        self.component_cluster_ = np.arange(k)

    @staticmethod
    def _bic(model: Any, Z: npt.NDArray[np.float64]) -> float:
        if isinstance(model, GaussianMixture):
            return float(model.bic(Z))
        return float("nan")

    @staticmethod
    def _icl(model: Any, Z: npt.NDArray[np.float64], bic: float, resp: Any = None) -> float:
        """ICL = BIC + 2 * assignment entropy (lower is better, as BIC)."""
        if resp is None:
            resp = model.predict_proba(Z)
        entropy = -np.sum(resp * np.log(np.clip(resp, 1e-300, None)))
        return float(bic + 2.0 * entropy)

    def _elbow(self, ks: npt.NDArray[np.int_], bic: npt.NDArray[np.float64]) -> int:
        i_min = int(np.argmin(bic))
        total = bic[0] - bic[i_min]
        if total <= 0:
            return int(ks[0])
        within = np.nonzero(bic[: i_min + 1] - bic[i_min] <= self.bic_tolerance * total)[0]
        return int(ks[int(within[0])])

    # -- merging -------------------------------------------------------------------------------
    def _merge(
        self,
        model: Any,
        Z: npt.NDArray[np.float64],
        active: npt.NDArray[np.bool_] | None = None,
        resp: Any = None,
    ) -> npt.NDArray[np.int_]:
        """Map each Gaussian of ``model`` to a phase (responsibility-overlap graph).

        ``overlap[i, j] = sum_n min(r_ni, r_nj) / min(sum_n r_ni, sum_n r_nj)``: the share of the
        smaller component's points that the two components explain together. Gaussians that tile
        one non-Gaussian blob share many points; Gaussians of blobs separated by a gap share none.
        Phases are the connected components of ``overlap >= overlap_threshold``.
        """
        k = model.means_.shape[0]
        if active is None:
            active = np.ones(k, dtype=bool)
        if k == 1 or active.sum() <= 1:
            return np.zeros(k, dtype=int)
        R = model.predict_proba(Z) if resp is None else resp
        mass = R.sum(axis=0)
        overlap = np.zeros((k, k))
        for i in range(k):
            overlap[i] = np.minimum(R[:, i : i + 1], R).sum(axis=0)
        overlap /= np.maximum(np.minimum(mass[:, None], mass[None, :]), 1e-12)
        np.fill_diagonal(overlap, 0.0)
        adj = (overlap >= self.overlap_threshold) & active[:, None] & active[None, :]
        _n, root = connected_components(csr_matrix(adj), directed=False)
        # pruned (inactive) components join the phase they overlap most
        idx = np.nonzero(active)[0]
        for j in np.nonzero(~active)[0]:
            root[j] = root[idx[np.argmax(overlap[j, idx])]]
        frac = mass / Z.shape[0]
        # tiny phases join the phase they overlap most
        while True:
            uniq = np.unique(root)
            if uniq.size <= 1:
                break
            pm = {r: frac[root == r].sum() for r in uniq}
            small = min(uniq, key=lambda r: pm[r])
            if pm[small] >= self.min_cluster_fraction:
                break
            members = root == small
            link = {r: overlap[np.ix_(members, root == r)].max() for r in uniq if r != small}
            root[members] = max(link, key=lambda r: link[r])
        # renumber phases by decreasing mass (largest phase is 0)
        uniq = np.unique(root)
        masses = np.array([frac[root == r].sum() for r in uniq])
        order = uniq[np.argsort(-masses, kind="stable")]
        remap = {r: i for i, r in enumerate(order)}
        return np.array([remap[r] for r in root], dtype=int)

    def _set_cluster_params(self) -> None:
        g = self.gaussian_
        k, d = g.means_.shape
        cov = _full_covariances(g)
        n_c = int(self.component_cluster_.max()) + 1
        S = np.diag(self.scale_)
        means = np.zeros((n_c, d))
        covs = np.zeros((n_c, d, d))
        weights = np.zeros(n_c)
        for c in range(n_c):
            sel = self.component_cluster_ == c
            w = g.weights_[sel]
            wn = w / w.sum()
            mu = wn @ g.means_[sel]
            diff = g.means_[sel] - mu
            cv = np.einsum("k,kij->ij", wn, cov[sel]) + np.einsum("k,ki,kj->ij", wn, diff, diff)
            means[c] = self.center_ + self.scale_ * mu
            covs[c] = S @ cv @ S
            weights[c] = w.sum()
        self.n_components_ = n_c
        self.means_, self.covariances_, self.weights_ = means, covs, weights

    # -- predict -------------------------------------------------------------------------------
    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Phase membership probabilities, shape ``(n_samples, n_components_)``; rows sum to 1."""
        check_is_fitted(self)
        points: npt.NDArray[np.float64] = validate_data(self, X, dtype=np.float64, reset=False)
        return self._phase_proba(points)

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int_]:
        """Most probable phase of each sample."""
        return np.argmax(self.predict_proba(X), axis=1)

    @property
    def probabilities_(self) -> npt.NDArray[np.float64]:
        """Phase probabilities of the points ``fit`` was given, ``(n_samples, n_components_)``."""
        if self._fitted_proba is None:
            assert self._fitted_points is not None
            self._fitted_proba = self._phase_proba(self._fitted_points)
            self._fitted_points = None
        return self._fitted_proba

    @property
    def labels_(self) -> npt.NDArray[np.int_]:
        """Phase of each point ``fit`` was given."""
        return np.argmax(self.probabilities_, axis=1)

    def _phase_proba(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Summed responsibilities of each phase's Gaussians for checked points ``X``.

        The responsibilities are those of the mixture's ``predict_proba`` (equal to 1e-15),
        computed in blocks of :data:`PROBA_CHUNK` points that stay in the CPU cache and
        normalised with a max-shifted softmax instead of scikit-learn's array-API ``logsumexp``.
        A full-covariance :class:`~sklearn.mixture.GaussianMixture` (a fixed ``k``, as the GUI's
        refit; the automatic 2-D fit's density-peaks mixture has a tied covariance) is evaluated
        with the Gaussians along the first axis (:func:`_weighted_log_prob_t`), so every step
        is a vector operation over the block's points: 1M points, 5 Gaussians 0.15 s where
        scikit-learn's per-point rows took 0.45 s. The blocks run in threads (:func:`sigma._runtime.blocks_in_threads`).
        """
        Z = self._transform(X)
        g = self.gaussian_
        n_c = self.n_components_
        out = np.zeros((Z.shape[0], n_c))
        if type(g) is GaussianMixture and g.covariance_type == "full":
            ZT = np.ascontiguousarray(Z.T)

            def block(start: int) -> None:
                resp = _weighted_log_prob_t(g, ZT[:, start : start + PROBA_CHUNK])
                resp -= resp.max(axis=0)
                np.exp(resp, out=resp)
                resp /= resp.sum(axis=0)
                part = np.zeros((n_c, resp.shape[1]))
                for comp, c in enumerate(self.component_cluster_):
                    part[c] += resp[comp]
                out[start : start + PROBA_CHUNK] = part.T

        else:

            def block(start: int) -> None:
                rows = slice(start, start + PROBA_CHUNK)
                # log(weight_g) + log N(z | g), as predict_proba starts (scikit-learn's own method)
                resp = g._estimate_weighted_log_prob(Z[rows])
                resp -= resp.max(axis=1, keepdims=True)
                np.exp(resp, out=resp)
                resp /= resp.sum(axis=1, keepdims=True)
                part = out[rows]
                for comp, c in enumerate(self.component_cluster_):  # (in order, as np.add.at)
                    part[:, c] += resp[:, comp]

        # numpy releases the GIL: 1M points, 5 Gaussians 0.11-0.13 s in 2 threads, 0.17-0.21 s in 1
        blocks_in_threads(block, range(0, Z.shape[0], PROBA_CHUNK))
        return out


def _weighted_log_prob_t(
    g: GaussianMixture, zt: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """``log(weight_g) + log N(z | g)`` of the points ``zt`` (``(d, n)``) as ``(k, n)``.

    scikit-learn's ``GaussianMixture._estimate_weighted_log_prob`` (full covariances: the
    Mahalanobis distance through the precision's Cholesky factor) with the points along the
    last axis: the reductions over the few latent dimensions and Gaussians become sums of
    whole rows.
    """
    k, d = g.means_.shape
    prec = g.precisions_cholesky_  # (k, d, d)
    shift = np.einsum("kd,kde->ke", g.means_, prec)
    log_det = np.sum(np.log(np.diagonal(prec, axis1=1, axis2=2)), axis=1)
    const = log_det - 0.5 * d * np.log(2 * np.pi) + np.log(g.weights_)
    out = np.empty((k, zt.shape[1]))
    for j in range(k):
        acc = np.zeros(zt.shape[1])
        for e in range(d):
            y = prec[j, :, e] @ zt
            y -= shift[j, e]
            acc += y * y
        out[j] = const[j] - 0.5 * acc
    return out


#: points per block when membership probabilities are computed (16k x k floats: in cache)
PROBA_CHUNK = 16384


#: the ``"bgmm"`` method: :class:`AutoGaussianMixture` with a Dirichlet-process mixture
bayesian_auto_gaussian_mixture = functools.partial(AutoGaussianMixture, bayesian=True)


def density_peaks(
    Z: npt.NDArray[np.float64],
    *,
    bins: int | None = None,
    smooth_bins: float = 3.0,
    min_fraction: float = 0.002,
    valley_ratio: float = 0.6,
) -> npt.NDArray[np.float64]:
    """Significant maxima of the smoothed density of 2-D points, largest first.

    Parameters
    ----------
    Z : ndarray, shape (n, 2)
        Points (standardised latent coordinates).
    bins : int or None
        Histogram bins per axis over the 0.1-99.9 percentile range; None: ``sqrt(n)`` clipped
        to [32, 200] (sparser data gets coarser bins, so noise does not make peaks).
    smooth_bins : float
        Gaussian smoothing of the histogram, in bins.
    min_fraction : float
        A peak must hold at least this fraction of the points within its smoothing kernel.
    valley_ratio : float
        A peak is kept only if, on the straight path to every larger peak kept, the density
        drops below this fraction of its own height: two maxima on one ridge (a curved,
        elongated phase) are one phase.

    Returns
    -------
    ndarray, shape (n_peaks, 2)
        Peak positions in the units of ``Z``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Z = np.concatenate([rng.normal(0, 0.2, (500, 2)), rng.normal(3, 0.2, (300, 2))])
    >>> len(density_peaks(Z))
    2
    """
    from skimage.feature import peak_local_max

    Z = np.asarray(Z, dtype=np.float64)
    if Z.ndim != 2 or Z.shape[1] != 2 or Z.shape[0] == 0:
        raise ValueError(f"density_peaks needs a non-empty (n, 2) array. Got shape {Z.shape!r}.")
    if bins is None:
        bins = int(np.clip(np.sqrt(Z.shape[0]), 32, 200))
    lo = np.percentile(Z, 0.1, axis=0)
    hi = np.percentile(Z, 99.9, axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    H, ex, ey = np.histogram2d(Z[:, 0], Z[:, 1], bins=bins, range=[[lo[0], hi[0]], [lo[1], hi[1]]])
    D = ndimage.gaussian_filter(H, smooth_bins)
    pk = peak_local_max(
        D,
        min_distance=max(1, int(2 * smooth_bins)),
        threshold_abs=D.max() * 0.01,
        exclude_border=False,
    )
    mass = D[pk[:, 0], pk[:, 1]] * 2 * np.pi * smooth_bins**2 / Z.shape[0]
    order = np.argsort(-mass)
    cand = pk[order][mass[order] >= min_fraction]
    t = np.linspace(0.0, 1.0, 64)[:, None]
    kept: list[npt.NDArray[np.int_]] = []
    for p in cand:
        height = D[p[0], p[1]]
        separated = True
        for q in kept:
            path = np.rint(p[None, :] * (1 - t) + q[None, :] * t).astype(int)
            if D[path[:, 0], path[:, 1]].min() >= valley_ratio * height:
                separated = False
                break
        if separated:
            kept.append(p)
    keep = np.array(kept, dtype=int).reshape(-1, 2)
    cx = (ex[keep[:, 0]] + ex[keep[:, 0] + 1]) / 2
    cy = (ey[keep[:, 1]] + ey[keep[:, 1] + 1]) / 2
    return np.column_stack([cx, cy])


def _fit_quietly(model: Any, Z: npt.NDArray[np.float64]) -> Any:
    """Fit ``model``; non-convergence is reported by the caller from ``model.converged_``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(Z)
    return model


def _full_covariances(g: Any) -> npt.NDArray[np.float64]:
    k, d = g.means_.shape
    if g.covariance_type == "full":
        return np.asarray(g.covariances_)
    if g.covariance_type == "tied":
        return np.broadcast_to(g.covariances_, (k, d, d)).copy()
    if g.covariance_type == "diag":
        return np.stack([np.diag(c) for c in g.covariances_])
    return np.stack([np.eye(d) * c for c in g.covariances_])
