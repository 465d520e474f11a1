"""Background-subtracted X-ray line intensities of a spectrum, and what a composition predicts.

Shared by :mod:`sigma.phases` (library matching) and :mod:`sigma.quantify` (compositions). The
physics is the simulator's (:mod:`sigma.datasets._spectrum`): xraydb line energies and weights,
generated intensity (:func:`sigma.xray.ionisation_yield`: the thick-target law
``U ln U - U + 1`` for bulk samples, ``ln(U) / (U Ec^2)`` for thin films) x fluorescence yield
x edge jump, detector efficiency,
the simplified Philibert absorption for bulk (SEM) samples, Gaussian peaks of the detector's
FWHM and Si escape peaks.

A spectrum is fitted by weighted linear least squares with one template per element and shell
(K, L or M lines of that element with their relative weights) plus a smooth background: the
continuum shape the simulator predicts for the phase (Kramers x detector efficiency x
absorption) times piecewise-linear "hat" functions, so that the background can bend where the
model's continuum is wrong. The fit is done twice: the first pass's composition gives the
continuum shape of the second. Intensities are unconstrained (an absent element gets a value
near zero, with its error), and their covariance comes from the Poisson weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy.special import ndtr

from sigma.xray import ELEMENTS, element_lines, fwhm_kev

__all__ = ["Physics", "LineFit", "fit_lines", "geometry_of"]

Geometry = Literal["bulk", "thin"]

#: lowest energy used in fits (keV): above the detector's noise peak and threshold
FIT_MIN_KEV = 0.15
#: thin-film (TEM) geometry from this beam energy up (kV)
THIN_FROM_KV = 60.0
#: X-ray take-off angle of the simulator (degrees)
TAKEOFF_DEG = 35.0


def spectrum_elements(
    energy_kev: npt.ArrayLike,
    spectrum: npt.ArrayLike,
    beam_energy_kev: float | None,
    mnka_resolution_ev: float,
    elements: Iterable[str] | None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], list[str]]:
    """``(energy, counts, elements)`` of one spectrum, checked; elements identified if not given.

    Raises
    ------
    ConfigurationError
        If the spectrum and its energy axis are not 1-D arrays of one length.
    """
    from sigma.exceptions import ConfigurationError
    from sigma.xray import identify_lines, parse_line

    y = np.asarray(spectrum, dtype=np.float64)
    energy = np.asarray(energy_kev, dtype=np.float64)
    if y.ndim != 1 or y.shape != energy.shape:
        raise ConfigurationError(
            f"spectrum and energy_kev must be 1-D of one length. Got {y.shape!r} and "
            f"{energy.shape!r}."
        )
    if elements is not None:
        return energy, y, list(elements)
    lines = identify_lines(energy, y, beam_energy_kev, mnka_resolution_ev=mnka_resolution_ev)
    return energy, y, list(dict.fromkeys(parse_line(n)[0] for n in lines))


def geometry_of(attrs: Mapping[str, object]) -> Geometry:
    """``"thin"`` for TEM data (signal type ``EDS_TEM`` or beam >= 60 kV), else ``"bulk"``."""
    signal = str(attrs.get("signal_type") or "").upper()
    if signal.endswith("TEM"):
        return "thin"
    if signal.endswith("SEM"):
        return "bulk"
    try:
        beam = float(attrs.get("beam_energy_kev") or "nan")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        beam = float("nan")
    return "thin" if math.isfinite(beam) and beam >= THIN_FROM_KV else "bulk"


@functools.cache
def _atomic_mass(element: str) -> float:
    from sigma.datasets._phases import _atomic_mass as mass

    return mass(element)


@dataclass(frozen=True)
class _Shell:
    element: str
    shell: str
    energies: npt.NDArray[np.float64]  # line energies (keV)
    edges: npt.NDArray[np.float64]  # their edge energies (keV)
    weights: npt.NDArray[np.float64]  # generated weight x element scale x efficiency / A

    @property
    def key(self) -> str:
        return f"{self.element}_{self.shell}"

    @property
    def main_energy(self) -> float:
        return float(self.energies[np.argmax(self.weights)])


class Physics:
    """The simulator's physics on one energy axis, beam energy, resolution and geometry.

    Parameters
    ----------
    energy_kev : array
        Channel centres (keV), increasing.
    beam_energy_kev : float
        Beam energy (keV).
    mnka_resolution_ev : float
        Detector FWHM at Mn Ka (eV).
    geometry : {"bulk", "thin"}
        Bulk (SEM: absorption) or thin film (TEM).
    elements : iterable of str
        Elements to model; those without an excited line inside the fit range are dropped.
    """

    def __init__(
        self,
        energy_kev: npt.ArrayLike,
        beam_energy_kev: float,
        mnka_resolution_ev: float,
        geometry: Geometry,
        elements: Iterable[str],
    ) -> None:
        from sigma.datasets._spectrum import _channel_edges, _element_scale, _generated
        from sigma.datasets._spectrum import detector_efficiency as eff

        self.energy = np.asarray(energy_kev, dtype=np.float64)
        self.beam = float(beam_energy_kev)
        self.resolution = float(mnka_resolution_ev)
        self.geometry: Geometry = geometry
        self.window = "polymer" if geometry == "bulk" else "none"
        hi = min(float(self.energy[-1]), self.beam * 0.98)
        self.fit_mask = (self.energy >= FIT_MIN_KEV) & (self.energy <= hi)
        self.edges = _channel_edges(self.energy)
        self.efficiency = eff(self.energy, window=self.window)  # type: ignore[arg-type]
        shells: list[_Shell] = []
        for el in sorted(set(elements), key=ELEMENTS.index):
            lines = element_lines(el)
            gen = _generated(el, self.beam, geometry)
            scale = _element_scale(el, self.beam, geometry)
            if scale <= 0:
                continue
            for shell in "KLM":
                names = [
                    n
                    for n in gen
                    if lines[n].shell == shell and FIT_MIN_KEV <= lines[n].energy_kev <= hi
                ]
                if not names:
                    continue
                e = np.array([lines[n].energy_kev for n in names])
                w = np.array([gen[n] for n in names]) * scale / _atomic_mass(el)
                w = w * np.asarray(eff(e, window=self.window), dtype=np.float64)  # type: ignore[arg-type,operator]
                if w.sum() <= 0:
                    continue
                shells.append(_Shell(el, shell, e, np.array([lines[n].edge_kev for n in names]), w))
        self.shells = shells
        self.keys = [s.key for s in shells]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self.elements = sorted({s.element for s in shells}, key=ELEMENTS.index)
        #: yield of each shell per unit mass fraction of its element, without absorption
        self.unit_yield = np.array([float(s.weights.sum()) for s in shells])
        # every line of every shell in one array (vectorised absorption), and caches of what
        # does not change for this axis, beam and detector: the peak profile of each line and
        # each composition's shell yields (a library is predicted once per Physics)
        sizes = [s.energies.size for s in shells]
        self._line_shell = np.repeat(np.arange(len(shells)), sizes)
        self._line_start = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        cat = (lambda xs: np.concatenate(xs)) if shells else (lambda xs: np.zeros(0))
        self._line_energy = cat([s.energies for s in shells])
        self._line_edge = cat([s.edges for s in shells])
        self._line_weight = cat([s.weights for s in shells])
        self._line_mu: dict[str, npt.NDArray[np.float64]] = {}
        self._profiles: dict[int, npt.NDArray[np.float64]] = {}
        self._yields: dict[tuple[tuple[str, float], ...], npt.NDArray[np.float64]] = {}

    def shells_of(self, elements: Iterable[str]) -> list[int]:
        """Indices of the shells of ``elements`` (those that have any)."""
        want = set(elements)
        return [i for i, s in enumerate(self.shells) if s.element in want]

    @functools.cached_property
    def main_yield(self) -> npt.NDArray[np.float64]:
        """Yield of each shell per unit mass fraction that picks an element's main shell.

        Bulk: absorbed in the pure element (the thick-target law generates more Fe L than Fe K
        at 15 kV, but Fe L is absorbed in the sample: Fe K is the shell to quantify); thin films:
        :attr:`unit_yield`.
        """
        if self.geometry != "bulk":
            return self.unit_yield
        out = np.zeros(len(self.shells))
        for el in self.elements:
            idx = self.shells_of([el])
            out[idx] = self.shell_yields({el: 1.0})[idx]
        return out

    def main_shell(self, element: str) -> int:
        """Index of the shell of ``element`` with the largest :attr:`main_yield`."""
        return max(self.shells_of([element]), key=lambda i: float(self.main_yield[i]))

    def templates(
        self, indices: list[int], composition: Mapping[str, float] | None
    ) -> npt.NDArray[np.float64]:
        """Unit-area peak shapes of the shells ``indices`` (rows).

        The relative line weights are absorbed in ``composition`` (bulk) or not (None).
        """
        if not indices:
            return np.zeros((0, self.energy.size))
        absorb = (
            self._line_absorption(composition) if composition and self.geometry == "bulk" else None
        )
        rows = []
        for i in indices:
            lo, hi = self._line_start[i], self._line_start[i + 1]
            area = self._line_weight[lo:hi]
            if absorb is not None:
                area = area * absorb[lo:hi]
            rows.append((area / area.sum()) @ self._profile(i))
        return np.stack(rows)

    # -- spectra ----------------------------------------------------------------------------
    def _profile(self, i: int) -> npt.NDArray[np.float64]:
        """Unit-area peak of each line of shell ``i`` with its Si escape peak (line, channel)."""
        out = self._profiles.get(i)
        if out is None:
            from sigma.datasets._spectrum import _si_escape

            s = self.shells[i]
            f_esc, e_esc = _si_escape(s.energies)
            esc = f_esc > 0
            e = np.concatenate([s.energies, e_esc[esc]])
            sig = fwhm_kev(e, self.resolution) / 2.3548
            cdf = ndtr((self.edges[None, :] - e[:, None]) / sig[:, None])
            peaks = np.diff(cdf, axis=1)
            n = s.energies.size
            out = (1 - f_esc)[:, None] * peaks[:n]
            out[esc] += f_esc[esc, None] * peaks[n:]
            self._profiles[i] = out
        return out

    def _peaks(
        self, s: _Shell, area: npt.NDArray[np.float64] | None = None
    ) -> npt.NDArray[np.float64]:
        """Peaks of one shell's lines (unit total area unless ``area`` per line is given)."""
        a = s.weights / s.weights.sum() if area is None else area
        out: npt.NDArray[np.float64] = a @ self._profile(self.index[s.key])
        return out

    def _line_absorption(self, composition: Mapping[str, float]) -> npt.NDArray[np.float64]:
        """:meth:`_absorption` of every line of every shell at once (1 for thin films)."""
        if self.geometry == "thin":
            return np.ones_like(self._line_energy)
        from sigma.datasets._spectrum import _mu

        mu = np.zeros_like(self._line_energy)
        mean_z = mean_a = 0.0
        for el, c in composition.items():
            mu_el = self._line_mu.get(el)
            if mu_el is None:
                mu_el = self._line_mu[el] = _mu(el, self._line_energy)
            mu += c * mu_el
            mean_z += c * (ELEMENTS.index(el) + 1)
            mean_a += c * _atomic_mass(el)
        return self._philibert(mu, self._line_edge, mean_z, mean_a)

    def _philibert(
        self,
        mu: npt.NDArray[np.float64],
        edge: npt.NDArray[np.float64],
        mean_z: float,
        mean_a: float,
    ) -> npt.NDArray[np.float64]:
        chi = mu / math.sin(math.radians(TAKEOFF_DEG))
        e0 = self.beam**1.65
        ec = np.minimum(edge, self.beam * 0.999) ** 1.65
        sigma = 4.5e5 / (e0 - ec)
        h = 1.2 * mean_a / max(mean_z, 1.0) ** 2
        x = chi / sigma
        out: npt.NDArray[np.float64] = 1.0 / ((1.0 + x) * (1.0 + h / (1.0 + h) * x))
        return out

    def _absorption(
        self,
        composition: Mapping[str, float],
        energy: npt.NDArray[np.float64],
        edge: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """The simulator's simplified Philibert absorption factor (1 for thin films)."""
        if self.geometry == "thin":
            return np.ones_like(energy)
        from sigma.datasets._spectrum import _mu

        mu = np.zeros_like(energy)
        mean_z = mean_a = 0.0
        for el, c in composition.items():
            mu += c * _mu(el, energy)
            mean_z += c * (ELEMENTS.index(el) + 1)
            mean_a += c * _atomic_mass(el)
        return self._philibert(mu, edge, mean_z, mean_a)

    def shell_yields(self, composition: Mapping[str, float]) -> npt.NDArray[np.float64]:
        """Predicted area of every shell template for a composition (mass fractions), same units.

        Elements of ``composition`` that have no template contribute nothing; the result is
        relative (a phase's count rate in the simulator's arbitrary units). Cached per
        composition (read-only array).
        """
        key = tuple(composition.items())
        out = self._yields.get(key)
        if out is not None:
            return out
        conc = np.array([composition.get(s.element, 0.0) for s in self.shells])
        out = np.zeros(len(self.shells))
        if np.any(conc > 0):
            absorb = self._line_absorption(composition)
            per_line = np.where(conc[self._line_shell] > 0, self._line_weight * absorb, 0.0)
            sums = np.add.reduceat(per_line, self._line_start[:-1]) if per_line.size else out
            out = np.where(conc > 0, conc * sums, 0.0)
        out.setflags(write=False)
        if len(self._yields) < 4096:
            self._yields[key] = out
        return out

    def continuum(self, composition: Mapping[str, float] | None) -> npt.NDArray[np.float64]:
        """Continuum shape (Kramers x efficiency x absorption), arbitrary scale, per channel."""
        e = np.clip(self.energy, 1e-3, None)
        shape = np.where(self.energy < self.beam, (self.beam - e) / e, 0.0) * self.efficiency
        if composition and self.geometry == "bulk":
            shape = shape * self._absorption(composition, e, e)
        return np.asarray(shape, dtype=np.float64)

    def background_basis(self, composition: Mapping[str, float] | None) -> npt.NDArray[np.float64]:
        """Continuum shape x hat functions: knots every ~0.5 keV below 2 keV, ~1.5 keV above."""
        m = self.fit_mask
        lo, hi = float(self.energy[m][0]), float(self.energy[m][-1])
        knots = list(np.arange(lo, min(hi, 2.0), 0.5))
        knots += list(np.arange(max(knots[-1] + 1.0, 2.0) if knots else lo, hi, 1.5))
        knots = sorted(set([*knots, hi]))
        if len(knots) < 2:
            knots = [lo, hi]
        k = np.asarray(knots)
        eye = np.eye(k.size)
        hats = np.stack([np.interp(self.energy, k, eye[j]) for j in range(k.size)])
        return hats * self.continuum(composition)[None, :]


@dataclass(frozen=True)
class LineFit:
    """Result of :func:`fit_lines` for one spectrum.

    Attributes
    ----------
    keys : list of str
        ``"Fe_K"``, ``"Fe_L"``... one per shell template.
    intensity : ndarray
        Fitted area (counts) of each template; may be slightly negative for absent elements.
    covariance : ndarray
        Their covariance (counts^2) from the Poisson weights.
    background_under : ndarray
        Background counts under each template (within about 1.2 FWHM of its strongest line).
    model : ndarray
        Fitted spectrum (counts per channel; zero outside the fit range).
    background : ndarray
        Its background part.
    overlap : ndarray
        ``overlap[s, t]``: the fraction of template ``t``'s area that a fit of template ``s``
        alone would take (0-1; 1 on the diagonal): how far a model error of line ``t`` leaks
        into line ``s``.
    dispersion : float
        Pearson chi-square per degree of freedom of the spectrum fit (>= 1): how much worse than
        Poisson noise the templates describe the spectrum (quasi-Poisson overdispersion).
    """

    keys: list[str]
    intensity: npt.NDArray[np.float64]
    covariance: npt.NDArray[np.float64]
    background_under: npt.NDArray[np.float64]
    model: npt.NDArray[np.float64]
    background: npt.NDArray[np.float64]
    overlap: npt.NDArray[np.float64]
    dispersion: float = 1.0

    @property
    def sigma(self) -> npt.NDArray[np.float64]:
        """Counting (1-sigma) error of each intensity."""
        return np.sqrt(np.clip(np.diag(self.covariance), 0, None))


def _wls(
    a: npt.NDArray[np.float64], y: npt.NDArray[np.float64], var: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Weighted least squares by the normal equations: coefficients and their covariance."""
    aw = a / var[:, None]
    normal = a.T @ aw
    cov = np.linalg.pinv(normal, hermitian=True)
    return cov @ (aw.T @ y), cov


def fit_lines(
    spectrum: npt.ArrayLike,
    physics: Physics,
    elements: Iterable[str],
    *,
    extra: Iterable[str] = (),
    composition: Mapping[str, float] | None = None,
) -> tuple[LineFit, dict[str, float]]:
    """Fit the shell templates of ``elements`` + background to one spectrum (counts); two passes.

    Each element of ``extra`` is then tested on its own: the fit is repeated with that
    element's shells added, and their intensities and variances are appended to the result
    (their covariance with the others is left out). This measures (an upper limit on) elements
    a library entry needs but the spectrum may lack, without letting dozens of overlapping
    templates into one fit.

    Returns the fit and the rough composition (mass fractions) of the last pass.
    """
    y_all = np.asarray(spectrum, dtype=np.float64)
    m = physics.fit_mask
    y = y_all[m]
    idx = physics.shells_of(elements)
    n_t = len(idx)
    comp = dict(composition) if composition else None
    var = np.maximum(y, 1.0)
    coef = cov = a = None
    back_full = np.zeros_like(y_all)
    model_full = np.zeros_like(y_all)
    for _ in range(2):
        bg = physics.background_basis(comp)
        a = np.concatenate([physics.templates(idx, comp), bg], axis=0)[:, m].T
        coef, _ = _wls(a, y, var)
        var = np.maximum(a @ coef, 1.0)  # Poisson variance of the model, not of the data
        coef, cov = _wls(a, y, var)
        model_full[m] = a @ coef
        back_full[:] = 0.0
        back_full[m] = a[:, n_t:] @ coef[n_t:]
        comp = rough_composition(coef[:n_t], np.sqrt(np.diag(cov)[:n_t]), idx, physics) or comp
    assert coef is not None
    assert cov is not None
    assert a is not None
    keys = [physics.keys[i] for i in idx]
    intensity = list(coef[:n_t])
    covariance = cov[:n_t, :n_t]
    extra_var: list[float] = []
    for el in extra:
        if el in set(elements):
            continue
        jdx = physics.shells_of([el])
        if not jdx:
            continue
        t = physics.templates(jdx, comp)[:, m].T
        c2, cov2 = _wls(np.concatenate([t, a], axis=1), y, var)
        keys += [physics.keys[j] for j in jdx]
        intensity += list(c2[: len(jdx)])
        extra_var += list(np.diag(cov2)[: len(jdx)])
    if extra_var:
        n = len(keys)
        full = np.zeros((n, n))
        full[:n_t, :n_t] = covariance
        full[np.arange(n_t, n), np.arange(n_t, n)] = extra_var
        covariance = full
    under = np.zeros(len(keys))
    for i, key in enumerate(keys):
        s = physics.shells[physics.index[key]]
        half = 0.6 * float(fwhm_kev(s.main_energy, physics.resolution))
        win = m & (np.abs(physics.energy - s.main_energy) <= half)
        under[i] = float(back_full[win].sum())
    # overlap of the templates broadened to ~3x the detector resolution: line tails, shelves
    # and shape errors of a strong line reach further than its Gaussian core
    from scipy.ndimage import gaussian_filter1d

    t_all = physics.templates([physics.index[k] for k in keys], comp)[:, m]
    width = float(np.median(np.diff(physics.energy)))
    for i, key in enumerate(keys):
        e0 = physics.shells[physics.index[key]].main_energy
        sig_ch = 2.0 * float(fwhm_kev(e0, physics.resolution)) / 2.3548 / width
        t_all[i] = gaussian_filter1d(t_all[i], sig_ch, mode="constant")
    gram = t_all @ t_all.T
    overlap = np.clip(gram / np.maximum(np.diag(gram), 1e-300)[:, None], 0.0, 1.0)
    resid = (y - model_full[m]) ** 2 / np.maximum(model_full[m], 1.0)
    dispersion = max(1.0, float(resid.sum()) / max(int(m.sum()) - a.shape[1], 1))
    fit = LineFit(
        keys=keys,
        intensity=np.asarray(intensity, dtype=np.float64),
        covariance=np.asarray(covariance, dtype=np.float64),
        background_under=under,
        model=model_full,
        background=back_full,
        overlap=overlap,
        dispersion=dispersion,
    )
    return fit, comp or {}


def rough_composition(
    intensity: npt.NDArray[np.float64],
    sigma: npt.NDArray[np.float64],
    indices: list[int],
    physics: Physics,
    n_iter: int = 3,
) -> dict[str, float] | None:
    """Mass fractions from each element's main shell, with the absorption iterated.

    The main shell of an element is the one with the largest yield per unit mass fraction
    (:attr:`Physics.main_yield`: self-absorbed for bulk samples); elements measured at less than
    3 sigma are left out.
    """
    main: dict[str, tuple[float, int]] = {}
    for val, sig, i in zip(intensity, sigma, indices, strict=True):
        el = physics.shells[i].element
        rank = float(physics.main_yield[i])
        if rank > 0 and val > 3 * sig and rank > main.get(el, (0.0, -1))[0]:
            main[el] = (rank, i)
    if not main:
        return None
    val_of = {i: float(v) for v, i in zip(intensity, indices, strict=True)}
    value = {el: val_of[i] for el, (_, i) in main.items()}
    comp = {el: value[el] / physics.unit_yield[i] for el, (_, i) in main.items()}
    total = sum(comp.values())
    comp = {el: v / total for el, v in comp.items()}
    for _ in range(n_iter if physics.geometry == "bulk" else 0):
        yields = physics.shell_yields(comp)
        new = {}
        for el, (_, i) in main.items():
            per_unit = yields[i] / comp[el] if comp[el] > 0 else 0.0
            if per_unit > 0:
                new[el] = value[el] / per_unit
        total = sum(new.values())
        if total <= 0:
            break
        comp = {el: v / total for el, v in new.items()}
    return comp
