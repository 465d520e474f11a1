"""Training, encoding and the pipeline on a CUDA GPU (``pytest -m gpu``; deselected by default).

CI has no GPU: these run where one is lent (``benchmarks/gpu_check.sh``). Each skips with a
reason when torch sees no CUDA device.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from sigma.encoding import encode
from sigma.model import AutoEncoder
from sigma.training_cli import run_training_cli

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny_ae.yaml"
GPU = ("--trainer.accelerator", "gpu", "--trainer.devices", "1")


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["sigma"])


def _fit_predict(features: Path, root: Path, *extra: str) -> np.ndarray:
    common = ["--config", str(TINY), "--data.features_path", str(features),
              "--trainer.default_root_dir", str(root), *GPU, *extra]  # fmt: skip
    run_training_cli(["fit", *common])
    best = root / "checkpoints" / "best.ckpt"
    out = root / "embedding.nc"
    run_training_cli(["predict", *common, "--ckpt_path", str(best), "--output.path", str(out)])
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds["embedding"].dims == ("y", "x", "latent")
        return ds["embedding"].values


def _cpu_latent(ckpt: Path, features: Path) -> np.ndarray:
    model = AutoEncoder.load_from_checkpoint(ckpt, map_location="cpu")
    with xr.open_dataset(features, engine="h5netcdf") as ds:
        return encode(model, ds.load(), device="cpu", show_progress=False)


def test_cli_fit_predict_on_gpu_is_seeded_and_matches_the_cpu_encoding(
    tmp_path: Path, features_file: Path
) -> None:
    a = _fit_predict(features_file, tmp_path / "a")
    b = _fit_predict(features_file, tmp_path / "b")
    assert a.shape == (12, 16, 2)
    assert np.isfinite(a).all()
    # seeded runs on the same hardware give the same latent space (deterministic: true)
    np.testing.assert_array_equal(a, b)
    # the GPU prediction is what the checkpoint computes on the CPU, to float32 rounding
    np.testing.assert_allclose(
        a, _cpu_latent(tmp_path / "a" / "checkpoints" / "best.ckpt", features_file),
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip


def test_bf16_mixed_precision_trains_and_predicts(tmp_path: Path, features_file: Path) -> None:
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    root = tmp_path / "bf16"
    z = _fit_predict(features_file, root, "--trainer.precision", "bf16-mixed",
                     "--trainer.max_epochs", "20")  # fmt: skip
    assert np.isfinite(z).all()
    # bf16 keeps the weights in float32: the CPU float32 encoding agrees to bf16 rounding
    ref = _cpu_latent(root / "checkpoints" / "best.ckpt", features_file)
    scale = np.abs(ref).max()
    assert np.abs(z - ref).max() < 0.05 * scale
    # and it learned: the three bands of the toy image are apart in the latent space
    band = np.arange(12) * 3 // 12
    means = np.stack([z[band == k].reshape(-1, 2).mean(0) for k in range(3)])
    spread = max(z[band == k].reshape(-1, 2).std(0).max() for k in range(3))
    gaps = [np.linalg.norm(means[i] - means[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(gaps) > 2 * spread


def test_encode_picks_the_gpu_and_restores_the_model(features_file: Path) -> None:
    torch.manual_seed(0)
    model = AutoEncoder(n_features=5, hidden_dims=[16, 8], output_activation="softmax")
    with xr.open_dataset(features_file, engine="h5netcdf") as ds:
        feats = ds.load()
    on_gpu = encode(model, feats, show_progress=False, batch_size=37)  # device=None: CUDA
    on_cpu = encode(model, feats, device="cpu", show_progress=False)
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)
    assert next(model.parameters()).device.type == "cpu"  # put back where it was


def test_pipeline_runs_on_the_gpu(tmp_path: Path) -> None:
    from sklearn.metrics import adjusted_rand_score

    import sigma

    ds, truth = sigma.datasets.synthetic_sem(
        (64, 96), phases=["quartz", "calcite", "hematite"], counts_per_pixel=200,
        grain_size_px=48, seed=1, show_progress=False,
    )  # fmt: skip
    cfg = {"max_epochs": 3, "batch_size": 256, "trainer": {"accelerator": "gpu", "devices": 1},
           "clustering": {"n_components": "auto", "k_max": 6}}  # fmt: skip
    res = sigma.run(ds, config=cfg, out=tmp_path / "res.nc", show_progress=False)
    assert res.n_clusters in (3, 4)
    ari = adjusted_rand_score(truth.label.values.ravel(), res.dataset.label.values.ravel())
    assert ari > 0.9
