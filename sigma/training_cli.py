r"""``sigma fit | validate | predict``: train and apply the autoencoder from YAML configs.

A :class:`lightning.pytorch.cli.LightningCLI` around :class:`sigma.model.AutoEncoder` and
:class:`sigma.datamodule.SpectralDataModule`::

    sigma fit --config configs/demo.yaml
    sigma validate --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt
    sigma predict --config configs/demo.yaml --ckpt_path runs/demo/checkpoints/best.ckpt \
        --output.path runs/demo/embedding.nc

The model's input size is linked to the data (``data.n_features -> model.n_features``). Two
callbacks are always present: ``checkpoint`` (a ModelCheckpoint keeping only ``best.ckpt`` and
``last.ckpt``, overwritten on re-runs) and ``output`` (:class:`LatentWriter`, which writes the
latent space of every pixel during ``predict``). Multi-GPU and multi-node training come from the
trainer options (``--trainer.devices 4 --trainer.strategy ddp --trainer.num_nodes 2``).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import numpy.typing as npt
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from sigma.datamodule import SpectralDataModule
from sigma.encoding import embedding_dataset, write_embedding
from sigma.exceptions import ConfigurationError
from sigma.model import AutoEncoder

__all__ = ["LatentWriter", "SigmaCLI", "run_training_cli"]

logger = logging.getLogger(__name__)


class LatentWriter(BasePredictionWriter):
    """Collect the latent coordinates of every pixel during ``predict`` and write them to a file.

    The file holds ``embedding`` ``(y, x, latent)`` float32 with the ``y``/``x`` coordinates of
    the features (see docs/results_schema.md). Under DDP the ranks' pixels are gathered and
    rank 0 writes.

    Parameters
    ----------
    path : str or None
        Output file: ``.zarr`` writes Zarr, any other suffix NetCDF (h5netcdf). None writes
        ``embedding.nc`` in ``trainer.default_root_dir``.
    """

    def __init__(self, path: str | None = None) -> None:
        super().__init__(write_interval="batch")
        self.path = path
        self._parts: list[tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.float32]]] = []
        self.written_path: Path | None = None

    def on_predict_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start an empty collection."""
        self._parts = []

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep one batch of latent coordinates (and their pixel indices) on the CPU."""
        index = batch[1] if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        z = prediction.detach().float().cpu().numpy()
        self._parts.append((None if index is None else index.detach().cpu().numpy(), z))

    def on_predict_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Gather the ranks' batches; rank 0 assembles the image and writes the file."""
        parts = self._parts
        if (
            trainer.world_size > 1
            and torch.distributed.is_available()
            and torch.distributed.is_initialized()
        ):
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, parts)
            parts = [p for rank_parts in gathered for p in rank_parts]
        if trainer.is_global_zero:
            self.written_path = self._write(trainer, pl_module, parts)
        trainer.strategy.barrier()
        self._parts = []

    def _write(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        parts: list[tuple[npt.NDArray[np.int64] | None, npt.NDArray[np.float32]]],
    ) -> Path:
        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, SpectralDataModule):
            raise ConfigurationError(
                "LatentWriter needs a SpectralDataModule (for the pixel grid); got "
                f"{type(dm).__name__!r}. Run predict through `sigma predict --config ...`."
            )
        n_pixels = dm.n_pixels
        latent_dim = parts[0][1].shape[1] if parts else int(pl_module.hparams.get("latent_dim", 2))
        latent = np.full((n_pixels, latent_dim), np.nan, dtype=np.float32)
        offset = 0
        for index, z in parts:
            if index is None:
                index = np.arange(offset, offset + z.shape[0])
            latent[index] = z
            offset += z.shape[0]
        missing = int(np.isnan(latent[:, 0]).sum())
        if missing:
            raise ConfigurationError(
                f"predict produced latent coordinates for {n_pixels - missing} of {n_pixels} "
                "pixels; do not limit predict batches (trainer.limit_predict_batches) when "
                "writing the latent space."
            )
        ds = embedding_dataset(latent, dm.features_dataset, model_hparams=dict(pl_module.hparams))
        path = Path(self.path) if self.path else Path(trainer.default_root_dir) / "embedding.nc"
        return write_embedding(ds, path)


class SigmaCLI(LightningCLI):
    """LightningCLI for sigma: links data.n_features to the model; adds checkpoint/output."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Only fit, validate and predict (a spectrum image has no separate test set)."""
        return {
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
            "validate": {"model", "dataloaders", "datamodule"},
            "predict": {"model", "dataloaders", "datamodule"},
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Link ``data.n_features`` to the model; add ``checkpoint`` and ``output`` callbacks."""
        parser.link_arguments("data.n_features", "model.n_features", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/loss",
                "checkpoint.mode": "min",
                "checkpoint.save_top_k": 1,
                "checkpoint.save_last": True,
                "checkpoint.filename": "best",
                "checkpoint.enable_version_counter": False,
            }
        )
        parser.add_lightning_class_args(LatentWriter, "output")

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """Load ``--ckpt_path`` with ``weights_only=True``: tensors and plain data, no pickled code."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        kwargs["weights_only"] = True
        return kwargs


def run_training_cli(argv: list[str]) -> None:
    """Run ``sigma fit|validate|predict`` with ``argv`` (the subcommand first)."""
    # PixelBatches splits batches between workers itself, so Lightning's caution does not apply
    warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
    # LatentWriter reads the pixel indices from the batch itself
    warnings.filterwarnings("ignore", message=r".*Couldn't infer the batch indices.*")
    _check_checkpoint(argv)
    args = (
        None if list(argv) == sys.argv[1:] else list(argv)
    )  # avoids LightningCLI's "both given" warning
    SigmaCLI(
        AutoEncoder,
        SpectralDataModule,
        args=args,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"prog": "sigma", "description": "Train and apply sigma's autoencoder."},
        trainer_defaults={"max_epochs": 100},
    )


def _check_checkpoint(argv: list[str]) -> None:
    """A missing or unreadable ``--ckpt_path`` is one clear error, before anything runs."""
    from sigma.exceptions import CorruptFileError

    path = None
    for i, arg in enumerate(argv):
        if arg == "--ckpt_path" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--ckpt_path="):
            path = arg.split("=", 1)[1]
    if path is None or path in ("last", "best", "hpc", "registry", "null"):
        return
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"--ckpt_path {path!r} does not exist; give a checkpoint written by `sigma fit` "
            "(e.g. runs/demo/checkpoints/best.ckpt)."
        )
    try:
        torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise CorruptFileError(
            f"--ckpt_path {path!r} is not a checkpoint sigma can load safely (weights only): "
            f"{type(err).__name__}. Give a .ckpt written by `sigma fit`; checkpoints holding "
            "pickled code are refused."
        ) from err
