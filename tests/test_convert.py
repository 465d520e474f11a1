"""``sigma convert``: lazily read, write chunked Zarr that round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sigma.cli import main
from sigma.io import load, open_dataset


@pytest.fixture
def cube_nc(scene, scene_file):
    """The shared scene (conftest: 32 x 48 px x 1024 channels, a BSE image) and its NetCDF file."""
    return scene[0], scene_file


def test_convert_writes_chunked_zarr_that_round_trips(tmp_path, cube_nc, capsys):
    ds, src = cube_nc
    out = tmp_path / "cube.zarr"
    assert main(["convert", str(src), str(out), "--chunks", "8", "16", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    back = open_dataset(out, lazy=True)
    assert back.counts.encoding["chunks"] == (8, 16, 1024)  # energy axis whole
    assert back.counts.chunks == ((8, 8, 8, 8), (16, 16, 16), (1024,))
    assert back.bse.encoding["chunks"] == (8, 16)
    eager = back.load()
    xr.testing.assert_identical(eager.drop_attrs(), ds.drop_attrs())
    assert eager.attrs["elements"] == ds.attrs["elements"]
    assert eager.counts.dtype == np.uint16
    assert "convert" in eager.attrs["history"][-1]
    assert "load" in eager.attrs["history"][-2]
    # and sigma.io.load reads it back as a spectrum image
    assert load(out).counts.shape == (32, 48, 1024)


def test_convert_refuses_to_overwrite(tmp_path, cube_nc, capsys):
    _, src = cube_nc
    out = tmp_path / "cube.zarr"
    assert main(["convert", str(src), str(out), "--no-progress"]) == 0
    assert main(["convert", str(src), str(out), "--no-progress", "--downsample", "2"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert open_dataset(out).counts.shape == (32, 48, 1024)
    assert (
        main(["convert", str(src), str(out), "--no-progress", "--downsample", "2", "--overwrite"])
        == 0
    )
    assert open_dataset(out).counts.shape == (16, 24, 1024)


def test_convert_reader_options(tmp_path, cube_nc):
    ds, src = cube_nc
    out = tmp_path / "small.zarr"
    args = [
        "convert",
        str(src),
        str(out),
        "--rebin-energy",
        "4",
        "--cutoff-at-kv",
        "0.315",
        "--no-progress",
    ]
    assert main(args) == 0
    back = open_dataset(out)
    assert back.sizes["energy"] == 8  # 32 channels <= 0.315 keV, in groups of 4
    np.testing.assert_array_equal(
        back.counts.values, ds.counts.values[:, :, :32].reshape(32, 48, 8, 4).sum(axis=-1)
    )


def test_convert_errors(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.bcf"), str(tmp_path / "o.zarr")]) == 1
    assert "nope.bcf" in capsys.readouterr().err


@pytest.mark.network
def test_convert_real_bcf(tmp_path, bcf_p45):
    out = tmp_path / "p45.zarr"
    assert main(["convert", str(bcf_p45), str(out), "--chunks", "32", "32", "--no-progress"]) == 0
    back = open_dataset(out, lazy=True)
    assert back.counts.encoding["chunks"] == (32, 32, 2048)
    original = load(bcf_p45)
    np.testing.assert_array_equal(back.counts.values, original.counts.values)
    np.testing.assert_array_equal(back.bse.values, original.bse.values)
    assert back.attrs["source"] == original.attrs["source"]
