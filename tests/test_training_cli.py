"""``sigma fit | validate | predict`` (LightningCLI): help, config errors, end to end, DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sigma.encoding import encode
from sigma.model import AutoEncoder
from sigma.training_cli import run_training_cli

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "configs" / "tiny_ae.yaml"
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK",
           "GROUP_RANK", "LOCAL_WORLD_SIZE")  # fmt: skip


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """As under `sigma fit ...`: LightningCLI warns when pytest's own arguments sit in sys.argv."""
    monkeypatch.setattr(sys, "argv", ["sigma"])


def _args(sub: str, features: Path, root: Path, *extra: str) -> list[str]:
    return [sub, "--config", str(TINY), "--data.features_path", str(features),
            "--trainer.default_root_dir", str(root), *extra]  # fmt: skip


def _latent(path: Path) -> np.ndarray:
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds["embedding"].dims == ("y", "x", "latent")
        assert ds["y"].attrs["units"] == "um"
        return ds["embedding"].values


def test_fit_help_lists_documented_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_training_cli(["fit", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for text in (
        "--data.batch_size",
        "Pixels per optimisation step",  # DataModule docstring
        "--data.val_fraction",
        "--model.output_activation",
        "{softmax,sigmoid,identity}",
        "--model.input_noise",
        "Standard deviation of Gaussian noise",  # AutoEncoder docstring
        "--model.variational",
        "--output.path",
        "--checkpoint.save_last",
        "--trainer.strategy",
    ):
        assert text in out, f"{text!r} missing from `sigma fit --help`"


def test_bad_config_value_is_rejected(tmp_path: Path, features_file: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  output_activation: foo\n")
    with pytest.raises(SystemExit) as exc:
        run_training_cli(_args("fit", features_file, tmp_path, "--config", str(bad)))
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "output_activation" in err
    assert "foo" in err
    assert "softmax" in err


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[np.ndarray]]:
    """`sigma fit` then `sigma predict`, twice in one folder (the second run overwrites the config
    and checkpoints): (features file, run folder, the two latents)."""
    from synthetic import make_features

    tmp = tmp_path_factory.mktemp("fit")
    features = tmp / "features.nc"
    make_features(ny=12, nx=16, n_features=5).to_netcdf(features, engine="h5netcdf")
    root = tmp / "run"
    latents = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["sigma"])
        for _ in range(2):
            run_training_cli(_args("fit", features, root))
            out = root / "embedding.nc"
            best = root / "checkpoints" / "best.ckpt"
            run_training_cli(_args("predict", features, root, "--ckpt_path", str(best),
                                   "--output.path", str(out)))  # fmt: skip
            latents.append(_latent(out))
    return features, root, latents


def test_fit_writes_the_best_and_last_checkpoints_and_the_config(fitted) -> None:
    _, root, _ = fitted
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (root / "config.yaml").exists()


def test_predict_writes_a_finite_latent_per_pixel(fitted) -> None:
    latent = fitted[2][0]
    assert latent.shape == (12, 16, 2)
    assert np.isfinite(latent).all()


def test_a_seeded_rerun_in_the_same_folder_gives_the_same_latent(fitted) -> None:
    """Same hardware, same seed; the second run overwrote the first one's files."""
    np.testing.assert_array_equal(fitted[2][0], fitted[2][1])


def test_the_predicted_file_holds_what_the_checkpoint_encodes(fitted) -> None:
    """In (y, x) order."""
    features, root, latents = fitted
    model = AutoEncoder.load_from_checkpoint(root / "checkpoints" / "best.ckpt", map_location="cpu")
    with xr.open_dataset(features, engine="h5netcdf") as ds:
        expected = encode(model, ds.load(), show_progress=False)
    np.testing.assert_allclose(latents[1], expected, rtol=1e-5, atol=1e-6)


def test_validate_runs_on_a_checkpoint(fitted) -> None:
    features, root, _ = fitted
    run_training_cli(
        _args("validate", features, root, "--ckpt_path", str(root / "checkpoints" / "best.ckpt"))
    )


def test_predict_without_an_output_path_writes_embedding_nc_in_the_run_folder(
    fitted, tmp_path: Path
) -> None:
    features, root, latents = fitted
    best = root / "checkpoints" / "best.ckpt"
    run_training_cli(_args("predict", features, tmp_path, "--ckpt_path", str(best)))
    np.testing.assert_array_equal(_latent(tmp_path / "embedding.nc"), latents[1])


def _run_cli_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in DDP_ENV}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "sigma.cli", *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "EADDRINUSE" in result.stderr + result.stdout:
        # a free port picked by Lightning can be taken meanwhile (Lightning-AI#21309): retry once
        result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return result


@pytest.mark.slow  # 78-143 s on the shared 2-core box (4 processes import torch)
def test_ddp_two_cpu_processes_through_the_cli(tmp_path: Path, features_file: Path) -> None:
    root = tmp_path / "ddp"
    ddp = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
    fit = _run_cli_subprocess(_args("fit", features_file, root, *ddp), cwd=tmp_path)
    log = fit.stdout + fit.stderr
    assert fit.returncode == 0, log[-4000:]
    assert "MEMBER: 2/2" in log, "expected two DDP processes"
    best = root / "checkpoints" / "best.ckpt"
    assert best.exists()
    out = root / "embedding.nc"
    pred = _run_cli_subprocess(
        _args(
            "predict",
            features_file,
            root,
            *ddp,
            "--ckpt_path",
            str(best),
            "--output.path",
            str(out),
        ),
        cwd=tmp_path,
    )
    assert pred.returncode == 0, (pred.stdout + pred.stderr)[-4000:]
    # the two ranks' pixels are gathered into one image in (y, x) order
    model = AutoEncoder.load_from_checkpoint(best, map_location="cpu")
    with xr.open_dataset(features_file, engine="h5netcdf") as ds:
        expected = encode(model, ds.load(), show_progress=False)
    np.testing.assert_allclose(_latent(out), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sem_eds", "tem_eds", "demo"])
def test_shipped_configs_parse(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_training_cli(
            ["fit", "--config", str(REPO / "configs" / f"{name}.yaml"), "--print_config"]
        )
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "hidden_dims:" in out
    assert "save_last: true" in out
    assert f"runs/{name}/embedding.nc" in out
