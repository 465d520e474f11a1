"""Bad inputs: each gives one clear error line, the right exit status, no traceback, and changes nothing.

A table of user errors (bad options, configs, output paths, files and cubes) runs through
``sigma.cli.main`` in-process: each must return exit status 2 (usage error) or 1 (input/run
error), write exactly one ``sigma CMD: error: ...`` line naming the problem, no traceback, and
leave every file in the folder exactly as it was (nothing written, nothing replaced). None of the
cases reaches training. Subprocess tests check the real console script, a write killed with
SIGKILL and a full disk (a small tmpfs, when root). ``docs/errors.md`` lists the messages.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sigma
from sigma._schema import make_spectrum_image

SIGMA = [sys.executable, "-c", "from sigma.cli import entry; entry()"]


# ------------------------------------------------------------------------------------ the folder
def _cube() -> xr.Dataset:
    return sigma.datasets.synthetic_cube((24, 24, 128), n_phases=3, seed=0)


def _float_counts(ds: xr.Dataset, value: float) -> xr.Dataset:
    counts = ds["counts"].astype("float32")
    counts[0, 0, 5] = value
    return ds.assign(counts=counts)


def _energy(ds: xr.Dataset, values: np.ndarray) -> xr.Dataset:
    return ds.assign_coords(energy=xr.DataArray(values, dims="energy", attrs=ds.energy.attrs))


_MSA = """#FORMAT      : EMSA/MAS Spectral Data File
#VERSION     : 1.0
#TITLE       : one spectrum
#DATE        : 01-JAN-2026
#TIME        : 12:00
#OWNER       : sigma tests
#NPOINTS     : 64
#NCOLUMNS    : 1
#XUNITS      : keV
#YUNITS      : counts
#DATATYPE    : Y
#XPERCHAN    : 0.01
#OFFSET      : 0.0
#BEAMKV   -kV: 15.0
#SPECTRUM    : Spectral Data Starts Here
{values}
#ENDOFDATA   : End Of Data and File
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a good cube, results, and every bad file the table uses."""
    from gui.demo import scene_results, write_results

    d = tmp_path_factory.mktemp("bad_inputs")
    ds = _cube()
    sigma.save(ds, d / "cube.nc")
    e = ds.energy.values
    bad = {
        "nan.nc": _float_counts(ds, np.nan),
        "inf.nc": _float_counts(ds, np.inf),
        "negative.nc": _float_counts(ds, -3.0),
        "zeros.nc": ds.assign(counts=ds.counts * 0),
        "zero_peak_only.nc": ds.assign(counts=ds.counts.where(ds.energy < 0.1, 0)),
        "ev_as_kev.nc": _energy(ds, e * 1000.0),
        "nonuniform.nc": _energy(ds, e + np.linspace(0.0, 1.0, e.size) ** 2),
        "one_pixel.nc": ds.isel(y=slice(0, 1), x=slice(0, 1)),
        "three_by_three.nc": ds.isel(y=slice(0, 3), x=slice(0, 3)),
    }
    for name, cube in bad.items():
        sigma.save(cube, d / name)
    write_results(
        scene_results((16, 16), n_phases=3, n_channels=256, energy_scale_kev=0.04), d / "results.nc"
    )
    (d / "single.msa").write_text(
        _MSA.format(values="\n".join(f"{(i * 7) % 13}," for i in range(64))), encoding="ascii"
    )
    (d / "garbage.bcf").write_bytes(b"\x00not a bruker file" * 100)
    (d / "garbage.nc").write_bytes(b"garbage" * 100)
    (d / "garbage.zarr").mkdir()
    (d / "garbage.zarr" / "zarr.json").write_text("{ not json", encoding="ascii")
    (d / "map.foo").write_bytes(b"x")
    (d / "notes.txt").write_text("a file, not a folder", encoding="ascii")
    (d / "no_images").mkdir()
    (d / "no_images" / "readme.txt").write_text("no maps here", encoding="ascii")
    (d / "existing.nc").write_bytes(b"an earlier result")
    (d / "corrupt.ckpt").write_bytes(b"not a checkpoint")
    configs = {
        "malformed.yaml": "model: [1, 2\nmax_epochs: 3\n",
        "epochs_many.yaml": 'max_epochs: "many"\n',
        "unknown_top.yaml": "max_epoch: 3\n",
        "unknown_clustering.yaml": "clustering:\n  n_componets: 3\n",
        "unknown_trainer.yaml": "trainer:\n  max_epoch: 3\n",
        "unknown_model.yaml": "model:\n  hidden_dim: [8]\n",
        "list.yaml": "- 1\n- 2\n",
        "bad_accelerator.yaml": "trainer:\n  accelerator: tpu9\n",
        "bad_k.yaml": "clustering:\n  n_components: 0\n",
        "bad_lr.yaml": "model:\n  lr: -1\n",
        "bad_bin.yaml": "bin_factor: 0\n",
        "bad_method.yaml": "clustering:\n  method: dbscan\n",
    }
    for name, text in configs.items():
        (d / name).write_text(text, encoding="utf-8")
    shutil.copy(Path(__file__).parent / "configs" / "tiny_ae.yaml", d / "tiny_ae.yaml")
    return d


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content (folders by their listing)."""
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


# ------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Case:
    """One bad command line: ``argv`` (file names relative to the folder), exit status, message."""

    id: str
    argv: tuple[str, ...]
    rc: int
    needle: str


R = ("run", "cube.nc", "--out", "new.nc", "--quiet")  # a good run, to which one thing is added

CASES = [
    # options, checked by type and range before anything is read
    Case("k zero", (*R, "--k", "0"), 2, "--k: must be 'auto' or a number of phases >= 1"),
    Case("k abc", (*R, "--k", "abc"), 2, "--k: must be 'auto'"),
    Case("k negative", (*R, "--k", "-3"), 2, "--k"),
    Case("k too many", (*R, "--k", "1000"), 2, "asks for 1000 phases in 576 pixels"),
    # checked before the file is read: the garbage file's error would come later
    Case(
        "lines unknown element",
        ("run", "garbage.bcf", "--out", "new.nc", "--lines", "Xx_Ka,Fe_Ka"),
        2,
        "config key 'lines' (--lines): X-ray line 'Xx_Ka': unknown element 'Xx'",
    ),
    Case("lines unknown family", (*R, "--lines", "Fe_Kz"), 2, "X-ray line 'Fe_Kz'"),
    Case("bin zero", (*R, "--bin", "0"), 2, "--bin: must be >= 1"),
    Case("bin negative", (*R, "--bin", "-2"), 2, "--bin: must be >= 1"),
    Case("bin abc", (*R, "--bin", "two"), 2, "--bin: must be a whole number"),
    Case("bin larger than map", (*R, "--bin", "100"), 2, "is larger than the 24 x 24 pixel map"),
    Case("smooth negative", (*R, "--smooth", "-5"), 2, "--smooth: must be a finite number >= 0"),
    Case("smooth nan", (*R, "--smooth", "nan"), 2, "--smooth"),
    Case("epochs zero", (*R, "--epochs", "0"), 2, "--epochs: must be >= 1"),
    Case("epochs float", (*R, "--epochs", "1.5"), 2, "--epochs: must be a whole number"),
    Case("seed negative", (*R, "--seed", "-1"), 2, "--seed: must be >= 0"),
    Case("accelerator", (*R, "--accelerator", "tpu9"), 2, "--accelerator: must be one of"),
    Case("devices", (*R, "--devices", "x"), 2, "--devices"),
    Case("dask scheduler", (*R, "--dask-scheduler", "not a url"), 2, "scheduler address"),
    Case("method", (*R, "--method", "dbscan"), 2, "invalid choice: 'dbscan'"),
    Case("unknown option", (*R, "--frobnicate"), 2, "unrecognized arguments: --frobnicate"),
    # dotted config keys: names and types at parse time, ranges before anything is read
    Case(
        "dotted unknown key",
        (*R, "--clustering.n_compnents", "5"),
        2,
        "did you mean --clustering.n_components?",
    ),
    Case(
        "dotted type", (*R, "--model.latent_dim", "two"), 2, "--model.latent_dim: expected an int"
    ),
    Case("dotted choice", (*R, "--refine", "umap"), 2, "--refine: expected 'pca', 'features' or"),
    Case(
        "dotted range",
        (*R, "--clustering.n_components", "0"),
        2,
        "clustering.n_components must be 'auto' or an int in the range [1, inf)",
    ),
    # configs: YAML, types and nested keys, before anything is read
    Case("yaml malformed", (*R, "--config", "malformed.yaml"), 2, "is not valid YAML at line"),
    Case(
        "yaml epochs many", (*R, "--config", "epochs_many.yaml"), 2, "'max_epochs' must be an int"
    ),
    Case("yaml unknown key", (*R, "--config", "unknown_top.yaml"), 2, "Did you mean 'max_epochs'"),
    Case(
        "yaml clustering key", (*R, "--config", "unknown_clustering.yaml"), 2, "inside 'clustering'"
    ),
    Case("yaml trainer key", (*R, "--config", "unknown_trainer.yaml"), 2, "inside 'trainer'"),
    Case("yaml model key", (*R, "--config", "unknown_model.yaml"), 2, "inside 'model'"),
    Case("yaml list", (*R, "--config", "list.yaml"), 2, "must hold a mapping"),
    Case("yaml accelerator", (*R, "--config", "bad_accelerator.yaml"), 2, "trainer.accelerator"),
    Case("yaml k", (*R, "--config", "bad_k.yaml"), 2, "clustering.n_components"),
    Case("yaml lr", (*R, "--config", "bad_lr.yaml"), 2, "model.lr"),
    Case("yaml bin", (*R, "--config", "bad_bin.yaml"), 2, "'bin_factor' must be an int"),
    Case("yaml method", (*R, "--config", "bad_method.yaml"), 2, "clustering.method"),
    Case("yaml missing", (*R, "--config", "nope.yaml"), 1, "does not exist"),
    # the output path, checked before the input is read
    Case(
        "out is input",
        ("run", "cube.nc", "--out", "cube.nc", "--overwrite"),
        2,
        "is the input file",
    ),
    Case(
        "out is input lazy",
        ("run", "cube.nc", "--out", "cube.nc", "--overwrite", "--lazy"),
        2,
        "is the input file",
    ),  # fmt: skip
    Case(
        "out inside input", ("run", "cube.nc", "--out", "cube.nc/r.nc"), 2, "lies inside the input"
    ),
    Case("out txt", ("run", "cube.nc", "--out", "r.txt"), 2, "got extension '.txt'"),
    Case(
        "out parent is a file",
        ("run", "cube.nc", "--out", "notes.txt/r.nc"),
        2,
        "is a file, not a folder",
    ),  # fmt: skip
    Case("out exists", ("run", "cube.nc", "--out", "existing.nc"), 2, "already exists"),
    # input files
    Case("input missing", ("run", "nope.bcf", "--out", "new.nc"), 1, "does not exist"),
    Case(
        "input folder without maps",
        ("run", "no_images", "--out", "new.nc"),
        1,
        "is a folder with no element-map images",
    ),
    Case(
        "input unknown extension",
        ("run", "map.foo", "--out", "new.nc"),
        1,
        "cannot read files with extension '.foo'",
    ),  # fmt: skip
    Case("input garbage bcf", ("run", "garbage.bcf", "--out", "new.nc"), 1, "could not parse it"),
    Case(
        "input garbage bcf lazy",
        ("run", "garbage.bcf", "--out", "new.nc", "--lazy"),
        1,
        "could not parse it",
    ),  # fmt: skip
    Case(
        "input garbage nc",
        ("run", "garbage.nc", "--out", "new.nc"),
        1,
        "could not read it as NetCDF",
    ),  # fmt: skip
    Case(
        "input garbage zarr",
        ("run", "garbage.zarr", "--out", "new.nc"),
        1,
        "could not read it as Zarr",
    ),  # fmt: skip
    Case(
        "input is results", ("run", "results.nc", "--out", "new.nc"), 1, "is a sigma results file"
    ),
    Case(
        "input single msa", ("run", "single.msa", "--out", "new.nc"), 1, "1 x 1 pixels is too small"
    ),
    Case("input 3x3 map", ("run", "three_by_three.nc", "--out", "new.nc"), 1, "3 x 3 pixels"),
    Case("input 1x1 map", ("run", "one_pixel.nc", "--out", "new.nc"), 1, "1 x 1 pixels"),
    # the cube's values and axis, checked right after loading
    Case("counts nan", ("run", "nan.nc", "--out", "new.nc"), 1, "holds 1 NaN or inf values"),
    Case("counts nan lazy", ("run", "nan.nc", "--out", "new.nc", "--lazy"), 1, "NaN or inf"),
    Case("counts inf", ("run", "inf.nc", "--out", "new.nc"), 1, "holds 1 NaN or inf values"),
    Case("counts negative", ("run", "negative.nc", "--out", "new.nc"), 1, "1 negative values"),
    Case(
        "counts all zero",
        ("run", "zeros.nc", "--out", "new.nc"),
        1,
        "every count in the cube is zero",
    ),  # fmt: skip
    Case(
        "counts only in the zero peak",
        ("run", "zero_peak_only.nc", "--out", "new.nc"),
        1,
        "no X-ray counts above 0.1 keV",
    ),  # fmt: skip
    Case("axis eV as keV", ("run", "ev_as_kev.nc", "--out", "new.nc"), 1, "most likely in eV"),
    Case("axis non-uniform", ("run", "nonuniform.nc", "--out", "new.nc"), 1, "not uniform"),
    # other commands
    Case(
        "gui raw cube",
        ("gui", "cube.nc", "--dry-run", "--no-show"),
        2,
        "raw spectrum image: run `sigma run cube.nc` first",
    ),  # fmt: skip
    Case("gui missing", ("gui", "nope.nc", "--dry-run"), 2, "does not exist"),
    Case("gui garbage zarr", ("gui", "garbage.zarr", "--dry-run"), 2, "could not read it as Zarr"),
    Case(
        "gui root not a folder",
        ("gui", "results.nc", "--root", "notes.txt", "--dry-run"),
        2,
        "is not a folder",
    ),  # fmt: skip
    Case("info garbage", ("info", "garbage.nc"), 1, "could not read it as NetCDF"),
    Case("convert garbage bcf", ("convert", "garbage.bcf", "out.zarr"), 1, "could not parse it"),
    Case("convert missing", ("convert", "nope.bcf", "out.zarr"), 1, "does not exist"),
    Case(
        "convert out is input",
        ("convert", "cube.nc", "cube.nc", "--overwrite"),
        2,
        "OUT 'cube.nc' is the input file",
    ),  # fmt: skip
    Case("convert out exists", ("convert", "cube.nc", "existing.nc"), 2, "already exists"),
    Case("convert out txt", ("convert", "cube.nc", "out.txt"), 2, "got extension '.txt'"),
    Case(
        "fit missing data",
        ("fit", "--config", "tiny_ae.yaml", "--data.data_path", "nope.nc"),
        1,
        "does not exist",
    ),  # fmt: skip
    Case(
        "fit garbage data",
        ("fit", "--config", "tiny_ae.yaml", "--data.data_path", "garbage.nc"),
        1,
        "could not read it as NetCDF",
    ),  # fmt: skip
    Case(
        "predict missing ckpt",
        (
            "predict",
            "--config",
            "tiny_ae.yaml",
            "--data.data_path",
            "cube.nc",
            "--ckpt_path",
            "nope.ckpt",
        ),
        1,
        "--ckpt_path 'nope.ckpt' does not exist",
    ),  # fmt: skip
    Case(
        "predict corrupt ckpt",
        (
            "predict",
            "--config",
            "tiny_ae.yaml",
            "--data.data_path",
            "cube.nc",
            "--ckpt_path",
            "corrupt.ckpt",
        ),
        1,
        "not a checkpoint sigma can load safely",
    ),  # fmt: skip
]


def test_the_table_is_large() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


def _run_main(argv: list[str]) -> int:
    from sigma.cli import main

    try:
        return main(argv)
    except SystemExit as stop:  # argparse's own exit
        return int(stop.code or 0)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_line(
    case: Case,
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(folder)
    before = _snapshot(folder)
    rc = _run_main(list(case.argv))
    err = capsys.readouterr().err
    assert rc == case.rc, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"sigma {case.argv[0]}: error: ")
    assert case.needle in errors[0], errors[0]
    assert _snapshot(folder) == before  # nothing written, nothing replaced


def test_debug_shows_the_traceback(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sigma.exceptions import NoSpectrumImageError

    monkeypatch.chdir(folder)
    with pytest.raises(NoSpectrumImageError, match="sigma results file"):
        _run_main(["run", "results.nc", "--out", "new.nc", "--debug"])


# ------------------------------------------------------------------ warnings (the run goes on)
def test_lines_above_the_beam_energy_warn() -> None:
    from sigma.validation import check_lines_excited

    with pytest.warns(
        UserWarning, match=r"Ba_Ka \(edge 37.4\d keV\) need more than the 15 keV beam"
    ):
        above = check_lines_excited(["Fe_Ka", "Ba_Ka"], 15.0)
    assert above == ["Ba_Ka (edge 37.44 keV)"]
    assert check_lines_excited(["Fe_Ka", "Si_Ka"], 15.0) == []
    assert (
        check_lines_excited(["Ba", "Fe"], 15.0) == []
    )  # elements: a line the beam excites is picked
    assert check_lines_excited(["Ba_Ka"], float("nan")) == []  # unknown beam: no claim


def test_non_integer_counts_warn() -> None:
    from sigma.validation import check_loaded_cube

    ds = _cube()
    scaled = ds.assign(counts=ds.counts.astype("float32") * 0.37)
    with pytest.warns(UserWarning, match="non-integer values"):
        check_loaded_cube(scaled)
    whole = ds.assign(counts=ds.counts.astype("float32"))
    assert check_loaded_cube(whole) == float(ds.counts.sum())  # whole-number floats are fine


def test_eager_read_too_large_for_memory_advises_lazy(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sigma import validation
    from sigma.exceptions import SchemaError

    monkeypatch.setattr(validation, "_available_memory", lambda: 1000)
    with pytest.raises(SchemaError, match=r"--lazy"):
        validation.load_checked(folder / "cube.nc")
    assert validation.load_checked(folder / "cube.nc", lazy=True)["counts"].chunks is not None


# --------------------------------------------------------------------- the real console script
@pytest.mark.parametrize(
    ("argv", "rc", "needle"),
    [
        (["run", "cube.nc", "--k", "abc"], 2, "--k: must be 'auto'"),
        (["run", "cube.nc", "--out", "cube.nc", "--overwrite"], 2, "is the input file"),
        (["gui", "cube.nc", "--dry-run"], 2, "raw spectrum image"),
    ],
)
def test_console_script_one_line(folder: Path, argv: list[str], rc: int, needle: str) -> None:
    before = _snapshot(folder)
    proc = subprocess.run(
        [*SIGMA, *argv], cwd=folder, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == rc, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert _snapshot(folder) == before


# ----------------------------------------------------------------------------- kill -9 mid-write
_SLOW_WRITER = """
import sys, time
import numpy as np
import sigma
from sigma._schema import make_spectrum_image

def slow(block):
    time.sleep(0.25)
    return block

ds = make_spectrum_image(np.ones((64, 16, 64), dtype=np.uint16), energy_scale_kev=0.01)
ds = ds.chunk({"y": 2})
ds["counts"] = ds["counts"].copy(data=ds["counts"].data.map_blocks(slow, dtype=np.uint16))
print("writing", flush=True)
sigma.save(ds, sys.argv[1], overwrite=True)
print("done", flush=True)
"""


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_kill_9_during_a_write_keeps_the_old_results(tmp_path: Path, suffix: str) -> None:
    from sigma.exceptions import CorruptFileError

    target = tmp_path / f"results{suffix}"
    old = make_spectrum_image(np.full((4, 4, 64), 7, dtype=np.uint16), energy_scale_kev=0.01)
    sigma.save(old, target)
    script = tmp_path / "writer.py"
    script.write_text(_SLOW_WRITER, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(target)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(f".{target.name}.sigma-tmp-*")):
            assert time.monotonic() < deadline, "the write never started"
            assert proc.poll() is None, "the writer ended before it was killed"
            time.sleep(0.05)
        time.sleep(1.0)  # well inside the 32 x 0.25 s write
        assert proc.poll() is None, "the write finished before the kill: make it slower"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    # the target is the old dataset, whole
    xr.testing.assert_identical(sigma.io.open_dataset(target), old)
    leftovers = list(tmp_path.glob(f".{target.name}.sigma-tmp-*"))
    assert len(leftovers) == 1
    if suffix == ".zarr":  # the half-written store refuses to load
        with pytest.raises(CorruptFileError, match="incomplete Zarr store"):
            sigma.io.open_dataset(leftovers[0].rename(tmp_path / "copied.zarr"))
        shutil.rmtree(tmp_path / "copied.zarr")
        sigma.save(old, target, overwrite=True)
    else:  # the next write to the same target removes what the killed one left
        sigma.save(old, target, overwrite=True)
        assert not list(tmp_path.glob(f".{target.name}.sigma-tmp-*"))


def test_zarr_with_a_missing_chunk_refuses_to_load(tmp_path: Path) -> None:
    from sigma.exceptions import CorruptFileError

    rng = np.random.default_rng(0)
    ds = make_spectrum_image(
        rng.integers(1, 9, (8, 8, 32)).astype(np.uint16), energy_scale_kev=0.01
    )
    path = sigma.save(ds.chunk({"y": 4}), tmp_path / "cube.zarr")
    xr.testing.assert_identical(sigma.io.open_dataset(path), ds)
    chunks = sorted(
        p for p in (path / "counts").rglob("*") if p.is_file() and p.name != "zarr.json"
    )
    assert len(chunks) == 2
    chunks[0].unlink()
    with pytest.raises(CorruptFileError, match="chunks are missing"):
        sigma.load(path)


def test_overwrite_keeps_the_old_file_until_the_new_one_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails half-way (here: an error from the writer) leaves the old results."""
    from sigma.io import _netcdf

    target = tmp_path / "results.nc"
    old = make_spectrum_image(np.full((4, 4, 16), 3, dtype=np.uint16), energy_scale_kev=0.01)
    sigma.save(old, target)

    def broken(ds: xr.Dataset, tmp: Path, final: Path) -> None:
        tmp.write_bytes(b"half a file")
        raise OSError("disk went away")

    monkeypatch.setattr(_netcdf, "_write_netcdf", broken)
    with pytest.raises(OSError, match="disk went away"):
        sigma.save(old.assign(counts=old.counts * 2), target, overwrite=True)
    xr.testing.assert_identical(sigma.io.open_dataset(target), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.nc"]


# ---------------------------------------------------------------------------------- a full disk
@pytest.fixture
def tiny_disk(tmp_path: Path) -> Path:
    """A 2 MB tmpfs (needs root and mount permission), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a full-disk test needs a small tmpfs, which only root can mount")
    mnt = tmp_path / f"tiny_{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_full_disk_one_error_and_the_old_results_intact(
    tiny_disk: Path, tmp_path: Path, suffix: str
) -> None:
    small = make_spectrum_image(np.full((4, 4, 32), 5, dtype=np.uint16), energy_scale_kev=0.01)
    target = tiny_disk / f"out{suffix}"
    sigma.save(small, target)
    rng = np.random.default_rng(0)  # random counts: no compression gets 4 MB into 2 MB
    big = make_spectrum_image(
        rng.integers(0, 60000, (64, 64, 512)).astype(np.uint16), energy_scale_kev=0.01
    )
    src = tmp_path / "big.nc"
    sigma.save(big, src)
    # in a subprocess: a crash (HDF5 segfaults on ENOSPC) must not take pytest with it
    proc = subprocess.run(
        [*SIGMA, "convert", str(src), str(target), "--overwrite", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("INFO ")]
    assert len(lines) == 1, proc.stderr
    assert "no space left on the device" in lines[0]
    assert "Traceback" not in proc.stderr
    assert "unchanged" in lines[0]
    xr.testing.assert_identical(sigma.io.open_dataset(target), small)
    assert sorted(p.name for p in tiny_disk.iterdir()) == [target.name]


def test_errors_doc_lists_the_messages() -> None:
    """docs/errors.md names every case of the table."""
    text = (Path(__file__).parents[1] / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"| {c.id} |" not in text]
    assert not missing, missing


def test_api_refuses_to_write_results_over_the_file_a_dataset_came_from(folder: Path) -> None:
    from sigma.exceptions import OutputPathError

    before = _snapshot(folder)
    ds = sigma.load(folder / "cube.nc")
    with pytest.raises(OutputPathError, match="is the input file"):
        sigma.run(ds, out=folder / "cube.nc", overwrite=True, show_progress=False)
    assert _snapshot(folder) == before


@pytest.mark.slow
def test_sigma_run_overwrite_on_a_full_disk_keeps_the_previous_results(
    tiny_disk: Path, folder: Path
) -> None:
    """The whole run, then a save that does not fit: one error line, the old results intact."""
    from sigma.results import SigmaResults

    target = tiny_disk / "results.nc"
    args = [*SIGMA, "run", str(folder / "cube.nc"), "--out", str(target), "--epochs", "1"]
    first = subprocess.run(
        [*args, "--k", "3", "--quiet"], capture_output=True, text=True, timeout=300, check=False
    )
    assert first.returncode == 0, first.stderr
    old = SigmaResults.load(target).dataset
    free = shutil.disk_usage(tiny_disk).free
    (tiny_disk / "filler").write_bytes(b"\0" * max(0, free - 16 * 1024))  # leave 16 kB
    proc = subprocess.run(
        [*args, "--k", "2", "--quiet", "--overwrite"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ": error:" in ln]
    assert len(lines) == 1, proc.stderr
    assert "no space left on the device" in lines[0]
    assert "Traceback" not in proc.stderr
    xr.testing.assert_identical(SigmaResults.load(target).dataset, old)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler", "results.nc"]
