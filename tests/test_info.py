"""``sigma info``: a readable table for real files and for a synthetic cube saved to NetCDF."""

from __future__ import annotations

import re

import numpy as np
import pytest
from realdata import REAL_SPECTRUM_IMAGES, hyperspy_test_file

from sigma._schema import make_spectrum_image
from sigma.cli import main
from sigma.commands.info import summarize
from sigma.io import save


def _row(out: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}\s{{2,}}(.*)$", out, flags=re.MULTILINE)
    assert match, f"no {label!r} row in:\n{out}"
    return match.group(1)


@pytest.fixture
def synthetic_nc(tmp_path):
    # pixel (y, x) holds y * 10 + x + 1 counts, all in channel 5: totals 1..22 over a 2 x 11 map
    counts = np.zeros((2, 11, 50), dtype=np.uint32)
    counts[:, :, 5] = np.arange(22).reshape(2, 11) + 1
    ds = make_spectrum_image(
        counts,
        energy_scale_kev=0.02,
        energy_offset_kev=-0.1,
        pixel_size=(0.5, 0.5),
        pixel_units="nm",
        attrs={"beam_energy_kev": 15.0, "elements": ["Fe", "O"], "xray_lines": ["Fe_Ka", "O_Ka"]},
        nav_images={"haadf": np.ones((2, 11), dtype=np.float32)},
    )
    return save(ds, tmp_path / "synthetic.nc")


@pytest.mark.parametrize("lazy", [False, True])
def test_info_on_synthetic_netcdf(synthetic_nc, capsys, lazy):
    assert main(["info", str(synthetic_nc), *(["--lazy"] if lazy else [])]) == 0
    out = capsys.readouterr().out
    assert str(synthetic_nc) in _row(out, "file")
    assert _row(out, "navigation").startswith("2 x 11 pixels")
    assert "pixel size 0.5 x 0.5 nm" in _row(out, "navigation")
    assert _row(out, "channels") == "50"
    energy = _row(out, "energy")
    assert "-0.1000 to 0.8800 keV" in energy
    assert "scale 0.02 keV/channel" in energy
    assert "offset -0.1 keV" in energy
    assert _row(out, "beam energy") == "15 kV"
    assert _row(out, "elements") == "Fe, O"
    assert _row(out, "X-ray lines") == "Fe_Ka, O_Ka"
    # totals 1..22: mean 11.5, median 11.5, min 1, max 22, total 253
    assert _row(out, "counts/pixel") == "mean 11.5, median 11.5, min 1, max 22 (total 253)"
    assert _row(out, "nav images") == "haadf (2 x 11)"
    assert ("dask chunks" in _row(out, "counts")) is lazy


def test_summarize_lazy_equals_eager(synthetic_nc):
    from sigma.io import load

    eager, lazy = summarize(load(synthetic_nc)), summarize(load(synthetic_nc, lazy=True))
    for key in ("counts_mean", "counts_median", "counts_total", "n_channels", "energy_scale_kev"):
        assert eager[key] == lazy[key]
    assert lazy["lazy"]
    assert not eager["lazy"]


@pytest.mark.network
@pytest.mark.parametrize("relpath", list(REAL_SPECTRUM_IMAGES))
def test_info_on_real_files(relpath, capsys):
    path = hyperspy_test_file(relpath)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    ny, nx, ne = REAL_SPECTRUM_IMAGES[relpath]
    assert _row(out, "navigation").startswith(f"{ny} x {nx} pixels")
    assert _row(out, "channels") == str(ne)
    assert "keV/channel" in _row(out, "energy")
    mean = float(re.search(r"mean ([0-9.]+)", _row(out, "counts/pixel")).group(1))
    assert mean > 1


@pytest.mark.network
def test_info_real_file_details(bcf_p45, bcf_50x50, bcf_tem, capsys):
    assert main(["info", str(bcf_p45), "--lazy"]) == 0
    out = capsys.readouterr().out
    assert _row(out, "nav images") == "bse (75 x 100), se (75 x 100)"
    assert _row(out, "elements") == "none in the metadata"
    assert "median 21.0" in _row(out, "counts/pixel")  # ~22 counts/pixel (DATA.md)
    assert main(["info", str(bcf_50x50)]) == 0
    assert _row(capsys.readouterr().out, "elements") == "Ag, Al, C, Cu, O"
    assert main(["info", str(bcf_tem)]) == 0
    assert _row(capsys.readouterr().out, "beam energy") == "200 kV"


def test_info_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.bcf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sigma info: error:")
    assert "missing.bcf" in err
    (tmp_path / "x.foo").write_text("?")
    assert main(["info", str(tmp_path / "x.foo")]) == 1
    assert "Supported extensions" in capsys.readouterr().err


def test_info_on_a_file_without_counts(tmp_path, capsys):
    import xarray as xr

    ds = xr.Dataset({"features": (("y", "x", "feature"), np.zeros((2, 3, 4), dtype=np.float32))})
    path = save(ds, tmp_path / "features.nc")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "y=2, x=3, feature=4" in _row(out, "dims")
    assert _row(out, "variable features") == "(y, x, feature)"
    assert "no spectra" in _row(out, "note")
    assert _row(out, "element maps").startswith("4: ")


def test_info_lists_the_element_maps_of_a_folder(tmp_path, capsys):
    import tifffile

    folder = tmp_path / "maps"
    folder.mkdir()
    for i, name in enumerate(("Fe Ka", "Si Ka")):
        tifffile.imwrite(folder / f"{name}.tif", np.full((4, 5), 2.0 * (i + 1), np.float32))
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert _row(out, "element maps") == "2: Fe_Ka, Si_Ka"
    assert _row(out, "  Si_Ka") == "mean 4, min 4, max 4"


_ENTRY = "import sys; from sigma.cli import entry; sys.argv = ['sigma', *sys.argv[1:]]; entry()"


def test_console_script_flushes_its_output(synthetic_nc) -> None:
    """`sigma info` through the console entry (which ends the process at once) loses nothing."""
    import subprocess
    import sys

    code = _ENTRY
    ok = subprocess.run(
        [sys.executable, "-c", code, "info", str(synthetic_nc)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert _row(ok.stdout, "navigation").startswith("2 x 11 pixels")
    assert _row(ok.stdout, "channels") == "50"


@pytest.mark.slow  # a fresh interpreter; the console script's errors and exit status are also
# checked by default in test_bad_inputs.py::test_console_script_one_line
def test_console_script_exit_status_and_error_on_a_missing_file(tmp_path) -> None:
    import subprocess
    import sys

    code = _ENTRY
    bad = subprocess.run(
        [sys.executable, "-c", code, "info", str(tmp_path / "missing.nc")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "missing.nc" in bad.stderr


def test_reader_warning_printed_once() -> None:
    """RosettaSciIO's own console handler is dropped under a command: one line per warning."""
    import subprocess
    import sys

    path = hyperspy_test_file("emd_files/fei_emd_files.zip/fei_SI_SuperX-HAADF_10frames_10x50.emd")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sigma.cli import entry; entry()",
            "info",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("only one spectrum stream") == 1


def test_info_on_a_results_file_is_not_element_maps(scene_results, tmp_path, capsys):
    path = scene_results.save(tmp_path / "results.nc")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "element maps" not in out
    assert "not a spectrum image" in _row(out, "note")
