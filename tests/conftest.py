"""Shared fixtures: a seeded rng, one small synthetic scene, a cache of real test files, DDP env cleanup."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

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


# --- one small synthetic scene (sigma.datasets) with known phases, shared by the session ---

SCENE_SHAPE = (32, 48)
SCENE_PHASES = ("quartz", "calcite", "hematite")


def _read_only(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its numpy arrays marked read-only: a test that edits a shared scene fails loudly."""
    for var in ds.variables.values():
        var.values.flags.writeable = False
    return ds


@pytest.fixture(scope="session")
def scene() -> tuple[xr.Dataset, xr.Dataset]:
    """``(ds, truth)``: a 32 x 48 px SEM map of quartz, calcite and hematite grains (16 px), 200
    counts/px, 1024 channels of 10 eV, from :func:`sigma.datasets.synthetic_sem` (read-only)."""
    import sigma

    ds, truth = sigma.datasets.synthetic_sem(
        SCENE_SHAPE,
        n_channels=1024,
        phases=list(SCENE_PHASES),
        counts_per_pixel=200,
        grain_size_px=16,
        seed=1,
        show_progress=False,
    )
    return _read_only(ds), _read_only(truth)


@pytest.fixture(scope="session")
def scene_file(
    scene: tuple[xr.Dataset, xr.Dataset], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``scene`` saved as NetCDF by :func:`sigma.save` (read it, do not write it)."""
    import sigma

    return sigma.save(scene[0], tmp_path_factory.mktemp("scene") / "scene.nc")


@pytest.fixture(scope="session")
def scene_results(scene: tuple[xr.Dataset, xr.Dataset]):  # noqa: ANN201
    """:class:`sigma.SigmaResults` of ``scene`` by :meth:`SigmaResults.from_parts`: the true phases
    as clusters of a 2-D latent (one blob per phase, found by auto-k), no training."""
    from sigma.clustering import cluster
    from sigma.preprocessing import line_features
    from sigma.results import SigmaResults

    ds, truth = scene
    rng = np.random.default_rng(0)
    label = truth.label.values
    centres = np.array([[0.0, 0.0], [4.0, 1.0], [1.0, 4.0]])
    emb = xr.DataArray(
        centres[label] + rng.normal(0, 0.3, (*label.shape, 2)), dims=("y", "x", "latent")
    )
    res = SigmaResults.from_parts(
        clustering=cluster(emb, k_max=5, n_init=1, random_state=0),
        spectrum_image=ds,
        embedding=emb,
        features=line_features(ds)["features"],
        nmf_components=3,
        preprocessing={"steps": ["line_features"]},
        model_hparams={"latent_dim": 2},
    )
    _read_only(res.dataset)
    return res


@pytest.fixture(scope="session")
def scene_run(scene, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``sigma.run`` of ``scene`` with ``FAST`` (3 epochs, auto-k), written to a file: (results,
    the file, a deep copy of the input taken before the run)."""
    from synthetic import FAST

    import sigma

    before = scene[0].copy(deep=True)
    out = tmp_path_factory.mktemp("scene_run") / "scene_sigma.nc"
    return sigma.run(scene[0], config=FAST, out=out, show_progress=False), out, before


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
