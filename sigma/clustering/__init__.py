"""Clustering of the latent space into phases; re-exports the public names of its modules.

Modules: :mod:`~sigma.clustering.core` (:func:`cluster`), :mod:`~sigma.clustering.registry`
(the methods by name), :mod:`~sigma.clustering.gmm` (:class:`AutoGaussianMixture`),
:mod:`~sigma.clustering.methods` (k-means, HDBSCAN), :mod:`~sigma.clustering.refine`,
:mod:`~sigma.clustering.smoothing`, :mod:`~sigma.clustering.plots`,
:mod:`~sigma.clustering.result`, :mod:`~sigma.clustering.inputs`, and the steps on the counts
:mod:`~sigma.clustering.auto_k`, :mod:`~sigma.clustering.spatial`,
:mod:`~sigma.clustering.residual`. How the phases are found, and why: ``docs/clustering.md``.

The names are imported on first access (PEP 562), so that reading the method names
(:mod:`~sigma.clustering.registry`, e.g. for a config check or ``--help``) does not import
scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sigma.clustering.core import Method, cluster, fit_bgmm, fit_gmm
    from sigma.clustering.gmm import AutoGaussianMixture, CovarianceType, density_peaks
    from sigma.clustering.plots import plot_model_selection
    from sigma.clustering.refine import refine_in_features
    from sigma.clustering.result import DIM_K, DIM_PIXEL
    from sigma.clustering.smoothing import smooth_probabilities

# public name -> module that defines it
_LAZY = {
    "AutoGaussianMixture": "sigma.clustering.gmm",
    "CovarianceType": "sigma.clustering.gmm",
    "density_peaks": "sigma.clustering.gmm",
    "cluster": "sigma.clustering.core",
    "fit_gmm": "sigma.clustering.core",
    "fit_bgmm": "sigma.clustering.core",
    "Method": "sigma.clustering.core",
    "smooth_probabilities": "sigma.clustering.smoothing",
    "refine_in_features": "sigma.clustering.refine",
    "plot_model_selection": "sigma.clustering.plots",
    "DIM_PIXEL": "sigma.clustering.result",
    "DIM_K": "sigma.clustering.result",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sigma.clustering' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
