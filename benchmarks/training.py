"""Training throughput and time to convergence of sigma's autoencoder on the demo scene.

Measures, on the CPU of this machine or with ``--accelerator gpu`` on a CUDA GPU:

1. throughput (pixels/s over one epoch) of a SIGMA-style loop: a per-sample ``Dataset``,
   ``DataLoader(batch_size=32, shuffle=True)`` and a plain PyTorch loop, as emsigma trains;
2. throughput (second epoch; the first is reported too) of sigma's Lightning training
   (``SpectralDataModule`` tensor slicing) at batch sizes 32, 256, 1024 and 4096, same
   SIGMA-size network (F -> 512 -> 256 -> 128 -> 2);
3. time to convergence at the default settings (batch 1024, Adam 1e-4, ReduceLROnPlateau,
   EarlyStopping on val/loss), epochs until early stopping;
4. encode throughput over all pixels, and the adjusted Rand index of a GMM (k = number of
   phases) on the latent space against the scene's ground truth, as a sanity check of quality.

Run:  .venv/bin/python benchmarks/training.py [--quick]
      python benchmarks/training.py --accelerator gpu [--precision bf16-mixed] --out F.json
Writes benchmarks/results/training.json (CPU) or the file given by --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import xarray as xr
from _paths import results_dir
from lightning.pytorch.callbacks import EarlyStopping

from sigma.datamodule import SpectralDataModule
from sigma.encoding import encode
from sigma.model import AutoEncoder

OUT = results_dir() / "training.json"


def demo_features() -> tuple[xr.Dataset, np.ndarray | None, str]:
    """The demo scene's SIGMA features and truth labels; random features if unavailable."""
    try:
        from sigma.datasets import demo_scene
        from sigma.preprocessing import Preprocessor

        t0 = time.perf_counter()
        raw, truth = demo_scene(show_progress=False)
        feats = Preprocessor.sigma_default()(raw).load()
        labels = np.asarray(truth["label"].values).reshape(-1)
        return (
            feats,
            labels,
            f"demo_scene + Preprocessor.sigma_default ({time.perf_counter() - t0:.1f} s)",
        )
    except ImportError as err:  # simulator/preprocessing not available
        rng = np.random.default_rng(0)
        z = rng.normal(size=(280, 512, 12)).astype(np.float32)
        f = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        ds = xr.Dataset({"features": (("y", "x", "feature"), f.astype(np.float32))},
                        coords={"feature": [f"f{i}" for i in range(12)]})  # fmt: skip
        return ds, None, f"random softmax features, F=12 ({err})"


def _sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so that a host clock read next times it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class _PerSample(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(self.x[i], dtype=torch.float32)


def sigma_style_loop(flat: np.ndarray, max_batches: int, device: str = "cpu") -> dict[str, Any]:
    """emsigma-like loop: per-sample Dataset, DataLoader(batch_size=32, shuffle=True)."""
    torch.manual_seed(0)
    model = AutoEncoder(n_features=flat.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loader = torch.utils.data.DataLoader(_PerSample(flat), batch_size=32, shuffle=True)
    n = 0
    t0 = time.perf_counter()
    for b, x in enumerate(loader):
        if b >= max_batches:
            break
        x = x.to(device)
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), x)
        loss.backward()
        opt.step()
        n += x.shape[0]
    _sync(device)
    dt = time.perf_counter() - t0
    return {"batch_size": 32, "pixels": n, "seconds": dt, "pixels_per_s": n / dt}


def tensor_loop(flat: np.ndarray, batch_size: int, device: str, epochs: int = 2) -> dict[str, Any]:
    """Floor for the framework's overhead: the same model and MSE in a bare loop over a tensor
    already on ``device`` (random permutation, slices); the last epoch is timed. Its Adam is
    torch's default (foreach) one, as in ``training_gpu.json``; sigma's model uses the fused
    one, so this floor is conservative."""
    torch.manual_seed(0)
    model = AutoEncoder(n_features=flat.shape[1]).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x_all = torch.from_numpy(flat).to(device)
    dt = 0.0
    for _ in range(epochs):
        order = torch.randperm(x_all.shape[0], device=device)
        t0 = time.perf_counter()
        for start in range(0, x_all.shape[0], batch_size):
            x = x_all[order[start : start + batch_size]]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), x)
            loss.backward()
            opt.step()
        _sync(device)
        dt = time.perf_counter() - t0
    n = x_all.shape[0]
    return {"batch_size": batch_size, "pixels": n, "seconds": dt, "pixels_per_s": n / dt}


class _EpochTimer(pl.Callback):
    """Wall time of the training epochs alone (no trainer start-up, no validation)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _sync(pl_module.device)
        self.seconds.append(time.perf_counter() - self._t0)


def lightning_throughput(
    ds: xr.Dataset,
    batch_size: int,
    max_batches: int | None,
    accelerator: str = "cpu",
    precision: str = "32-true",
) -> dict[str, Any]:
    """Training epochs (or ``max_batches`` each) through Lightning with SpectralDataModule.

    Two epochs run and the second is timed: the first also holds one-time costs (memory
    pools, thread start-up; CUDA/cuBLAS start-up on a GPU), reported as ``first_epoch_*``.
    """
    pl.seed_everything(0, verbose=False)
    dm = SpectralDataModule.from_dataset(ds, batch_size=batch_size, val_fraction=0.0)
    dm.setup("fit")
    model = AutoEncoder(n_features=dm.n_features, monitor="train/loss")
    n_batches = (
        len(dm.train_dataloader())
        if max_batches is None
        else min(max_batches, len(dm.train_dataloader()))
    )
    timer = _EpochTimer()
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=2,
                         limit_train_batches=n_batches, callbacks=[timer], precision=precision,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    total = time.perf_counter() - t0
    dt = timer.seconds[-1]
    n = min(n_batches * batch_size, dm.train_indices.size)
    return {"batch_size": batch_size, "precision": precision, "pixels": n, "seconds": dt,
            "pixels_per_s": n / dt, "first_epoch_pixels_per_s": n / timer.seconds[0],
            "fit_seconds_with_startup": total}  # fmt: skip


def convergence(
    ds: xr.Dataset,
    labels: np.ndarray | None,
    max_epochs: int,
    patience: int,
    lr: float,
    accelerator: str = "cpu",
    precision: str = "32-true",
) -> dict[str, Any]:
    """Train with the demo config's settings until early stopping; encode; GMM ARI vs truth."""
    pl.seed_everything(0, verbose=False)
    dm = SpectralDataModule.from_dataset(ds, batch_size=1024, val_fraction=0.1, seed=0)
    dm.setup("fit")
    model = AutoEncoder(n_features=dm.n_features, lr=lr)
    stop = EarlyStopping(monitor="val/loss", patience=patience, min_delta=0.0)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, max_epochs=max_epochs,
                         callbacks=[stop], precision=precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    latent = encode(model, ds, show_progress=False).reshape(-1, model.hparams.latent_dim)
    encode_s = time.perf_counter() - t0
    result: dict[str, Any] = {
        "precision": precision,
        "lr_start": lr,
        "max_epochs": max_epochs,
        "early_stopping_patience": patience,
        "epochs_run": trainer.current_epoch,
        "stopped_early": bool(stop.stopped_epoch),
        "train_seconds": train_s,
        "seconds_per_epoch": train_s / max(trainer.current_epoch, 1),
        "final_val_loss": float(trainer.callback_metrics["val/loss"]),
        "final_val_explained_variance": float(trainer.callback_metrics["val/explained_variance"]),
        "final_lr": trainer.optimizers[0].param_groups[0]["lr"],
        "encode_seconds": encode_s,
        "encode_pixels_per_s": latent.shape[0] / encode_s,
    }
    if labels is not None:
        from sklearn.metrics import adjusted_rand_score
        from sklearn.mixture import GaussianMixture

        k = int(np.unique(labels[labels >= 0]).size)
        pred = GaussianMixture(k, covariance_type="full", random_state=0).fit_predict(latent)
        result["gmm_k"] = k
        result["gmm_ari_vs_truth"] = float(adjusted_rand_score(labels, pred))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and epochs")
    parser.add_argument("--max-epochs", type=int, default=30, help="as configs/demo.yaml")
    parser.add_argument("--patience", type=int, default=5, help="as configs/demo.yaml")
    parser.add_argument("--lr", type=float, default=1e-3, help="as configs/demo.yaml")
    parser.add_argument("--sigma-batches", type=int, default=300, help="batches of 32 timed")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's choice; 1 is far faster on a busy shared CPU)",
    )
    parser.add_argument(
        "--only-throughput",
        action="store_true",
        help="re-measure throughput only; keep the convergence results in the JSON",
    )
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu (Lightning)")
    parser.add_argument(
        "--precision",
        nargs="+",
        default=["32-true"],
        help="Lightning precision(s) to time, e.g. 32-true bf16-mixed; convergence uses the first",
    )
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[32, 256, 1024, 4096], help="Lightning rows"
    )
    parser.add_argument("--out", type=Path, default=OUT, help="JSON file to write")
    args = parser.parse_args()
    device = "cuda" if args.accelerator in ("gpu", "cuda") else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--accelerator gpu: torch sees no CUDA device on this machine")
    out_path: Path = args.out
    if args.threads:
        torch.set_num_threads(args.threads)

    ds, labels, source = demo_features()
    flat = ds["features"].transpose("y", "x", "feature").values.reshape(-1, ds.sizes["feature"])
    print(f"features: {flat.shape[0]} pixels x {flat.shape[1]} from {source}", flush=True)
    results: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "accelerator": args.accelerator,
            "gpu": torch.cuda.get_device_name(0)
            if device == "cuda"
            else "not measured (run with --accelerator gpu on a GPU machine)",
            "load_average_at_start": os.getloadavg(),
            "note": "compare the rows of one run: a shared machine's absolute numbers vary "
            "by 10-20 % between runs",
        },  # fmt: skip
        "features": {
            "n_pixels": int(flat.shape[0]),
            "n_features": int(flat.shape[1]),
            "source": source,
        },
    }
    base = sigma_style_loop(
        flat, max_batches=100 if args.quick else args.sigma_batches, device=device
    )
    print("SIGMA-style loop (batch 32):", json.dumps(base), flush=True)
    results["sigma_style_loop"] = base
    results["lightning"] = []
    for precision in args.precision:
        for bs in args.batch_sizes:
            max_b = args.sigma_batches if bs == 32 else None
            if args.quick:
                max_b = 100 if bs == 32 else 40
            r = lightning_throughput(ds, bs, max_b, args.accelerator, precision)
            r["speedup_vs_sigma_loop"] = r["pixels_per_s"] / base["pixels_per_s"]
            print("sigma Lightning:", json.dumps(r), flush=True)
            results["lightning"].append(r)
    if device == "cuda":
        results["tensor_loop"] = []
        for bs in (b for b in args.batch_sizes if b > 32):  # batch 32 is the SIGMA loop's row
            r = tensor_loop(flat, bs, device)
            print("bare PyTorch loop, data on the GPU:", json.dumps(r), flush=True)
            results["tensor_loop"].append(r)
    if args.only_throughput and OUT.exists():
        results["convergence"] = json.loads(OUT.read_text())["convergence"]
        results["convergence"]["note"] = f"copied from {OUT.name} (not re-measured)"
    else:
        max_epochs = 5 if args.quick else args.max_epochs
        conv = convergence(ds, labels, max_epochs=max_epochs, patience=args.patience, lr=args.lr,
                           accelerator=args.accelerator, precision=args.precision[0])  # fmt: skip
        print("convergence:", json.dumps(conv), flush=True)
        results["convergence"] = conv
    results["load_average_at_end"] = os.getloadavg()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2))
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
