"""Spatially aware assignment (Potts prior over Poisson likelihoods) and the missed-phase search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, f1_score

from sigma.clustering import cluster
from sigma.clustering.residual import find_missed_phases, poisson_mix
from sigma.clustering.spatial import (
    cluster_channels,
    estimate_beta,
    log_likelihood,
    phase_spectra,
    potts_assign,
    spatial_clustering,
)


def _spectra(n_ch: int = 40) -> np.ndarray:
    """Three spectrum shapes on a flat background, peaks in different channels."""
    ch = np.arange(n_ch)
    out = []
    for centres in ((8, 20), (8, 26), (14, 26)):
        s = 0.3 * np.ones(n_ch) + sum(np.exp(-0.5 * ((ch - c) / 1.2) ** 2) * 4 for c in centres)
        out.append(s / s.sum())
    return np.array(out)


def _scene(counts_per_px: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """64 x 64 map: three vertical bands, plus a 3 x 3 grain of phase 2 inside phase 0."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((64, 64), dtype=int)
    truth[:, 22:44] = 1
    truth[:, 44:] = 2
    truth[30:33, 8:11] = 2
    p = _spectra()
    counts = rng.poisson(counts_per_px * p[truth.ravel()])
    return counts, truth.ravel()


def _start(truth: np.ndarray, k: int, noise: float, seed: int = 0) -> np.ndarray:
    """Starting probabilities: the truth with a share ``noise`` of pixels given random labels."""
    rng = np.random.default_rng(seed)
    lab = truth.copy()
    flip = rng.random(lab.size) < noise
    lab[flip] = rng.integers(0, k, flip.sum())
    return np.eye(k)[lab]


def test_potts_rescues_sparse_pixels_and_keeps_the_boundaries() -> None:
    counts, truth = _scene(4.0)
    # per-pixel maximum likelihood with the true phase sums: poor at 4 counts per pixel
    sums = np.eye(3)[truth].T @ counts
    ml = log_likelihood(counts, sums).argmax(axis=1)
    q, info = potts_assign(counts, _start(truth, 3, 0.5), (64, 64))
    lab = q.argmax(axis=1)
    assert adjusted_rand_score(truth, ml) < 0.6
    assert adjusted_rand_score(truth, lab) > 0.9
    assert info["beta"] > 0.2
    # the boundaries stay where they are: columns next to them are still right
    lab2 = lab.reshape(64, 64)
    assert (lab2[:, 20] == 0).mean() > 0.8
    assert (lab2[:, 23] == 1).mean() > 0.8


def test_potts_changes_nothing_well_exposed_and_keeps_a_small_grain() -> None:
    counts, truth = _scene(2000.0)
    q, info = potts_assign(counts, _start(truth, 3, 0.2), (64, 64))
    lab = q.argmax(axis=1)
    assert (lab == truth).all()  # the 3 x 3 grain of phase 2 included
    assert info["beta"] <= 2.0


def test_beta_is_zero_when_the_labels_carry_no_spatial_information() -> None:
    rng = np.random.default_rng(1)
    label = rng.integers(0, 3, 64 * 64)
    loglik = rng.normal(size=(64 * 64, 3))
    assert estimate_beta(loglik, label, (64, 64)) <= 0.1


def test_potts_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        potts_assign(np.zeros((10, 4)), np.ones((12, 2)) / 2, (3, 4))


def test_cluster_channels_sums_to_a_third_of_the_fwhm_above_the_noise_peak() -> None:
    energy = np.arange(200) * 0.01  # 10 eV channels
    cube = np.ones((2, 3, 200), dtype=np.uint16)
    c, centres = cluster_channels(cube, energy, 130.0)
    assert c.shape == (6, 190 // 4)  # 130 / 3 = 43 eV -> 4 channels; 10 below 0.1 keV dropped
    assert (c == 4).all()
    assert centres[0] == pytest.approx(0.115)


def test_poisson_mix_recovers_the_amounts() -> None:
    p = _spectra()
    a, mu = poisson_mix(3000 * p[0] + 1000 * p[2], p)
    assert a / a.sum() == pytest.approx([0.75, 0.0, 0.25], abs=0.01)
    assert mu.sum() == pytest.approx(4000.0)


def _with_rare(counts_per_px: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two phases (halves) with 4 grains of a third holding a unique line at Zr La (2.04 keV)."""
    rng = np.random.default_rng(seed)
    energy = 0.1 + 0.045 * np.arange(80)
    base = np.exp(-0.5 * ((energy - 1.74) / 0.04) ** 2) * 8 + 0.5
    other = base + np.exp(-0.5 * ((energy - 1.49) / 0.04) ** 2) * 6
    rare = base + np.exp(-0.5 * ((energy - 2.042) / 0.04) ** 2) * 6
    shapes = np.array([s / s.sum() for s in (base, other, rare)])
    truth = np.zeros((80, 80), dtype=int)
    truth[:, 40:] = 1
    for cy, cx in ((15, 15), (60, 20), (20, 60), (62, 62)):
        truth[cy - 2 : cy + 3, cx - 2 : cx + 3] = 2
    counts = rng.poisson(counts_per_px * shapes[truth.ravel()])
    return counts, truth.ravel(), energy


def test_missed_phase_is_found_with_its_line() -> None:
    counts, truth, energy = _with_rare(60.0)
    host = np.where(truth == 2, np.where(np.arange(truth.size) % 80 < 40, 0, 1), truth)
    props = find_missed_phases(counts, host, (80, 80), energy, beam_energy_kev=15.0)
    assert len(props) == 1
    p = props[0]
    assert p["line"] == "Zr_La"
    assert p["sigma"] > 20
    assert p["n_groups"] == 4
    found = np.zeros(truth.size, dtype=bool)
    found[p["pixels"]] = True
    assert f1_score(truth == 2, found) > 0.6


def test_no_phase_on_blurred_boundaries_or_clean_maps() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(3)
    p = _spectra()
    truth = np.zeros((64, 64), dtype=int)
    truth[:, 22:44] = 1
    truth[:, 44:] = 2
    onehot = np.eye(3)[truth].transpose(2, 0, 1)
    ab = ndimage.gaussian_filter(onehot, (0, 2.0, 2.0), mode="nearest")
    ab /= ab.sum(axis=0, keepdims=True)
    rate = 500.0 * np.einsum("kyx,kc->yxc", ab, p).reshape(64 * 64, -1)
    counts = rng.poisson(rate)
    energy = np.linspace(0.5, 8.0, p.shape[1])
    assert find_missed_phases(counts, truth.ravel(), (64, 64), energy) == []


def test_spatial_clustering_adds_the_rare_phase_and_records_it() -> None:
    counts, truth, energy = _with_rare(60.0)
    rng = np.random.default_rng(0)
    # a latent that knows the two large phases only (the rare grains sit inside them)
    host = np.where(truth == 2, np.where(np.arange(truth.size) % 80 < 40, 0, 1), truth)
    latent = np.eye(2)[host] * 3 + rng.normal(scale=0.3, size=(truth.size, 2))
    clus = cluster(latent.reshape(80, 80, 2), n_components=2, n_init=1)
    out = spatial_clustering(clus, latent.reshape(80, 80, 2), counts, energy, beam_energy_kev=15.0)
    info = json.loads(out.attrs["clustering"])
    assert out.sizes["cluster"] == 3
    assert [a["line"] for a in info["added_phases"]] == ["Zr_La"]
    lab = out["label"].values.ravel()
    assert f1_score(truth == 2, lab == 2) > 0.8
    assert "beta" in info["spatial"]


def test_summary_reports_the_added_phase() -> None:
    import types

    import xarray as xr

    from sigma.pipeline import summary

    added = [{"phase": 4, "n_pixels": 236, "line": "Zr_La", "sigma": 40.2}]
    ds = xr.Dataset(
        {"label": (("y", "x"), np.zeros((4, 5), dtype=np.int16))},
        attrs={"clustering": json.dumps({"added_phases": added})},
    )
    text = summary(types.SimpleNamespace(dataset=ds))
    assert "1 rare phase added: 236 px, Zr_La excess 40 sigma" in text


def test_config_checks_the_spatial_keys() -> None:
    from sigma.exceptions import ConfigurationError
    from sigma.pipeline import PipelineConfig

    assert PipelineConfig.from_dict({"spatial": 1.5, "find_missed": False}).spatial == 1.5
    with pytest.raises(ConfigurationError, match="spatial"):
        PipelineConfig.from_dict({"spatial": "yes"})
    with pytest.raises(ConfigurationError, match="find_missed"):
        PipelineConfig.from_dict({"find_missed": "no"})


def test_merge_alike_joins_a_phase_split_in_two_and_keeps_different_ones() -> None:
    from sigma.clustering.spatial import merge_alike

    counts, truth = _scene(30.0)
    lab = truth.copy()
    lab[(truth == 0) & (np.arange(truth.size) // 64 < 32)] = 3  # phase 0's top half: "new"
    q, merges = merge_alike(counts, np.eye(4)[lab], np.ones(truth.size, dtype=bool))
    assert [(m["phase"], m["into"]) for m in merges] == [(3, 0)]
    assert adjusted_rand_score(truth, q.argmax(axis=1)) == 1.0


def test_blurred_boundary_pixels_keep_the_phase_that_covers_most_of_them() -> None:
    # a light phase (50 counts/px) next to a heavy one (500 counts/px), the boundary blurred
    # (1 px): a pixel 70 % light holds mostly the heavy phase's counts, yet it is light
    from scipy.special import ndtr

    p = _spectra()
    rng = np.random.default_rng(0)
    x = np.arange(32)
    light = np.tile(1.0 - ndtr((x - 15.5) / 1.0), (32, 1)).ravel()
    truth = (light < 0.5).astype(int)
    lam = light[:, None] * 50.0 * p[0] + (1.0 - light[:, None]) * 500.0 * p[2]
    counts = rng.poisson(lam)
    q, _ = potts_assign(counts, np.eye(2)[truth], (32, 32))
    lab = q.argmax(axis=1)
    edge = (light > 0.02) & (light < 0.98)
    assert (lab == truth)[edge].mean() > 0.9
    assert (lab == truth).mean() > 0.99
    # a pure heavy pixel given the light label still moves
    start = truth.copy()
    start[10 * 32 + 24] = 0
    q, _ = potts_assign(counts, np.eye(2)[start], (32, 32))
    assert q.argmax(axis=1)[10 * 32 + 24] == 1


def test_added_line_is_named_by_an_element_whose_other_lines_agree() -> None:
    # an excess at 2.048 keV (Zr La 2.042 with some Lb): nearest is Pt Ma (2.048), then Zr La; Pt would also give its
    # (at 15 kV stronger) La at 9.44 keV
    from sigma.clustering.residual import _evidence

    energy = 2.048 + 0.043 * np.arange(-45, 300)  # a channel centred on 2.048 keV

    def peak(e: float, height: float) -> np.ndarray:
        return height * np.exp(-0.5 * ((energy - e) / 0.04) ** 2)

    matrix = 0.2 + peak(0.525, 20.0) + peak(1.74, 60.0)
    matrix = matrix / matrix.sum()
    rng = np.random.default_rng(0)
    zircon = rng.poisson(20_000 * matrix + peak(2.048, 400.0)).astype(float)
    ev = _evidence(zircon, matrix[None, :], energy, 15.0, 130.0)
    assert ev["line"] == "Zr_La"
    platinum = rng.poisson(20_000 * matrix + peak(2.048, 400.0) + peak(9.44, 300.0)).astype(float)
    ev = _evidence(platinum, matrix[None, :], energy, 15.0, 130.0)
    assert ev["line"] == "Pt_Ma"


def test_a_phase_left_without_pixels_is_dropped_and_the_rest_renumbered() -> None:
    # P45 (sigma run defaults): the missed-phase search's added phase took all the pixels of
    # phase 1, which was then reported as "phase 1, 0 px (0.0 %)" with a NaN warning
    from sigma.clustering.result import _repackage

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(6, 5, 2))
    clus = cluster(latent, n_components=3, n_init=1)
    label = np.array([0] * 10 + [2] * 12 + [3] * 7 + [-1])  # phase 1 holds no pixel
    prob = np.eye(4)[np.maximum(label, 0)]
    prob[:, 1] = 0.05  # some probability left on the empty phase
    prob[label < 0] = 0.0
    info = {"added_phases": [{"phase": 3, "n_pixels": 7, "line": "Fe_Ka"}]}
    out = _repackage(clus, latent, label, prob, info)
    assert out.sizes["cluster"] == 3
    lab = out["label"].values.ravel()
    np.testing.assert_array_equal(lab, np.array([0] * 10 + [1] * 12 + [2] * 7 + [-1]))
    p = out["probability"].values.reshape(30, -1)
    np.testing.assert_allclose(p[lab >= 0].sum(axis=1), 1.0)
    assert np.isfinite(out["gmm_mean"].values).all()
    assert json.loads(out.attrs["clustering"])["added_phases"][0]["phase"] == 2
    assert json.loads(out.attrs["clustering"])["n_components"] == 3


def test_summary_says_one_phase_and_keeps_the_pixel_column_aligned() -> None:
    # `sigma run test_TEM.bcf` printed "1 phases found", and a long phase name ("mounting
    # medium (epoxy/...)") pushed its pixel count out of the column
    import types

    import xarray as xr

    from sigma.pipeline import summary

    def text(names: list[str]) -> str:
        ds = xr.Dataset(
            {
                "label": (("y", "x"), np.zeros((4, 5), dtype=np.int16)),
                "cluster_name": (("cluster",), np.array(names, dtype=object)),
                "n_pixels": (("cluster",), np.arange(1, len(names) + 1) * 10),
            }
        )
        return summary(types.SimpleNamespace(dataset=ds))

    assert text(["quartz"]).startswith("1 phase found in 4 x 5 pixels:")
    rows = text(["quartz", "mounting medium (epoxy/polyimide/phenolic resin...)"]).splitlines()
    assert rows[0].startswith("2 phases found")
    assert rows[1].index(" px (") == rows[2].index(" px (")


def test_moves_out_of_a_phase_left_without_counts_stand_without_a_nan_warning() -> None:
    # P45: every pixel of one phase moved to another, whose mix with the empty phase was 0 / 0
    # ("sigma: warning: invalid value encountered in divide")
    import warnings

    from sigma.clustering.spatial import _dominant_of_mix

    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0 * _spectra()[np.repeat([0, 2], 18)])  # 6 x 6 map, 40 channels
    start = np.repeat([0, 1], 18)  # phase 1 was the right half...
    label = np.repeat([0, 2], 18)  # ... and moved entirely to phase 2
    q = np.eye(3)[label]
    sums = phase_spectra(counts, label, 3)  # phase 1: no counts
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = _dominant_of_mix(counts, q, start, label, sums, (6, 6), 1.0, np.log(np.ones(3) / 3))
    np.testing.assert_array_equal(out.argmax(axis=1), label)
