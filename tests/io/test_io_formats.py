"""sigma.io.load on small synthetic files (.hspy, Ripple .rpl, sigma .nc) and its errors."""

from __future__ import annotations

import copy

import dask.array as da
import numpy as np
import pytest
from rsciio.hspy import file_writer as write_hspy
from rsciio.ripple import file_writer as write_ripple

import sigma.io
from sigma._schema import energy_scale, make_spectrum_image
from sigma.exceptions import (
    CorruptFileError,
    MissingCalibrationError,
    NoSpectrumImageError,
    UnsupportedFormatError,
)
from sigma.io import load, save

NY, NX, NE = 5, 7, 20


def _signal(data, axes, metadata=None):
    """A RosettaSciIO signal dict as the HyperSpy writers expect it."""
    return {
        "data": data,
        "axes": axes,
        "metadata": metadata or {"General": {"title": "syn"}, "Signal": {"signal_type": "EDS_SEM"}},
        "original_metadata": {},
        "tmp_parameters": {},
        "attributes": {"_lazy": False},
        "models": {},
        "learning_results": {},
        "package_info": {"name": "sigma-tests", "version": "0"},
    }


def _axes(energy_units="keV"):
    return [
        {"name": "y", "size": NY, "scale": 0.5, "offset": 0.0, "units": "nm", "navigate": True},
        {"name": "x", "size": NX, "scale": 0.5, "offset": 0.0, "units": "nm", "navigate": True},
        {
            "name": "Energy",
            "size": NE,
            "scale": 0.01,
            "offset": -0.1,
            "units": energy_units,
            "navigate": False,
        },
    ]


@pytest.fixture
def cube():
    return np.random.default_rng(0).poisson(3.0, (NY, NX, NE)).astype(np.uint16)


METADATA = {
    "General": {"title": "syn"},
    "Signal": {"signal_type": "EDS_SEM"},
    "Acquisition_instrument": {
        "SEM": {"beam_energy": 15.0, "Detector": {"EDS": {"energy_resolution_MnKa": 125.0}}}
    },
    "Sample": {"elements": ["O", "Fe"], "xray_lines": ["Fe_Ka", "O_Ka"]},
}


@pytest.fixture
def hspy_file(tmp_path, cube):
    path = tmp_path / "syn.hspy"
    write_hspy(str(path), _signal(cube, _axes(), METADATA))
    return path


def test_hspy_cube_values_axes_and_metadata(hspy_file, cube):
    ds = load(hspy_file)
    np.testing.assert_array_equal(ds.counts.values, cube)
    assert ds.counts.dtype == np.uint16
    assert energy_scale(ds) == pytest.approx((0.01, -0.1))
    np.testing.assert_allclose(ds.x.values, 0.5 * np.arange(NX))
    assert ds.x.attrs["units"] == "nm"
    assert ds.attrs["beam_energy_kev"] == 15.0
    assert ds.attrs["energy_resolution_mnka_ev"] == 125.0  # from the file, not the default
    assert ds.attrs["elements"] == ["Fe", "O"]


def test_ripple_rpl_and_raw(tmp_path, cube):
    path = tmp_path / "syn.rpl"
    write_ripple(str(path), _signal(cube, _axes(), copy.deepcopy(METADATA)))
    for name in ("syn.rpl", "syn.raw"):  # the .raw data file resolves to its .rpl header
        ds = load(tmp_path / name)
        np.testing.assert_array_equal(ds.counts.values, cube)
        assert energy_scale(ds) == pytest.approx((0.01, -0.1))
    lazy = load(path, lazy=True)
    assert isinstance(lazy.counts.data, da.Array)


def test_energy_axis_in_ev_becomes_kev(tmp_path, cube):
    axes = _axes("eV")
    axes[2].update(scale=10.0, offset=-100.0)
    path = tmp_path / "ev.hspy"
    write_hspy(str(path), _signal(cube, axes))
    ds = load(path)
    assert energy_scale(ds) == pytest.approx((0.01, -0.1))
    assert ds.energy.attrs["units"] == "keV"


def test_format_override(tmp_path, hspy_file):
    renamed = tmp_path / "syn.dat"
    renamed.write_bytes(hspy_file.read_bytes())
    with pytest.raises(UnsupportedFormatError, match=r"'\.dat'.*\.bcf.*format="):
        load(renamed)
    assert load(renamed, format="hspy").counts.shape == (NY, NX, NE)
    with pytest.raises(UnsupportedFormatError, match="format='tiff'"):
        load(renamed, format="tiff")


def test_generic_options_for_formats_without_native_support(hspy_file, cube):
    ds = load(hspy_file, downsample=2, rebin_energy=4, cutoff_at_kv=0.05, lazy=True)
    assert isinstance(ds.counts.data, da.Array)
    # cutoff keeps channels <= 0.05 keV (16 of 20), then 4-channel bins, then 2x2 pixel blocks
    expected = cube[:4, :6, :16].reshape(2, 2, 3, 2, 4, 4).sum(axis=(1, 3, 5))
    np.testing.assert_array_equal(ds.counts.values, expected)
    assert np.issubdtype(ds.counts.dtype, np.integer)
    np.testing.assert_allclose(ds.energy.values, -0.1 + 0.01 * (np.arange(4) * 4 + 1.5))
    np.testing.assert_allclose(ds.y.values, [0.25, 1.25])  # block centres
    assert ds.energy.attrs["units"] == "keV"
    assert ds.y.attrs["units"] == "nm"
    hist = ds.attrs["history"][-1]
    assert "downsample=2" in hist
    assert "rebin_energy=4" in hist


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothere\.bcf.*does not exist"):
        load(tmp_path / "nothere.bcf")


def test_unknown_extension(tmp_path):
    path = tmp_path / "map.xyz"
    path.write_text("hello")
    with pytest.raises(UnsupportedFormatError, match=r"'\.xyz'.*Supported extensions.*\.bcf"):
        load(path)


def test_corrupt_files(tmp_path):
    bad = tmp_path / "broken.hspy"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(CorruptFileError, match=r"broken\.hspy.*could not parse") as info:
        load(bad)
    assert info.value.__cause__ is not None
    bad_nc = tmp_path / "broken.nc"
    bad_nc.write_bytes(b"\x89HDF garbage")
    with pytest.raises(CorruptFileError, match=r"broken\.nc"):
        load(bad_nc)


def test_file_with_only_an_image(tmp_path):
    image = np.ones((NY, NX), dtype=np.uint16)
    axes = [dict(a, navigate=False) for a in _axes()[:2]]
    path = tmp_path / "image.hspy"
    write_hspy(str(path), _signal(image, axes, {"General": {"title": "BSE"}, "Signal": {}}))
    with pytest.raises(NoSpectrumImageError, match=r"image\.hspy.*no spectrum image.*'BSE'"):
        load(path)


def test_missing_energy_calibration(tmp_path, cube):
    axes = _axes("<undefined>")
    axes[2].update(scale=1.0, offset=0.0)
    path = tmp_path / "nocal.hspy"
    write_hspy(str(path), _signal(cube, axes))
    with pytest.raises(MissingCalibrationError, match=r"nocal\.hspy.*no units.*energy_calibration"):
        load(path)
    ds = load(path, energy_calibration=(0.02, -0.2))
    assert energy_scale(ds) == pytest.approx((0.02, -0.2))
    assert "energy_calibration=(0.02, -0.2)" in ds.attrs["history"][-1]
    with pytest.raises(MissingCalibrationError, match="positive"):
        load(path, energy_calibration=(0.0, 0.0))


def test_bad_options(hspy_file):
    with pytest.raises(ValueError, match=r"downsample must be an int in the range \[1, inf\).*0"):
        load(hspy_file, downsample=0)
    with pytest.raises(ValueError, match="cutoff_at_kv"):
        load(hspy_file, cutoff_at_kv=-1)
    with pytest.raises(ValueError, match=r"downsample=9 is larger than the 'y' axis \(5\)"):
        load(hspy_file, downsample=9)
    with pytest.raises(TypeError, match=r"\['bogus'\].*'hspy' reader"):
        load(hspy_file, bogus=1)


def test_load_own_netcdf_appends_history(tmp_path, cube):
    ds = make_spectrum_image(cube, energy_scale_kev=0.01, attrs={"history": ["made"]})
    path = save(ds, tmp_path / "cube.nc")
    back = load(path)
    np.testing.assert_array_equal(back.counts.values, cube)
    assert back.attrs["history"][0] == "made"
    assert "load" in back.attrs["history"][1]
    assert ds.attrs["history"] == ["made"]  # the input is not modified
    lazy = load(path, lazy=True, downsample=2)
    assert isinstance(lazy.counts.data, da.Array)
    assert lazy.counts.shape == (2, 3, NE)


def test_readers_table_covers_the_issue_formats():
    for ext in (
        ".bcf",
        ".emd",
        ".spd",
        ".pts",
        ".rpl",
        ".raw",
        ".msa",
        ".hspy",
        ".zspy",
        ".nc",
        ".zarr",
    ):
        assert ext in sigma.io.READERS
    assert set(sigma.io.SUPPORTED_EXTENSIONS) == set(sigma.io.READERS)
    assert copy.copy(sigma.io.READERS[".bcf"]).name == "bruker"


def test_cutoff_below_the_energy_axis(tmp_path, cube):
    axes = _axes()
    axes[2]["offset"] = 1.0
    path = tmp_path / "high.hspy"
    write_hspy(str(path), _signal(cube, axes))
    with pytest.raises(ValueError, match=r"cutoff_at_kv=0.5 keeps 0 channel.*starts at 1.0000 keV"):
        load(path, cutoff_at_kv=0.5)
