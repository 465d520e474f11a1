"""The autoencoder that maps each pixel's features to a low-dimensional latent space.

The default network is SIGMA's (Tung et al. 2023): ``n_features -> 512 -> 256 -> 128 -> 2``
with Linear + LayerNorm + LeakyReLU(0.02) blocks, a plain Linear into the latent space, the
mirror image as decoder and a softmax output (the features are softmax-normalised per pixel), MSE
loss, Adam at lr 1e-4 and ReduceLROnPlateau on the validation loss. No I/O, scikit-learn or
plotting here.

Examples
--------
>>> import torch
>>> model = AutoEncoder(n_features=12)
>>> z = model.encode(torch.rand(5, 12))
>>> tuple(z.shape)
(5, 2)
>>> tuple(model(torch.rand(5, 12)).shape)
(5, 12)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, cast

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import ExplainedVariance, MeanSquaredError, MetricCollection

from sigma._checks import check_int
from sigma.exceptions import ConfigurationError

__all__ = ["AutoEncoder", "OutputActivation", "Stage"]

logger = logging.getLogger(__name__)

OutputActivation = Literal["softmax", "sigmoid", "identity"]
Stage = Literal["train", "val", "test"]
# Reconstruction metrics (torchmetrics) are kept for validation and test only: in training they
# cost 4-6 % of the step on the CPU (benchmarks/training.py) and train/loss already is the MSE.
_METRIC_STAGES: tuple[Stage, ...] = ("val", "test")


def _block(n_in: int, n_out: int, negative_slope: float) -> list[nn.Module]:
    # in place: LayerNorm's backward needs its input, not its output, so the activation can
    # overwrite it (one fewer (batch, width) tensor written and read per block)
    inplace = negative_slope > 0  # autograd can only invert a leaky ReLU with a positive slope
    return [
        nn.Linear(n_in, n_out),
        nn.LayerNorm(n_out),
        nn.LeakyReLU(negative_slope, inplace=inplace),
    ]


def _output_layer(kind: str) -> nn.Module:
    if kind == "softmax":
        return nn.Softmax(dim=-1)
    if kind == "sigmoid":
        return nn.Sigmoid()
    return nn.Identity()


class AutoEncoder(pl.LightningModule):
    """Fully connected (variational) autoencoder from per-pixel features to a small latent space.

    Parameters
    ----------
    n_features : int
        Input size: features per pixel. Set from the data (``data.n_features``) by the CLI.
    hidden_dims : Sequence[int]
        Widths of the encoder's hidden layers; the decoder mirrors them. SIGMA: 512, 256, 128.
    latent_dim : int
        Size of the latent space; 2 for the usual scatter-plot/GMM workflow.
    output_activation : {"softmax", "sigmoid", "identity"}
        Decoder output, matched to the feature normalisation: "softmax" for softmax-normalised
        features (SIGMA's default; outputs sum to 1 per pixel), "sigmoid" for features scaled to
        [0, 1], "identity" for z-scored or otherwise unbounded features.
    negative_slope : float
        Slope of LeakyReLU for negative inputs (SIGMA: 0.02).
    lr : float
        Adam learning rate (SIGMA: 1e-4).
    weight_decay : float
        Adam weight decay (L2 penalty).
    lr_factor : float
        ReduceLROnPlateau: multiply the learning rate by this when the monitored loss stalls.
    lr_patience : int
        ReduceLROnPlateau: epochs without improvement before reducing the learning rate.
    lr_threshold : float
        ReduceLROnPlateau: relative improvement that counts (1e-2 = 1 %).
    min_lr : float
        ReduceLROnPlateau: lower bound of the learning rate.
    monitor : str
        Logged metric the scheduler watches: "val/loss", or "train/loss" when there is no
        validation split (``data.val_fraction: 0``).
    input_noise : float
        Standard deviation of Gaussian noise added to the inputs during training only (denoising
        autoencoder); 0 disables it. Useful for low-count (TEM) maps.
    variational : bool
        Train a variational autoencoder: the encoder gives a mean and a log-variance, the loss
        adds ``kl_weight`` times the KL divergence to N(0, 1); ``encode`` returns the mean.
    kl_weight : float
        Weight of the KL term per pixel (summed over latent dims) relative to the MSE (averaged
        over features); only used with ``variational``.
    """

    def __init__(
        self,
        n_features: int,
        hidden_dims: Sequence[int] = (512, 256, 128),
        latent_dim: int = 2,
        output_activation: OutputActivation = "softmax",
        negative_slope: float = 0.02,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        lr_factor: float = 0.5,
        lr_patience: int = 5,
        lr_threshold: float = 1e-2,
        min_lr: float = 1e-7,
        monitor: str = "val/loss",
        input_noise: float = 0.0,
        variational: bool = False,
        kl_weight: float = 1e-3,
    ) -> None:
        super().__init__()
        check_int("n_features", n_features, 1, error=ConfigurationError)
        check_int("latent_dim", latent_dim, 1, error=ConfigurationError)
        hidden = [check_int("hidden_dims[i]", h, 1, error=ConfigurationError) for h in hidden_dims]
        if not hidden:
            raise ConfigurationError(
                "hidden_dims must hold at least one layer width, e.g. [512, 256, 128]. Got []."
            )
        if output_activation not in ("softmax", "sigmoid", "identity"):
            raise ConfigurationError(
                "output_activation must be one of 'softmax', 'sigmoid', 'identity'. "
                f"Got {output_activation!r} instead."
            )
        if not lr > 0:
            raise ConfigurationError(
                f"lr must be a float in the range (0, inf). Got {lr!r} instead."
            )
        for name, val in (
            ("input_noise", input_noise),
            ("kl_weight", kl_weight),
            ("weight_decay", weight_decay),
        ):
            if not val >= 0:
                raise ConfigurationError(
                    f"{name} must be a float in the range [0, inf). Got {val!r} instead."
                )
        self.save_hyperparameters()
        self.hparams["hidden_dims"] = hidden  # a plain list in the checkpoint and config

        encoder: list[nn.Module] = []
        n_in = n_features
        for h in hidden:
            encoder += _block(n_in, h, negative_slope)
            n_in = h
        self.encoder = nn.Sequential(*encoder)
        self.to_latent = nn.Linear(hidden[-1], latent_dim)
        self.to_logvar = nn.Linear(hidden[-1], latent_dim) if variational else None

        decoder: list[nn.Module] = []
        n_in = latent_dim
        for h in reversed(hidden):
            decoder += _block(n_in, h, negative_slope)
            n_in = h
        decoder += [nn.Linear(n_in, n_features), _output_layer(output_activation)]
        self.decoder = nn.Sequential(*decoder)

        self.metrics = nn.ModuleDict(
            {
                f"{stage}_metrics": MetricCollection(
                    {"mse": MeanSquaredError(), "explained_variance": ExplainedVariance()},
                    prefix=f"{stage}/",
                )
                for stage in _METRIC_STAGES
            }
        )
        self.example_input_array = torch.zeros(2, n_features)

    # ------------------------------------------------------------------ network
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent coordinates of ``x`` ``(batch, n_features)``: the mean for a VAE."""
        return self.to_latent(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct features ``(batch, n_features)`` from ``z`` ``(batch, latent_dim)``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction of ``x`` through the latent mean (deterministic)."""
        return self.decode(self.encode(x))

    def _reconstruct(self, x: torch.Tensor, sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction, kl)``; ``kl`` is the mean KL per pixel (0 for a plain AE)."""
        h = self.encoder(x)
        mu = self.to_latent(h)
        if self.to_logvar is None:
            return self.decoder(mu), mu.new_zeros(())
        logvar = self.to_logvar(h).clamp(-20.0, 10.0)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        kl = -0.5 * torch.sum(1.0 + logvar - mu.pow(2) - logvar.exp(), dim=-1).mean()
        return self.decoder(z), kl

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _inputs(batch: Any) -> torch.Tensor:
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def _shared_step(self, batch: Any, stage: Stage) -> torch.Tensor:
        """Loss of one batch for ``stage``; logs ``{stage}/loss``.

        For validation and test also the reconstruction metrics ``{stage}/mse`` and
        ``{stage}/explained_variance``.
        """
        x = self._inputs(batch)
        training = stage == "train"
        noisy = (
            x + self.hparams["input_noise"] * torch.randn_like(x)
            if training and self.hparams["input_noise"] > 0
            else x
        )
        recon, kl = self._reconstruct(noisy, sample=training)
        mse = nn.functional.mse_loss(recon.float(), x.float())
        loss = mse + self.hparams["kl_weight"] * kl if self.hparams["variational"] else mse
        on_step = training
        self.log(
            f"{stage}/loss",
            loss,
            on_step=on_step,
            on_epoch=True,
            prog_bar=True,
            batch_size=x.shape[0],
            sync_dist=not training,
        )
        if self.hparams["variational"]:
            self.log(
                f"{stage}/kl",
                kl,
                on_step=False,
                on_epoch=True,
                batch_size=x.shape[0],
                sync_dist=not training,
            )
        if stage in _METRIC_STAGES:
            metrics = cast(MetricCollection, self.metrics[f"{stage}_metrics"])
            metrics.update(recon.detach().float(), x.float())
            self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=x.shape[0])
        return loss

    def on_fit_start(self) -> None:
        """Re-create metric states (a prior ``trainer.validate`` leaves inference-mode tensors)."""
        for metrics in self.metrics.values():
            cast(MetricCollection, metrics).reset()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One optimisation step."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Validation loss of one batch."""
        return self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Test loss of one batch."""
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Latent coordinates (float32) of one batch."""
        return self.encode(self._inputs(batch)).float()

    def configure_optimizers(self) -> Any:
        """Adam with ReduceLROnPlateau on ``monitor``.

        Adam is the fused kernel on CPU and CUDA (one pass over the weights instead of several:
        its step took 0.6 ms instead of 2.4-3.2 ms at SIGMA's size on the 2-core CPU).
        """
        hp = self.hparams
        optimizer = torch.optim.Adam(
            self.parameters(),
            lr=hp["lr"],
            weight_decay=hp["weight_decay"],
            fused=True if self.device.type in ("cpu", "cuda") else None,
        )
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="min",
            factor=hp["lr_factor"],
            patience=hp["lr_patience"],
            threshold=hp["lr_threshold"],
            min_lr=hp["min_lr"],
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": hp["monitor"]},
        }
