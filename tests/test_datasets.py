"""Tests of the synthetic spectrum-image simulator (sigma.datasets) against known answers."""

from __future__ import annotations

import doctest
import importlib
import json
import time

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

import sigma.datasets as sd
from sigma._schema import validate_spectrum_image
from sigma.datasets import (
    PHASES,
    Phase,
    phase_map,
    phase_spectrum,
    synthetic_cube,
    synthetic_sem,
    synthetic_tem,
)
from sigma.exceptions import SimulationParameterError
from sigma.xray import fwhm_kev, get_line

SMALL = {"n_channels": 1024, "show_progress": False}


def _channel(ds, energy_kev: float) -> int:
    e = ds.energy.values
    return int(round((energy_kev - e[0]) / (e[1] - e[0])))


# --- phases -------------------------------------------------------------------------------------


def test_phase_from_formula_mass_fractions():
    quartz = Phase.from_formula("q", "SiO2")
    assert quartz.composition["Si"] == pytest.approx(28.0855 / 60.0843, rel=1e-3)
    assert sum(quartz.composition.values()) == pytest.approx(1.0)
    assert PHASES["albite"].elements == ["O", "Na", "Al", "Si"]
    assert PHASES["hematite"].mean_z == pytest.approx(0.6994 * 26 + 0.3006 * 8, rel=1e-3)


@pytest.mark.parametrize(
    ("composition", "match"),
    [
        ({"Si": 0.5, "O": 0.3}, "sum to 1"),
        ({"Xx": 1.0}, "unknown element 'Xx'"),
        ({"Si": 1.2, "O": -0.2}, "positive"),
        ({}, "non-empty"),
    ],
)
def test_phase_rejects_bad_composition(composition, match):
    with pytest.raises(SimulationParameterError, match=match):
        Phase("bad", composition)


def test_phase_does_not_modify_input_and_normalises():
    comp = {"Si": 0.4700, "O": 0.5330}
    phase = Phase("q", comp)
    assert comp == {"Si": 0.4700, "O": 0.5330}
    assert sum(phase.composition.values()) == pytest.approx(1.0, abs=1e-12)
    assert hash(phase) == hash(Phase("q", dict(comp)))


# --- spectra ------------------------------------------------------------------------------------


ENERGY_2048 = np.arange(2048) * 0.01


def test_phase_spectrum_is_normalised_and_peaks_at_its_main_line():
    quartz = phase_spectrum(PHASES["quartz"], ENERGY_2048, zero_peak_fraction=0.03)
    assert quartz.sum() == pytest.approx(1.0)
    si = round(get_line("Si_Ka").energy_kev / 0.01)
    assert np.argmax(quartz[20:]) + 20 == pytest.approx(si, abs=1)


def test_phase_spectrum_zero_peak_holds_its_share_of_the_counts():
    """Zero peak: ~3 % of the counts in the first channels."""
    quartz = phase_spectrum(PHASES["quartz"], ENERGY_2048, zero_peak_fraction=0.03)
    assert quartz[:6].sum() == pytest.approx(0.03, abs=0.005)


def test_phase_spectrum_ends_at_the_beam_energy_and_rolls_off_at_low_energy():
    """Nothing above the beam energy (Duane-Hunt limit), roll-off below ~0.2 keV."""
    low_beam = phase_spectrum(PHASES["hematite"], ENERGY_2048, beam_energy_kev=10.0)
    assert low_beam[1001:].sum() == 0.0
    quartz = phase_spectrum(PHASES["quartz"], ENERGY_2048, zero_peak_fraction=0.03)
    assert quartz[12] < 0.05 * quartz[150]


def test_phase_spectrum_has_no_line_above_the_beam_energy():
    """Fe K lines need E0 > 7.11 keV: at 5 kV only Fe L remains."""
    fe5 = phase_spectrum(PHASES["hematite"], ENERGY_2048, beam_energy_kev=5.0)
    fe_ka = round(get_line("Fe_Ka").energy_kev / 0.01)
    assert fe5[fe_ka - 5 : fe_ka + 6].sum() == 0.0


def test_thin_film_has_a_weaker_continuum_than_a_bulk_sample():
    si = round(get_line("Si_Ka").energy_kev / 0.01)
    bulk = phase_spectrum(PHASES["quartz"], ENERGY_2048)
    thin = phase_spectrum(PHASES["quartz"], ENERGY_2048, geometry="thin", beam_energy_kev=15.0)
    ratio = lambda s: s[si] / s[si + 40]  # noqa: E731
    assert ratio(thin) > 3 * ratio(bulk)


def test_bulk_quartz_si_ka_peak_to_background_is_kept():
    """The continuum scale was rescaled with the thick-target law: Si Ka P/B of quartz at 15 kV
    (10 eV channels) stays ~58, as with the thin-film law before."""
    kw = {"beam_energy_kev": 15.0, "zero_peak_fraction": 0.0, "normalise": False}
    full = phase_spectrum(PHASES["quartz"], ENERGY_2048, **kw)
    lines = phase_spectrum(PHASES["quartz"], ENERGY_2048, continuum_scale=0.0, **kw)
    si = round(get_line("Si_Ka").energy_kev / 0.01)
    j = si - 3 + int(np.argmax(full[si - 3 : si + 4]))
    assert 50 < lines[j] / (full[j] - lines[j]) < 66


def test_bulk_lines_follow_the_thick_target_law():
    """Bulk spectra: the generated O Ka / Fe Ka ratio is the thick-target law's (twice the
    thin-film cross-section's at 20 kV); thin films keep the cross-section."""
    from sigma.datasets._spectrum import _element_scale
    from sigma.xray import generated_weights, ionisation_yield

    def ratio(geometry: str) -> float:
        o = _element_scale("O", 20.0, geometry) * generated_weights("O", 20.0)["O_Ka"]
        fe = _element_scale("Fe", 20.0, geometry)
        fe *= generated_weights("Fe", 20.0, geometry=geometry)["Fe_Ka"]  # type: ignore[arg-type]
        return o / fe

    law = lambda g: ionisation_yield(20.0, 0.532, g) / ionisation_yield(20.0, 7.112, g)  # noqa: E731
    assert ratio("bulk") / ratio("thin") == pytest.approx(law("bulk") / law("thin"), rel=0.02)
    assert 1.8 < ratio("bulk") / ratio("thin") < 2.1


def test_si_escape_peak_of_fe_ka():
    energy = np.arange(2048) * 0.01
    with_esc = phase_spectrum(PHASES["hematite"], energy, normalise=False)
    without = phase_spectrum(PHASES["hematite"], energy, normalise=False, escape_peaks=False)
    extra = with_esc - without
    fe_ka = get_line("Fe_Ka").energy_kev
    escape = fe_ka - get_line("Si_Ka").energy_kev
    assert abs(int(np.argmax(extra)) - round(escape / 0.01)) <= 1
    assert np.argmin(extra) == pytest.approx(round(fe_ka / 0.01), abs=1)
    # a few per mille of Fe Ka (Reed & Ware), and the total is conserved
    fe_window = slice(round(fe_ka / 0.01) - 15, round(fe_ka / 0.01) + 16)
    share = extra[extra > 0].sum() / without[fe_window].sum()
    assert 0.001 < share < 0.01
    assert with_esc.sum() == pytest.approx(without.sum(), rel=1e-9)


def test_phase_spectrum_rejects_bad_energy():
    with pytest.raises(SimulationParameterError, match="energy_kev"):
        phase_spectrum(PHASES["quartz"], np.array([1.0, 0.5]))


# --- scene --------------------------------------------------------------------------------------


def test_phase_map_fractions_and_presence():
    fractions = [0.3, 0.24, 0.16, 0.12, 0.09, 0.04, 0.03, 0.02]
    label, abundance = phase_map((140, 256), fractions, seed=3)
    got = np.bincount(label.ravel(), minlength=8) / label.size
    np.testing.assert_allclose(got, fractions, atol=0.04)
    assert got[1] > 5 * got[7]  # very different area fractions, like a real sample
    assert set(np.unique(abundance)) == {0.0, 1.0}
    # tiny images still hold every phase
    for shape in [(4, 4), (2, 3), (16, 16)]:
        label, _ = phase_map(shape, [0.5, 0.3, 0.2], seed=0)
        assert set(np.unique(label)) == {0, 1, 2}


# --- the simulators -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sem_pair():
    return synthetic_sem((40, 56), counts_per_pixel=400.0, seed=5, **SMALL)


def test_schema_and_attrs(sem_pair):
    ds, truth = sem_pair
    validate_spectrum_image(ds, check_values=True)
    assert ds.counts.dims == ("y", "x", "energy")
    assert ds.counts.dtype == np.uint16
    assert ds.energy.attrs["units"] == "keV"
    assert ds.y.attrs["units"] == "um"
    assert ds.x.attrs["units"] == "um"
    assert float(ds.x[1] - ds.x[0]) == pytest.approx(0.1)
    assert ds.attrs["beam_energy_kev"] == 15.0
    assert ds.attrs["energy_resolution_mnka_ev"] == 130.0
    assert ds.attrs["elements"] == ["C", "O", "Na", "Al", "Si", "K", "Ca", "Ti", "Fe"]
    assert ds.attrs["xray_lines"] == [f"{el}_Ka" for el in ds.attrs["elements"]]
    assert ds.attrs["source"].startswith("sigma.datasets.synthetic_sem(seed=5, shape=(40, 56)")
    assert len(ds.attrs["history"]) == 1
    assert ds.bse.dims == ("y", "x")
    assert ds.bse.dtype == np.float32
    # truth
    assert list(truth.phase.values) == list(sd.SEM_DEMO_PHASES)
    assert truth.label.dims == ("y", "x")
    assert np.issubdtype(truth.label.dtype, np.integer)
    assert truth.abundance.dims == ("phase", "y", "x")
    assert truth.abundance.dtype == np.float32
    np.testing.assert_allclose(truth.abundance.sum("phase"), 1.0, atol=1e-6)
    assert truth.phase_spectrum.dims == ("phase", "energy")
    np.testing.assert_allclose(truth.phase_spectrum.sum("energy"), 1.0, atol=1e-12)
    comps = json.loads(truth.attrs["compositions"])
    assert comps["hematite"] == pytest.approx(PHASES["hematite"].composition)
    np.testing.assert_array_equal(truth.y, ds.y)


def test_bse_follows_mean_z(sem_pair):
    ds, truth = sem_pair
    bse = ds.bse.values
    label = truth.label.values
    mean_bse = [bse[label == p].mean() for p in range(truth.sizes["phase"])]
    z = [PHASES[str(n)].mean_z for n in truth.phase.values]
    assert np.argmax(mean_bse) == np.argmax(z)  # hematite is brightest
    assert np.argmin(mean_bse) == np.argmin(z)  # epoxy darkest


def test_line_positions_match_table(sem_pair):
    ds, _ = sem_pair
    total = ds.counts.sum(("y", "x")).values.astype(float)
    for name in ds.attrs["xray_lines"]:
        energy = get_line(name).energy_kev
        i0 = _channel(ds, energy)
        half = max(2, int(float(fwhm_kev(energy)) / 0.01 / 2))
        window = total[i0 - half : i0 + half + 1]
        peak = i0 - half + int(np.argmax(window))
        assert abs(peak - i0) <= 1, (name, peak, i0)
        # a real peak: clearly above the counts one FWHM further out
        assert total[peak] > 1.3 * min(total[i0 - 4 * half], total[i0 + 4 * half]), name


def test_sum_spectrum_matches_truth(sem_pair):
    ds, truth = sem_pair
    counts = ds.counts.values.reshape(-1, ds.sizes["energy"]).astype(float)
    label = truth.label.values.ravel()
    for p in (0, 1, 5):  # epoxy, quartz, hematite (pure pixels, blur=0)
        mean = counts[label == p].sum(axis=0)
        expected = truth.phase_spectrum.values[p] * mean.sum()
        cosine = mean @ expected / np.linalg.norm(mean) / np.linalg.norm(expected)
        assert cosine > 0.99


@pytest.mark.parametrize(
    ("level", "shape"), [(5.0, (64, 64)), (10.0, (64, 64)), (30.0, (40, 40)), (500.0, (16, 16))]
)
def test_mean_counts_per_pixel(level, shape):
    ds, truth = synthetic_sem(
        shape, counts_per_pixel=level, seed=1, n_channels=512, show_progress=False
    )
    mean = float(ds.counts.sum("energy").mean())
    assert mean == pytest.approx(level, rel=0.02)
    assert float(truth.expected_counts.mean()) == pytest.approx(level, rel=1e-5)


def test_high_counts_use_uint32_and_keep_the_mean():
    ds, _ = synthetic_sem((4, 4), counts_per_pixel=1e6, seed=0, n_channels=256, show_progress=False)
    assert ds.counts.dtype == np.uint32
    assert float(ds.counts.sum("energy").mean()) == pytest.approx(1e6, rel=0.002)


def test_same_seed_identical_other_seed_differs():
    a, ta = synthetic_sem((20, 24), seed=7, **SMALL)
    b, tb = synthetic_sem((20, 24), seed=7, **SMALL)
    c, tc = synthetic_sem((20, 24), seed=8, **SMALL)
    np.testing.assert_array_equal(a.counts.values, b.counts.values)
    np.testing.assert_array_equal(a.bse.values, b.bse.values)
    np.testing.assert_array_equal(ta.label.values, tb.label.values)
    assert not np.array_equal(a.counts.values, c.counts.values)
    assert not np.array_equal(ta.label.values, tc.label.values)


@pytest.mark.parametrize("n_phases", [2, 5, 8])
def test_truth_has_requested_number_of_phases(n_phases):
    names = list(sd.SEM_DEMO_PHASES)[:n_phases]
    ds, truth = synthetic_sem((24, 24), phases=names, seed=2, **SMALL)
    assert truth.sizes["phase"] == n_phases
    assert sorted(np.unique(truth.label.values)) == list(range(n_phases))


def test_blur_gives_fractional_boundaries():
    kw = {"phases": ["quartz", "hematite", "albite"], "seed": 4, **SMALL}
    _, sharp = synthetic_sem((48, 48), blur=0.0, **kw)
    _, soft = synthetic_sem((48, 48), blur=1.5, **kw)
    assert set(np.unique(sharp.abundance.values)) == {0.0, 1.0}
    ab = soft.abundance.values
    np.testing.assert_allclose(ab.sum(axis=0), 1.0, atol=1e-5)
    mixed = ab.max(axis=0) < 0.999
    assert mixed.mean() > 0.05
    # mixed pixels lie near the sharp map's boundaries; pure pixels far from them stay pure
    label = sharp.label.values
    boundary = np.zeros_like(label, dtype=bool)
    boundary[:-1] |= label[:-1] != label[1:]
    boundary[1:] |= label[:-1] != label[1:]
    boundary[:, :-1] |= label[:, :-1] != label[:, 1:]
    boundary[:, 1:] |= label[:, :-1] != label[:, 1:]
    distance = ndimage.distance_transform_edt(~boundary)
    assert distance[mixed].max() <= 4 * 1.5 + 1
    assert np.all(ab.max(axis=0)[distance > 4 * 1.5 + 1] > 0.999)
    np.testing.assert_array_equal(soft.label.values, ab.argmax(axis=0))


def test_chunked_is_lazy_deterministic_and_matches_eager():
    kw = {"counts_per_pixel": 200.0, "seed": 11, **SMALL}
    eager, _ = synthetic_sem((48, 40), **kw)
    lazy, truth = synthetic_sem((48, 40), chunks=(16, 16), **kw)
    assert isinstance(lazy.counts.data, da.Array)
    assert lazy.counts.data.chunks[:2] == ((16, 16, 16), (16, 16, 8))
    assert lazy.counts.data.chunks[2] == (1024,)
    validate_spectrum_image(lazy)  # structure only: does not compute
    first = lazy.counts.data.compute()
    again, _ = synthetic_sem((48, 40), chunks=(16, 16), **kw)
    np.testing.assert_array_equal(first, again.counts.data.compute())
    assert first.dtype == eager.counts.dtype
    assert first.sum(axis=2).mean() == pytest.approx(200.0, rel=0.02)
    # same statistics as the eager cube: total counts and normalised sum spectrum
    e_spec = eager.counts.values.sum(axis=(0, 1)).astype(float)
    l_spec = first.sum(axis=(0, 1)).astype(float)
    assert l_spec.sum() == pytest.approx(e_spec.sum(), rel=0.02)
    cosine = e_spec @ l_spec / np.linalg.norm(e_spec) / np.linalg.norm(l_spec)
    assert cosine > 0.999
    # a single chunk computes on its own
    block = lazy.counts.data.blocks[1, 2].compute()
    np.testing.assert_array_equal(block, first[16:32, 32:40])


def test_tem_has_lines_beyond_15_kev():
    ds, truth = synthetic_tem((24, 24), counts_per_pixel=300.0, seed=0, show_progress=False)
    validate_spectrum_image(ds, check_values=True)
    assert ds.attrs["beam_energy_kev"] == 200.0
    assert float(ds.energy[-1]) > 40.0
    assert "haadf" in ds
    assert ds.x.attrs["units"] == "nm"
    high = [n for n in ds.attrs["xray_lines"] if get_line(n).energy_kev > 15.0]
    assert high == ["Pd_Ka"]
    total = ds.counts.sum(("y", "x")).values.astype(float)
    i0 = _channel(ds, get_line("Pd_Ka").energy_kev)
    assert abs(int(np.argmax(total[i0 - 15 : i0 + 16])) - 15) <= 1
    assert total[i0 - 1 : i0 + 2].sum() > 10 * total[i0 + 60 : i0 + 63].sum()


def test_synthetic_cube_is_tiny_fast_and_known():
    synthetic_cube()  # warm the spectrum cache
    start = time.perf_counter()
    ds, truth = synthetic_cube(n_phases=4, return_truth=True)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0  # a few ms unloaded; generous for a shared CI machine
    assert dict(ds.counts.sizes) == {"y": 16, "x": 16, "energy": 64}
    assert float(ds.energy[-1]) < 10.24
    assert sorted(np.unique(truth.label.values)) == [0, 1, 2, 3]
    validate_spectrum_image(ds, check_values=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"counts_per_pixel": 0}, "counts_per_pixel"),
        ({"counts_per_pixel": float("nan")}, "counts_per_pixel"),
        ({"n_channels": 1.5}, "n_channels"),
        ({"energy_scale_kev": -0.01}, "energy_scale_kev"),
        ({"blur": -1}, "blur"),
        ({"chunks": (0, 4)}, "chunks"),
        ({"seed": -1}, "seed"),
        ({"phases": ["quartz", "unobtainium"]}, "unobtainium"),
        ({"phases": ["quartz", "calcite"], "area_fractions": [1.0]}, "area_fractions"),
        ({"shape": (0, 5)}, "shape"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, match):
    kwargs = {"shape": (8, 8), "n_channels": 128, "show_progress": False, **kwargs}
    with pytest.raises(SimulationParameterError, match=match):
        synthetic_sem(**kwargs)


def test_synthetic_cube_rejects_bad_n_phases():
    with pytest.raises(
        SimulationParameterError, match=r"n_phases must be an int in the range \[1, 8\]"
    ):
        synthetic_cube(n_phases=9)


@pytest.mark.parametrize(
    "module",
    [
        "sigma.datasets",
        "sigma.datasets._simulate",
        "sigma.datasets._phases",
        "sigma.datasets._spectrum",
        "sigma.datasets._scene",
    ],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(
        importlib.import_module(module), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.slow
def test_demo_scene_full_size():
    start = time.perf_counter()
    ds, truth = sd.demo_scene(show_progress=False)
    elapsed = time.perf_counter() - start
    assert ds.counts.shape == (280, 512, 2048)
    assert ds.counts.dtype == np.uint16
    assert float(ds.counts.sum("energy").mean()) == pytest.approx(30.0, rel=0.01)
    assert truth.sizes["phase"] == 8
    assert len(np.unique(truth.label.values)) == 8
    assert elapsed < 30.0


def test_eager_equals_chunked_with_the_same_blocks():
    # small cubes are sampled eagerly as one block starting at (0, 0): same stream as one chunk
    kw = {"counts_per_pixel": 50.0, "seed": 3, **SMALL}
    eager, _ = synthetic_sem((20, 24), **kw)
    lazy, _ = synthetic_sem((20, 24), chunks=(20, 24), **kw)
    np.testing.assert_array_equal(eager.counts.values, lazy.counts.data.compute())


def test_lazy_graph_pickles_for_distributed():
    cloudpickle = pytest.importorskip("cloudpickle")
    ds, _ = synthetic_sem((12, 12), chunks=6, seed=2, n_channels=128, show_progress=False)
    clone = cloudpickle.loads(cloudpickle.dumps(ds.counts.data))
    np.testing.assert_array_equal(clone.compute(), ds.counts.data.compute())


def test_energy_offset_moves_zero_peak_not_lines():
    ds, truth = synthetic_sem(
        (8, 8), energy_offset_kev=-0.1, n_channels=512, seed=0, show_progress=False
    )
    spectrum = truth.phase_spectrum.sel(phase="quartz").values
    assert int(np.argmax(spectrum[:30])) == _channel(ds, 0.0) == 10
    si = _channel(ds, get_line("Si_Ka").energy_kev)
    assert abs(int(np.argmax(spectrum[100:])) + 100 - si) <= 1


@pytest.mark.parametrize("path", ["sparse", "bincount", "dense"])
def test_sampler_paths_follow_the_spectrum(path, monkeypatch):
    from sigma.datasets import _sampling

    rng = np.random.default_rng(0)
    spectra = rng.random((2, 64)) ** 3
    spectra[:, 40:] = 0.0  # empty channels must stay empty
    spectra /= spectra.sum(axis=1, keepdims=True)
    lam = np.zeros((30, 40, 2))
    lam[:15, :, 0] = 40.0
    lam[15:, :, 1] = 40.0
    if path == "dense":
        monkeypatch.setattr(_sampling, "_DENSE_FRACTION", 0.0)
    elif path == "sparse":
        monkeypatch.setattr(_sampling, "_MAX_BINS", 1 << 30)  # one big, sparse group
        lam *= 0.05
    counts = _sampling.ChannelSampler(spectra, np.uint16, seed=1).sample(lam, 0, 0)
    assert counts.sum() == pytest.approx(lam.sum(), rel=0.02)
    assert counts[..., 40:].sum() == 0
    for rows, p in ((slice(0, 15), 0), (slice(15, 30), 1)):
        observed = counts[rows].sum(axis=(0, 1)).astype(float)
        expected = spectra[p] * lam[rows, :, p].sum()
        strong = expected > 200
        np.testing.assert_allclose(observed[strong], expected[strong], rtol=0.25)
        chi2 = ((observed - expected) ** 2 / np.maximum(expected, 1))[:40].sum()
        assert chi2 < 40 * 2  # ~ n_channels for a correct sampler
