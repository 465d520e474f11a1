"""A synthetic results dataset with known answers: the GUI demo and the GUI test fixture.

The scene: ``n_phases`` phases, each a Gaussian blob in a 2-D latent space and a region of the
scan (phase 0 is the matrix; the others are rectangles and discs); each phase has a spectrum of
Gaussian peaks at tabulated X-ray line energies (:mod:`sigma.xray`) on a Bremsstrahlung
background. Everything follows ``docs/results_schema.md`` so the GUI can open it like a real
``sigma run`` result. numpy only: no torch, no training.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import xarray as xr

from sigma._schema import ENERGY_ATTRS, spatial_coord
from sigma.xray import element_lines, fwhm_kev, generated_weights

__all__ = ["DEMO_PHASES", "make_demo_results", "demo_results_path", "write_results"]

logger = logging.getLogger(__name__)

#: (name, {element: atomic fraction}) of the demo phases; phase 0 is the matrix
DEMO_PHASES: tuple[tuple[str, dict[str, float]], ...] = (
    ("quartz", {"Si": 0.33, "O": 0.67}),
    ("hematite", {"Fe": 0.4, "O": 0.6}),
    ("corundum", {"Al": 0.4, "O": 0.6}),
    ("calcite", {"Ca": 0.2, "C": 0.2, "O": 0.6}),
    ("rutile", {"Ti": 0.33, "O": 0.67}),
    ("copper", {"Cu": 1.0}),
    ("forsterite", {"Mg": 0.29, "Si": 0.14, "O": 0.57}),
    ("albite", {"Na": 0.08, "Al": 0.08, "Si": 0.23, "O": 0.61}),
    ("pyrite", {"Fe": 0.33, "S": 0.67}),
    ("nickel", {"Ni": 1.0}),
)

_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
)  # fmt: skip


def _phase_spectrum(
    composition: dict[str, float], energy: np.ndarray, beam_energy_kev: float, mnka_ev: float
) -> np.ndarray:
    """Spectrum (sums to 1) of one phase: Kramers background plus Gaussian line peaks."""
    e = np.maximum(energy, 0.05)
    background = np.clip((beam_energy_kev - e) / e, 0, None) * np.exp(-0.6 / e**2)
    background /= background.sum()
    peaks = np.zeros_like(energy)
    for element, fraction in composition.items():
        weights = generated_weights(element, beam_energy_kev)
        for name, line in element_lines(element).items():
            w = weights.get(name, 0.0)
            if w < 0.01 or not energy[0] < line.energy_kev < energy[-1]:
                continue
            sigma = float(fwhm_kev(line.energy_kev, mnka_ev)) / 2.3548
            peaks += fraction * w * np.exp(-0.5 * ((energy - line.energy_kev) / sigma) ** 2)
    if peaks.sum() > 0:
        peaks /= peaks.sum()
    spectrum = 0.35 * background + 0.65 * peaks
    return spectrum / spectrum.sum()


def _label_map(shape: tuple[int, int], n_phases: int, rng: np.random.Generator) -> np.ndarray:
    """Phase 0 everywhere, then alternating rectangles and discs of phases 1..n-1."""
    ny, nx = shape
    label = np.zeros(shape, dtype=np.int16)
    yy, xx = np.mgrid[0:ny, 0:nx]
    for k in range(1, n_phases):
        for _ in range(2):  # two grains per phase
            cy, cx = rng.uniform(0.1, 0.9) * ny, rng.uniform(0.1, 0.9) * nx
            size = rng.uniform(0.05, 0.12) * min(ny, nx)
            if k % 2:
                inside = (np.abs(yy - cy) < size) & (np.abs(xx - cx) < size * 1.4)
            else:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 < size**2
            label[inside] = k
    return label


def make_demo_results(
    shape: tuple[int, int] = (192, 256),
    *,
    n_phases: int = 8,
    n_energy: int = 1024,
    energy_range_kev: tuple[float, float] = (0.0, 10.24),
    counts_per_pixel: float = 200.0,
    seed: int = 0,
) -> xr.Dataset:
    """Build a results dataset of a synthetic scene with known phases.

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the scan, in pixels.
    n_phases
        Number of phases (and GMM clusters), 2 to ``len(DEMO_PHASES)``.
    n_energy
        Number of energy channels.
    energy_range_kev
        ``(start, stop)`` of the energy axis in keV.
    counts_per_pixel
        Mean X-ray counts per pixel.
    seed
        Seed of the random generator; the same seed gives the same dataset.

    Returns
    -------
    xr.Dataset
        Laid out as ``docs/results_schema.md``; ``label`` is the true phase map, so a selection
        of one latent blob should recover one phase.

    Examples
    --------
    >>> ds = make_demo_results((16, 20), n_phases=3, n_energy=64)
    >>> ds.embedding.dims, int(ds.sizes["cluster"])
    (('y', 'x', 'latent'), 3)
    """
    if not 2 <= n_phases <= len(DEMO_PHASES):
        raise ValueError(
            f"n_phases must be an int in [2, {len(DEMO_PHASES)}]. Got {n_phases!r} instead."
        )
    ny, nx = (int(v) for v in shape)
    if ny < 4 or nx < 4:
        raise ValueError(f"shape must be at least (4, 4) pixels. Got {shape!r} instead.")
    rng = np.random.default_rng(seed)
    beam_energy_kev, mnka_ev = 15.0, 130.0
    e0, e1 = energy_range_kev
    energy = e0 + (e1 - e0) / n_energy * (np.arange(n_energy) + 0.5)
    phases = DEMO_PHASES[:n_phases]
    spectra = np.stack(
        [_phase_spectrum(comp, energy, beam_energy_kev, mnka_ev) for _, comp in phases]
    )

    label = _label_map((ny, nx), n_phases, rng)
    n_px = ny * nx
    flat = label.ravel()

    # latent: one Gaussian blob per phase on a ring, with its own covariance
    angles = np.linspace(0, 2 * np.pi, n_phases, endpoint=False)
    means = np.stack([4.0 * np.cos(angles), 4.0 * np.sin(angles)], axis=1)
    covs = np.empty((n_phases, 2, 2))
    for k in range(n_phases):
        a = rng.uniform(0.15, 0.45, size=2)
        theta = rng.uniform(0, np.pi)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        covs[k] = rot @ np.diag(a**2) @ rot.T
    chol = np.linalg.cholesky(covs)
    z = rng.standard_normal((n_px, 2))
    embedding = means[flat] + np.einsum("nij,nj->ni", chol[flat], z)

    # GMM posterior probabilities from the true mixture (vectorised over pixels)
    weights = np.bincount(flat, minlength=n_phases) / n_px
    inv = np.linalg.inv(covs)
    logdet = np.log(np.linalg.det(covs))
    diff = embedding[:, None, :] - means[None, :, :]
    maha = np.einsum("nki,kij,nkj->nk", diff, inv, diff)
    logp = np.log(np.maximum(weights, 1e-12))[None, :] - 0.5 * (maha + logdet[None, :])
    logp -= logp.max(axis=1, keepdims=True)
    prob = np.exp(logp)
    prob /= prob.sum(axis=1, keepdims=True)

    total = rng.poisson(counts_per_pixel, size=n_px).astype(np.float32)
    cluster_mean = np.stack([spectra[k] * total[flat == k].mean() if np.any(flat == k) else spectra[k] * 0
                             for k in range(n_phases)])  # fmt: skip
    n_pixels = np.bincount(flat, minlength=n_phases).astype(np.int64)
    cluster_sum = cluster_mean * n_pixels[:, None]
    sum_spectrum = cluster_sum.sum(axis=0)

    # features: each line's window integral of the pixel's normalised spectrum, with noise
    feature_names = sorted({name for _, comp in phases for el in comp for name, ln in element_lines(el).items()
                            if ln.weight >= 0.99 and e0 + 0.1 < ln.energy_kev < e1})  # fmt: skip
    window = np.zeros((len(feature_names), n_energy))
    for i, name in enumerate(feature_names):
        el = name.split("_")[0]
        line = element_lines(el)[name]
        half = float(fwhm_kev(line.energy_kev, mnka_ev))
        window[i] = np.abs(energy - line.energy_kev) <= half
    phase_features = spectra @ window.T  # (phase, feature)
    features = phase_features[flat] + rng.normal(0, 0.01, size=(n_px, len(feature_names)))
    features = np.clip(features, 0, None).astype(np.float32)

    nav = (0.2 + 0.8 * (np.arange(n_phases) / max(n_phases - 1, 1)))[label]
    nav = (nav + rng.normal(0, 0.05, size=label.shape)).astype(np.float32)

    # NMF-like decomposition of the cluster spectra: background + the strongest phases
    n_comp = min(4, n_phases)
    nmf_spectrum = spectra[:n_comp].copy()
    nmf_weight = np.abs(rng.normal(0.1, 0.05, size=(n_phases, n_comp)))
    nmf_weight[np.arange(n_comp), np.arange(n_comp)] = 1.0
    nmf_abundance = np.moveaxis((prob @ nmf_weight).reshape(ny, nx, n_comp), -1, 0).astype(
        np.float32
    )

    ks = np.arange(2, 2 * n_phases + 1)
    bic = 1e4 * (1.0 / ks + 0.02 * ks) * (1 + 0.5 * np.abs(ks - n_phases) / n_phases)
    bic[ks == n_phases] -= 50.0

    y = spatial_coord("y", ny, 0.05, "um")
    x = spatial_coord("x", nx, 0.05, "um")
    energy_da = xr.DataArray(energy, dims="energy", attrs=dict(ENERGY_ATTRS))
    elements = sorted({el for _, comp in phases for el in comp})
    ds = xr.Dataset(
        {
            "nav_image": (("y", "x"), nav, {"kind": "bse", "long_name": "BSE navigation image"}),
            "total_counts": (
                ("y", "x"),
                total.reshape(ny, nx),
                {"units": "counts", "long_name": "counts per pixel"},
            ),
            "sum_spectrum": (
                "energy",
                sum_spectrum,
                {"units": "counts", "long_name": "sum spectrum"},
            ),
            "features": (
                ("y", "x", "feature"),
                features.reshape(ny, nx, -1),
                {"long_name": "line intensities"},
            ),
            "embedding": (
                ("y", "x", "latent"),
                embedding.reshape(ny, nx, 2).astype(np.float32),
                {"long_name": "latent coordinates"},
            ),
            "label": (("y", "x"), label, {"long_name": "cluster index", "unassigned": -1}),
            "probability": (
                ("y", "x", "cluster"),
                prob.reshape(ny, nx, n_phases).astype(np.float32),
            ),
            "cluster_name": ("cluster", np.array([name for name, _ in phases], dtype=object)),
            "cluster_color": ("cluster", np.array(_COLOURS[:n_phases], dtype=object)),
            "gmm_mean": (("cluster", "latent"), means),
            "gmm_covariance": (("cluster", "latent", "latent_b"), covs),
            "n_pixels": ("cluster", n_pixels),
            "cluster_mean_spectrum": (("cluster", "energy"), cluster_mean, {"units": "counts"}),
            "cluster_sum_spectrum": (("cluster", "energy"), cluster_sum, {"units": "counts"}),
            "model_selection_score": ("n_components_tried", bic, {"long_name": "BIC"}),
            "nmf_spectrum": (("component", "energy"), nmf_spectrum),
            "nmf_weight": (("cluster", "component"), nmf_weight),
            "nmf_abundance": (("component", "y", "x"), nmf_abundance),
        },
        coords={
            "y": y,
            "x": x,
            "energy": energy_da,
            "feature": np.array(feature_names, dtype=object),
            "latent": np.arange(2),
            "latent_b": np.arange(2),
            "cluster": np.arange(n_phases),
            "component": np.arange(n_comp),
            "n_components_tried": ks,
        },
        attrs={
            "source": f"sigma GUI demo scene (seed {seed})",
            "beam_energy_kev": beam_energy_kev,
            "elements": elements,
            "xray_lines": feature_names,
            "energy_resolution_mnka_ev": mnka_ev,
            "history": ["gui.demo_data.make_demo_results: synthetic scene with known phases"],
            "preprocessing": json.dumps({"demo": True}),
            "model_hparams": json.dumps({"latent_dim": 2}),
            "clustering": json.dumps(
                {"method": "gmm", "n_components": n_phases, "criterion": "bic"}
            ),
            "versions": json.dumps({"sigma": "demo"}),
            "sigma_results_version": 1,
        },
    )
    return ds


def write_results(ds: xr.Dataset, path: str | os.PathLike[str]) -> Path:
    """Write a results dataset to NetCDF (h5netcdf) or Zarr (``.zarr``), return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = ds.copy()
    for name in ("cluster_name", "cluster_color", "feature"):
        if name in out.variables:
            out[name] = out[name].astype(str)
    if path.suffix == ".zarr":
        out.to_zarr(path, mode="w")
    else:
        out.to_netcdf(path, engine="h5netcdf")
    return path


def demo_results_path(
    cache_dir: str | os.PathLike[str] | None = None, *, shape: tuple[int, int] = (192, 256)
) -> Path:
    """Return the path of the demo results file, writing it on first use.

    ``cache_dir`` defaults to ``$SIGMA_CACHE_DIR`` or ``~/.cache/sigma``. ``sigma demo`` writes
    the real demo (a trained model's output); until then this synthetic scene stands in.
    """
    base = Path(cache_dir or os.environ.get("SIGMA_CACHE_DIR") or Path.home() / ".cache" / "sigma")
    path = base / f"gui_demo_results_{shape[0]}x{shape[1]}.nc"
    if not path.exists():
        logger.info("writing the demo results to %s", path)
        tmp = path.with_suffix(".tmp.nc")
        write_results(make_demo_results(shape), tmp)
        tmp.replace(path)
    return path
