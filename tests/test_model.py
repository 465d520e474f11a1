"""AutoEncoder (plain and variational), training on a learnable toy, checkpoints and encode()."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import synthetic
import torch
import xarray as xr

from sigma.datamodule import SpectralDataModule
from sigma.encoding import embedding_dataset, encode, encode_dataset, write_embedding
from sigma.exceptions import ConfigurationError, SchemaError
from sigma.model import AutoEncoder


def make_features(ny: int = 16, nx: int = 16, n_features: int = 6, seed: int = 0) -> xr.Dataset:
    """The shared three-blob features at this module's default size (16 x 16 px, 6 features)."""
    return synthetic.make_features(ny, nx, n_features, seed, pixel_um=0.25)


def _trainer(tmp_path, max_epochs: int) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )


def test_default_is_sigma_architecture() -> None:
    model = AutoEncoder(n_features=9)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    assert shapes == [
        (9, 512),
        (512, 256),
        (256, 128),
        (128, 2),
        (2, 128),
        (128, 256),
        (256, 512),
        (512, 9),
    ]
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules()) == 6
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.02}
    opt = model.configure_optimizers()
    assert opt["optimizer"].param_groups[0]["lr"] == pytest.approx(1e-4)
    sched = opt["lr_scheduler"]["scheduler"]
    assert (sched.factor, sched.patience, sched.threshold, sched.min_lrs[0]) == (0.5, 5, 1e-2, 1e-7)
    assert opt["lr_scheduler"]["monitor"] == "val/loss"


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("activation", ["softmax", "sigmoid", "identity"])
def test_shapes_and_output_activation(variational: bool, activation: str) -> None:
    model = AutoEncoder(
        n_features=7,
        hidden_dims=[16, 8],
        latent_dim=3,
        output_activation=activation,
        variational=variational,
    )
    x = torch.rand(11, 7)
    z = model.encode(x)
    out = model(x)
    assert z.shape == (11, 3)
    assert out.shape == (11, 7)
    if activation == "softmax":
        torch.testing.assert_close(out.sum(-1), torch.ones(11))
    if activation == "sigmoid":
        assert bool(((out > 0) & (out < 1)).all())
    # encode is deterministic (the mean for a VAE), training loss is finite
    torch.testing.assert_close(model.encode(x), z)
    assert torch.isfinite(model._shared_step((x,), "val"))


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="output_activation .* Got 'foo'"):
        AutoEncoder(n_features=4, output_activation="foo")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"n_features .* Got 0"):
        AutoEncoder(n_features=0)
    with pytest.raises(ConfigurationError, match="hidden_dims"):
        AutoEncoder(n_features=4, hidden_dims=[])
    with pytest.raises(ConfigurationError, match=r"lr .* Got -1"):
        AutoEncoder(n_features=4, lr=-1)


@pytest.mark.parametrize("variational", [False, True])
def test_loss_decreases_and_latent_separates_blobs(tmp_path, variational: bool) -> None:
    pl.seed_everything(0, verbose=False)
    ds = make_features()
    dm = SpectralDataModule.from_dataset(ds, batch_size=32, val_fraction=0.2)
    model = AutoEncoder(
        n_features=6,
        hidden_dims=[32, 16],
        lr=1e-2,
        output_activation="softmax",
        variational=variational,
        kl_weight=1e-4,
    )
    trainer = _trainer(tmp_path, max_epochs=15)
    before = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    trainer.fit(model, datamodule=dm)
    after = trainer.callback_metrics["val/loss"].item()
    assert after < 0.5 * before
    assert trainer.callback_metrics["val/explained_variance"].item() > 0.8
    # the three bands map to three separate places in the latent space
    z = encode(model, ds, show_progress=False).reshape(-1, 2)
    label = np.repeat(np.arange(16) * 3 // 16, 16)
    means = np.stack([z[label == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(z[label == k] - means[k], axis=1).mean() for k in range(3))
    gaps = min(np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3))
    assert gaps > 3 * spread


def test_checkpoint_round_trip_gives_same_latent(tmp_path) -> None:
    pl.seed_everything(1, verbose=False)
    ds = make_features(ny=8, nx=8)
    dm = SpectralDataModule.from_dataset(ds, batch_size=16)
    model = AutoEncoder(n_features=6, hidden_dims=[16, 8], lr=1e-2, variational=True)
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = AutoEncoder.load_from_checkpoint(ckpt, map_location="cpu")
    assert loaded.hparams.hidden_dims == [16, 8]
    assert loaded.hparams.variational is True
    np.testing.assert_array_equal(
        encode(loaded, ds, show_progress=False), encode(model, ds, show_progress=False)
    )


def test_encode_batches_restore_state_and_check_input() -> None:
    model = AutoEncoder(n_features=6, hidden_dims=[8])
    model.train()
    ds = make_features(ny=5, nx=7)
    whole = encode(model, ds, show_progress=False)
    assert whole.shape == (5, 7, 2)
    assert whole.dtype == np.float32
    small = encode(model, ds.features.values.reshape(-1, 6), batch_size=4, show_progress=False)
    np.testing.assert_allclose(small.reshape(5, 7, 2), whole, rtol=1e-5, atol=1e-6)
    assert model.training, "encode must restore train mode"
    with pytest.raises(SchemaError, match="trained on 6 features but the input has 4"):
        encode(model, np.zeros((3, 4), np.float32), show_progress=False)
    with pytest.raises(SchemaError, match="NaN"):
        encode(model, np.full((3, 6), np.nan, np.float32), show_progress=False)


def test_embedding_dataset_round_trip(tmp_path) -> None:
    ds = make_features(ny=4, nx=5)
    emb = encode_dataset(AutoEncoder(n_features=6, hidden_dims=[8]), ds, show_progress=False)
    assert emb["embedding"].dims == ("y", "x", "latent")
    assert emb["y"].attrs["units"] == "um"
    np.testing.assert_array_equal(emb["x"].values, ds["x"].values)
    assert '"n_features": 6' in emb.attrs["model_hparams"]
    for name in ("emb.nc", "emb.zarr"):
        path = write_embedding(emb, tmp_path / name)
        back = (
            xr.open_zarr(path, consolidated=False)
            if name.endswith("zarr")
            else xr.open_dataset(path)
        )
        np.testing.assert_array_equal(back["embedding"].values, emb["embedding"].values)
        back.close()
    with pytest.raises(SchemaError, match="does not match"):
        embedding_dataset(np.zeros((7, 2)), ds)


def test_bf16_mixed_precision_trains_and_predicts_float32(tmp_path) -> None:
    """bf16-mixed (the GPU setting in configs/) also runs on CPU autocast: same code path."""
    ds = make_features(ny=8, nx=8)
    dm = SpectralDataModule.from_dataset(ds, batch_size=16)
    model = AutoEncoder(n_features=6, hidden_dims=[16, 8], lr=1e-2)
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert np.isfinite(trainer.callback_metrics["train/loss"].item())
    preds = trainer.predict(model, datamodule=dm)
    assert all(p.dtype == torch.float32 for p in preds)
    assert sum(p.shape[0] for p in preds) == 64


def test_num_workers_split_batches_without_duplicates() -> None:
    ds = make_features(ny=6, nx=10)
    dm = SpectralDataModule.from_dataset(ds, batch_size=7, num_workers=2)
    dm.setup("predict")
    idx = torch.cat([b[1] for b in dm.predict_dataloader()]).numpy()
    np.testing.assert_array_equal(np.sort(idx), np.arange(60))
