"""A second, independent EDS spectrum-image simulator for tests and benchmarks.

sigma's own simulator (:mod:`sigma.datasets`) is also its demo data, so tuning sigma on it alone
risks tuning to one simulator's habits. This module shares none of its physics or tables:

- **line tables**: ``xraylib`` (line energies, radiative rates, fluorescence yields, edge
  energies, mass attenuation coefficients), not xraydb; K lines (Ka1, Ka2, Kb1, Kb3) and L3/L2
  lines (La1, La2, Lb1, Lb2, Ll);
- **generation**: Green-Cosslett ionisation ``(U - 1)^1.67`` per shell, weighted by
  ``mass fraction / atomic weight``, fluorescence yield and radiative rate;
- **continuum**: Kramers ``Zbar (E0 - E) / E`` with the atomic-fraction mean Z;
- **absorption**: the simplified Philibert (PDH) ``f(chi)`` at a 35 degree take-off angle, for
  lines and continuum alike;
- **detector**: a polymer window (C8H8, 0.3 um) with a 30 nm Al coat, a 30 nm Si dead
  layer and a 0.45 mm Si crystal (transmission from xraylib); Fano-law resolution
  ``FWHM^2 = noise^2 + 2.355^2 F eps E`` (F 0.115, eps 3.76 eV, 133 eV at Mn Ka); each line is a
  Gaussian plus a low-energy exponential tail (incomplete charge collection), a flat shelf, and a
  Si escape peak 1.74 keV below lines above the Si K edge; a small zero-energy noise peak;
- **scene**: warped Voronoi grains (no smooth-noise thresholding), 256 x 256 pixels,
  1024 channels of 20 eV, 20 kV.

Scenes (:func:`make_scene`):

``"eight"``
    8 silicate/oxide phases of similar composition (quartz, albite, orthoclase, anorthite,
    enstatite, diopside, forsterite, almandine) in grains of 10-60 pixels.
``"rare"``
    4 common phases (quartz, albite, orthoclase, enstatite) and zircon (ZrSiO4, the only Zr of
    the map) in 5 small grains covering ``rare_fraction`` (default 0.36 %) of the area.
``"pair"``
    Two olivines differing only in Mg/Fe (Fo90 and Fo70) in an epoxy matrix.

Every scene takes ``blur`` (Gaussian sigma in pixels of the beam spread: boundary pixels mix
the phases' spectra linearly). The truth is a Dataset like :func:`sigma.datasets.synthetic_sem`'s
(``label``, ``abundance``, ``phase_spectrum``, ``relative_yield``).

Examples
--------
>>> ds, truth = make_scene("rare", 30, seed=0, shape=(64, 64))
>>> ds.counts.dims, int(truth.sizes["phase"])
(('y', 'x', 'energy'), 5)
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import xarray as xr
from scipy import ndimage

from sigma._schema import make_spectrum_image

BEAM_KV = 20.0
N_CHANNELS = 1024
SCALE_KEV = 0.02
OFFSET_KEV = -0.01
TAKEOFF_DEG = 35.0
MNKA_FWHM_EV = 133.0
FANO = 0.115
EPS_EV = 3.76
ZERO_PEAK_FRACTION = 0.01
#: Kramers continuum relative to the characteristic lines (sets the peak-to-background ratio)
KRAMERS = 5e-5

PHASE_FORMULAS: dict[str, str] = {
    "quartz": "SiO2",
    "albite": "NaAlSi3O8",
    "orthoclase": "KAlSi3O8",
    "anorthite": "CaAl2Si2O8",
    "enstatite": "MgSiO3",
    "diopside": "CaMgSi2O6",
    "forsterite": "Mg2SiO4",
    "almandine": "Fe3Al2Si3O12",
    "zircon": "ZrSiO4",
    "Fo90": "Mg1.8Fe0.2SiO4",
    "Fo70": "Mg1.4Fe0.6SiO4",
    "epoxy": "C21H24O4",
}

KINDS: dict[str, dict[str, float]] = {
    "eight": {
        "quartz": 0.22,
        "albite": 0.17,
        "orthoclase": 0.14,
        "anorthite": 0.12,
        "enstatite": 0.11,
        "diopside": 0.09,
        "forsterite": 0.08,
        "almandine": 0.07,
    },
    "rare": {"quartz": 0.35, "albite": 0.27, "orthoclase": 0.2, "enstatite": 0.18, "zircon": 0.0},
    "pair": {"epoxy": 0.5, "Fo90": 0.28, "Fo70": 0.22},
}

#: (line name in sigma's notation, xraylib line, shell, relative ionisation weight of the shell)
_LINES: list[tuple[str, str, str, float]] = [
    ("Ka", "KL3_LINE", "K_SHELL", 1.0),
    ("Ka", "KL2_LINE", "K_SHELL", 1.0),
    ("Kb", "KM3_LINE", "K_SHELL", 1.0),
    ("Kb", "KM2_LINE", "K_SHELL", 1.0),
    ("La", "L3M5_LINE", "L3_SHELL", 1.0),
    ("La", "L3M4_LINE", "L3_SHELL", 1.0),
    ("Lb2", "L3N5_LINE", "L3_SHELL", 1.0),
    ("Ll", "L3M1_LINE", "L3_SHELL", 1.0),
    ("Lb1", "L2M4_LINE", "L2_SHELL", 0.5),
]


def _xl() -> Any:
    import xraylib

    return xraylib


def composition(formula: str) -> dict[int, float]:
    """Mass fractions by atomic number, from xraylib's formula parser."""
    parsed = _xl().CompoundParser(formula)
    return dict(zip(parsed["Elements"], parsed["massFractions"], strict=True))


def _mu(comp: dict[int, float], energy: np.ndarray) -> np.ndarray:
    """Mass attenuation coefficient (cm^2/g) of a composition at ``energy`` (keV, > 0)."""
    xl = _xl()
    e = np.clip(np.asarray(energy, dtype=np.float64), 0.1, None)  # xraylib starts at 0.1 keV
    return np.array([sum(w * xl.CS_Total(z, float(x)) for z, w in comp.items()) for x in e])


def _transmission(formula: str, density: float, thickness_um: float, e: np.ndarray) -> np.ndarray:
    return np.exp(-_mu(composition(formula), e) * density * thickness_um * 1e-4)


@functools.lru_cache(maxsize=1)
def _energy() -> np.ndarray:
    return OFFSET_KEV + SCALE_KEV * np.arange(N_CHANNELS)


@functools.lru_cache(maxsize=1)
def detector_efficiency() -> np.ndarray:
    """Window, coating and dead-layer transmission times crystal absorption, per channel."""
    e = np.clip(_energy(), 0.05, None)
    win = _transmission("C8H8", 1.05, 0.3, e) * _transmission("Al", 2.70, 0.03, e)
    dead = _transmission("Si", 2.33, 0.03, e)
    crystal = 1.0 - _transmission("Si", 2.33, 450.0, e)
    return np.asarray(win * dead * crystal)


def fwhm_kev(e: np.ndarray | float) -> np.ndarray:
    """Fano-law detector FWHM in keV (``MNKA_FWHM_EV`` at 5.899 keV)."""
    k = 2.3548**2 * FANO * EPS_EV
    noise2 = MNKA_FWHM_EV**2 - k * 5898.7
    return np.sqrt(noise2 + k * 1000.0 * np.clip(np.asarray(e, dtype=np.float64), 0, None)) / 1e3


def _response(e0: float) -> np.ndarray:
    """Detector response (sums to ~1) to a photon of energy ``e0`` keV, per channel."""
    e = _energy()
    s = float(fwhm_kev(e0)) / 2.3548
    gauss = np.exp(-0.5 * ((e - e0) / s) ** 2)
    gauss /= gauss.sum()
    # incomplete charge collection: exponential tail below the peak and a flat shelf
    below = e < e0
    tail = np.where(below, np.exp(-np.clip(e0 - e, 0, None) / (2.5 * s)), 0.0)
    tail = ndimage.gaussian_filter1d(tail, s / SCALE_KEV)
    tail /= max(tail.sum(), 1e-300)
    shelf = np.where((e > 0.1) & below, 1.0, 0.0)
    shelf /= max(shelf.sum(), 1.0)
    out = 0.955 * gauss + 0.04 * tail + 0.005 * shelf
    if e0 > 1.839:  # Si K escape
        esc = np.exp(-0.5 * ((e - (e0 - 1.74)) / s) ** 2)
        out = out + 0.008 * esc / esc.sum()
    return np.asarray(out)


def _pdh_absorption(mu_chi: np.ndarray, e_crit: np.ndarray, zbar: float, abar: float) -> Any:
    """Simplified Philibert f(chi): fraction of generated X-rays leaving the sample."""
    chi = mu_chi / math.sin(math.radians(TAKEOFF_DEG))
    sigma = 4.5e5 / np.clip(BEAM_KV**1.65 - np.clip(e_crit, 0, BEAM_KV) ** 1.65, 1e-3, None)
    h = 1.2 * abar / zbar**2
    return 1.0 / ((1.0 + chi / sigma) * (1.0 + h * chi / (sigma * (1.0 + h))))


@functools.lru_cache(maxsize=64)
def phase_spectrum(formula: str) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """Expected spectrum of a phase: (shape summing to 1, relative count rate, lines present)."""
    xl = _xl()
    comp = composition(formula)
    e = _energy()
    zs = np.array(list(comp))
    w = np.array(list(comp.values()))
    atoms = w / np.array([xl.AtomicWeight(int(z)) for z in zs])
    zbar_atomic = float((atoms * zs).sum() / atoms.sum())
    zbar_mass = float((w * zs).sum())
    abar = float(sum(wi * xl.AtomicWeight(int(z)) for z, wi in comp.items()))
    eff = detector_efficiency()
    spec = np.zeros(N_CHANNELS)
    present: list[str] = []
    for z, wz in comp.items():
        for name, line, shell, shell_w in _LINES:
            try:
                e_line = xl.LineEnergy(z, getattr(xl, line))
                rate = xl.RadRate(z, getattr(xl, line))
                omega = xl.FluorYield(z, getattr(xl, shell))
                e_edge = xl.EdgeEnergy(z, getattr(xl, shell))
            except ValueError:
                continue
            if e_line < 0.1 or e_edge >= BEAM_KV * 0.98 or e_line > e[-1]:
                continue
            u = BEAM_KV / e_edge
            gen = wz / xl.AtomicWeight(z) * shell_w * omega * rate * (u - 1.0) ** 1.67
            mu = _mu(comp, np.array([e_line]))
            fchi = _pdh_absorption(mu, np.array([e_edge]), zbar_mass, abar)[0]
            ch = int(np.clip(round((e_line - OFFSET_KEV) / SCALE_KEV), 0, N_CHANNELS - 1))
            strength = gen * fchi * eff[ch]
            if strength <= 0:
                continue
            spec += strength * _response(e_line)
            label = f"{xl.AtomicNumberToSymbol(z)}_{name}"
            if label not in present:
                present.append(label)
    # Kramers continuum with the same absorption law (critical energy = photon energy)
    ep = np.clip(e, 0.05, None)
    cont = KRAMERS * zbar_atomic * np.clip(BEAM_KV - ep, 0, None) / ep * SCALE_KEV
    cont *= _pdh_absorption(_mu(comp, ep), ep, zbar_mass, abar) * eff
    cont[e < 0.08] = 0.0
    cont = ndimage.gaussian_filter1d(cont, 2.0)
    spec += cont
    total = float(spec.sum())
    zero = np.exp(-0.5 * (e / (float(fwhm_kev(0.0)) / 2.3548)) ** 2)
    spec = spec / total * (1 - ZERO_PEAK_FRACTION) + ZERO_PEAK_FRACTION * zero / zero.sum()
    return spec, total, tuple(present)


def _voronoi(shape: tuple[int, int], n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Cell index map of a Voronoi tessellation warped by a smooth random displacement."""
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    amp = 0.25 * math.sqrt(ny * nx / n_cells)
    for arr in (yy, xx):
        d = ndimage.gaussian_filter(rng.normal(size=shape), 6.0, mode="wrap")
        arr += amp * d / max(float(d.std()), 1e-12)
    seeds = rng.uniform((0, 0), (ny, nx), size=(n_cells, 2))
    from scipy.spatial import cKDTree

    _, idx = cKDTree(seeds).query(np.column_stack([yy.ravel(), xx.ravel()]))
    return np.asarray(idx).reshape(shape)


def _assign(cells: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give each cell a phase so the area fractions come close to ``fractions``."""
    size = np.bincount(cells.ravel())
    target = fractions / fractions.sum() * cells.size
    have = np.zeros(fractions.size)
    phase_of = np.zeros(size.size, dtype=np.int64)
    order = np.argsort(-size + rng.uniform(0, 1, size.size))
    for i, c in enumerate(order):
        p = i if i < fractions.size else int(np.argmax(target - have))
        phase_of[c] = p
        have[p] += size[c]
    return phase_of[cells]


def _rare_grains(
    label: np.ndarray, value: int, fraction: float, n_grains: int, rng: np.random.Generator
) -> None:
    """Paint ``n_grains`` round grains holding ``fraction`` of the area in all (in place)."""
    ny, nx = label.shape
    r = math.sqrt(fraction * label.size / (n_grains * math.pi))
    yy, xx = np.mgrid[0:ny, 0:nx]
    margin = int(math.ceil(r)) + 4
    placed: list[tuple[float, float]] = []
    while len(placed) < n_grains:
        cy, cx = rng.uniform(margin, ny - margin), rng.uniform(margin, nx - margin)
        if all((cy - a) ** 2 + (cx - b) ** 2 > (6 * r) ** 2 for a, b in placed):
            placed.append((cy, cx))
            label[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value


def _sample(
    abundance: np.ndarray, spectra: np.ndarray, rates: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Poisson counts ``(y, x, energy)`` uint16 for abundances ``(phase, y, x)``."""
    n_ph, ny, nx = abundance.shape
    n_ch = spectra.shape[1]
    cube = np.zeros(ny * nx * n_ch, dtype=np.uint16)
    cdf = np.cumsum(spectra, axis=1)
    cdf /= cdf[:, -1:]
    for k in range(n_ph):
        a = abundance[k].ravel()
        px = np.flatnonzero(a > 0)
        if px.size == 0:
            continue
        n = rng.poisson(rates[k] * a[px])
        pix = np.repeat(px, n)
        ch = np.searchsorted(cdf[k], rng.random(pix.size), side="right")
        codes, cnt = np.unique(
            pix.astype(np.int64) * n_ch + np.minimum(ch, n_ch - 1), return_counts=True
        )
        cube[codes] += cnt.astype(np.uint16)
    return cube.reshape(ny, nx, n_ch)


def make_scene(
    kind: str,
    counts_per_px: float,
    seed: int = 0,
    *,
    shape: tuple[int, int] = (256, 256),
    blur: float = 0.0,
    rare_fraction: float = 0.0036,
    n_rare_grains: int = 5,
) -> tuple[xr.Dataset, xr.Dataset]:
    """Simulate a spectrum image of one of the :data:`KINDS` with its ground truth.

    Parameters
    ----------
    kind : {"eight", "rare", "pair"}
        The scene (module docstring).
    counts_per_px : float
        Mean counts per pixel over the map (phases differ in count rate, as in real maps).
    seed : int
        Seed of the layout and the counts.
    shape : (int, int)
        ``(ny, nx)`` pixels.
    blur : float
        Gaussian sigma (pixels) of the beam spread; 0 gives hard boundaries.
    rare_fraction, n_rare_grains
        Area of the rare phase (``"rare"`` only) and the number of its grains.

    Returns
    -------
    ds : xr.Dataset
        sigma's spectrum image (``counts`` uint16 ``(y, x, energy)``, energy in keV, 20 kV).
    truth : xr.Dataset
        ``label`` (y, x), ``abundance`` (phase, y, x), ``phase_spectrum`` (phase, energy),
        ``relative_yield`` and ``area_fraction`` (phase), phase names as ``phase``.
    """
    if kind not in KINDS:
        msg = f"kind must be one of {sorted(KINDS)!r}. Got {kind!r} instead."
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    names = list(KINDS[kind])
    fractions = np.array([KINDS[kind][n] for n in names], dtype=np.float64)
    ny, nx = shape
    n_cells = max(len(names) * 3, int(ny * nx / (35.0**2)))
    common = fractions > 0
    label = np.flatnonzero(common)[_assign(_voronoi(shape, n_cells, rng), fractions[common], rng)]
    if kind == "rare":
        _rare_grains(label, names.index("zircon"), rare_fraction, n_rare_grains, rng)
    n_ph = len(names)
    onehot = (label[None] == np.arange(n_ph)[:, None, None]).astype(np.float64)
    if blur > 0:
        abundance = ndimage.gaussian_filter(onehot, (0, blur, blur), mode="nearest")
        abundance /= abundance.sum(axis=0, keepdims=True)
        abundance[abundance < 1e-3] = 0.0
        abundance /= abundance.sum(axis=0, keepdims=True)
    else:
        abundance = onehot
    specs, totals, lines = zip(*(phase_spectrum(PHASE_FORMULAS[n]) for n in names), strict=True)
    spectra = np.stack(specs)
    rel = np.asarray(totals) / np.mean(totals)
    mean_rate = float((abundance * rel[:, None, None]).sum(axis=0).mean())
    rates = rel * counts_per_px / mean_rate
    cube = _sample(abundance, spectra, rates, rng)
    elements = sorted({ln.split("_")[0] for ls in lines for ln in ls})
    xl = _xl()
    elements.sort(key=xl.SymbolToAtomicNumber)
    src = (
        f"tests.altmodel.make_scene({kind!r}, {counts_per_px!r}, seed={seed}, shape={shape!r}, "
        f"blur={blur!r})"
    )
    ds = make_spectrum_image(
        cube,
        energy_scale_kev=SCALE_KEV,
        energy_offset_kev=OFFSET_KEV,
        pixel_size=(0.05, 0.05),
        pixel_units="um",
        attrs={
            "beam_energy_kev": BEAM_KV,
            "elements": elements,
            "energy_resolution_mnka_ev": MNKA_FWHM_EV,
            "source": src,
            "history": [f"simulated by {src}"],
            "signal_type": "EDS_SEM",
        },
    )
    area = np.bincount(label.ravel(), minlength=n_ph) / label.size
    truth = xr.Dataset(
        {
            "label": (("y", "x"), label.astype(np.int64)),
            "abundance": (("phase", "y", "x"), abundance.astype(np.float32)),
            "phase_spectrum": (("phase", "energy"), spectra),
            "relative_yield": ("phase", rel),
            "area_fraction": ("phase", area),
        },
        coords={"phase": np.array(names, dtype=str), "energy": ds["energy"]},
        attrs={
            "kind": kind,
            "counts_per_pixel": float(counts_per_px),
            "blur_px": float(blur),
            "lines": [",".join(ls) for ls in lines],
            "source": src,
        },
    )
    return ds, truth
