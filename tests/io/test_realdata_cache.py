"""tests/realdata.py: the cache of real test files is safe under concurrency and skips offline."""

from __future__ import annotations

import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
import realdata


@pytest.fixture
def fake_cache(tmp_path, monkeypatch):
    """A cache folder holding a small stand-in 'hyperspy' wheel (no download needed)."""
    monkeypatch.setenv("SIGMA_TEST_DATA", str(tmp_path))
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("a.emd", b"EMD" * 1000)
    wheel = tmp_path / f"hyperspy-{realdata.HYPERSPY_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("hyperspy/tests/io/bruker_data/x.bcf", b"BCF" * 100_000)
        zf.write(inner, "hyperspy/tests/io/emd_files/inner.zip")
    inner.unlink()
    return tmp_path


def test_parallel_extraction_gives_one_complete_file(fake_cache):
    with ThreadPoolExecutor(max_workers=4) as pool:
        paths = list(pool.map(realdata.hyperspy_test_file, ["bruker_data/x.bcf"] * 8))
    assert len(set(paths)) == 1
    assert paths[0].read_bytes() == b"BCF" * 100_000
    assert not [p for p in paths[0].parent.iterdir() if p.name.endswith(".part")]


def test_member_of_inner_zip(fake_cache):
    path = realdata.hyperspy_test_file("emd_files/inner.zip/a.emd")
    assert path.name == "a.emd"
    assert path.read_bytes() == b"EMD" * 1000


def test_unknown_member_is_a_clear_error(fake_cache):
    with pytest.raises(FileNotFoundError, match="nothere.bcf"):
        realdata.hyperspy_test_file("bruker_data/nothere.bcf")


def test_skips_when_the_download_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGMA_TEST_DATA", str(tmp_path))

    def offline(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"]
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(realdata.subprocess, "run", offline)
    with pytest.raises(pytest.skip.Exception, match="cannot download hyperspy==1.7.6"):
        realdata.hyperspy_test_file("bruker_data/x.bcf")
    assert not list(tmp_path.glob("*.whl"))
