"""Feed per-pixel spectral features to the autoencoder: a LightningDataModule.

The whole feature table (pixels x features, float32) is held as one tensor. Batches are cut from
it by index (training: a seeded permutation per epoch; validation and prediction: in order), so
there is no per-sample Python work, and no lazy xarray or h5py object ever reaches a DataLoader
worker (they cannot be pickled, see STACK.md pitfall 3).

Examples
--------
>>> import numpy as np, xarray as xr
>>> rng = np.random.default_rng(0)
>>> f = rng.random((8, 10, 3)).astype(np.float32)
>>> ds = xr.Dataset({"features": (("y", "x", "feature"), f)},
...                 coords={"feature": ["Fe_Ka", "Si_Ka", "O_Ka"]})
>>> dm = SpectralDataModule.from_dataset(ds, batch_size=16, val_fraction=0.25)
>>> dm.n_features
3
>>> dm.setup("fit")
>>> len(dm.train_indices), len(dm.val_indices)
(60, 20)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import numpy.typing as npt
import torch
import xarray as xr
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sigma._checks import check_int
from sigma._schema import DIM_FEATURE, DIM_X, DIM_Y, FEATURES, validate_features
from sigma.exceptions import ConfigurationError, SchemaError

__all__ = ["SpectralDataModule", "PixelBatches", "open_features", "features_to_array"]

logger = logging.getLogger(__name__)

DEMO = "demo"


def _dist_rank_world() -> tuple[int, int]:
    """Return ``(rank, world_size)`` of the running torch.distributed group, or ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class PixelBatches(IterableDataset):  # type: ignore[type-arg]
    """Batches of pixels cut from one in-memory tensor, ready for ``DataLoader(batch_size=None)``.

    Parameters
    ----------
    features : torch.Tensor
        ``(n_pixels, n_features)`` float32, all pixels of the image (not copied).
    indices : numpy.ndarray
        Pixel indices (into ``features``) this dataset serves, e.g. the training split.
    batch_size : int
        Pixels per batch (per process).
    shuffle : bool
        Draw a new seeded permutation of ``indices`` every epoch (``seed`` and the epoch number
        decide it, so every DDP rank draws the same one and takes its own share).
    seed : int
        Seed of the per-epoch permutations.
    with_index : bool
        Yield ``(x, pixel_index)`` instead of ``(x,)`` (used for prediction).

    Notes
    -----
    Under ``torch.distributed`` each rank takes every ``world_size``-th pixel of the (padded)
    order, so all ranks see the same number of batches, as DDP needs; the padding repeats at most
    ``world_size - 1`` pixels, like :class:`torch.utils.data.DistributedSampler`. Prediction
    (``with_index=True``) is not padded. With ``num_workers > 0`` each worker yields every
    ``num_workers``-th batch.
    """

    def __init__(
        self,
        features: torch.Tensor,
        indices: npt.NDArray[np.int64],
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        with_index: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.with_index = with_index
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch number that seeds the next permutation."""
        self.epoch = int(epoch)

    def _rank_order(self) -> npt.NDArray[np.int64]:
        rank, world = _dist_rank_world()
        order = self.indices
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = order[rng.permutation(order.size)]
        if world > 1:
            if not self.with_index:
                per_rank = math.ceil(order.size / world)
                pad = per_rank * world - order.size
                if pad:
                    order = np.concatenate([order, order[:pad]])
            order = order[rank::world]
        return order

    def __len__(self) -> int:
        """Number of batches this process yields per epoch."""
        _, world = _dist_rank_world()
        n = self.indices.size
        if world > 1:
            n = math.ceil(n / world)
        return math.ceil(n / self.batch_size) if n else 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        """Yield batches ``(x,)`` or ``(x, pixel_index)``; advances the epoch when shuffling."""
        order = self._rank_order()
        if self.shuffle:
            self.epoch += 1
        worker = get_worker_info()
        n_workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        contiguous = bool(order.size) and np.array_equal(
            order, np.arange(order[0], order[0] + order.size)
        )
        for b, start in enumerate(range(0, order.size, self.batch_size)):
            if b % n_workers != worker_id:
                continue
            stop = min(start + self.batch_size, order.size)
            if contiguous:
                lo = int(order[0]) + start
                x = self.features[lo : lo + (stop - start)]
                idx = torch.arange(lo, lo + (stop - start))
            else:
                idx = torch.from_numpy(order[start:stop])
                x = self.features.index_select(0, idx)
            yield (x, idx) if self.with_index else (x,)


def open_features(path: str | Path) -> xr.Dataset:
    """Read a features dataset (NetCDF or Zarr) fully into memory and validate it.

    Parameters
    ----------
    path : str or Path
        A ``.nc``/``.h5``/``.netcdf`` file (read with h5netcdf) or a ``.zarr`` folder.

    Returns
    -------
    xr.Dataset
        With ``features`` ``(y, x, feature)``, loaded into memory (no open file handles).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    SchemaError
        If the file holds no valid ``features`` variable.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"features_path {str(path)!r} does not exist. Give a NetCDF (.nc) or Zarr (.zarr) "
            "features file written by sigma.preprocessing, or use data_path for a raw "
            "spectrum image."
        )
    if p.suffix == ".zarr" or p.is_dir():
        with xr.open_zarr(p, consolidated=False) as ds:
            loaded = ds.load()
    else:
        with xr.open_dataset(p, engine="h5netcdf") as ds:
            loaded = ds.load()
    return validate_features(loaded, where=f"features file {str(path)!r}")


def features_to_array(ds: xr.Dataset) -> npt.NDArray[np.float32]:
    """Return the ``features`` of ``ds`` as a C-contiguous ``(y * x, feature)`` float32 array.

    Raises
    ------
    SchemaError
        If ``ds`` is not a features dataset or holds NaN/inf values.
    """
    validate_features(ds)
    arr = ds[FEATURES].transpose(DIM_Y, DIM_X, DIM_FEATURE).values
    flat = np.ascontiguousarray(arr.reshape(-1, arr.shape[-1]), dtype=np.float32)
    n_bad = int(np.count_nonzero(~np.isfinite(flat)))
    if n_bad:
        raise SchemaError(
            f"features: {n_bad} values are NaN or inf; the autoencoder cannot learn from them. "
            "Fill or drop those pixels first, e.g. ds['features'] = ds.features.fillna(0)."
        )
    return flat


class SpectralDataModule(pl.LightningDataModule):
    """Per-pixel features of one spectrum image, split into training and validation pixels.

    Give exactly one data source: ``features_path`` (features already computed), ``data_path``
    (a raw spectrum image, or ``"demo"``, preprocessed here) or, from Python,
    :meth:`from_dataset`.

    Parameters
    ----------
    features_path : str or None
        NetCDF (``.nc``) or Zarr (``.zarr``) file with a ``features`` variable (y, x, feature),
        e.g. written by ``sigma.preprocessing``.
    data_path : str or None
        Raw spectrum image read with ``sigma.io.load`` (.bcf, .emd, .hspy, ...) and turned into
        features by ``preprocessing``; the special value ``"demo"`` uses the built-in synthetic
        scene ``sigma.datasets.demo_scene()``.
    preprocessing : dict or None
        Preprocessor chain for ``data_path`` as a dict
        (``sigma.preprocessing.Preprocessor.from_dict``);
        None uses ``Preprocessor.sigma_default()``. Ignored with ``features_path``.
    batch_size : int
        Pixels per optimisation step and per device. The default 1024 is far larger than SIGMA's
        32: a pixel is a short feature vector, so small batches leave the CPU/GPU idle and make
        an epoch over 10^5-10^6 pixels take minutes; 1024 runs several times faster per epoch
        (benchmarks/training.py), and with lr 1e-3 the demo scene converges in ~25 epochs.
        Larger batches take fewer steps per epoch, so pair them with a larger ``model.lr``;
        lower it for tiny images (under ~10^4 pixels).
    val_fraction : float
        Fraction of pixels (drawn at random with ``seed``) held out for validation, in [0, 1).
        Early stopping and the learning-rate schedule watch the loss on them.
    seed : int
        Seed of the train/validation split and of the per-epoch shuffling.
    num_workers : int
        DataLoader worker processes. 0 (the default) is usually best: batches are slices of
        one in-memory tensor, so workers mostly add inter-process copies.
    """

    def __init__(
        self,
        features_path: str | None = None,
        data_path: str | None = None,
        preprocessing: dict[str, Any] | None = None,
        batch_size: int = 1024,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if features_path is not None and data_path is not None:
            raise ConfigurationError(
                f"give either features_path or data_path, not both. Got features_path="
                f"{features_path!r} and data_path={data_path!r}."
            )
        batch_size = check_int("batch_size", batch_size, 1, error=ConfigurationError)
        if not 0.0 <= float(val_fraction) < 1.0:
            raise ConfigurationError(
                f"val_fraction must be a float in the range [0, 1). Got {val_fraction!r} instead."
            )
        num_workers = check_int("num_workers", num_workers, 0, error=ConfigurationError)
        self.save_hyperparameters()
        self.features_path = features_path
        self.data_path = data_path
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.num_workers = num_workers
        self._features_ds: xr.Dataset | None = None
        self._x: torch.Tensor | None = None
        self.train_indices: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self.val_indices: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)

    @classmethod
    def from_dataset(cls, features: xr.Dataset, **kwargs: Any) -> SpectralDataModule:
        """Build a data module around an in-memory features dataset (notebook API).

        Parameters
        ----------
        features : xr.Dataset
            With ``features`` ``(y, x, feature)``; it is loaded (``.load()`` on a copy) but not
            modified.
        **kwargs
            ``batch_size``, ``val_fraction``, ``seed``, ``num_workers``. The features are copied.

        Returns
        -------
        SpectralDataModule
        """
        for bad in ("features_path", "data_path", "preprocessing"):
            if bad in kwargs:
                raise ConfigurationError(
                    "from_dataset() takes the features as its first argument; "
                    f"{bad}={kwargs[bad]!r} "
                    "cannot be given too."
                )
        validate_features(features, where="SpectralDataModule.from_dataset")
        dm = cls(**kwargs)
        dm._features_ds = features.copy(deep=True).load()
        return dm

    # ------------------------------------------------------------------ data source
    def _compute_features(self) -> xr.Dataset:
        if self.features_path is not None:
            return open_features(self.features_path)
        if self.data_path is None:
            raise ConfigurationError(
                "SpectralDataModule has no data: set features_path (a features .nc/.zarr file), "
                "data_path (a spectrum image, or 'demo'), or use "
                "SpectralDataModule.from_dataset(ds)."
            )
        from sigma.preprocessing import Preprocessor  # lazy: only this path needs it

        if self.data_path == DEMO:
            from sigma.datasets import demo_scene

            scene = demo_scene()
            raw = scene[0] if isinstance(scene, tuple) else scene
        else:
            from sigma.io import load

            raw = load(self.data_path)
        pre = (
            Preprocessor.sigma_default()
            if self.preprocessing is None
            else Preprocessor.from_dict(self.preprocessing)
        )
        features = pre(raw)
        return validate_features(features, where=f"features of {self.data_path!r}").load()

    @property
    def features_dataset(self) -> xr.Dataset:
        """The features dataset (y, x, feature), computed or read once and kept in memory."""
        if self._features_ds is None:
            self._features_ds = self._compute_features()
        return self._features_ds

    @property
    def n_features(self) -> int:
        """Number of features per pixel (the model's input size; linked to ``model.n_features``)."""
        return int(self.features_dataset.sizes[DIM_FEATURE])

    @property
    def n_pixels(self) -> int:
        """Number of pixels, ``y * x``."""
        ds = self.features_dataset
        return int(ds.sizes[DIM_Y] * ds.sizes[DIM_X])

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Nothing to download; assigns no state (Lightning calls it on one process only)."""

    def setup(self, stage: str | None = None) -> None:
        """Materialise the features as one float32 tensor and split the pixels (seeded)."""
        if self._x is not None:
            return
        flat = features_to_array(self.features_dataset)
        self._x = torch.from_numpy(flat)
        n = flat.shape[0]
        n_val = int(round(n * self.val_fraction))
        if self.val_fraction > 0 and n > 1:
            n_val = min(max(n_val, 1), n - 1)
        perm = np.random.default_rng(self.seed).permutation(n)
        self.val_indices = np.sort(perm[:n_val]).astype(np.int64)
        self.train_indices = np.sort(perm[n_val:]).astype(np.int64)
        logger.info(
            "features: %d pixels x %d features; %d train, %d validation pixels",
            n,
            flat.shape[1],
            self.train_indices.size,
            self.val_indices.size,
        )

    def _loader(self, dataset: PixelBatches) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _tensor(self) -> torch.Tensor:
        if self._x is None:
            self.setup()
        assert self._x is not None
        return self._x

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """Shuffled batches of the training pixels (new seeded order each epoch)."""
        x = self._tensor()
        return self._loader(
            PixelBatches(
                x, self.train_indices, batch_size=self.batch_size, shuffle=True, seed=self.seed
            )
        )

    def val_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """Batches of the validation pixels, in order."""
        x = self._tensor()
        return self._loader(
            PixelBatches(x, self.val_indices, batch_size=self.batch_size, shuffle=False)
        )

    def test_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """Same pixels as validation (a spectrum image has no separate test set)."""
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        """All pixels in row-major (y, x) order, as ``(x, pixel_index)`` batches."""
        x = self._tensor()
        all_idx = np.arange(x.shape[0], dtype=np.int64)
        return self._loader(
            PixelBatches(x, all_idx, batch_size=self.batch_size, shuffle=False, with_index=True)
        )

    def state_dict(self) -> dict[str, Any]:
        """Nothing beyond the hyperparameters is needed to resume."""
        return {}
