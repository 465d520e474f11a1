"""The clustering methods by name: one mapping from method name to estimator that all callers read.

:func:`sigma.clustering.cluster` (``method=``), the config check (``clustering.method``), the
``sigma run --method`` choices and any GUI list of methods all read :data:`METHODS`, so a new
method is one estimator class and one line here (or one :func:`register` call).

The estimator contract (scikit-learn's): ``Estimator(**params)`` only stores its parameters;
:meth:`fit` ``(X)`` on the ``(n_points, n_latent)`` latent returns ``self`` with ``labels_``
(one phase per point, ``-1`` for noise). :func:`~sigma.clustering.cluster` passes the
keyword arguments of its own that the estimator's ``__init__`` accepts (``n_components``,
``random_state``, ``n_init``, ``k_max``, ``standardize``, ``n_fit`` ...). Optional, used when
present:

- ``probabilities_`` ``(n_points, k)`` (of the fitted points) or ``predict_proba(X)``: soft
  probabilities (otherwise one-hot from ``labels_``, uniform for noise), and then the labels
  are their argmax;
- ``n_components_``: number of phases (otherwise ``labels_.max() + 1``);
- ``means_``, ``covariances_`` ``(k, d, d)``, ``weights_``: per-phase latent moments
  (otherwise computed from the labels or probabilities);
- ``k_tried_``, ``bic_``, ``icl_``, ``n_phases_``: a model-selection sweep to store and plot;
- ``clustering_info_``: a dict recorded in the result's ``clustering`` attribute;
- class attribute ``refinable = False``: sigma must not move its pixels between phases
  afterwards (no refinement in the features, no spatial assignment), e.g. for noise labels.

Built-in methods are named as ``"module:attribute"`` strings, imported on first use, so that
reading the names (config check, ``--help``) does not import scikit-learn.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["METHODS", "register", "method_names", "get_method", "refinable"]

#: method name -> estimator class or factory, or ``"module:attribute"`` naming one
METHODS: dict[str, Callable[..., Any] | str] = {
    "gmm": "sigma.clustering.gmm:AutoGaussianMixture",
    "bgmm": "sigma.clustering.gmm:bayesian_auto_gaussian_mixture",
    "kmeans": "sigma.clustering.methods:KMeansPhases",
    "hdbscan": "sigma.clustering.methods:HDBSCANPhases",
}


def register(name: str, estimator: Callable[..., Any] | str) -> Callable[..., Any] | str:
    """Add (or replace) clustering method ``name``; returns ``estimator``.

    Examples
    --------
    >>> from sklearn.mixture import GaussianMixture
    >>> _ = register("plain_gmm", GaussianMixture)
    >>> "plain_gmm" in method_names()
    True
    >>> del METHODS["plain_gmm"]
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a clustering method needs a non-empty name. Got {name!r} instead.")
    if not (callable(estimator) or (isinstance(estimator, str) and ":" in estimator)):
        raise TypeError(
            f"method {name!r}: the estimator must be a class or factory, or a 'module:attribute' "
            f"string. Got {estimator!r} instead."
        )
    METHODS[name] = estimator
    return estimator


def method_names() -> tuple[str, ...]:
    """Names of the registered clustering methods, in registration order."""
    return tuple(METHODS)


def get_method(name: str) -> Callable[..., Any]:
    """The estimator class or factory of method ``name`` (imported on first use)."""
    if name not in METHODS:
        raise ValueError(f"method must be one of {method_names()!r}. Got {name!r} instead.")
    estimator = METHODS[name]
    if isinstance(estimator, str):
        module, _, attribute = estimator.partition(":")
        estimator = getattr(importlib.import_module(module), attribute)
    return estimator


def refinable(name: str) -> bool:
    """Whether sigma may move method ``name``'s pixels between phases after it ran."""
    return bool(getattr(get_method(name), "refinable", True))
