"""The one demo: the ``sigma demo`` scene and its results, for the GUI, its tests and benchmarks.

- :func:`demo_results_path` is what ``sigma gui`` with no file opens: the results of
  ``sigma demo --small`` (the 8-phase polished rock section of :func:`sigma.datasets.synthetic_sem`,
  96 x 128 pixels) cached in ``$SIGMA_CACHE_DIR`` (default ``~/.cache/sigma``). The first call
  runs ``sigma demo --small`` in a child process (training needs torch; the GUI process never
  imports it) and writes the file atomically; later calls reuse it.
- :func:`scene_results` builds results of the same scene in a second, without training: the
  clusters are the scene's true phases and the latent space a stand-in (one Gaussian blob per
  phase on a circle of radius 4, phase 0 at (4, 0)); everything else (spectra, total counts,
  features, NMF, kept counts) comes from the simulated counts through
  :meth:`sigma.results.SigmaResults.from_parts`, as in ``sigma run``. Tests and benchmarks use it
  when they need known answers or a million pixels.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["DEMO_FILE", "cache_dir", "demo_results_path", "scene_results", "write_results"]

logger = logging.getLogger(__name__)

#: file name of the cached ``sigma demo --small`` results
DEMO_FILE = "sigma_demo_small.nc"


def cache_dir(base: str | os.PathLike[str] | None = None) -> Path:
    """``base``, else ``$SIGMA_CACHE_DIR``, else ``~/.cache/sigma``."""
    return Path(base or os.environ.get("SIGMA_CACHE_DIR") or Path.home() / ".cache" / "sigma")


def demo_results_path(
    base: str | os.PathLike[str] | None = None, *, extra_args: Sequence[str] = ()
) -> Path:
    """Path of the demo results (``sigma demo --small``), running the demo once when missing.

    Parameters
    ----------
    base
        Cache folder (default :func:`cache_dir`).
    extra_args
        More ``sigma demo`` options for the first run (e.g. ``["--epochs", "3"]`` in tests).

    Raises
    ------
    RuntimeError
        If ``sigma demo`` fails (its last output lines are in the message).
    """
    folder = cache_dir(base)
    path = folder / DEMO_FILE
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{DEMO_FILE}.{os.getpid()}.tmp.nc"
    cmd = [sys.executable, "-c", "import sys; from sigma.cli import main; sys.exit(main())",
           "demo", "--small", "--quiet", "--overwrite", "--out", str(tmp), *extra_args]  # fmt: skip
    logger.warning("building the demo results once with `sigma demo --small` (about a minute)")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not tmp.exists():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise RuntimeError(
            f"`sigma demo --small` failed (exit {proc.returncode}) while building the GUI demo: "
            f"{tail}. Run `sigma demo --small` yourself to see why, then `sigma gui sigma_demo.nc`."
        )
    tmp.replace(path)
    return path


def _latent_blobs(
    label: np.ndarray, n_phases: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stand-in latent space: embedding, GMM means, covariances and posterior probabilities."""
    flat = label.ravel()
    angles = np.linspace(0, 2 * np.pi, n_phases, endpoint=False)
    means = np.stack([4.0 * np.cos(angles), 4.0 * np.sin(angles)], axis=1)
    covs = np.empty((n_phases, 2, 2))
    for k in range(n_phases):
        a = rng.uniform(0.15, 0.45, size=2)
        theta = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        covs[k] = rot @ np.diag(a**2) @ rot.T
    chol = np.linalg.cholesky(covs)
    z = rng.standard_normal((flat.size, 2))
    emb = means[flat] + np.einsum("nij,nj->ni", chol[flat], z)
    weights = np.bincount(flat, minlength=n_phases) / flat.size
    inv = np.linalg.inv(covs)
    logdet = np.log(np.linalg.det(covs))
    logp = np.empty((flat.size, n_phases))
    for k in range(n_phases):  # k small: a loop over phases, vectorised over pixels
        d = emb - means[k]
        logp[:, k] = np.log(max(weights[k], 1e-12)) - 0.5 * (
            np.einsum("ni,ij,nj->n", d, inv[k], d) + logdet[k]
        )
    logp -= logp.max(axis=1, keepdims=True)
    prob = np.exp(logp)
    prob /= prob.sum(axis=1, keepdims=True)
    return emb, means, covs, prob


def scene_results(
    shape: tuple[int, int] = (48, 64),
    *,
    n_phases: int = 8,
    n_channels: int = 1024,
    energy_scale_kev: float = 0.01,
    counts_per_pixel: float = 60.0,
    seed: int = 0,
) -> xr.Dataset:
    """Results of the ``sigma demo`` scene with its true phases as clusters (no training).

    Parameters
    ----------
    shape
        ``(ny, nx)`` in pixels (the scene is :func:`sigma.datasets.synthetic_sem`).
    n_phases
        The first ``n_phases`` of :data:`sigma.datasets.SEM_DEMO_PHASES` (2 to 8).
    n_channels, energy_scale_kev, counts_per_pixel, seed
        Passed to :func:`sigma.datasets.synthetic_sem`.

    Returns
    -------
    xr.Dataset
        Laid out as ``docs/results_schema.md``; ``label`` is the true phase map.

    Examples
    --------
    >>> ds = scene_results((16, 20), n_phases=3, n_channels=256, energy_scale_kev=0.04)
    >>> ds.embedding.dims, int(ds.sizes["cluster"]), [str(n) for n in ds.cluster_name.values]
    (('y', 'x', 'latent'), 3, ['epoxy', 'quartz', 'albite'])
    """
    from sigma.datasets import SEM_DEMO_PHASES, synthetic_sem
    from sigma.preprocessing import line_features, zscore
    from sigma.results import SigmaResults

    if not 2 <= n_phases <= len(SEM_DEMO_PHASES):
        raise ValueError(
            f"n_phases must be an int in [2, {len(SEM_DEMO_PHASES)}]. Got {n_phases!r} instead."
        )
    phases = list(SEM_DEMO_PHASES)[:n_phases]
    raw, truth = synthetic_sem(
        tuple(shape),  # type: ignore[arg-type]
        n_channels=n_channels,
        energy_scale_kev=energy_scale_kev,
        counts_per_pixel=counts_per_pixel,
        phases=phases,
        seed=seed,
        show_progress=False,
    )
    label = truth["label"].values.astype(np.int16)
    rng = np.random.default_rng(seed)
    emb, means, covs, prob = _latent_blobs(label, n_phases, rng)
    ny, nx = label.shape
    clustering = xr.Dataset(
        {
            "label": (("y", "x"), label, {"long_name": "cluster index", "unassigned": -1}),
            "probability": (("y", "x", "cluster"), prob.reshape(ny, nx, -1).astype(np.float32)),
            "gmm_mean": (("cluster", "latent"), means),
            "gmm_covariance": (("cluster", "latent", "latent_b"), covs),
            "gmm_weight": ("cluster", np.bincount(label.ravel(), minlength=n_phases) / label.size),
        },
        coords={"cluster": np.arange(n_phases), "latent": np.arange(2), "latent_b": np.arange(2)},
        attrs={"clustering": '{"method": "truth", "n_components": %d}' % n_phases},  # noqa: UP031
    )
    ks = np.arange(2, 2 * n_phases + 1)
    bic = 1e4 * (1.0 / ks + 0.02 * ks) * (1 + 0.5 * np.abs(ks - n_phases) / n_phases)
    bic[ks == n_phases] -= 50.0
    clustering["model_selection_score"] = xr.DataArray(
        bic,
        dims="n_components_tried",
        coords={"n_components_tried": ks},
        attrs={"long_name": "BIC"},
    )
    features = zscore(line_features(raw))
    with warnings.catch_warnings(record=True) as caught:  # a tiny test scene may stop NMF early
        warnings.simplefilter("always")
        results = SigmaResults.from_parts(
            clustering=clustering,
            spectrum_image=raw,
            embedding=emb.reshape(ny, nx, 2),
            features=features,
            nmf_components="auto",
            names=[str(p) for p in truth["phase"].values],
        )
    for w in caught:
        logger.info("scene_results%s: %s", tuple(shape), w.message)
    ds = results.dataset
    ds.attrs["source"] = f"sigma demo scene, true phases (gui.demo.scene_results, seed {seed})"
    return ds


def write_results(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a results dataset with :meth:`sigma.results.SigmaResults.save`; return the path."""
    from sigma.results import SigmaResults

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SigmaResults(ds).save(path, overwrite=True)
