"""``sigma gui FILE``: a bad file fails in the terminal, before any server starts (issue 15, item 10)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sigma.commands import gui as cmd


def _raw_cube(path):
    energy = xr.DataArray([0.0, 0.01, 0.02], dims="energy", attrs={"units": "keV"})
    ds = xr.Dataset({"counts": (("y", "x", "energy"), np.ones((2, 2, 3), np.uint16))},
                    coords={"energy": energy})  # fmt: skip
    ds.to_netcdf(path, engine="h5netcdf")


def _truncated(src, path):
    data = src.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _wrong_latent(src, path):
    ds = xr.open_dataset(src, engine="h5netcdf").load()
    emb = np.concatenate([ds["embedding"].values] * 2, axis=-1)
    ds = xr.Dataset({"label": ds["label"], "embedding": (("y", "x", "latent"), emb)})
    ds.to_netcdf(path, engine="h5netcdf")


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("missing.nc", None, "does not exist"),
        ("junk.nc", lambda src, p: p.write_bytes(b"not a netcdf file"), "could not read"),
        ("empty.nc", lambda src, p: p.write_bytes(b""), "could not read"),
        ("cut.nc", _truncated, "cut short|could not read|damaged"),
        ("raw.nc", lambda src, p: _raw_cube(p), "raw spectrum image: run `sigma run"),
        ("map.bcf", lambda src, p: p.write_bytes(b"x"), "raw spectrum image .*sigma run"),
        ("map.pts", lambda src, p: p.write_bytes(b"x"), "raw spectrum image .*sigma run"),
        ("latent4.nc", _wrong_latent, "2-D latent space"),
    ],
)
def test_bad_file_fails_before_the_server_starts(
    name, make, expected, small_results_path, tmp_path, capsys, monkeypatch
):
    started = []
    monkeypatch.setattr(cmd, "_serve", lambda *a, **k: started.append(a) or 0)
    path = tmp_path / name
    if make is not None:
        make(small_results_path, path)
    assert cmd.main([str(path), "--no-show", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert started == []
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("sigma gui: error: ")
    assert name in lines[0]
    import re

    assert re.search(expected, lines[0]), lines[0]


def test_good_file_starts_the_server(small_results_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(cmd, "_serve", lambda *a, **k: started.append(a[0]) or 0)
    assert cmd.main([str(small_results_path), "--no-show", "--port", "0"]) == 0
    assert len(started) == 1
    assert str(small_results_path) in started[0]


def test_no_file_opens_the_sigma_demo_results(monkeypatch, tmp_path, capsys):
    """Issue 15, item 9: `sigma gui` with no file serves `sigma demo --small`'s results."""
    import gui.demo

    built = tmp_path / gui.demo.DEMO_FILE
    calls = []
    monkeypatch.setattr(gui.demo, "demo_results_path", lambda *a, **k: calls.append(a) or built)
    started = []
    monkeypatch.setattr(cmd, "_serve", lambda *a, **k: started.append(a[0]) or 0)
    assert cmd.main(["--no-show", "--port", "0"]) == 0
    assert calls  # built (or found) before the server starts
    assert started[0][started[0].index("--args") + 1] == str(built)
    assert gui.demo.DEMO_FILE in capsys.readouterr().err
