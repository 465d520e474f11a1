"""The clustering methods besides the Gaussian mixture, as estimators: k-means and HDBSCAN."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import HDBSCAN, KMeans

from sigma.clustering.gmm import AutoGaussianMixture
from sigma.clustering.inputs import _Scaler, _subsample, _subsample_index
from sigma.exceptions import EmptySelectionError

__all__ = ["KMeansPhases", "HDBSCANPhases"]


class KMeansPhases(ClusterMixin, BaseEstimator):
    """k-means on the (standardised) latent; ``"auto"`` takes ``k`` from :class:`AutoGaussianMixture`.

    Fitted on a subsample of ``n_fit`` points, every point labelled; the parameters shared with
    :class:`~sigma.clustering.AutoGaussianMixture` mean the same. With ``"auto"`` the sweep
    (``k_tried_``, ``bic_``, ``icl_``, ``n_phases_``) is the Gaussian mixture's.
    """

    def __init__(
        self,
        n_components: int | Literal["auto"] = "auto",
        *,
        k_max: int = 16,
        n_init: int = 2,
        n_fit: int | None = 20_000,
        standardize: bool = True,
        overlap_threshold: float = 0.02,
        random_state: int | None = 0,
        n_jobs: int | None = None,
        criterion: Literal["density_peaks", "bic_overlap"] = "density_peaks",
    ) -> None:
        self.n_components = n_components
        self.k_max = k_max
        self.n_init = n_init
        self.n_fit = n_fit
        self.standardize = standardize
        self.overlap_threshold = overlap_threshold
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.criterion = criterion

    def fit(self, X: npt.ArrayLike, y: Any = None) -> KMeansPhases:
        """Find ``k`` (``"auto"``), run k-means and label every point; returns ``self``."""
        X = np.asarray(X, dtype=np.float64)
        if self.n_components == "auto":
            auto = AutoGaussianMixture(
                k_max=self.k_max,
                n_init=self.n_init,
                n_fit=self.n_fit,
                standardize=self.standardize,
                overlap_threshold=self.overlap_threshold,
                random_state=self.random_state,
                n_jobs=self.n_jobs,
                criterion=self.criterion,
            ).fit(X)
            k = int(auto.n_components_)
            self.k_tried_, self.bic_ = auto.k_tried_, auto.bic_
            self.icl_, self.n_phases_ = auto.icl_, auto.n_phases_
        else:
            k = int(self.n_components)
        Z = _Scaler(X, self.standardize)(X)
        Zfit = _subsample(Z, self.n_fit, self.random_state)
        self.kmeans_ = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.random_state)
        self.kmeans_.fit(Zfit)
        self.labels_ = self.kmeans_.predict(Z)
        self.n_components_ = k
        self.clustering_info_ = {
            "n_components": k,
            "criterion": "user" if self.n_components != "auto" else "gmm-auto-k",
        }
        return self


class HDBSCANPhases(ClusterMixin, BaseEstimator):
    """HDBSCAN density clusters on the (standardised) latent; noise points get label -1.

    HDBSCAN runs on a subsample of ``n_fit`` points; every other point takes the label of its
    nearest labelled (non-noise) fitted point. ``n_components`` must be ``"auto"``. Its labels
    are not refined afterwards (``refinable = False``).
    """

    refinable: ClassVar[bool] = False

    def __init__(
        self,
        n_components: Literal["auto"] = "auto",
        *,
        min_cluster_size: int = 50,
        standardize: bool = True,
        n_fit: int | None = 20_000,
        random_state: int | None = 0,
    ) -> None:
        self.n_components = n_components
        self.min_cluster_size = min_cluster_size
        self.standardize = standardize
        self.n_fit = n_fit
        self.random_state = random_state

    def fit(self, X: npt.ArrayLike, y: Any = None) -> HDBSCANPhases:
        """Cluster a subsample, extend the labels to every point; returns ``self``."""
        if self.n_components != "auto":
            raise ValueError(
                "method='hdbscan' finds the number of clusters itself; n_components must be "
                "'auto'. "
                f"Got {self.n_components!r}. Use method='gmm' or 'kmeans' for a fixed number."
            )
        X = np.asarray(X, dtype=np.float64)
        Z = _Scaler(X, self.standardize)(X)
        idx = _subsample_index(Z.shape[0], self.n_fit, self.random_state)
        hd = HDBSCAN(min_cluster_size=self.min_cluster_size, copy=True).fit(Z[idx])
        fit_lab = hd.labels_
        k = int(fit_lab.max()) + 1
        if k == 0:
            raise EmptySelectionError(
                "HDBSCAN found no cluster (all points noise) with "
                f"min_cluster_size={self.min_cluster_size}. "
                "Lower min_cluster_size or use method='gmm'."
            )
        # extend to all points: nearest labelled (non-noise) fitted point within the noise scale
        from sklearn.neighbors import KNeighborsClassifier

        ok = fit_lab >= 0
        knn = KNeighborsClassifier(n_neighbors=1).fit(Z[idx][ok], fit_lab[ok])
        lab = knn.predict(Z)
        lab[idx[~ok]] = -1
        self.labels_ = lab
        self.n_components_ = k
        self.clustering_info_ = {
            "n_components": k,
            "criterion": "hdbscan",
            "min_cluster_size": self.min_cluster_size,
            "n_noise": int((lab < 0).sum()),
        }
        return self
