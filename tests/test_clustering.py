"""Tests of sigma.clustering on synthetic latents with known labels."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from sigma.clustering import (
    AutoGaussianMixture,
    cluster,
    fit_bgmm,
    fit_gmm,
    plot_model_selection,
    refine_in_features,
    smooth_probabilities,
)
from sigma.exceptions import EmptySelectionError, SchemaError


def make_latent(k: int, n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated, non-Gaussian 2-D blobs with known labels.

    Blob 0 is a banana holding about half the points; the last blob (k >= 3) holds about 2 %
    (1 % of the points for k = 3 ... 8 the ratio of first to last is 25-50 : 1); the others
    cycle through elongated-rotated, small-tight and skewed (gamma) shapes.
    """
    rng = np.random.default_rng(seed)
    centres = np.array([(i % 3, i // 3) for i in range(k)], float) * 8.0
    fr = np.ones(k)
    fr[0] = k
    if k >= 3:
        fr[-1] = 0.02 * fr.sum() / 0.98
    fr = fr / fr.sum()
    counts = np.maximum((fr * n).astype(int), 20)
    pts, labs = [], []
    for c in range(k):
        m = counts[c]
        kind = c % 4
        if kind == 0:  # banana (arc)
            t = rng.uniform(-1.2, 1.2, m)
            p = np.c_[2.0 * np.sin(t), 2.0 * np.cos(t) - 1.0] + rng.normal(0, 0.15, (m, 2))
        elif kind == 1:  # elongated and rotated
            a = 0.7
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            p = rng.normal(0, [1.5, 0.15], (m, 2)) @ rot
        elif kind == 2:  # small and tight
            p = rng.normal(0, 0.2, (m, 2))
        else:  # skewed
            p = np.c_[rng.gamma(2, 0.4, m), rng.normal(0, 0.3, m)]
        pts.append(p + centres[c])
        labs.append(np.full(m, c))
    return np.concatenate(pts), np.concatenate(labs)


def test_auto_k_finds_three_non_gaussian_phases() -> None:
    X, y = make_latent(3, n=3000)
    est = AutoGaussianMixture(k_max=8, n_init=1, random_state=0, criterion="bic_overlap").fit(X)
    assert est.n_components_ == 3
    assert est.n_gaussians_ > 3  # the banana needs several Gaussians: plain BIC would over-count
    assert adjusted_rand_score(y, est.predict(X)) > 0.99
    assert est.bic_.shape == est.k_tried_.shape == est.n_phases_.shape == (8,)


@pytest.mark.parametrize("k", [3, 5])
def test_density_peaks_finds_non_gaussian_phases(k: int) -> None:
    """The default 2-D rule: one phase per significant density mode, bananas included."""
    X, y = make_latent(k, n=6000)
    est = AutoGaussianMixture(k_max=8, n_init=1, random_state=0).fit(X)
    assert est.n_components_ == k
    assert adjusted_rand_score(y, est.predict(X)) > 0.9
    assert est.bic_.shape == est.k_tried_.shape == (8,)


def test_density_peaks_ignores_a_diffuse_halo() -> None:
    """Two dense cores plus uniform background (mixed pixels) is two phases, not more."""
    rng = np.random.default_rng(3)
    X = np.concatenate(
        [
            rng.normal(0, 0.15, (4000, 2)),
            rng.normal(3, 0.15, (3000, 2)),
            rng.uniform(-2, 5, (1500, 2)),
        ]
    )
    est = AutoGaussianMixture(k_max=6, n_init=1, random_state=0).fit(X)
    assert est.n_components_ == 2


@pytest.mark.slow
@pytest.mark.parametrize("k", [3, 5, 8])
def test_auto_k_full_size(k: int) -> None:
    """The issue's check: 20,000 fitted points, k = 3, 5, 8; SIGMA's BIC minimum is elsewhere."""
    X, y = make_latent(k, n=20_000)
    ds = cluster(X, k_max=16, n_init=2, random_state=0, criterion="bic_overlap")
    info = json.loads(ds.attrs["clustering"])
    assert info["n_components"] == k
    assert adjusted_rand_score(y, ds.label.values) > 0.99
    bic = ds.model_selection_score
    assert int(bic.n_components_tried.values[int(np.argmin(bic.values))]) != k  # BIC-min rule fails


def test_spatial_input_gives_spatial_output_and_probabilities_sum_to_one() -> None:
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 200)
    X = np.array([[0, 0], [5, 0], [0, 5]])[y] + rng.normal(0, 0.5, (600, 2))
    emb = xr.DataArray(
        X.reshape(20, 30, 2),
        dims=("y", "x", "latent"),
        coords={
            "y": ("y", np.arange(20) * 0.5, {"units": "um"}),
            "x": ("x", np.arange(30) * 0.5, {"units": "um"}),
        },
    )
    ds = cluster(emb, n_components=3, n_init=1)
    assert ds.label.dims == ("y", "x")
    assert ds.label.dtype == np.int16
    assert ds.probability.dims == ("y", "x", "cluster")
    assert ds.probability.dtype == np.float32
    np.testing.assert_allclose(ds.probability.sum("cluster"), 1.0, atol=1e-5)
    assert ds.y.attrs["units"] == "um"
    np.testing.assert_array_equal(ds.label.values, ds.probability.argmax("cluster").values)
    assert adjusted_rand_score(y, ds.label.values.ravel()) > 0.95


def test_deterministic_for_a_random_state() -> None:
    X, _ = make_latent(3, n=1500, seed=2)
    a = cluster(X, k_max=5, n_init=1, random_state=3, n_fit=800)
    b = cluster(X, k_max=5, n_init=1, random_state=3, n_fit=800)
    xr.testing.assert_identical(a, b)


def test_means_and_covariances_in_original_units() -> None:
    rng = np.random.default_rng(0)
    X = np.concatenate(
        [rng.normal([1000, -5], [10, 0.1], (500, 2)), rng.normal([1100, -4], [5, 0.2], (300, 2))]
    )
    ds = fit_gmm(X, n_components=2, n_init=1)
    order = np.argsort(ds.gmm_mean.values[:, 0])
    np.testing.assert_allclose(ds.gmm_mean.values[order], [[1000, -5], [1100, -4]], atol=2)
    var = np.diagonal(ds.gmm_covariance.values[order], axis1=1, axis2=2)
    np.testing.assert_allclose(var, [[100, 0.01], [25, 0.04]], rtol=0.25)


def test_fixed_number_of_components_is_not_merged() -> None:
    X, _ = make_latent(3, n=1000)
    ds = fit_gmm(X, n_components=6, n_init=1)
    assert ds.sizes["cluster"] == 6
    assert json.loads(ds.attrs["clustering"])["criterion"] == "user"


def test_bgmm_kmeans_hdbscan_find_the_blobs() -> None:
    X, y = make_latent(3, n=2000, seed=4)
    b = fit_bgmm(X, k_max=10, n_init=1)
    assert b.sizes["cluster"] == 3
    assert adjusted_rand_score(y, b.label.values) > 0.99
    rng = np.random.default_rng(1)
    yg = np.repeat([0, 1, 2], 200)
    G = np.array([[0, 0], [5, 0], [0, 5]])[yg] + rng.normal(0, 0.5, (600, 2))
    km = cluster(G, method="kmeans", n_components="auto", k_max=5, n_init=1)
    assert km.sizes["cluster"] == 3
    np.testing.assert_array_equal(np.unique(km.probability.values), [0.0, 1.0])
    assert adjusted_rand_score(yg, km.label.values) > 0.95
    hd = cluster(X, method="hdbscan", min_cluster_size=15)
    assigned = hd.label.values >= 0
    assert assigned.mean() > 0.9
    assert adjusted_rand_score(y[assigned], hd.label.values[assigned]) > 0.95
    np.testing.assert_allclose(hd.probability.sum("cluster"), 1.0, atol=1e-6)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(EmptySelectionError, match="0 points"):
        cluster(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="method must be one of"):
        cluster(np.zeros((5, 2)), method="dbscan")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_components must be an int"):
        cluster(np.zeros((5, 2)), n_components=0)
    bad = np.ones((5, 2))
    bad[2, 1] = np.nan
    with pytest.raises(SchemaError, match="NaN"):
        cluster(bad)
    with pytest.raises(ValueError, match="must be 'auto'"):
        cluster(np.random.default_rng(0).normal(size=(50, 2)), method="hdbscan", n_components=2)


def test_smoothing_removes_salt_noise_and_keeps_regions() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 40), int)
    truth[:, 20:] = 1
    truth[5:15, 5:15] = 2
    p = np.full((40, 40, 3), 0.05, np.float32)
    p[np.arange(40)[:, None], np.arange(40)[None, :], truth] = 0.9
    salt = rng.random((40, 40)) < 0.1
    noisy = truth.copy()
    noisy[salt] = (truth[salt] + 1) % 3
    q = np.full((40, 40, 3), 0.15, np.float32)
    q[np.arange(40)[:, None], np.arange(40)[None, :], noisy] = 0.7
    ds = xr.Dataset(
        {"probability": (("y", "x", "cluster"), q), "label": (("y", "x"), noisy.astype(np.int16))}
    )
    out = smooth_probabilities(ds, sigma=1.0)
    assert (noisy != truth).mean() > 0.08
    assert (out.label.values != truth).mean() < 0.02  # salt gone, only boundary pixels may differ
    np.testing.assert_allclose(out.probability.sum("cluster"), 1.0, atol=1e-5)
    np.testing.assert_array_equal(ds.label.values, noisy)  # input untouched
    uni = smooth_probabilities(ds, mode="uniform", size=3)
    assert (uni.label.values != truth).mean() < 0.03


def test_plot_model_selection_returns_figure() -> None:
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    X, _ = make_latent(3, n=1000)
    ds = cluster(X, k_max=5, n_init=1)
    fig = plot_model_selection(ds)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].lines) >= 2
    plt.close(fig)
    with pytest.raises(EmptySelectionError, match="no 'model_selection_score'"):
        plot_model_selection(
            fit_gmm(X, n_components=2, n_init=1).drop_vars("model_selection_score")
        )


def _stripes_scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """30 x 60 map of three vertical stripes; 6-D features that separate them well and a 2-D
    latent that separates them poorly (overlapping, noisy), as a squeezing encoder would."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.repeat([[0, 1, 2]], 30, axis=0), 20, axis=1)
    pure = np.eye(3, 6) * 4.0
    features = pure[truth] + rng.normal(0, 0.5, (30, 60, 6))
    centres = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.7]])
    latent = centres[truth] + rng.normal(0, 0.55, (30, 60, 2))
    return truth, features, latent


def test_refinement_in_features_recovers_what_the_latent_squeezed() -> None:
    truth, features, latent = _stripes_scene()
    plain = cluster(latent, n_components=3, n_init=1)
    refined = cluster(latent, n_components=3, n_init=1, features=features)
    ari_plain = adjusted_rand_score(truth.ravel(), plain.label.values.ravel())
    ari_refined = adjusted_rand_score(truth.ravel(), refined.label.values.ravel())
    assert ari_plain < 0.9  # the latent alone mixes the stripes up
    assert ari_refined > 0.98
    assert refined.sizes["cluster"] == 3
    np.testing.assert_allclose(refined.probability.sum("cluster"), 1.0, atol=1e-5)
    np.testing.assert_array_equal(refined.label.values, refined.probability.argmax("cluster"))
    # latent moments follow the refined assignment: each phase mean near its stripe's centre
    centres = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.7]])
    lab = refined.label.values
    for c in range(3):
        stripe = np.bincount(truth[lab == c]).argmax()
        np.testing.assert_allclose(refined.gmm_mean.values[c], centres[stripe], atol=0.15)
    info = json.loads(refined.attrs["clustering"])["refinement"]
    assert info["n_features"] == 6
    assert info["dropped"] == []


def test_refinement_accepts_dataarray_features_in_any_dim_order() -> None:
    truth, features, latent = _stripes_scene(1)
    F = xr.DataArray(features, dims=("y", "x", "feature")).transpose("feature", "x", "y")
    a = cluster(latent, n_components=3, n_init=1, features=F)
    b = cluster(latent, n_components=3, n_init=1, features=features)
    np.testing.assert_array_equal(a.label.values, b.label.values)
    with pytest.raises(SchemaError, match="same pixels"):
        cluster(latent, n_components=3, n_init=1, features=features[:10])


def _mixed_boundary_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A | B halves with a 1-px column of 50:50 mixed pixels between them (cluster 3), and a
    genuine phase C of the same intermediate composition with an interior (a 8 x 8 block in A,
    cluster 2). Returns truth, one-hot latent probabilities and features."""
    rng = np.random.default_rng(0)
    ny, nx = 32, 48
    label = np.zeros((ny, nx), int)
    label[:, 24:] = 1
    label[12:20, 6:14] = 2
    label[:, 24] = 3  # mixed column
    comp = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    comp = np.vstack([comp, [[0.5, 0.5, 0.0]], [[0.5, 0.5, 0.0]]]) * 6.0
    features = comp[label] + rng.normal(0, 0.4, (ny, nx, 3))
    return label, np.eye(4)[label.ravel()], features


def test_mixed_pixel_cluster_is_dropped_and_intermediate_phase_kept() -> None:
    label, P, features = _mixed_boundary_scene()
    prob, info = refine_in_features(features, P, shape=label.shape)
    assert info["dropped"] == [[3, 0, 1]]
    assert prob.shape == (label.size, 3)
    new = prob.argmax(axis=1).reshape(label.shape)
    # A, B and the intermediate block C stay phases of their own (the mixed column has C's
    # composition, so it may join C: in feature space the two cannot be told apart)
    a, b, c = (np.bincount(new[label == j]).argmax() for j in range(3))
    assert len({a, b, c}) == 3
    for j, phase in enumerate((a, b, c)):
        assert (new[label == j] == phase).mean() > 0.95


def test_without_an_image_shape_the_mixed_column_merges_with_its_composition() -> None:
    """Flat pixels: nothing is dropped, but the column and C have one composition (no density
    valley between them in feature space), so they are merged."""
    label, P, features = _mixed_boundary_scene()
    flat, flat_info = refine_in_features(features, P)
    assert flat_info["dropped"] == []
    assert flat_info["merged"] == 1
    assert flat.shape[1] == 3
    assert (flat.argmax(1)[label.ravel() == 3] == flat.argmax(1)[label.ravel() == 2][0]).all()


def test_without_adjust_k_the_latents_phases_are_kept() -> None:
    label, P, features = _mixed_boundary_scene()
    assert refine_in_features(features, P, shape=label.shape, adjust_k=False)[0].shape[1] == 4


def test_a_phase_the_latent_split_in_two_is_merged_in_feature_space() -> None:
    truth, features, _ = _stripes_scene(2)
    # a clean latent that folds stripe 0 into two peaks far apart
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.5]])
    latent = centres[truth] + rng.normal(0, 0.3, (30, 60, 2))
    latent[(truth == 0) & (np.arange(60)[None, :] < 10)] += [0.0, -4.0]
    plain = cluster(latent, features=None)
    assert plain.sizes["cluster"] == 4
    refined = cluster(latent, features=features)
    assert refined.sizes["cluster"] == 3
    assert json.loads(refined.attrs["clustering"])["refinement"]["merged"] == 1
    assert adjusted_rand_score(truth.ravel(), refined.label.values.ravel()) > 0.98
    # with adjust_k=False the latent's four phases are kept
    assert cluster(latent, features=features, adjust_k=False).sizes["cluster"] == 4


def test_interior_statistics_are_used_only_when_asked(scene) -> None:
    """Both modes give one probability per phase and pixel; only ``interior`` iterates on the
    interior pixels. (How much better it places blurred boundaries: the slow test below.)"""
    from sigma.preprocessing import pca_features

    ds, truth = scene
    features = pca_features(ds, n_components=4, show_progress=False).features.values
    true = truth.label.values.ravel()
    start = np.eye(3)[true]
    for interior in (False, True):
        prob, info = refine_in_features(
            features, start, shape=truth.label.shape, adjust_k=False, interior=interior
        )
        assert prob.shape == (true.size, 3)
        np.testing.assert_allclose(prob.sum(axis=1), 1.0)
        assert (info["interior_iterations"] > 0) == interior


@pytest.mark.slow  # ~20 s per seed on 2 cores: a 96 x 128 x 2048 scene (CI runs it in the slow step)
@pytest.mark.parametrize("seed", [0, 1])
def test_interior_statistics_place_blurred_boundaries_better(seed: int) -> None:
    """Mixed boundary pixels stretch a tied covariance; interior-pixel statistics do not."""
    from sigma.datasets import synthetic_sem
    from sigma.preprocessing import pca_features

    ds, truth = synthetic_sem(
        (96, 128), seed=seed, counts_per_pixel=100, blur=1.5, show_progress=False
    )
    features = pca_features(ds, n_components=8, show_progress=False).features.values
    true = truth.label.values.ravel()
    k = int(true.max()) + 1
    rng = np.random.default_rng(seed)
    start = np.eye(k)[true]  # a latent clustering with 20 % of the pixels scrambled
    flip = rng.random(true.size) < 0.2
    start[flip] = np.eye(k)[rng.integers(0, k, int(flip.sum()))]
    scores = {}
    for interior in (False, True):
        prob, info = refine_in_features(
            features, start, shape=(96, 128), adjust_k=False, interior=interior
        )
        assert prob.shape == (true.size, k)
        np.testing.assert_allclose(prob.sum(axis=1), 1.0)
        assert (info["interior_iterations"] > 0) == interior
        scores[interior] = adjusted_rand_score(true, prob.argmax(axis=1))
    # measured: 0.742 -> 0.759 (seed 0), 0.753 -> 0.768 (seed 1)
    assert scores[True] > scores[False] + 0.008


@parametrize_with_checks([AutoGaussianMixture(k_max=3, n_init=1)])
def test_auto_gaussian_mixture_keeps_the_scikit_learn_contract(estimator: Any, check: Any) -> None:
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([AutoGaussianMixture(k_max=3, n_init=1, criterion="bic_overlap")])
def test_auto_gaussian_mixture_by_bic_keeps_the_scikit_learn_contract(
    estimator: Any, check: Any
) -> None:
    check(estimator)


def test_auto_gaussian_mixture_refuses_bad_parameters_and_unfitted_use() -> None:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils._param_validation import InvalidParameterError

    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(InvalidParameterError, match="'overlap_threshold' parameter"):
        AutoGaussianMixture(overlap_threshold=1.5).fit(X)
    with pytest.raises(InvalidParameterError, match="'n_components' parameter"):
        AutoGaussianMixture(n_components=0).fit(X)
    with pytest.raises(NotFittedError):
        AutoGaussianMixture().predict(X)
    est = AutoGaussianMixture(k_max=3, n_init=1).fit(X)
    assert est.n_features_in_ == 2
    np.testing.assert_array_equal(est.labels_, est.predict(X))
    np.testing.assert_allclose(est.probabilities_, est.predict_proba(X))
    with pytest.raises(ValueError, match="3 features"):
        est.predict(np.zeros((4, 3)))


@pytest.mark.parametrize("dims", [1, 2, 4])
def test_transposed_log_prob_kernel_equals_sklearn(dims: int) -> None:
    """The (Gaussians, points) kernel gives scikit-learn's weighted log-probabilities."""
    from sklearn.mixture import GaussianMixture

    from sigma.clustering.gmm import _weighted_log_prob_t

    rng = np.random.default_rng(dims)
    X = np.concatenate([rng.normal(c, s, (400, dims)) for c, s in ((0, 0.3), (2, 1.0), (-3, 0.1))])
    X[:, 0] *= 50  # anisotropic
    g = GaussianMixture(3, covariance_type="full", random_state=0).fit(X)
    want = g._estimate_weighted_log_prob(X)
    got = _weighted_log_prob_t(g, np.ascontiguousarray(X.T)).T
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("bayesian", "dims"), [(False, 2), (False, 3), (True, 2)])
def test_blocked_probabilities_equal_predict_proba(
    bayesian: bool, dims: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocked, max-shifted softmax gives scikit-learn's responsibilities, summed per phase
    (a full-covariance mixture through the transposed kernel, a Bayesian one through sklearn's)."""
    from sigma.clustering import gmm

    rng = np.random.default_rng(3)
    centres = ((0, 0, 0), (3, 0, 1), (0, 3, -1))
    X = np.concatenate([rng.normal(c[:dims], 0.4, (700, dims)) for c in centres])
    est = AutoGaussianMixture(k_max=4, n_init=1, random_state=0, bayesian=bayesian).fit(X)
    monkeypatch.setattr(gmm, "PROBA_CHUNK", 128)  # 17 blocks (in threads) and a short last one
    got = est._phase_proba(X)
    resp = est.gaussian_.predict_proba(est._transform(X))
    want = np.zeros_like(got)
    for g, c in enumerate(est.component_cluster_):
        want[:, c] += resp[:, g]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(est.predict(X), np.argmax(want, axis=1))
