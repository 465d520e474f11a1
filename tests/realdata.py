"""Real reader test files, fetched at test time from PyPI wheels into a local cache.

The ``hyperspy==1.7.6`` wheel still ships HyperSpy's reader test files (GPL-3.0, so they are not
committed here); the ``exspy`` wheel ships two reference EDS spectra. Both wheels are fetched once
with ``pip download --no-deps`` into ``$SIGMA_TEST_DATA`` (default ``~/.cache/sigma-test-data``)
and the wanted members are extracted with :mod:`zipfile`. Downloads and extractions go through a
lock file and an atomic rename, so parallel test processes neither race nor see half-written
files. When the download is impossible (offline machine), the calling test is skipped with the
reason.

Examples
--------
>>> path = hyperspy_test_file("bruker_data/bcf_v2_50x50px.bcf")  # doctest: +SKIP
>>> path.name  # doctest: +SKIP
'bcf_v2_50x50px.bcf'
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "HYPERSPY_VERSION",
    "EXSPY_VERSION",
    "cache_dir",
    "hyperspy_test_file",
    "exspy_reference_spectrum",
    "REAL_SPECTRUM_IMAGES",
]

HYPERSPY_VERSION = "1.7.6"
EXSPY_VERSION = "0.3.2"

#: relpath (under ``hyperspy/tests/io/``) -> (ny, nx, n_channels) of the spectrum image
REAL_SPECTRUM_IMAGES: dict[str, tuple[int, int, int]] = {
    "bruker_data/30x30_instructively_packed_16bit_compressed.bcf": (30, 30, 2048),
    "bruker_data/bcf_v2_50x50px.bcf": (50, 50, 2048),
    "bruker_data/P45_the_default_job.bcf": (75, 100, 2048),
    "bruker_data/test_TEM.bcf": (64, 64, 2048),
    "emd_files/fei_emd_files.zip/fei_SI_EDS-HAADF-4detectors_2frames.emd": (16, 16, 4096),
}

_HYPERSPY_PREFIX = "hyperspy/tests/io/"
_EXSPY_PREFIX = "exspy/data/"


def cache_dir() -> Path:
    """Return the cache folder (``$SIGMA_TEST_DATA`` or ``~/.cache/sigma-test-data``), created."""
    root = Path(os.environ.get("SIGMA_TEST_DATA") or Path.home() / ".cache" / "sigma-test-data")
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``root/.lock`` (blocks other processes doing the same)."""
    with (root / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _wheel(package: str, version: str) -> Path:
    """Return the path of the cached wheel of ``package==version``, downloading it once."""
    root = cache_dir()
    stem = package.replace("-", "_")

    def find() -> Path | None:
        hits = sorted(root.glob(f"{stem}-{version}-*.whl"))
        return hits[0] if hits else None

    found = find()
    if found is not None:
        return found
    with _locked(root):
        found = find()  # another process may have fetched it while we waited
        if found is not None:
            return found
        tmp = root / f".download-{package}-{os.getpid()}"
        tmp.mkdir(exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            f"{package}=={version}",
            "-d",
            str(tmp),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            pytest.skip(f"cannot download {package}=={version} for the real test files: {err}")
        wheels = sorted(tmp.glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            pytest.skip(
                f"cannot download {package}=={version} (needed for the real test files; "
                f"pip says: {tail[0]}). Run online once, or set SIGMA_TEST_DATA to a folder "
                "holding the wheel."
            )
        target = root / wheels[0].name
        wheels[0].replace(target)  # atomic on one file system
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
        return target


def _extract(archive: Path, member: str, target: Path) -> Path:
    """Extract ``member`` of zip ``archive`` to ``target`` atomically (once); return ``target``."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(cache_dir()):
        if target.exists():
            return target
        with zipfile.ZipFile(archive) as zf:
            try:
                data = zf.read(member)
            except KeyError as err:
                raise FileNotFoundError(
                    f"{member!r} is not in {archive.name}; members under its folder: "
                    f"{[n for n in zf.namelist() if n.startswith(member.rsplit('/', 1)[0])][:20]!r}"
                ) from err
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        tmp.write_bytes(data)
        tmp.replace(target)
    return target


def hyperspy_test_file(relpath: str) -> Path:
    """Return a local path to HyperSpy 1.7.6's reader test file ``relpath``.

    Parameters
    ----------
    relpath
        Path under ``hyperspy/tests/io/`` in the wheel, e.g. ``"bruker_data/test_TEM.bcf"``. A
        member of an inner zip is written ``"emd_files/fei_emd_files.zip/<name>.emd"``.

    Returns
    -------
    Path
        The extracted file in the cache. Calls :func:`pytest.skip` when the wheel cannot be
        downloaded.
    """
    wheel = _wheel("hyperspy", HYPERSPY_VERSION)
    out_root = cache_dir() / f"hyperspy-{HYPERSPY_VERSION}"
    parts = relpath.split(".zip/", 1)
    if len(parts) == 2:
        inner_zip = _extract(
            wheel, _HYPERSPY_PREFIX + parts[0] + ".zip", out_root / (parts[0] + ".zip")
        )
        return _extract(inner_zip, parts[1], out_root / Path(parts[0]).parent / parts[1])
    return _extract(wheel, _HYPERSPY_PREFIX + relpath, out_root / relpath)


def exspy_reference_spectrum(name: str = "EDS_SEM_TM002.hspy") -> Path:
    """Return a local path to one of exspy's reference spectra (``exspy/data/<name>``).

    ``"EDS_SEM_TM002.hspy"`` is the BAM EDS-TM002 reference material (C, Al, Mn, Cu, Zr on Si,
    10 kV); ``"EDS_TEM_FePt_nanoparticles.hspy"`` is a TEM spectrum of FePt particles.
    Calls :func:`pytest.skip` when the wheel cannot be downloaded.
    """
    wheel = _wheel("exspy", EXSPY_VERSION)
    return _extract(wheel, _EXSPY_PREFIX + name, cache_dir() / f"exspy-{EXSPY_VERSION}" / name)
