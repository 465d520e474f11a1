"""sigma.io.load on HyperSpy's real reader test files (fetched from PyPI; skipped offline)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from realdata import REAL_SPECTRUM_IMAGES, hyperspy_test_file

from sigma._schema import energy_scale, validate_spectrum_image
from sigma.exceptions import CorruptFileError, NoSpectrumImageError, SignalSelectionError
from sigma.io import load

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def emd_summed(emd_4detectors):
    return load(emd_4detectors)


def _raw_signal(path, plugin):
    """The spectrum-image dict RosettaSciIO itself returns (the reference for the test)."""
    import importlib

    reader = importlib.import_module(f"rsciio.{plugin}").file_reader
    objs = reader(str(path))
    return next(o for o in objs if np.ndim(o["data"]) == 3)


@pytest.mark.parametrize(("relpath", "shape"), list(REAL_SPECTRUM_IMAGES.items()))
def test_real_file_shape_calibration_and_contract(relpath, shape):
    path = hyperspy_test_file(relpath)
    ds = load(path)
    validate_spectrum_image(ds, check_values=True)
    assert ds.counts.shape == shape
    assert ds.counts.dims == ("y", "x", "energy")
    assert np.issubdtype(ds.counts.dtype, np.integer)  # counts stay integer, as read
    raw = _raw_signal(path, "emd" if path.suffix == ".emd" else "bruker")
    assert ds.counts.dtype == raw["data"].dtype
    np.testing.assert_array_equal(ds.counts.values, raw["data"])
    e_axis = raw["axes"][-1]
    scale, offset = energy_scale(ds)
    assert scale == pytest.approx(e_axis["scale"], rel=1e-9)
    assert offset == pytest.approx(e_axis["offset"], rel=1e-9)
    assert ds.energy.attrs["units"] == "keV"
    y_axis = raw["axes"][0]
    assert float(ds.y[1] - ds.y[0]) == pytest.approx(y_axis["scale"])
    assert ds.y.attrs["units"] in ("um", "nm")
    assert ds.attrs["source"] == str(path.resolve())
    assert len(ds.attrs["history"]) == 1
    assert "load" in ds.attrs["history"][0]
    assert path.name in ds.attrs["history"][0]
    assert ds.attrs["energy_resolution_mnka_ev"] == 130.0


def test_bcf_elements_and_lines(bcf_50x50):
    ds = load(bcf_50x50)
    assert ds.attrs["elements"] == ["Ag", "Al", "C", "Cu", "O"]
    assert ds.attrs["xray_lines"] == ["Ag_La", "Al_Ka", "C_Ka", "Cu_Ka", "O_Ka"]
    assert ds.attrs["beam_energy_kev"] == 20.0
    # ~380 counts per pixel (DATA.md)
    assert float(ds.counts.sum("energy").mean()) == pytest.approx(380, rel=0.01)


def test_p45_has_bse_and_se_images_and_no_lines(bcf_p45):
    ds = load(bcf_p45)
    assert {"bse", "se"} <= set(ds.data_vars)
    for name in ("bse", "se"):
        assert ds[name].dims == ("y", "x")
        assert ds[name].shape == (75, 100)
        assert ds[name].attrs["title"] == name.upper()
    assert float(ds.bse.std()) > 0  # a real image, not a placeholder
    assert ds.attrs["elements"] == []
    assert ds.attrs["xray_lines"] == []


def test_tem_bcf_beam_energy_and_haadf(bcf_tem):
    ds = load(bcf_tem)
    assert ds.attrs["beam_energy_kev"] == 200.0
    assert ds.attrs["instrument"] == "TEM"
    assert ds.attrs["elements"] == ["Cu", "O", "Pd", "Ti"]
    assert "haadf" in ds.data_vars
    assert ds.haadf.shape == (64, 64)


def test_emd_detectors_summed_equal_sum_of_detectors(emd_4detectors, emd_summed):
    summed = emd_summed
    assert summed.attrs["beam_energy_kev"] == 200.0  # from the Velox AccelerationVoltage
    assert "haadf" in summed.data_vars
    with pytest.raises(SignalSelectionError, match="4 spectrum images.*select_signal"):
        load(emd_4detectors, sum_eds_detectors=False)
    parts = [load(emd_4detectors, sum_eds_detectors=False, select_signal=i) for i in range(4)]
    stacked = np.stack([p.counts.values.astype(np.int64) for p in parts])
    assert all(p.counts.shape == (16, 16, 4096) for p in parts)
    assert all(p.counts.values.sum() > 0 for p in parts)
    np.testing.assert_array_equal(stacked.sum(axis=0), summed.counts.values)
    with pytest.raises(SignalSelectionError, match="select_signal=7"):
        load(emd_4detectors, sum_eds_detectors=False, select_signal=7)


def test_emd_rebin_energy_and_frames(emd_4detectors, emd_summed):
    full = emd_summed
    rebinned = load(emd_4detectors, rebin_energy=4)
    assert rebinned.sizes["energy"] == 1024
    assert energy_scale(rebinned)[0] == pytest.approx(4 * energy_scale(full)[0])
    assert int(rebinned.counts.sum()) == int(full.counts.sum())
    first = load(emd_4detectors, first_frame=0, last_frame=1)
    second = load(emd_4detectors, first_frame=1, last_frame=2)
    np.testing.assert_array_equal(
        first.counts.values.astype(np.int64) + second.counts.values, full.counts.values
    )
    assert "first_frame=0" in first.attrs["history"][0]
    with pytest.raises(NoSpectrumImageError, match=r"4 axes \['Time'.*first_frame=i"):
        load(emd_4detectors, sum_frames=False)
    one = load(emd_4detectors, sum_frames=False, first_frame=1, last_frame=2)
    np.testing.assert_array_equal(one.counts.values, second.counts.values)


@pytest.mark.parametrize(
    "fixture",
    # RosettaSciIO's lazy Velox reader takes ~10 s to open even this 16x16 file
    ["bcf_p45", pytest.param("emd_4detectors", marks=pytest.mark.slow)],
)
def test_lazy_is_dask_and_equals_eager(fixture, request):
    path = request.getfixturevalue(fixture)
    lazy = load(path, lazy=True)
    assert isinstance(lazy.counts.data, da.Array)
    eager = load(path)
    assert isinstance(eager.counts.data, np.ndarray)
    assert lazy.counts.dtype == eager.counts.dtype
    xr.testing.assert_equal(lazy.load().drop_attrs(), eager.drop_attrs())


def test_bcf_downsample_and_cutoff(bcf_p45):
    full = load(bcf_p45)
    small = load(bcf_p45, downsample=2, cutoff_at_kv=5.0, lazy=True)
    assert small.counts.shape[:2] == (38, 50)  # ceil(75 / 2), 100 / 2: rsciio keeps edge blocks
    assert float(small.energy.max()) <= 5.0
    assert float(small.energy.max()) > 5.0 - 2 * energy_scale(full)[0]
    assert small.bse.shape == (38, 50)  # navigation images follow the downsampling
    assert small.bse.values[0, 0] == pytest.approx(full.bse.values[:2, :2].mean())
    assert float(small.y[1] - small.y[0]) == pytest.approx(2 * float(full.y[1] - full.y[0]))
    below = full.counts.isel(energy=slice(0, small.sizes["energy"]))
    np.testing.assert_array_equal(small.energy.values, below.energy.values)
    assert int(small.counts.sum()) == int(below.sum())
    assert "downsample=2" in small.attrs["history"][0]


def test_corrupt_bcf(bcf_nope):
    with pytest.raises(CorruptFileError, match=r"Nope\.bcf.*could not parse") as info:
        load(bcf_nope)
    assert info.value.__cause__ is not None  # chained from the reader's error


def test_msa_single_spectrum_is_one_pixel_map(msa_example1):
    ds = load(msa_example1)
    assert ds.counts.dims == ("y", "x", "energy")
    assert ds.counts.shape == (1, 1, 21)
    # the file's axis is in eV (offset 520.13 eV, 3.1 eV/channel): converted to keV
    assert float(ds.energy[0]) == pytest.approx(0.52013)
    assert energy_scale(ds)[0] == pytest.approx(0.0031)
    assert ds.attrs["beam_energy_kev"] == 120.0
    lazy = load(msa_example1, lazy=True)  # msa cannot read lazily: read, then wrap in dask
    assert isinstance(lazy.counts.data, da.Array)
    np.testing.assert_array_equal(lazy.counts.values, ds.counts.values)


def test_exspy_reference_spectrum(eds_sem_tm002):
    ds = load(eds_sem_tm002)
    assert ds.counts.shape[:2] == (1, 1)
    assert ds.attrs["beam_energy_kev"] == 10.0
    assert ds.attrs["elements"] == ["Al", "C", "Cu", "Mn", "Zr"]
    assert ds.attrs["energy_resolution_mnka_ev"] == 130.0


def test_real_file_without_spectrum_image():
    path = hyperspy_test_file("emd_files/example_image.emd")
    with pytest.raises(
        NoSpectrumImageError, match=r"example_image\.emd.*no spectrum image.*\(3, 3\)"
    ):
        load(path)


def test_over_16_bit_counts_stay_uint32():
    ds = load(hyperspy_test_file("bruker_data/over16bit.bcf"))
    assert ds.counts.shape == (3, 4, 4096)
    assert ds.counts.dtype == np.uint32
    assert int(ds.counts.max()) > np.iinfo(np.uint16).max


def test_bruker_spx_single_spectrum():
    ds = load(hyperspy_test_file("bruker_data/bruker_nano.spx"))
    assert ds.counts.shape == (1, 1, 4096)
    assert ds.attrs["elements"] == ["Cu", "Fe", "S"]
    assert ds.attrs["beam_energy_kev"] == 15.0
