"""Auto-k by the counts: :func:`sigma.clustering.auto_k.split_phases` on Poisson spectra."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sigma.clustering.auto_k import split_phases

N_CH = 40


def _spectrum(peaks: dict[int, float]) -> np.ndarray:
    s = np.full(N_CH, 0.5)
    for ch, height in peaks.items():
        s[ch] += height
    return s / s.sum()


A = _spectrum({5: 8.0, 20: 3.0})
B = _spectrum({5: 3.0, 30: 6.0})


def _image(frac_b: np.ndarray, counts: float, seed: int = 0) -> np.ndarray:
    """(ny * nx, N_CH) Poisson counts of the mixture ``frac_b`` * B + (1 - frac_b) * A."""
    rng = np.random.default_rng(seed)
    lam = counts * ((1.0 - frac_b.ravel())[:, None] * A + frac_b.ravel()[:, None] * B)
    return rng.poisson(lam)


@pytest.mark.parametrize("counts", [400.0, 40.0])
def test_two_populations_in_one_phase_are_split(counts: float) -> None:
    # a 30 x 40 map: a block of B (15 %) inside A, all given as one phase
    frac = np.zeros((30, 40))
    frac[5:15, 10:28] = 1.0
    spectra = _image(frac, counts)
    tests: list[dict] = []
    label, splits = split_phases(
        spectra, np.zeros(frac.size, int), shape=frac.shape, tests_out=tests
    )
    assert len(splits) == 1
    assert label.max() == 1
    truth = frac.ravel() > 0.5
    agree = max((label == 1)[truth].mean(), (label == 0)[truth].mean())
    assert agree > 0.9
    assert tests[0]["split"]
    assert tests[0]["valley"] < tests[0]["valley_max"]
    assert tests[0]["log10_p"] < -6


def test_a_gradient_is_not_split() -> None:
    # composition changes smoothly from A to B across the map: no separate sub-population
    frac = np.tile(np.linspace(0.0, 1.0, 40), (30, 1))
    spectra = _image(frac, 400.0)
    tests: list[dict] = []
    label, splits = split_phases(
        spectra, np.zeros(frac.size, int), shape=frac.shape, tests_out=tests
    )
    assert splits == []
    assert (label == 0).all()
    assert tests
    assert not any(t["split"] for t in tests)


def test_one_homogeneous_phase_is_not_split_and_no_data_is_ignored() -> None:
    frac = np.zeros((30, 40))
    spectra = _image(frac, 100.0, seed=3)
    label0 = np.zeros(frac.size, int)
    label0[:40] = -1  # first row: no data
    label, splits = split_phases(spectra, label0, shape=frac.shape)
    assert splits == []
    np.testing.assert_array_equal(label, label0)


def test_plot_model_selection_shows_the_split_tests() -> None:
    import matplotlib.pyplot as plt

    from sigma.clustering import cluster, plot_model_selection
    from sigma.clustering.auto_k import split_clustering

    frac = np.zeros((30, 40))
    frac[5:15, 10:28] = 1.0
    spectra = _image(frac, 400.0)
    latent = np.random.default_rng(0).normal(size=(30, 40, 2))
    import xarray as xr

    lat = xr.DataArray(latent, dims=("y", "x", "latent"))
    clus = split_clustering(cluster(lat, k_max=3, n_init=1), lat, spectra)
    info = json.loads(clus.attrs["clustering"])
    assert any(t["split"] for t in info["split_tests"])
    fig = plot_model_selection(clus)
    assert len(fig.axes) >= 2
    assert "split" in fig.axes[0].get_title()
    plt.close(fig)


def test_boundary_pixels_are_not_a_new_phase() -> None:
    # A | B halves; two columns of 50/50 mixed pixels at the boundary, labelled with A
    frac = np.zeros((30, 40))
    frac[:, 20:] = 1.0
    frac[:, 18:20] = 0.5
    spectra = _image(frac, 400.0, seed=1)
    label0 = (frac.ravel() > 0.75).astype(int)
    tests: list[dict] = []
    label, splits = split_phases(spectra, label0, shape=frac.shape, tests_out=tests)
    assert splits == []
    assert label.max() == 1
    assert any(t.get("boundary") for t in tests)  # the mixed columns were found, and kept


def test_misassigned_pixels_join_the_phase_they_match() -> None:
    # a block of B pixels given the label of A: they join B, no third phase
    frac = np.zeros((30, 40))
    frac[:, 20:] = 1.0
    frac[5:15, 3:10] = 1.0
    spectra = _image(frac, 400.0, seed=2)
    label0 = np.zeros(frac.size, int)
    label0.reshape(30, 40)[:, 20:] = 1
    label, splits = split_phases(spectra, label0, shape=frac.shape)
    assert splits == []
    np.testing.assert_array_equal(label, (frac.ravel() > 0.5).astype(int))


def _two_grains_or_gradient(gradient: bool) -> tuple[np.ndarray, np.ndarray]:
    """64 x 64 px at 200 counts/px: two phases 2-3 sd apart per pixel (or a gradient between)."""
    rng = np.random.default_rng(0)
    ny, nx, nch = 64, 64, 20
    pa = np.full(nch, 1.0)
    pa[0], pa[1] = 2.0, 3.0
    pb = pa.copy()
    pb[0], pb[1] = 3.0, 2.0
    pa, pb = pa / pa.sum(), pb / pb.sum()
    if gradient:
        f = np.linspace(0.0, 1.0, nx)[None, :, None] * np.ones((ny, 1, 1))
    else:
        f = (np.arange(nx) >= nx // 2)[None, :, None] * np.ones((ny, 1, 1))
    counts = rng.poisson(200 * ((1 - f) * pa + f * pb)).reshape(ny * nx, nch)
    return counts, f[..., 0].ravel() > 0.5


def test_well_exposed_phases_that_overlap_pixel_by_pixel_split_on_a_pooled_second_look() -> None:
    """Two grains 2-3 sd apart per pixel: no valley pixel by pixel, a clear one pooled 3 x 3."""
    counts, truth = _two_grains_or_gradient(gradient=False)
    label = np.zeros(truth.size, dtype=int)
    alone, _ = split_phases(counts, label, random_state=0)  # no image: no pooling possible
    assert alone.max() == 0
    tests: list[dict] = []
    new, splits = split_phases(counts, label, shape=(64, 64), random_state=0, tests_out=tests)
    assert new.max() == 1
    assert max(np.mean((new == 1) == truth), np.mean((new == 1) != truth)) > 0.97
    assert tests[0]["split"]
    assert tests[0]["valley"] < 0.5
    # a gradient between the same two compositions has no valley, pooled or not
    grad, _ = _two_grains_or_gradient(gradient=True)
    assert split_phases(grad, label, shape=(64, 64), random_state=0)[0].max() == 0
