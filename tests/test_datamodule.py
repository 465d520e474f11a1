"""SpectralDataModule: sources, split, batch order, seeding and DDP sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from synthetic import make_features

import sigma.datamodule as dmod
from sigma.datamodule import PixelBatches, SpectralDataModule, features_to_array, open_features
from sigma.exceptions import ConfigurationError, SchemaError


def test_split_is_disjoint_complete_and_seeded() -> None:
    ds = make_features()
    dm = SpectralDataModule.from_dataset(ds, val_fraction=0.25, seed=3)
    dm.setup("fit")
    n = 12 * 10
    assert dm.n_features == 5
    assert dm.n_pixels == n
    assert len(dm.val_indices) == 30
    assert len(dm.train_indices) == 90
    assert np.intersect1d(dm.train_indices, dm.val_indices).size == 0
    np.testing.assert_array_equal(np.union1d(dm.train_indices, dm.val_indices), np.arange(n))
    again = SpectralDataModule.from_dataset(ds, val_fraction=0.25, seed=3)
    again.setup("fit")
    np.testing.assert_array_equal(again.val_indices, dm.val_indices)
    other = SpectralDataModule.from_dataset(ds, val_fraction=0.25, seed=4)
    other.setup("fit")
    assert not np.array_equal(other.val_indices, dm.val_indices)


def test_train_batches_cover_each_pixel_once_and_reshuffle() -> None:
    ds = make_features()
    flat = ds.features.values.reshape(-1, 5)
    dm = SpectralDataModule.from_dataset(ds, batch_size=16, val_fraction=0.2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == int(np.ceil(96 / 16))
    epochs = []
    for _ in range(2):
        batches = [b[0] for b in loader]
        assert all(b.dtype == torch.float32 and b.shape[1] == 5 for b in batches)
        assert max(b.shape[0] for b in batches) == 16
        stacked = torch.cat(batches).numpy()
        assert stacked.shape == (96, 5)
        # each training pixel exactly once (rows are unique in this data)
        expected = flat[dm.train_indices]
        np.testing.assert_array_equal(np.sort(stacked, axis=0), np.sort(expected, axis=0))
        epochs.append(stacked)
    assert not np.array_equal(epochs[0], epochs[1]), "the order should change between epochs"


def test_predict_batches_are_all_pixels_in_row_major_order() -> None:
    ds = make_features(ny=7, nx=9)
    dm = SpectralDataModule.from_dataset(ds, batch_size=10)
    dm.setup("predict")
    xs, idx = zip(*list(dm.predict_dataloader()), strict=True)
    np.testing.assert_array_equal(torch.cat(idx).numpy(), np.arange(63))
    np.testing.assert_array_equal(torch.cat(xs).numpy(), ds.features.values.reshape(63, 5))
    vals = torch.cat([b[0] for b in dm.val_dataloader()]).numpy()
    np.testing.assert_array_equal(vals, ds.features.values.reshape(63, 5)[dm.val_indices])


def test_from_dataset_does_not_modify_input() -> None:
    ds = make_features()
    before = ds.copy(deep=True)
    dm = SpectralDataModule.from_dataset(ds)
    dm.setup("fit")
    dm._tensor()[:] = 0  # even writing to the module's tensor leaves the user's data alone
    xr.testing.assert_identical(ds, before)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_features_path_netcdf_and_zarr(tmp_path, suffix: str) -> None:
    ds = make_features()
    path = tmp_path / f"features{suffix}"
    if suffix == ".zarr":
        ds.to_zarr(path, consolidated=False)
    else:
        ds.to_netcdf(path, engine="h5netcdf")
    dm = SpectralDataModule(features_path=str(path), batch_size=32)
    assert dm.n_features == 5
    dm.setup("fit")
    np.testing.assert_allclose(dm._tensor().numpy(), ds.features.values.reshape(-1, 5))
    assert open_features(path)["y"].attrs["units"] == "um"


def test_bad_sources_and_values_are_rejected(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="has no data"):
        _ = SpectralDataModule().n_features
    with pytest.raises(ConfigurationError, match="either features_path or data_path"):
        SpectralDataModule(features_path="a.nc", data_path="b.bcf")
    with pytest.raises(ConfigurationError, match=r"batch_size .* Got 0"):
        SpectralDataModule(batch_size=0)
    with pytest.raises(ConfigurationError, match=r"val_fraction .* Got 1.0"):
        SpectralDataModule(val_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        _ = SpectralDataModule(features_path=str(tmp_path / "missing.nc")).n_features
    bad = make_features()
    bad["features"][0, 0, 0] = np.nan
    with pytest.raises(SchemaError, match="1 values are NaN"):
        features_to_array(bad)
    with pytest.raises(SchemaError, match="features"):
        SpectralDataModule.from_dataset(bad.rename(features="counts"))


def test_ddp_ranks_share_the_pixels_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.arange(23, dtype=torch.float32)[:, None]
    seen = []
    lengths = []
    for rank in range(2):
        monkeypatch.setattr(dmod, "_dist_rank_world", lambda r=rank: (r, 2))
        ds = PixelBatches(x, np.arange(23), batch_size=5, shuffle=True, seed=1)
        batches = [b[0] for b in ds]
        lengths.append(len(batches))
        assert len(ds) == len(batches)
        seen.append(torch.cat(batches)[:, 0].numpy().astype(int))
    assert lengths[0] == lengths[1]
    assert seen[0].size == seen[1].size == 12  # 23 padded to 24
    assert set(np.concatenate(seen)) == set(range(23))
    # prediction is not padded: every pixel exactly once over the ranks
    parts = []
    for rank in range(2):
        monkeypatch.setattr(dmod, "_dist_rank_world", lambda r=rank: (r, 2))
        pred = PixelBatches(x, np.arange(23), batch_size=5, shuffle=False, with_index=True)
        parts.append(torch.cat([b[1] for b in pred]).numpy())
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(23))
