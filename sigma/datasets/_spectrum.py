"""Expected EDS spectrum of a pure phase: characteristic lines, continuum, absorption, detector.

The model is physically plausible, not a quantification:

- characteristic lines of every element from :mod:`sigma.xray` (xraydb energies; cross-shell
  weights from :func:`sigma.xray.generated_weights`), each element scaled by its mass fraction
  over its atomic mass times the generated intensity of its strongest line (fluorescence yield,
  edge jump and :func:`sigma.xray.ionisation_yield`: for bulk samples the thick-target law
  ``U ln U - U + 1``, the Bethe-like cross-section integrated along the electron's path; for
  thin films the cross-section itself, ``ln(U) / (U E_c^2)``);
- Kramers' continuum ``Zmean * (E0 - E) / E``;
- for bulk (SEM) samples, self-absorption with the simplified Philibert model
  ``f(chi) = 1 / ((1 + chi/sigma) (1 + h/(1+h) chi/sigma))`` with
  ``chi = mu/rho(E) / sin(takeoff)``,
  ``sigma = 4.5e5 / (E0^1.65 - Ec^1.65)`` and ``h = 1.2 A / Z^2``; mass attenuation coefficients
  from xraydb (Elam tables). Thin films (TEM) have no absorption;
- detector efficiency: a polymer window (0.3 um of C + 40 nm Al) or none, a 30 nm Si dead layer,
  a 450 um Si crystal (high-energy roll-off) and a low-level discriminator near 0.1 keV;
- Gaussian peaks with FWHM(E) of :func:`sigma.xray.fwhm_kev`, integrated over each channel;
- a zero-energy (noise) peak holding a fixed fraction of the counts.

- Si escape peaks of the characteristic lines (Reed & Ware 1972 escape fraction).

Not modelled: sum (pile-up) peaks, escape peaks of the continuum, Compton/coherent scattering,
secondary fluorescence, incomplete charge collection tails.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.special import expit, ndtr

from sigma.datasets._phases import Phase, _atomic_mass
from sigma.exceptions import SimulationParameterError
from sigma.xray import element_lines, fwhm_kev, generated_weights

__all__ = ["phase_spectrum", "detector_efficiency", "main_line"]

Geometry = Literal["bulk", "thin"]
Window = Literal["polymer", "none"]

#: Kramers constant relative to the characteristic scale, per geometry (chosen so that the
#: Si Ka peak-to-background of quartz at 15 kV is ~58 per 10 eV channel, and thin films have a
#: continuum several times weaker relative to their lines). The two geometries' ionisation laws
#: have different units (:func:`sigma.xray.ionisation_yield`): bulk's 1.57e-5 kept that
#: peak-to-background when its law changed from the thin-film cross-section (1.2e-7) to the
#: thick-target law.
_CONTINUUM_SCALE = {"bulk": 1.57e-5, "thin": 1.2e-9}
_MIN_E_EV = 100.0  # Elam tables are unreliable below 100 eV


def _mu(element: str, energy_kev: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Mass attenuation coefficient (cm^2/g) of ``element`` at ``energy_kev`` (Elam, >= 0.1 keV).

    Interpolated log-log from a cached table on a log grid that includes both sides of every
    absorption edge (xraydb evaluates its spline point by point in Python, which is slow).
    """
    grid, mu = _mu_table(element)
    e = np.log(np.clip(np.asarray(energy_kev, dtype=np.float64) * 1000.0, _MIN_E_EV, grid[-1]))
    return np.exp(np.interp(e, np.log(grid), np.log(mu)))


@functools.cache
def _mu_table(element: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    import xraydb

    grid = np.geomspace(_MIN_E_EV, 500_000.0, 400)
    edges = [
        e.energy for e in xraydb.xray_edges(element).values() if _MIN_E_EV < e.energy < 500_000.0
    ]
    extra = [e * f for e in edges for f in (1 - 1e-6, 1 + 1e-6)]
    grid = np.unique(np.concatenate([grid, extra]))
    mu = np.asarray(xraydb.mu_elam(element, grid), dtype=np.float64)
    return grid, np.maximum(mu, 1e-12)


@functools.cache
def _generated(element: str, beam_energy_kev: float, geometry: Geometry) -> dict[str, float]:
    return generated_weights(element, beam_energy_kev, geometry=geometry)


def detector_efficiency(
    energy_kev: npt.ArrayLike,
    *,
    window: Window = "polymer",
    dead_layer_um: float = 0.03,
    crystal_um: float = 450.0,
    threshold_kev: float = 0.1,
) -> npt.NDArray[np.float64]:
    """Fraction of photons of ``energy_kev`` that an SDD records.

    Window transmission x dead-layer transmission x absorption in the Si crystal x a smooth
    low-level discriminator (50 % at ``threshold_kev``).

    Examples
    --------
    >>> eff = detector_efficiency([0.277, 1.74, 6.4, 30.0])
    >>> bool(eff[2] > eff[0]) and bool(eff[2] > eff[3])
    True
    """
    e = np.asarray(energy_kev, dtype=np.float64)
    shape = e.shape
    e = np.atleast_1d(e)
    trans = np.ones_like(e)
    if window == "polymer":
        trans *= np.exp(-_mu("C", e) * 1.4 * 0.3e-4)  # 0.3 um polymer (as carbon), 1.4 g/cm3
        trans *= np.exp(-_mu("Al", e) * 2.7 * 0.04e-4)  # 40 nm Al light-tight coating
    elif window != "none":
        raise SimulationParameterError(f"window must be 'polymer' or 'none'. Got {window!r}.")
    trans *= np.exp(-_mu("Si", e) * 2.33 * dead_layer_um * 1e-4)
    trans *= -np.expm1(-_mu("Si", e) * 2.33 * crystal_um * 1e-4)
    trans *= expit((e - threshold_kev) / 0.015)
    return trans.reshape(shape)


@functools.cache
def _element_scale(element: str, beam_energy_kev: float, geometry: Geometry) -> float:
    """Generated intensity of the strongest line of ``element`` per atom (arbitrary units).

    ``generated_weights(...)[line] * _element_scale(...)`` compares across elements of one
    ``geometry`` (the bulk and thin ionisation laws have different units).
    """
    raw = generated_weights(element, beam_energy_kev, normalise=False, geometry=geometry)
    return max(raw.values()) if raw else 0.0


def main_line(
    element: str, beam_energy_kev: float, energy_range_kev: tuple[float, float]
) -> str | None:
    """Name of the strongest generated line of ``element`` inside ``energy_range_kev`` (or None).

    Lines below 0.1 keV (under the detector threshold) are not considered. The lines are ranked
    by the thin-film cross-section whatever the sample: the thick-target law ranks the L lines
    of the 3d metals above their K lines at 15 kV (``Fe_La`` over ``Fe_Ka``), but in a bulk
    sample those soft lines are absorbed, and the K line is the one to map.

    Examples
    --------
    >>> main_line("Fe", 15.0, (0.0, 20.0)), main_line("Pt", 15.0, (0.0, 5.0))
    ('Fe_Ka', 'Pt_Ma')
    """
    lo, hi = energy_range_kev
    lines = element_lines(element)
    inside = {
        name: w
        for name, w in _generated(element, beam_energy_kev, "thin").items()
        if max(lo, 0.1) <= lines[name].energy_kev <= hi
    }
    if not inside:
        return None
    return max(inside, key=inside.__getitem__)


@functools.cache
def _si_k_edge() -> Any:
    import xraydb

    return xraydb.xray_edge("Si", "K")


def _si_escape(
    energy_kev: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Si escape fraction (Reed & Ware 1972, normal incidence) and escape-peak energy of lines.

    ``f = omega_K / 2 * (1 - 1/r) * (1 - a * ln(1 + 1/a))`` with ``a = mu(Si Ka) / mu(E)``, for
    photons above the Si K edge; 0 below it.
    """
    edge = _si_k_edge()
    si_ka = element_lines("Si")["Si_Ka"].energy_kev
    a = _mu("Si", np.full_like(energy_kev, si_ka)) / _mu("Si", energy_kev)
    frac = 0.5 * edge.fyield * (1 - 1 / edge.jump_ratio) * (1 - a * np.log1p(1 / a))
    frac = np.where(energy_kev > edge.energy / 1000.0, np.clip(frac, 0.0, 0.5), 0.0)
    return frac, energy_kev - si_ka


def _channel_edges(energy: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    mid = (energy[1:] + energy[:-1]) / 2
    first = energy[0] - (mid[0] - energy[0])
    last = energy[-1] + (energy[-1] - mid[-1])
    return np.concatenate([[first], mid, [last]])


def _absorption(
    phase: Phase,
    energy_kev: npt.NDArray[np.float64],
    edge_kev: npt.NDArray[np.float64],
    beam_energy_kev: float,
    takeoff_deg: float,
) -> npt.NDArray[np.float64]:
    """Simplified Philibert absorption factor f(chi) for photons of ``energy_kev``."""
    mu = np.zeros_like(energy_kev)
    for element, c in phase.composition.items():
        mu += c * _mu(element, energy_kev)
    chi = mu / math.sin(math.radians(takeoff_deg))
    e0 = beam_energy_kev**1.65
    ec = np.minimum(edge_kev, beam_energy_kev * 0.999) ** 1.65
    sigma = 4.5e5 / (e0 - ec)
    mean_z = max(phase.mean_z, 1.0)
    h = 1.2 * phase.mean_a / mean_z**2
    x = chi / sigma
    return 1.0 / ((1.0 + x) * (1.0 + h / (1.0 + h) * x))


def phase_spectrum(
    phase: Phase,
    energy_kev: npt.ArrayLike,
    *,
    beam_energy_kev: float = 15.0,
    mnka_resolution_ev: float = 130.0,
    geometry: Geometry = "bulk",
    window: Window | None = None,
    takeoff_deg: float = 35.0,
    zero_peak_fraction: float = 0.03,
    continuum_scale: float = 1.0,
    escape_peaks: bool = True,
    normalise: bool = True,
) -> npt.NDArray[np.float64]:
    """Expected EDS spectrum of a pure ``phase`` on the channels centred at ``energy_kev``.

    Parameters
    ----------
    phase : Phase
        Composition of the phase.
    energy_kev : array_like
        Channel centres in keV, increasing and evenly spaced (1-D).
    beam_energy_kev : float
        Accelerating voltage in kV (the beam energy E0 in keV).
    mnka_resolution_ev : float
        Detector FWHM at Mn Ka in eV.
    geometry : {"bulk", "thin"}
        ``"bulk"`` (SEM: absorption in the sample) or ``"thin"`` (TEM film: none, weaker
        continuum).
    window : {"polymer", "none"}, optional
        Detector window; default ``"polymer"`` for bulk and ``"none"`` for thin.
    takeoff_deg : float
        X-ray take-off angle in degrees (bulk absorption).
    zero_peak_fraction : float
        Fraction of all counts in the zero-energy noise peak (Gaussian at 0 keV), in [0, 0.5).
    continuum_scale : float
        Multiplies the continuum (1 = default physics).
    escape_peaks : bool
        Add Si escape peaks (line energy - 1.74 keV) with the Reed & Ware escape fraction.
    normalise : bool
        If True (default) the spectrum sums to 1 over the channels; otherwise it is in arbitrary
        generated-intensity units that compare across phases (the total is the phase's relative
        count rate).

    Returns
    -------
    numpy.ndarray
        float64, one value per channel, all >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> from sigma.datasets import PHASES
    >>> energy = np.arange(2048) * 0.01
    >>> s = phase_spectrum(PHASES["quartz"], energy)
    >>> round(float(s.sum()), 6), round(float(energy[np.argmax(s[50:]) + 50]), 2)
    (1.0, 1.74)
    """
    energy = np.asarray(energy_kev, dtype=np.float64)
    if energy.ndim != 1 or energy.size < 2 or not np.all(np.diff(energy) > 0):
        raise SimulationParameterError(
            "energy_kev must be a 1-D increasing array of at least 2 channel centres in keV. Got "
            f"shape {energy.shape!r}."
        )
    if not (math.isfinite(beam_energy_kev) and beam_energy_kev > 0):
        raise SimulationParameterError(
            f"beam_energy_kev must be a positive number of keV. Got {beam_energy_kev!r}."
        )
    if geometry not in ("bulk", "thin"):
        raise SimulationParameterError(f"geometry must be 'bulk' or 'thin'. Got {geometry!r}.")
    if not 0.0 <= zero_peak_fraction < 0.5:
        raise SimulationParameterError(
            f"zero_peak_fraction must be in [0, 0.5). Got {zero_peak_fraction!r}."
        )
    if window is None:
        window = "polymer" if geometry == "bulk" else "none"
    edges = _channel_edges(energy)
    width = np.diff(edges)
    eff = detector_efficiency(energy, window=window)

    # continuum (Kramers), per channel
    e_pos = np.clip(energy, 1e-3, None)
    kramers = np.where(
        (energy > 0) & (energy < beam_energy_kev),
        phase.mean_z * (beam_energy_kev - e_pos) / e_pos,
        0.0,
    )
    continuum = _CONTINUUM_SCALE[geometry] * continuum_scale * kramers * width * eff
    if geometry == "bulk":
        continuum *= _absorption(phase, e_pos, e_pos, beam_energy_kev, takeoff_deg)

    # characteristic lines
    names, centres, areas, edge_e = [], [], [], []
    lo, hi = edges[0], edges[-1]
    for element, c in phase.composition.items():
        scale = _element_scale(element, beam_energy_kev, geometry)
        if scale <= 0:
            continue
        lines = element_lines(element)
        for name, w in _generated(element, beam_energy_kev, geometry).items():
            line = lines[name]
            sig = float(fwhm_kev(line.energy_kev, mnka_resolution_ev)) / 2.3548
            if line.energy_kev + 5 * sig < lo or line.energy_kev - 5 * sig > hi:
                continue
            names.append(name)
            centres.append(line.energy_kev)
            areas.append(c / _atomic_mass(element) * w * scale)
            edge_e.append(line.edge_kev)
    spectrum = continuum
    if names:
        e_line = np.asarray(centres)
        area = np.asarray(areas) * detector_efficiency(e_line, window=window)
        if geometry == "bulk":
            area *= _absorption(phase, e_line, np.asarray(edge_e), beam_energy_kev, takeoff_deg)
        if escape_peaks:
            # Si escape peaks: a fraction of each line above the Si K edge loses a Si Ka photon
            f_esc, e_esc = _si_escape(e_line)
            keep = f_esc > 0
            e_line = np.concatenate([e_line, e_esc[keep]])
            area = np.concatenate([area * (1 - f_esc), area[keep] * f_esc[keep]])
        sig_line = fwhm_kev(e_line, mnka_resolution_ev) / 2.3548
        cdf = ndtr((edges[None, :] - e_line[:, None]) / sig_line[:, None])
        spectrum = spectrum + (area[:, None] * np.diff(cdf, axis=1)).sum(axis=0)

    signal = float(spectrum.sum())
    if zero_peak_fraction > 0:
        sig0 = float(fwhm_kev(0.0, mnka_resolution_ev)) / 2.3548
        zero = np.diff(ndtr(edges / sig0))
        if zero.sum() > 1e-6 and signal > 0:
            # the peak's in-range part holds zero_peak_fraction of all counts
            spectrum = spectrum + zero / zero.sum() * signal * zero_peak_fraction / (
                1 - zero_peak_fraction
            )
    spectrum = np.maximum(spectrum, 0.0)
    if normalise:
        total = spectrum.sum()
        if not total > 0:
            raise SimulationParameterError(
                f"phase {phase.name!r} gives no counts between {lo:.3f} and {hi:.3f} keV at "
                f"{beam_energy_kev} kV; widen the energy range or raise beam_energy_kev."
            )
        spectrum = spectrum / total
    return spectrum
