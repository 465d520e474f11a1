"""The clustering-method registry: one estimator class and one registry line make a new method."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClusterMixin

from sigma.clustering import cluster, registry
from sigma.config import check_config
from sigma.exceptions import ConfigurationError


class SplitAtZero(ClusterMixin, BaseEstimator):
    """Toy method: phase 1 where the first latent coordinate is positive, else phase 0."""

    def __init__(self, n_components: Any = "auto", random_state: int | None = 0) -> None:
        self.n_components = n_components
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> SplitAtZero:
        self.labels_ = (np.asarray(X)[:, 0] > 0).astype(int)
        return self


class NoisyToy(SplitAtZero):
    """As SplitAtZero, but points near zero are noise (-1) and sigma must not refine it."""

    refinable = False

    def fit(self, X: Any, y: Any = None) -> NoisyToy:
        super().fit(X)
        self.labels_[np.abs(np.asarray(X)[:, 0]) < 0.5] = -1
        return self


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(registry.METHODS, "split_at_zero", SplitAtZero)  # the one registry line
    return "split_at_zero"


def _points() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 0.5, (60, 2)), rng.normal(3, 0.5, (40, 2))])
    return X, np.repeat([0, 1], [60, 40])


def test_a_registered_method_runs_through_cluster(toy: str) -> None:
    X, truth = _points()
    ds = cluster(X, method=toy)
    np.testing.assert_array_equal(ds["label"].values, truth)
    np.testing.assert_allclose(ds["probability"].values.sum(axis=1), 1.0)
    # latent moments computed from its labels
    np.testing.assert_allclose(ds["gmm_mean"].values[1], X[truth == 1].mean(axis=0))
    np.testing.assert_allclose(ds["gmm_weight"].values, [0.6, 0.4])
    info = json.loads(ds.attrs["clustering"])
    assert info["method"] == toy
    assert info["n_components"] == 2
    assert "n_components_tried" not in ds.dims  # no sweep: the toy has none


def test_a_registered_method_is_a_cli_choice_and_a_valid_config(toy: str) -> None:
    from sigma.commands.run import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "method"]
    assert tuple(action.choices) == registry.method_names()
    assert toy in action.choices
    assert parser.parse_args(["--method", toy]).method == toy
    check_config({"clustering": {"method": toy}})


def test_an_unknown_method_is_refused_everywhere_naming_the_choices() -> None:
    with pytest.raises(ValueError, match=r"method must be one of \('gmm', 'bgmm'"):
        cluster(np.zeros((5, 2)), method="dbscan")
    with pytest.raises(ConfigurationError, match=r"one of \['gmm', 'bgmm', 'kmeans', 'hdbscan'\]"):
        check_config({"clustering": {"method": "dbscan"}})


def test_a_method_that_is_not_refinable_keeps_its_labels() -> None:
    registry.register("noisy_toy", NoisyToy)
    try:
        X, truth = _points()
        X[0, 0] = 0.1  # one noise point
        ds = cluster(X, method="noisy_toy", features=X * 2.0)
        assert int(ds["label"].values[0]) == -1
        assert "refinement" not in json.loads(ds.attrs["clustering"])
        assert not registry.refinable("noisy_toy")
        assert registry.refinable("gmm")
        assert not registry.refinable("hdbscan")
    finally:
        del registry.METHODS["noisy_toy"]


def test_every_built_in_method_resolves_to_an_estimator() -> None:
    for name in registry.method_names():
        est = registry.get_method(name)()
        assert callable(est.fit), name
        assert "n_components" in est.get_params(), name


def test_register_refuses_what_is_not_an_estimator() -> None:
    with pytest.raises(TypeError, match="class or factory"):
        registry.register("bad", 42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty name"):
        registry.register("", SplitAtZero)
    assert "bad" not in registry.METHODS
