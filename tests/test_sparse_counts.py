"""Kept per-pixel counts (sigma.sparse_counts): round trip, budget, exact sums."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sigma import sparse_counts as sc
from sigma.exceptions import EmptySelectionError, SchemaError


def _cube(rng, shape=(6, 7, 50), lam=0.3, dask=False):
    data = rng.poisson(lam, size=shape).astype(np.uint16)
    da = xr.DataArray(data, dims=("y", "x", "energy"))
    return (da.chunk({"y": 2}) if dask else da), data


@pytest.mark.parametrize("dask", [False, True])
def test_pack_round_trips_the_cube(rng, dask):
    da, data = _cube(rng, dask=dask)
    packed = sc.pack_counts(da, rows_per_block=2)
    mat = sc.counts_matrix(packed)
    np.testing.assert_array_equal(mat.toarray(), data.reshape(42, 50))
    assert packed["counts_value"].attrs["units"] == "counts"
    assert packed["counts_channel"].dtype == np.uint16


def test_large_values_and_budget(rng):
    data = np.zeros((2, 2, 4), np.uint32)
    data[0, 0, 1] = 70_000
    packed = sc.pack_counts(xr.DataArray(data, dims=("y", "x", "energy")))
    assert packed["counts_value"].dtype == np.uint32
    assert int(packed["counts_value"].values[0]) == 70_000
    da, _ = _cube(rng, shape=(20, 20, 100), lam=2.0)
    assert sc.pack_counts(da, max_bytes=10_000) is None  # over the budget: not kept
    assert sc.pack_counts(da, max_bytes=None) is not None
    with pytest.raises(SchemaError, match="integers"):
        sc.pack_counts(da.astype(np.float32))


def test_selection_sums_and_cluster_sums_are_exact(rng):
    da, data = _cube(rng)
    packed = sc.pack_counts(da)
    flat = data.reshape(42, 50).astype(np.float64)
    sums = sc.SelectionSums(packed)
    mask = rng.random(42) < 0.4
    np.testing.assert_array_equal(sums.sum(mask), flat[mask].sum(0))
    with pytest.raises(EmptySelectionError):
        sums.sum(np.zeros(42, bool))
    label = rng.integers(-1, 3, size=42)
    got = sc.cluster_sums(packed, label, 3)
    for k in range(3):
        np.testing.assert_array_equal(got[k], flat[label == k].sum(0))
    # in blocks of a few pixels (a block without labelled pixels too), labels past k ignored
    label[:6] = -1
    got = sc.cluster_sums(packed, label, 2, block_cells=6)
    for k in range(2):
        np.testing.assert_array_equal(got[k], flat[label == k].sum(0))
    # only some pixels (what an edit moved), as indices or as a mask
    some = rng.random(42) < 0.5
    for pixels in (some, np.flatnonzero(some)):
        got = sc.cluster_sums(packed, label, 2, pixels=pixels, block_cells=6)
        for k in range(2):
            np.testing.assert_array_equal(got[k], flat[some & (label == k)].sum(0))
    with pytest.raises(ValueError, match="42 pixels"):
        sc.cluster_sums(packed, label[:10], 2)
    with pytest.raises(ValueError, match="42 values"):
        sc.cluster_sums(packed, label, 2, pixels=some[:10])


def test_results_keep_counts_and_save_them(tmp_path):
    from gui.demo import scene_results
    from sigma.results import SigmaResults

    ds = scene_results((12, 16), n_phases=3, n_channels=256, energy_scale_kev=0.04)
    assert sc.has_counts(ds)
    mat = sc.counts_matrix(ds)
    np.testing.assert_allclose(mat.sum(axis=1), ds["total_counts"].values.ravel())
    back = SigmaResults.load(SigmaResults(ds).save(tmp_path / "r.nc")).dataset
    assert (sc.counts_matrix(back) != mat).nnz == 0
    with pytest.raises(SchemaError, match="no per-pixel counts"):
        sc.counts_matrix(ds.drop_vars("counts_value"))


def test_cluster_sums_of_no_pixels_and_many_blocks_in_threads(rng):
    """An empty pixel list sums nothing; one pixel per block (many blocks, in threads) is exact."""
    da, data = _cube(rng)
    packed = sc.pack_counts(da)
    flat = data.reshape(42, 50).astype(np.float64)
    label = rng.integers(-1, 4, size=42)
    np.testing.assert_array_equal(sc.cluster_sums(packed, label, 4, pixels=[]), np.zeros((4, 50)))
    got = sc.cluster_sums(packed, label, 4, block_cells=4)  # 42 blocks of one pixel
    for k in range(4):
        np.testing.assert_array_equal(got[k], flat[label == k].sum(0))
