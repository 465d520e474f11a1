"""sigma.io.save / open_dataset: exact round trips to NetCDF and Zarr, no overwrite by accident."""

from __future__ import annotations

import json
import warnings

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from sigma._schema import make_spectrum_image
from sigma.exceptions import CorruptFileError, UnsupportedFormatError
from sigma.io import open_dataset, save

FORMATS = ["nc", "zarr"]


def _assert_same_attrs(a: dict, b: dict) -> None:
    """Attrs equal *and* of the same Python type (lists stay lists, dicts stay dicts)."""
    assert set(a) == set(b)
    for key, value in a.items():
        other = b[key]
        if isinstance(value, float) and np.isnan(value):
            assert isinstance(other, float)
            assert np.isnan(other)
            continue
        assert type(other) is type(value), (key, value, other)
        assert other == value, key


def _assert_exact(original: xr.Dataset, back: xr.Dataset) -> None:
    xr.testing.assert_identical(back, original)
    _assert_same_attrs(original.attrs, back.attrs)
    for name, var in original.variables.items():
        _assert_same_attrs(var.attrs, back[name].attrs)
        assert back[name].dtype.kind == var.dtype.kind, name
        if var.dtype.kind != "U":
            assert back[name].dtype == var.dtype, name


@pytest.fixture
def spectrum_image(rng):
    counts = rng.poisson(2.0, (6, 5, 40)).astype(np.uint16)
    return make_spectrum_image(
        counts,
        energy_scale_kev=0.01,
        energy_offset_kev=-0.2,
        pixel_size=(0.25, 0.25),
        pixel_units="um",
        attrs={
            "beam_energy_kev": 20.0,
            "elements": ["Fe"],  # one element: NetCDF would make it a str
            "xray_lines": [],  # empty: NetCDF would make it a float array
            "source": "synthetic",
            "history": ["2026-01-01T00:00:00Z made", "2026-01-01T00:00:01Z load x"],
        },
        nav_images={"bse": rng.random((6, 5)).astype(np.float32)},
    )


@pytest.fixture
def results_like(rng):
    """A dataset shaped like results.nc: str coords and vars, NaN, int16 labels, dict attrs."""
    ny, nx, k = 4, 3, 3
    prob = rng.random((ny, nx, k)).astype(np.float32)
    prob[0, 0, 0] = np.nan
    return xr.Dataset(
        {
            "features": (("y", "x", "feature"), rng.random((ny, nx, 2)).astype(np.float32)),
            "label": (("y", "x"), rng.integers(-1, k, (ny, nx)).astype(np.int16)),
            "probability": (("y", "x", "cluster"), prob),
            "cluster_name": ("cluster", np.array(["phase 0", "Fe-rich", "ü oxide"])),
            "cluster_color": ("cluster", np.array(["#ff0000", "#00ff00", "#0000ff"])),
            "gmm_covariance": (("cluster", "latent", "latent_b"), rng.random((k, 2, 2))),
            "n_pixels": ("cluster", np.array([5, 4, 3], dtype=np.int64)),
        },
        coords={
            "y": ("y", np.arange(ny, dtype=float), {"units": "nm"}),
            "x": ("x", np.arange(nx, dtype=float), {"units": "nm"}),
            "feature": ("feature", np.array(["Fe_Ka", "O_Ka"])),
            "cluster": np.arange(k),
            "latent": np.arange(2),
        },
        attrs={
            "elements": ["Fe", "O"],
            "xray_lines": ["Fe_Ka"],
            "history": [],
            "preprocessing": json.dumps([{"step": "bin", "factor": 2}]),
            "clustering": {"method": "gmm", "k": 3, "criterion": "bic", "scores": [1.5, 2.5]},
            "flag": True,
            "nothing": None,
            "count": 7,
            "ratio": 0.5,
            "missing": float("nan"),
            "sigma_results_version": 1,
        },
    )


@pytest.mark.parametrize("ext", FORMATS)
def test_spectrum_image_round_trip(tmp_path, spectrum_image, ext):
    path = save(spectrum_image, tmp_path / f"cube.{ext}")
    back = open_dataset(path)
    _assert_exact(spectrum_image, back)
    assert isinstance(back.counts.data, np.ndarray)


@pytest.mark.parametrize("ext", FORMATS)
def test_results_like_round_trip(tmp_path, results_like, ext):
    before = results_like.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no zarr/xarray warning leaks (consolidated, str dtype)
        path = save(results_like, tmp_path / f"results.{ext}")
        back = open_dataset(path)
    _assert_exact(results_like, back)
    xr.testing.assert_identical(results_like, before)  # the input is not modified
    _assert_same_attrs(before.attrs, results_like.attrs)
    assert back.attrs["clustering"] == {
        "method": "gmm",
        "k": 3,
        "criterion": "bic",
        "scores": [1.5, 2.5],
    }


@pytest.mark.parametrize("ext", FORMATS)
def test_dask_backed_cube_is_written_chunk_by_chunk(tmp_path, spectrum_image, ext):
    lazy = spectrum_image.chunk({"y": 2, "x": 5, "energy": -1})
    computed_blocks: list[tuple[int, ...]] = []

    def record(block):
        computed_blocks.append(block.shape)
        return block

    lazy["counts"] = lazy.counts.copy(data=lazy.counts.data.map_blocks(record, dtype=np.uint16))
    path = save(lazy, tmp_path / f"lazy.{ext}")
    assert isinstance(lazy.counts.data, da.Array)  # save did not load the input
    # every block went to the file on its own; none was the whole (6, 5, 40) cube
    assert computed_blocks
    assert all(shape[0] <= 2 for shape in computed_blocks)
    back = open_dataset(path, lazy=True)
    assert isinstance(back.counts.data, da.Array)
    with dask.config.set(scheduler="synchronous"):
        _assert_exact(spectrum_image, back.load())
    if ext == "zarr":
        assert back.counts.encoding["chunks"] == (2, 5, 40)


def test_zarr_irregular_dask_chunks_are_fixed(tmp_path, spectrum_image):
    lazy = spectrum_image.chunk({"y": (1, 3, 2), "energy": -1})
    back = open_dataset(save(lazy, tmp_path / "irregular.zarr"))
    _assert_exact(spectrum_image, back)


@pytest.mark.parametrize("ext", FORMATS)
def test_never_overwrites_unless_asked(tmp_path, spectrum_image, ext):
    path = tmp_path / f"cube.{ext}"
    save(spectrum_image, path)
    other = spectrum_image.assign(counts=spectrum_image.counts + 1)
    with pytest.raises(FileExistsError, match=r"already exists.*overwrite=True"):
        save(other, path)
    _assert_exact(spectrum_image, open_dataset(path))  # untouched
    save(other, path, overwrite=True)
    _assert_exact(other, open_dataset(path))


def test_save_errors(tmp_path, spectrum_image):
    with pytest.raises(UnsupportedFormatError, match=r"'\.pkl'.*\.nc.*\.zarr"):
        save(spectrum_image, tmp_path / "cube.pkl")
    with pytest.raises(TypeError, match="DataArray"):
        save(spectrum_image.counts, tmp_path / "cube.nc")
    with pytest.raises(TypeError, match="'bad'.*cannot be written"):
        save(spectrum_image.assign_attrs(bad={"x": object()}), tmp_path / "bad.nc")
    with pytest.raises(FileNotFoundError, match=r"missing\.nc"):
        open_dataset(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_bytes(b"junk")
    with pytest.raises(CorruptFileError, match=r"junk\.nc"):
        open_dataset(tmp_path / "junk.nc")


@pytest.mark.parametrize("ext", FORMATS)
def test_refuses_to_overwrite_the_file_a_lazy_dataset_reads_from(tmp_path, spectrum_image, ext):
    path = save(spectrum_image, tmp_path / f"cube.{ext}")
    lazy = open_dataset(path, lazy=True)
    with pytest.raises(ValueError, match=r"opened lazily from that same file.*ds\.load\(\)"):
        save(lazy, path, overwrite=True)
    _assert_exact(spectrum_image, open_dataset(path))  # still intact
    save(lazy.load(), path, overwrite=True)  # in memory: fine
    _assert_exact(spectrum_image, open_dataset(path))
