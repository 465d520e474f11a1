"""Clustering of the latent space into phases; re-exports the public names of its modules.

Modules: :mod:`~sigma.clustering.core` (:func:`cluster`), :mod:`~sigma.clustering.gmm`
(:class:`AutoGaussianMixture`), :mod:`~sigma.clustering.refine`,
:mod:`~sigma.clustering.smoothing`, :mod:`~sigma.clustering.plots`,
:mod:`~sigma.clustering.result`, :mod:`~sigma.clustering.inputs`, and the steps on the counts
:mod:`~sigma.clustering.auto_k`, :mod:`~sigma.clustering.spatial`,
:mod:`~sigma.clustering.residual`. How the phases are found, and why: ``docs/clustering.md``.
"""

from __future__ import annotations

from sigma.clustering.core import Method, cluster, fit_bgmm, fit_gmm
from sigma.clustering.gmm import AutoGaussianMixture, CovarianceType, density_peaks
from sigma.clustering.plots import plot_model_selection
from sigma.clustering.refine import refine_in_features
from sigma.clustering.result import DIM_K, DIM_PIXEL
from sigma.clustering.smoothing import smooth_probabilities

__all__ = [
    "AutoGaussianMixture",
    "cluster",
    "fit_gmm",
    "fit_bgmm",
    "smooth_probabilities",
    "refine_in_features",
    "plot_model_selection",
    "DIM_PIXEL",
    "DIM_K",
    "Method",
    "CovarianceType",
    "density_peaks",
]
