"""Shared fixtures: a seeded rng, tiny synthetic cubes, a cache of real test files, DDP env cleanup."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

_DDP_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "WORLD_SIZE",
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "LOCAL_WORLD_SIZE",
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def features_file(tmp_path: Path) -> Path:
    """A 12 x 16 pixel features file: ``synthetic.make_features`` (three bands of blobs)."""
    from synthetic import make_features

    path = tmp_path / "features.nc"
    make_features(ny=12, nx=16, n_features=5).to_netcdf(path, engine="h5netcdf")
    return path


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny networks run far faster on one thread, above all on a busy shared 2-core CI machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _clean_ddp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning writes MASTER_PORT & co. into os.environ; a later DDP run would then fail (STACK.md)."""
    for key in _DDP_ENV:
        if key in os.environ:
            monkeypatch.delenv(key)


# --- real reader test files (tests/realdata.py): fetched once from PyPI wheels, skipped offline ---


@pytest.fixture(scope="session")
def hyperspy_file():
    """Factory ``relpath -> Path`` of a HyperSpy 1.7.6 reader test file (see tests/realdata.py)."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file


@pytest.fixture(scope="session")
def bcf_50x50():
    """Bruker bcf v2, 50x50 px x 2048 channels, elements Ag Al C Cu O."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file("bruker_data/bcf_v2_50x50px.bcf")


@pytest.fixture(scope="session")
def bcf_p45():
    """Bruker bcf, 75x100 px x 2048 channels, no elements, BSE + SE images."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file("bruker_data/P45_the_default_job.bcf")


@pytest.fixture(scope="session")
def bcf_tem():
    """Bruker bcf from a TEM, 64x64 px x 2048 channels, 200 kV, Cu O Pd Ti, HAADF image."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file("bruker_data/test_TEM.bcf")


@pytest.fixture(scope="session")
def bcf_30x30():
    """Bruker bcf, 30x30 px x 2048 channels, 16 elements, ~20,700 counts/pixel."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file("bruker_data/30x30_instructively_packed_16bit_compressed.bcf")


@pytest.fixture(scope="session")
def bcf_nope():
    """A deliberately broken .bcf (20 bytes)."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file("bruker_data/Nope.bcf")


@pytest.fixture(scope="session")
def emd_4detectors():
    """Velox emd, 16x16 px x 4096 channels, 4 EDS detectors, 2 frames, HAADF image."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file("emd_files/fei_emd_files.zip/fei_SI_EDS-HAADF-4detectors_2frames.emd")


@pytest.fixture(scope="session")
def msa_example1():
    """EMSA single spectrum (EELS, 21 channels in eV, 120 kV)."""
    from realdata import hyperspy_test_file

    return hyperspy_test_file("msa_files/example1.msa")


@pytest.fixture(scope="session")
def eds_sem_tm002():
    """exspy's EDS_SEM_TM002.hspy: BAM reference spectrum, C Al Mn Cu Zr on Si, 10 kV."""
    from realdata import exspy_reference_spectrum

    return exspy_reference_spectrum("EDS_SEM_TM002.hspy")


@pytest.fixture(scope="session")
def eds_tem_fept():
    """exspy's EDS_TEM_FePt_nanoparticles.hspy: TEM spectrum of FePt particles."""
    from realdata import exspy_reference_spectrum

    return exspy_reference_spectrum("EDS_TEM_FePt_nanoparticles.hspy")
