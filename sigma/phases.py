r"""Name the phases: match each cluster's spectrum against a library of minerals and materials.

The default library (``sigma/data/minerals.csv``, 270 entries: rock-forming and ore minerals,
oxides, carbonates, sulphides, sulphates, phosphates, halides, metals, alloys, ceramics, mounting
media and common contaminants) holds a name, a formula (or weight percents) and a density per
entry. A user CSV with the columns ``name, formula`` (optional ``density``) extends it or
replaces it (:func:`load_library`).

How a spectrum is matched (:func:`match_spectrum`):

1. the elements present are identified from the peaks (:func:`sigma.xray.identify_lines`);
2. the spectrum is fitted with one template per element shell (K, L, M lines) of those elements
   plus a smooth background (:mod:`sigma._linefit`, sigma's own simulator physics at the
   file's beam energy, energy axis and detector resolution); every further element a library
   entry needs is measured on its own against that fit (its intensity or upper limit);
3. for every entry the simulator predicts the shell intensities, and one free scale (plus a
   little carbon: coating, mount, support film, at most ~3 % of the mass without penalty) is
   fitted by weighted least squares. The misfit is a chi-square whose variance per shell is the
   counting variance (from the fit's Poisson weights, scaled up by the spectrum fit's
   overdispersion) plus a *model* error: a smooth trend in energy
   ``exp(b1 ln(E/2 keV) + b2 ln(E/2 keV)^2)`` fitted with Gaussian priors (physics models
   differ by factors of 2-5 between O Ka and Fe Ka, little between neighbouring lines), an
   independent relative error of each line (5 % + 0.05 keV / E: 8 % at Si Ka, 15 % at O Ka;
   100 % for an element's weaker shells such as Fe L beside Fe K) that leaks into the lines
   it overlaps, and 3 % of the background counts under the line. At :math:`10^6` counts a
   pure Poisson deviance would reject every entry for a 1 % error of the physics, so the
   counting statistics alone cannot set the threshold;
4. the best entry is *acceptable* when its chi-square is (p >= 0.001 for its lines), or when
   its composition explains the lines about as well as a free composition does
   (likelihood-ratio test against a fit with one scale per element and the same error model,
   p >= 0.001): misfit that no composition removes (another detector's
   line shapes, pile-up) is not held against the entry, while a phase outside the library,
   whose element ratios no entry has, is rejected;
5. entries with the same visible composition (polymorphs: rutile/anatase, kyanite/andalusite/
   sillimanite) are one candidate. Each candidate gets a weight
   :math:`w \propto \exp(-\chi^2/2)`; the best is *named* when its misfit is acceptable
   (chi-square p-value >= 0.001 for its degrees of freedom) and its weight is >= 0.9. When the
   weight is spread over up to four candidates with the same elements, carbon aside (hematite
   vs magnetite, calcite vs lime + carbon coating), the name lists them
   (``"hematite/magnetite"``); when it is spread over members of one library class (the C-O
   polymers), the class is named (``"mounting medium (epoxy/polyimide/...)"``). Otherwise the cluster is
   ``"unmatched: Fe, Ti, O"`` (its elements, strongest first): unmatched is better than wrong.
   The best two-entry mixture (non-negative least squares of two predictions) is reported in
   the match table but never names a cluster: on spectra from another physics model, a
   rejected single phase was as often "explained" by a wrong pair (diopside as
   wollastonite + enstatite) as by a right one.

Examples
--------
>>> import numpy as np
>>> from sigma.datasets import PHASES, phase_spectrum
>>> energy = np.arange(1024) * 0.01
>>> rng = np.random.default_rng(0)
>>> counts = rng.poisson(phase_spectrum(PHASES["albite"], energy) * 2e5)
>>> m = match_spectrum(counts, energy, beam_energy_kev=15.0)
>>> m.name, m.kind
('albite', 'single')
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._linefit import Geometry, LineFit, Physics, fit_lines, geometry_of
from sigma.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = [
    "LibraryEntry",
    "Match",
    "load_library",
    "default_library_path",
    "match_spectrum",
    "identify_phases",
    "name_unmatched_by_composition",
    "match_elements",
    "NAME_MIN_AT",
    "UNMATCHED",
]

#: prefix of the names of clusters no library entry explains
UNMATCHED = "unmatched"
#: weight the best candidate needs to be named
NAME_WEIGHT = 0.9
#: chi-square p-value below which the best entry does not explain the spectrum
ACCEPT_P = 1e-3
#: model error of a predicted line intensity: REL_ERROR + REL_ERROR_KEV / E
REL_ERROR = 0.05
REL_ERROR_KEV = 0.05
#: an element's line measured at more than this many sigma counts against every candidate
SIGNIFICANT = 4.0
#: fraction of a line's intensity that its tails and shape errors may put into its neighbours
SHAPE_ERROR = 0.05
#: carbon (coating, mount, support film) is allowed in every spectrum up to this mass share ...
CARBON_MAX = 0.03
#: ... beyond which its chi-square penalty grows by 1 per this much share
CARBON_SOFT = 0.01
#: library groups that name a cluster when its weight is spread over several of their members
CLASS_NAMES = {"mounting": "mounting medium", "alloy": "alloy", "sulphate": "sulphate"}
#: candidates (best of a linear screen) that get the full fit with the smooth trend
N_FULL_FIT = 25
#: the best two-entry mixture is sought among this many best single candidates
MIX_HEAD = 8
#: at most this many candidates with the same elements are named together ("a/b/c")
MAX_NAMES = 4
#: relative model error of an element's weaker shells (Fe L beside Fe K)
SECONDARY_SHELL_ERROR = 1.0
#: prior widths of the smooth model-error trend in ln(E) (see _chi2)
TREND_SLOPE = 1.0
TREND_CURVE = 0.5
#: model error of the background under a line (fraction of the background counts)
BACKGROUND_ERROR = 0.03
#: two visible compositions closer than this (mass fraction, every element) are one candidate
SAME_COMPOSITION = 0.005


@dataclass(frozen=True)
class LibraryEntry:
    """One library phase: name, composition (mass fractions) and density (g/cm^3)."""

    name: str
    composition: dict[str, float] = field(hash=False)
    density: float | None = None
    formula: str = ""
    group: str = ""

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.composition.items()))))


def default_library_path() -> Path:
    """Path of the CSV file of the default library (``sigma/data/minerals.csv``)."""
    return Path(__file__).parent / "data" / "minerals.csv"


_WT_TOKEN = re.compile(r"^([A-Z][a-z]?)([0-9]*\.?[0-9]+)$")


def _parse_formula(formula: str, where: str) -> dict[str, float]:
    """Mass fractions of a formula (``"NaAlSi3O8"``) or weight percents (``"wt% Fe70 Cr19"``)."""
    import xraydb

    from sigma.datasets._phases import _atomic_mass
    from sigma.xray import ELEMENTS

    text = formula.strip()
    if not text:
        raise ConfigurationError(f"{where}: the formula is empty; write it like 'NaAlSi3O8'.")
    if text.lower().startswith("wt%"):
        parts = text[3:].split()
        weights: dict[str, float] = {}
        for tok in parts:
            m = _WT_TOKEN.match(tok)
            if m is None:
                raise ConfigurationError(
                    f"{where}: bad weight-percent term {tok!r} in {formula!r}; write it like "
                    "'wt% Fe70 Cr19 Ni9.5'."
                )
            weights[m.group(1)] = weights.get(m.group(1), 0.0) + float(m.group(2))
        atoms = weights
    else:
        if not re.fullmatch(r"[A-Za-z0-9.()\[\]]+", text) or text.count("(") != text.count(")"):
            raise ConfigurationError(
                f"{where}: cannot parse formula {formula!r}; write it like 'NaAlSi3O8' or "
                "'Ca5(PO4)3(OH)'."
            )
        bad = [sym for sym in re.findall(r"[A-Z][a-z]?", text) if sym not in ELEMENTS]
        if bad:
            raise ConfigurationError(
                f"{where}: unknown element {bad[0]!r} in formula {formula!r}; use chemical "
                "symbols such as 'Fe' (case matters)."
            )
        try:
            atoms = {str(k): float(v) for k, v in xraydb.chemparse(text).items()}
        except Exception as err:  # noqa: BLE001 - chemparse raises several types
            raise ConfigurationError(
                f"{where}: cannot parse formula {formula!r}; write it like 'NaAlSi3O8'."
            ) from err
    unknown = [el for el in atoms if el not in ELEMENTS]
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown element {unknown[0]!r} in formula {formula!r}; use chemical "
            "symbols such as 'Fe' (case matters)."
        )
    if not atoms or any(not (math.isfinite(v) and v > 0) for v in atoms.values()):
        raise ConfigurationError(
            f"{where}: formula {formula!r} needs positive amounts of at least one element."
        )
    if text.lower().startswith("wt%"):
        masses = dict(atoms)
    else:
        masses = {el: n * _atomic_mass(el) for el, n in atoms.items()}
    total = sum(masses.values())
    return {el: v / total for el, v in masses.items()}


def _read_csv(text: str, source: str) -> list[LibraryEntry]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ConfigurationError(
            f"library {source}: no rows; give a CSV with columns name,formula."
        )
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    cols = [c.strip().lower() for c in (reader.fieldnames or [])]
    if "name" not in cols or "formula" not in cols:
        raise ConfigurationError(
            f"library {source}: needs the columns 'name' and 'formula' (optional 'density'). "
            f"Got {reader.fieldnames!r}."
        )
    entries = []
    for n, raw in enumerate(reader, start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        name = row.get("name", "")
        where = f"library {source}, row {n} ({name!r})"
        if not name:
            raise ConfigurationError(f"{where}: the name is empty.")
        comp = _parse_formula(row.get("formula", ""), where)
        dens = row.get("density", "")
        density: float | None = None
        if dens:
            try:
                density = float(dens)
            except ValueError:
                density = float("nan")
            if not (math.isfinite(density) and density > 0):
                raise ConfigurationError(
                    f"{where}: density must be a positive number of g/cm^3. Got {dens!r}."
                )
        entries.append(
            LibraryEntry(name, comp, density, row.get("formula", ""), row.get("group", ""))
        )
    return entries


@functools.cache
def _default_library() -> tuple[LibraryEntry, ...]:
    path = default_library_path()
    return tuple(_read_csv(path.read_text(encoding="utf-8"), path.name))


def load_library(path: str | Path | None = None, *, replace: bool = False) -> list[LibraryEntry]:
    """The phase library: the default one, extended (or replaced) by a user CSV.

    Parameters
    ----------
    path : path, optional
        CSV with the columns ``name`` and ``formula`` (a chemical formula such as ``NaAlSi3O8``,
        or weight percents such as ``wt% Fe70 Cr19 Ni9.5``) and optionally ``density``. Lines
        starting with ``#`` are comments. A user entry replaces a default entry of the same name.
    replace : bool
        Use only the user's entries.

    Raises
    ------
    ConfigurationError
        One line naming the file, the row and the problem (unknown element, bad formula...).

    Examples
    --------
    >>> lib = load_library()
    >>> len(lib) >= 150, next(e for e in lib if e.name == "quartz").composition["Si"] > 0.46
    (True, True)
    """
    base = [] if replace else list(_default_library())
    if path is None:
        if replace:
            raise ConfigurationError("replace=True needs a library path.")
        return base
    p = Path(path)
    if not p.is_file():
        raise ConfigurationError(
            f"library {str(p)!r} is not a file; give a CSV with the columns name,formula."
        )
    user = _read_csv(p.read_text(encoding="utf-8"), p.name)
    names = {e.name for e in user}
    return [e for e in base if e.name not in names] + user


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------
@dataclass
class Match:
    """How one spectrum matches the library.

    Attributes
    ----------
    name : str
        The name to show: an entry (``"quartz"``), polymorphs or close candidates
        (``"hematite/magnetite"``), a mixture (``"quartz + albite"``) or
        ``"unmatched: Fe, Ti, O"``.
    kind : {"single", "ambiguous", "mixture", "unmatched"}
    confidence : float
        Weight of the named candidate(s) among all (0-1).
    elements : list of str
        Elements found in the spectrum, strongest line first.
    top : list of (name, misfit, weight)
        Best three candidates; ``misfit`` is chi-square per degree of freedom.
    mixture : (name 1, name 2, mass fraction of 1, misfit) or None
        Best two-entry mixture.
    """

    name: str
    kind: str
    confidence: float
    elements: list[str]
    top: list[tuple[str, float, float]]
    mixture: tuple[str, str, float, float] | None = None
    fit: LineFit | None = None


@dataclass
class _Candidate:
    names: list[str]
    composition: dict[str, float]
    group: str = ""

    @property
    def name(self) -> str:
        return "/".join(self.names)


def _visible(comp: Mapping[str, float], visible: set[str]) -> dict[str, float]:
    vis = {el: c for el, c in comp.items() if el in visible}
    total = sum(vis.values())
    return {el: c / total for el, c in vis.items()} if total > 0 else {}


def _candidates(library: Sequence[LibraryEntry], visible: set[str]) -> list[_Candidate]:
    out: list[_Candidate] = []
    seen: list[dict[str, float]] = []
    for entry in library:
        vis = _visible(entry.composition, visible)
        if not vis:
            continue
        for cand, v in zip(out, seen, strict=True):
            if set(v) == set(vis) and all(abs(v[el] - vis[el]) <= SAME_COMPOSITION for el in v):
                cand.names.append(entry.name)
                break
        else:
            out.append(_Candidate([entry.name], dict(entry.composition), entry.group))
            seen.append(vis)
    return out


@functools.lru_cache(maxsize=8)
def _physics(
    energy: tuple[float, float, int],
    beam: float,
    resolution: float,
    geometry: Geometry,
    elements: tuple[str, ...],
) -> Physics:
    offset, scale, n = energy
    axis = offset + scale * np.arange(n)
    return Physics(axis, beam, resolution, geometry, elements)


def _library_elements(library: Sequence[LibraryEntry]) -> tuple[str, ...]:
    return tuple(sorted({el for e in library for el in e.composition}))


def _independent_error(
    physics: Physics, keys: list[str], preds: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Relative independent model error of each shell, per phase (rows of ``preds``).

    For each element the shell with the largest predicted intensity carries its information
    (``REL_ERROR + REL_ERROR_KEV / E``); its other shells (Fe L beside Fe K, Zr K beside Zr L)
    depend on cross-shell yields that physics models disagree on by factors of several and get
    :data:`SECONDARY_SHELL_ERROR`.
    """
    energies = np.array([physics.shells[physics.index[k]].main_energy for k in keys])
    elements = [k.split("_")[0] for k in keys]
    rel = REL_ERROR + REL_ERROR_KEV / np.maximum(energies, 0.1)
    out = np.tile(rel, (preds.shape[0], 1))
    for r, row in enumerate(preds):
        for el in set(elements):
            idx = [i for i, e in enumerate(elements) if e == el]
            if len(idx) > 1:
                top = idx[int(np.argmax(row[idx]))]
                out[r, [i for i in idx if i != top]] = SECONDARY_SHELL_ERROR
    return out


def _chi2(
    y: npt.NDArray[np.float64],
    cov: npt.NDArray[np.float64],
    preds: npt.NDArray[np.float64],
    physics: Physics,
    keys: list[str],
    base_var: npt.NDArray[np.float64],
    overlap: npt.NDArray[np.float64],
    trend: bool = True,
    contaminant: npt.NDArray[np.float64] | None = None,
) -> tuple[float, npt.NDArray[np.float64]]:
    """Misfit of ``y ~ trend(E) * (scales @ preds)`` with non-negative scales (one per row).

    ``trend(E) = exp(b1 x + b2 x^2)``, ``x = ln(E / 2 keV)``, is the smooth model error:
    physics models differ mostly smoothly with energy (ionisation cross-sections, absorption,
    the detector window), so a 2x error of O Ka relative to Fe Ka costs little while the
    Na/Mg/Al/Si ratios stay sharp. ``b1, b2`` have Gaussian priors (:data:`TREND_SLOPE`,
    :data:`TREND_CURVE`) whose squares are added to the chi-square. The variance of each shell
    is the counting covariance + the background error + the independent model error (see
    :func:`_independent_error`) of every line leaking through ``overlap``.
    With ``trend=False`` only the first, linear fit is done (a quick screen).
    ``contaminant`` (the prediction of pure carbon) is added with its own non-negative scale:
    carbon coats SEM samples, mounts them and supports TEM specimens, and boundary pixels of
    grains in epoxy carry it. Its mass share beyond :data:`CARBON_MAX` is penalised
    (``((share - CARBON_MAX) / CARBON_SOFT)^2``), so a C-O spectrum is not "ice + carbon".
    Returns ``(chi2, scales)`` (the scales of ``preds`` only).
    """
    from scipy.optimize import nnls

    n_phase = preds.shape[0]
    if contaminant is not None and np.any(contaminant > 0):
        preds = np.vstack([preds, contaminant[None, :]])
    has_c = preds.shape[0] > n_phase

    def penalty(sc: npt.NDArray[np.float64]) -> float:
        if not has_c:
            return 0.0
        share = float(sc[-1]) / max(float(sc.sum()), 1e-300)
        return max(0.0, share - CARBON_MAX) / CARBON_SOFT

    energies = np.array([physics.shells[physics.index[k]].main_energy for k in keys])
    x = np.log(np.maximum(energies, 0.1) / 2.0)
    rel = _independent_error(physics, keys, preds)
    base = cov + np.diag(base_var)
    scales = np.zeros(preds.shape[0])
    trend_on = trend
    trend_f = np.ones_like(x)
    beta = np.zeros(2)
    chol = np.linalg.cholesky(base + np.eye(base.shape[0]) * 1e-12 * max(np.trace(base), 1.0))
    # a first non-negative fit without trend, then the trend and scales together
    for it in range(3 if trend_on else 2):
        mu = scales[:, None] * preds * trend_f[None, :]
        # independent error of every line (summed over the phases), leaking into its neighbours
        ind = overlap * (rel * mu).sum(axis=0)[None, :]  # (n, n)
        c = base + ind @ ind.T
        try:
            chol = np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            chol = np.linalg.cholesky(c + np.eye(c.shape[0]) * 1e-9 * np.trace(c))
        if it == 0 or not trend_on:
            a = np.linalg.solve(chol, preds.T)
            scales, _ = nnls(a, np.linalg.solve(chol, y))
            continue
        if not np.any(scales > 0):
            break
        scales, beta = _fit_trend(
            y, preds, x, np.linalg.inv(chol), scales, beta, preds.shape[0] - 1 if has_c else None
        )
        trend_f = np.exp(beta[0] * x + beta[1] * x**2)
    model = (scales @ preds) * trend_f
    r = np.linalg.solve(chol, y - model)
    chi2 = float(
        r @ r + (beta[0] / TREND_SLOPE) ** 2 + (beta[1] / TREND_CURVE) ** 2 + penalty(scales) ** 2
    )
    return (chi2 if math.isfinite(chi2) else math.inf), scales[:n_phase]


def _fit_trend(
    y: npt.NDArray[np.float64],
    preds: npt.NDArray[np.float64],
    x: npt.NDArray[np.float64],
    l_inv: npt.NDArray[np.float64],
    scales: npt.NDArray[np.float64],
    beta: npt.NDArray[np.float64],
    carbon: int | None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Non-negative scales and trend ``beta`` minimising the misfit of :func:`_chi2`.

    Levenberg-Marquardt (MINPACK, exact Jacobian) on the phases with a positive scale; a phase
    whose scale goes negative leaves the model and the rest is fitted again (an active set, as
    in NNLS), so a phase the fit does not want gets exactly zero.
    """
    from scipy.optimize import least_squares

    active = np.flatnonzero(scales > 0)
    n_x = x.size
    prior = np.array([1.0 / TREND_SLOPE, 1.0 / TREND_CURVE])
    while active.size:
        p_act = preds[active]
        n_a = active.size
        c_pos = int(np.flatnonzero(active == carbon)[0]) if carbon in active else -1

        def resid(theta: npt.NDArray[np.float64], p_act: Any = p_act, c_pos: int = c_pos) -> Any:
            t = np.exp(np.clip(theta[-2] * x + theta[-1] * x**2, -50, 50))
            sc = theta[:-2]
            out = np.empty(n_x + 3)
            out[:n_x] = l_inv @ (y - (sc @ p_act) * t)
            out[n_x : n_x + 2] = theta[-2:] * prior
            out[-1] = 0.0
            if c_pos >= 0:
                share = float(sc[c_pos]) / max(float(sc.sum()), 1e-300)
                out[-1] = max(0.0, share - CARBON_MAX) / CARBON_SOFT
            return out

        def jac(
            theta: npt.NDArray[np.float64], p_act: Any = p_act, c_pos: int = c_pos, n_a: int = n_a
        ) -> Any:
            t = np.exp(np.clip(theta[-2] * x + theta[-1] * x**2, -50, 50))
            sc = theta[:-2]
            model = (sc @ p_act) * t
            out = np.zeros((n_x + 3, n_a + 2))
            out[:n_x, :n_a] = -(l_inv @ (p_act * t[None, :]).T)
            out[:n_x, n_a] = -(l_inv @ (model * x))
            out[:n_x, n_a + 1] = -(l_inv @ (model * x**2))
            out[n_x, n_a] = prior[0]
            out[n_x + 1, n_a + 1] = prior[1]
            total = float(sc.sum())
            if c_pos >= 0 and total > 0:
                share = float(sc[c_pos]) / total
                if share > CARBON_MAX:
                    out[-1, :n_a] = ((np.arange(n_a) == c_pos) - share) / total / CARBON_SOFT
            return out

        start = np.concatenate([np.maximum(scales[active], 0.0), beta])
        x_scale = np.concatenate([np.maximum(np.abs(start[:n_a]), 1e-300), [1.0, 1.0]])
        sol = least_squares(resid, start, jac=jac, method="lm", x_scale=x_scale)
        sc = sol.x[:-2]
        if np.all(sc >= 0) or not np.all(np.isfinite(sol.x)):
            scales = np.zeros(preds.shape[0])
            scales[active] = np.maximum(np.nan_to_num(sc), 0.0)
            beta = sol.x[-2:] if np.all(np.isfinite(sol.x[-2:])) else beta
            return scales, beta
        # the most negative phase leaves; the others start from where they were
        scales = scales.copy()
        scales[active] = np.maximum(sc, 0.0)
        scales[active[int(np.argmin(sc))]] = 0.0
        beta = sol.x[-2:]
        active = np.flatnonzero(scales > 0)
    return np.zeros(preds.shape[0]), beta


def _score(
    y: npt.NDArray[np.float64],
    physics: Physics,
    found: list[str],
    need: list[str],
    cands: list[_Candidate],
) -> tuple[LineFit, list[tuple[float, int, npt.NDArray[np.float64], list[int]]]]:
    """Fit the lines of ``found`` (+ each of ``need`` on its own); chi-square of every candidate.

    Best first: ``(chi2, candidate index, prediction, rows of the fit used)``.
    """
    fit, _ = fit_lines(y, physics, found, extra=need)
    keys = fit.keys
    pos = {k: i for i, k in enumerate(keys)}
    base_var = (BACKGROUND_ERROR * np.maximum(fit.background_under, 0.0)) ** 2
    n_found = len(physics.shells_of(found))
    # every candidate is scored on the found lines, the extra lines that are significant on
    # their own (an element identification missed), and its own lines
    # quasi-Poisson: when the templates fit the spectrum worse than counting noise allows
    # (another detector response, tails, pile-up), every intensity is that much less certain
    cov_all = fit.covariance * fit.dispersion
    shape_err = SHAPE_ERROR * (fit.overlap[:, :n_found] @ np.abs(fit.intensity[:n_found]))
    total_sig = np.sqrt(np.diag(cov_all) + base_var + shape_err**2)
    common = set(range(n_found)) | {
        i for i in range(n_found, len(keys)) if fit.intensity[i] > SIGNIFICANT * total_sig[i]
    }
    carbon = physics.shell_yields({"C": 1.0})
    common |= {pos[physics.keys[i]] for i in np.nonzero(carbon)[0] if physics.keys[i] in pos}
    scores: list[tuple[float, int, npt.NDArray[np.float64], list[int]]] = []
    for ci, cand in enumerate(cands):
        yields = physics.shell_yields(cand.composition)
        rows = sorted(
            common | {pos[physics.keys[i]] for i in np.nonzero(yields)[0] if physics.keys[i] in pos}
        )
        pred = np.array([yields[physics.index[keys[r]]] for r in rows])
        scores.append((0.0, ci, pred, rows))

    def chi2_of(entry: tuple[float, int, Any, list[int]], trend: bool) -> float:
        _, _, pred, rows = entry
        return _chi2(
            fit.intensity[rows],
            cov_all[np.ix_(rows, rows)],
            pred[None, :],
            physics,
            [keys[r] for r in rows],
            base_var[rows],
            fit.overlap[np.ix_(rows, rows)],
            trend=trend,
            contaminant=np.array([carbon[physics.index[keys[r]]] for r in rows]),
        )[0]

    # a linear screen of every candidate, then the full fit (with the trend) of the best
    screened = sorted(((chi2_of(e, False), *e[1:]) for e in scores), key=lambda t: t[0])
    head = [(chi2_of(e, True), *e[1:]) for e in screened[:N_FULL_FIT]]
    tail = [
        (max(c, head[-1][0] if head else 0.0) + 1e3, *rest) for c, *rest in screened[N_FULL_FIT:]
    ]
    scores = sorted(head, key=lambda t: t[0]) + tail  # type: ignore[arg-type,operator]
    return fit, scores


def match_spectrum(
    spectrum: npt.ArrayLike,
    energy_kev: npt.ArrayLike,
    *,
    beam_energy_kev: float,
    mnka_resolution_ev: float = 130.0,
    geometry: Geometry = "bulk",
    library: Sequence[LibraryEntry] | None = None,
    elements: Iterable[str] | None = None,
) -> Match:
    """Match one spectrum (raw counts, e.g. a cluster's summed spectrum) against the library.

    Parameters
    ----------
    spectrum : array
        Counts per channel (1-D).
    energy_kev : array
        Channel centres in keV (evenly spaced).
    beam_energy_kev : float
        Beam energy in keV.
    mnka_resolution_ev : float
        Detector FWHM at Mn Ka in eV.
    geometry : {"bulk", "thin"}
        SEM bulk sample (absorption) or TEM thin film.
    library : list of LibraryEntry, optional
        Default: :func:`load_library`.
    elements : iterable of str, optional
        Elements present, if known; default: identified from the spectrum's peaks.

    Returns
    -------
    Match
    """
    from threadpoolctl import threadpool_limits

    # dozens of small (channels x templates) products: BLAS threads only wait for each other
    with threadpool_limits(1, user_api="blas"):
        return _match_spectrum(
            spectrum, energy_kev, beam_energy_kev, mnka_resolution_ev, geometry, library, elements
        )


def _match_spectrum(
    spectrum: npt.ArrayLike,
    energy_kev: npt.ArrayLike,
    beam_energy_kev: float,
    mnka_resolution_ev: float,
    geometry: Geometry,
    library: Sequence[LibraryEntry] | None,
    elements: Iterable[str] | None,
) -> Match:
    from sigma._linefit import spectrum_elements

    energy, y, found = spectrum_elements(
        energy_kev, spectrum, beam_energy_kev, mnka_resolution_ev, elements
    )
    lib = list(library) if library is not None else load_library()
    scale = float(np.median(np.diff(energy)))
    physics = _physics(
        (float(energy[0]), scale, energy.size),
        float(beam_energy_kev),
        float(mnka_resolution_ev),
        geometry,
        tuple(sorted(set(_library_elements(lib)) | set(found))),
    )
    found = [el for el in found if el in physics.elements]
    visible = set(physics.elements)
    cands = _candidates(lib, visible)
    need = sorted({el for e in lib for el in e.composition} - set(found))
    fit, scores = _score(y, physics, found, need, cands)
    # identification may name a wrong element (Rb La for Si Ka at low counts): refit with the
    # best candidate's elements too, keep the found elements that stay significant beside them
    best_els = set(_visible(cands[scores[0][1]].composition, visible))
    if not best_els <= set(found):
        trial = sorted(set(found) | best_els, key=lambda el: found.index(el) if el in found else 99)
        fit2, _ = fit_lines(y, physics, trial)
        pred = physics.shell_yields(cands[scores[0][1]].composition)
        keep = []
        for el in trial:
            rows = [i for i, k in enumerate(fit2.keys) if k.split("_")[0] == el]
            p = np.array([pred[physics.index[fit2.keys[i]]] for i in range(len(fit2.keys))])
            scale = float(np.max(p)) and float(fit2.intensity @ p / max(float(p @ p), 1e-300))
            leak = fit2.overlap[rows] @ (0.25 * scale * p)
            sig = np.sqrt(fit2.sigma[rows] ** 2 + leak**2)
            if el in best_els or np.any(fit2.intensity[rows] > 3 * sig):
                if (
                    el in best_els
                    and el not in found
                    and not np.any(fit2.intensity[rows] > 3 * fit2.sigma[rows])
                ):
                    continue
                keep.append(el)
        if set(keep) != set(found):
            found = keep
            need = sorted({el for e in lib for el in e.composition} - set(found))
            fit, scores = _score(y, physics, found, need, cands)
    keys = fit.keys
    # elements in the order of their strongest shell's intensity
    strength: dict[str, float] = {}
    for k, v in zip(keys[: len(physics.shells_of(found))], fit.intensity, strict=False):
        el = k.split("_")[0]
        strength[el] = max(strength.get(el, 0.0), float(v))
    found_sorted = sorted(found, key=lambda el: -strength.get(el, 0.0))
    base_var = (BACKGROUND_ERROR * np.maximum(fit.background_under, 0.0)) ** 2
    chi = np.array([s[0] for s in scores])
    w = np.exp(-(chi - chi[0]) / 2)
    w /= w.sum()
    top = []
    for (c2, ci, _, rows), wi in zip(scores[:3], w[:3], strict=False):
        top.append((cands[ci].name, c2 / max(len(rows) - 1, 1), float(wi)))
    best_c2, best_i, _, best_rows = scores[0]
    from scipy.stats import chi2 as chi2_dist

    # is the entry's composition as good as any composition? a likelihood-ratio test against
    # a free fit (one scale per element, same error model): misfit that a free composition
    # cannot remove either (line shapes of another detector, pile-up) is not the entry's fault
    keys_b = [keys[r] for r in best_rows]
    els_b = sorted(
        {k.split("_")[0] for k in keys_b}
        & (set(found) | set(_visible(cands[best_i].composition, visible)))
    )
    free_preds = np.array(
        [
            [physics.shell_yields({el: 1.0})[physics.index[k]] for k in keys_b]
            for el in els_b
            if el != "C"
        ]
    )
    base_var_b = base_var[best_rows]
    free_c2 = 0.0
    if free_preds.size:
        free_c2, _ = _chi2(
            fit.intensity[best_rows],
            fit.covariance[np.ix_(best_rows, best_rows)] * fit.dispersion,
            free_preds,
            physics,
            keys_b,
            base_var_b,
            fit.overlap[np.ix_(best_rows, best_rows)],
            contaminant=np.array(
                [physics.shell_yields({"C": 1.0})[physics.index[k]] for k in keys_b]
            ),
        )
    dof = max(len(els_b) - 1, 1)
    accepted = (
        chi2_dist.sf(best_c2, max(len(best_rows) - 1, 1)) >= ACCEPT_P
        or chi2_dist.sf(max(best_c2 - free_c2, 0.0), dof) >= ACCEPT_P
    )
    logger.debug("best %s chi2 %.1f, free %.1f, dof %d", cands[best_i].name, best_c2, free_c2, dof)
    # best two-entry mixture among the MIX_HEAD best singles
    best_mix = (math.inf, -1, -1, 0.0, 0)
    head = scores[:MIX_HEAD]
    for i in range(len(head)):
        yi = physics.shell_yields(cands[head[i][1]].composition)
        for j in range(i + 1, len(head)):
            yj = physics.shell_yields(cands[head[j][1]].composition)
            rows = sorted(set(head[i][3]) | set(head[j][3]))
            cols = [physics.index[keys[r]] for r in rows]
            c2, sc = _chi2(
                fit.intensity[rows],
                fit.covariance[np.ix_(rows, rows)],
                np.array([yi[cols], yj[cols]]),
                physics,
                [keys[r] for r in rows],
                base_var[rows],
                fit.overlap[np.ix_(rows, rows)],
            )
            if c2 < best_mix[0] and sc.sum() > 0:
                best_mix = (c2, head[i][1], head[j][1], float(sc[0] / sc.sum()), len(rows))
    mixture = None
    if best_mix[1] >= 0:
        mixture = (
            cands[best_mix[1]].name,
            cands[best_mix[2]].name,
            best_mix[3],
            best_mix[0] / max(best_mix[4] - 2, 1),
        )
    label_elements = ", ".join(found_sorted) or "no lines"
    name, kind, conf = f"{UNMATCHED}: {label_elements}", "unmatched", float(w[0])
    if accepted and w[0] >= NAME_WEIGHT:
        name, kind = cands[best_i].name, "single"
    elif accepted:
        # weight spread over candidates with the same elements: name them together
        # (carbon does not count: every spectrum may carry some, see _chi2)
        els0 = set(_visible(cands[best_i].composition, visible)) - {"C"}
        group, cum = [], 0.0
        for (_, ci, _, _), wi in zip(scores, w, strict=False):
            if set(_visible(cands[ci].composition, visible)) - {"C"} != els0:
                break
            group.append(cands[ci].name)
            cum += float(wi)
            if cum >= NAME_WEIGHT:
                break
        if cum >= NAME_WEIGHT and len(group) <= MAX_NAMES:
            name, kind, conf = "/".join(group), "ambiguous", cum
        else:
            # weight spread over one class of the library (C-O polymers): name the class
            members, cum = [], 0.0
            for (_, ci, _, _), wi in zip(scores, w, strict=False):
                members.append(cands[ci])
                cum += float(wi)
                if cum >= NAME_WEIGHT or len(members) > 2 * MAX_NAMES:
                    break
            label = CLASS_NAMES.get(members[0].group, "")
            if cum >= NAME_WEIGHT and label and all(c.group == members[0].group for c in members):
                shown = "/".join(c.name for c in members[:3]) + ("..." if len(members) > 3 else "")
                name, kind, conf = f"{label} ({shown})", "ambiguous", cum
    return Match(name, kind, conf, found_sorted, top, mixture, fit)


def identify_phases(
    results: Any,
    *,
    library: str | Path | Sequence[LibraryEntry] | None = None,
    replace_library: bool = False,
    spectra: npt.ArrayLike | None = None,
) -> Any:
    """Name every cluster of a :class:`~sigma.results.SigmaResults` from the library.

    Adds ``cluster_lines`` (the line-based names), ``match_name``/``match_misfit``/
    ``match_weight`` (cluster, rank: the best three candidates), ``match_kind``,
    ``match_confidence`` and ``match_mixture`` to the results, and sets ``cluster_name`` to the
    match (``"quartz"``, ``"unmatched: Fe, Ti, O"``). Clusters without a spectrum keep their
    names. ``spectra`` (cluster, energy), e.g. from :func:`core_spectra`, replaces the
    results' ``cluster_sum_spectrum``. Returns new results.
    """
    from sigma.results import SigmaResults

    ds = results.dataset if hasattr(results, "dataset") else results
    if "cluster_sum_spectrum" not in ds or "energy" not in ds.coords:
        logger.info("no cluster spectra: phases are not matched to the library")
        return results
    if isinstance(library, (str, Path)) or library is None:
        lib = load_library(library, replace=replace_library)
    else:
        lib = list(library)
    beam = float(ds.attrs.get("beam_energy_kev", float("nan")))
    if not math.isfinite(beam):
        logger.warning("no beam energy in the results: phases are not matched to the library")
        return results
    res_ev = float(ds.attrs.get("energy_resolution_mnka_ev", float("nan")))
    if not (math.isfinite(res_ev) and res_ev > 0):
        res_ev = 130.0
    geometry = geometry_of(ds.attrs)
    energy = np.asarray(ds["energy"].values, dtype=np.float64)
    k = ds.sizes["cluster"]
    matches: list[Match | None] = []
    all_spec = np.asarray(
        ds["cluster_sum_spectrum"].values if spectra is None else spectra, dtype=np.float64
    )
    for c in range(k):
        spec = all_spec[c]
        if spec.sum() <= 0:
            matches.append(None)
            continue
        matches.append(
            match_spectrum(
                spec,
                energy,
                beam_energy_kev=beam,
                mnka_resolution_ev=res_ev,
                geometry=geometry,
                library=lib,
            )
        )
    return SigmaResults(add_matches(ds, matches))


def add_matches(ds: xr.Dataset, matches: Sequence[Match | None]) -> xr.Dataset:
    """The results dataset with the match variables (see :func:`identify_phases`)."""
    k = ds.sizes["cluster"]
    names = np.full((k, 3), "", dtype=object)
    misfit = np.full((k, 3), np.nan)
    weight = np.full((k, 3), np.nan)
    kind = np.full(k, "none", dtype=object)
    conf = np.full(k, np.nan)
    mix = np.full(k, "", dtype=object)
    found = np.full(k, "", dtype=object)
    old = [str(v) for v in ds["cluster_name"].values]
    new = list(old)
    for c, m in enumerate(matches):
        if m is None:
            continue
        for r, (n, s, wt) in enumerate(m.top[:3]):
            names[c, r], misfit[c, r], weight[c, r] = n, s, wt
        kind[c] = m.kind
        conf[c] = m.confidence
        found[c] = ", ".join(m.elements)
        if m.mixture is not None:
            a, b, f, s = m.mixture
            mix[c] = f"{a} {100 * f:.0f} % + {b} {100 * (1 - f):.0f} % (misfit {s:.2g})"
        new[c] = m.name
    out = ds.copy()
    out["cluster_lines"] = ("cluster", np.array(old, dtype=str), {"long_name": "top lines"})
    out["match_name"] = (("cluster", "rank"), names.astype(str), {"long_name": "library match"})
    out["match_misfit"] = (
        ("cluster", "rank"),
        misfit,
        {"units": "1", "long_name": "chi-square per degree of freedom"},
    )
    out["match_weight"] = (
        ("cluster", "rank"),
        weight,
        {"units": "1", "long_name": "weight of the candidate among all"},
    )
    out["match_kind"] = ("cluster", kind.astype(str), {"long_name": "kind of match"})
    out["match_confidence"] = ("cluster", conf, {"units": "1", "long_name": "match confidence"})
    out["match_mixture"] = ("cluster", mix.astype(str), {"long_name": "best two-phase mixture"})
    out["match_elements"] = (
        "cluster",
        found.astype(str),
        {"long_name": "elements found in the spectrum, strongest line first"},
    )
    out["cluster_name"] = ("cluster", np.array(new, dtype=str), ds["cluster_name"].attrs)
    out = out.assign_coords(rank=np.arange(3))
    return out


def match_elements(ds: xr.Dataset, cluster: int) -> list[str]:
    """The elements the library match found in ``cluster`` (``match_elements``); [] if none.

    Examples
    --------
    >>> import xarray as xr
    >>> match_elements(xr.Dataset({"match_elements": ("cluster", ["Ca, P, O", ""])}), 0)
    ['Ca', 'P', 'O']
    """
    if "match_elements" not in ds:
        return []
    return [el.strip() for el in str(ds["match_elements"].values[cluster]).split(",") if el.strip()]


#: an unmatched cluster's name lists the elements at or above this atomic fraction
NAME_MIN_AT = 0.02


def name_unmatched_by_composition(results: Any) -> Any:
    """Name each unmatched cluster by its major elements once compositions are known.

    :func:`identify_phases` names an unmatched cluster by every element it found
    (``"unmatched: O, Si, Fe, Al, Mg, Ca, Ti, K, Mn, C"`` on a real map, where a cluster's
    spectrum also holds traces of its neighbours). With compositions
    (:func:`sigma.quantify.quantify_results`), the name keeps the elements of at least
    :data:`NAME_MIN_AT` atomic fraction, in the order found (strongest line first), e.g.
    ``"unmatched: O, Si, Fe, Al, Mg"``; ``match_elements`` keeps the full list. Clusters whose
    composition is undefined keep their names. Returns new results.

    Examples
    --------
    >>> import xarray as xr
    >>> ds = xr.Dataset(
    ...     {
    ...         "cluster_name": ("cluster", ["unmatched: Ca, P, Fe", "quartz"]),
    ...         "match_kind": ("cluster", ["unmatched", "single"]),
    ...         "match_elements": ("cluster", ["Ca, P, Fe", "Si, O"]),
    ...         "composition_at": (("cluster", "element"), [[0.5, 0.49, 0.01], [0, 0, 0]]),
    ...     },
    ...     coords={"element": ["Ca", "P", "Fe"]},
    ... )
    >>> name_unmatched_by_composition(ds)["cluster_name"].values.tolist()
    ['unmatched: Ca, P', 'quartz']
    """
    from sigma.results import SigmaResults

    is_results = hasattr(results, "dataset")
    ds = results.dataset if is_results else results
    if not {"match_kind", "match_elements", "composition_at"} <= set(ds.variables):
        return results
    known = [str(v) for v in ds["element"].values]
    at = np.asarray(ds["composition_at"].values, dtype=np.float64)
    names = [str(v) for v in ds["cluster_name"].values]
    for c in range(ds.sizes["cluster"]):
        if str(ds["match_kind"].values[c]) != "unmatched" or not np.all(np.isfinite(at[c])):
            continue
        found = match_elements(ds, c)
        keep = [el for el in found if el in known and at[c, known.index(el)] >= NAME_MIN_AT]
        if keep:
            names[c] = f"{UNMATCHED}: {', '.join(keep)}"
    out = ds.copy()
    out["cluster_name"] = ("cluster", np.array(names, dtype=str), ds["cluster_name"].attrs)
    return SigmaResults(out) if is_results else out


def check_library(library: str | None) -> None:
    """Check a ``library`` config value before any work: ``"default"``, ``"none"`` or a CSV.

    Raises
    ------
    ConfigurationError
        One line naming the file and row of the first bad entry.
    """
    if library in (None, "default", "none"):
        return
    if not isinstance(library, str):
        raise ConfigurationError(
            f"library must be 'default', 'none' or the path of a CSV file. Got {library!r}."
        )
    load_library(library)


def extend_phase_table(ds: xr.Dataset, table: Any) -> Any:
    """Add the library match, composition and element-map columns to a phase table."""
    out = table.copy()
    if "match_kind" in ds:
        out["lines"] = [str(v) for v in ds["cluster_lines"].values]
        out["match"] = [str(v) for v in ds["match_kind"].values]
        out["confidence"] = np.round(ds["match_confidence"].values.astype(float), 3)
        top = []
        for c in range(ds.sizes["cluster"]):
            items = [
                f"{ds['match_name'].values[c, r]} ({float(ds['match_misfit'].values[c, r]):.2g})"
                for r in range(ds.sizes.get("rank", 0))
                if str(ds["match_name"].values[c, r])
            ]
            top.append("; ".join(items))
        out["candidates (misfit)"] = top
        out["mixture"] = [str(v) for v in ds["match_mixture"].values]
    if "composition_at" in ds:
        for el in [str(v) for v in ds["element"].values]:
            out[f"{el} at.%"] = np.round(ds["composition_at"].sel(element=el).values * 100, 2)
            out[f"{el} at.% err"] = np.round(
                ds["composition_at_error"].sel(element=el).values * 100, 2
            )
    if "cluster_mean_intensity" in ds:
        for f in [str(v) for v in ds["feature"].values]:
            out[f"{f} mean"] = np.round(ds["cluster_mean_intensity"].sel(feature=f).values, 4)
    return out


def core_spectra(
    counts: Any, label: npt.ArrayLike, n_clusters: int, *, erosion: int = 2
) -> npt.NDArray[np.float64]:
    """Summed spectrum of each cluster's core: its pixels ``erosion`` pixels from its edge.

    Boundary pixels mix the neighbouring phases' spectra (and clusters hold a few misassigned
    pixels near their edges); at a million counts a 3 % admixture of epoxy in a quartz
    cluster is a significant carbon line that no single library phase explains. A cluster too
    small for its core (fewer than 9 pixels or 10 % of its pixels) uses a thinner core, or
    all its pixels.

    Returns
    -------
    numpy.ndarray
        ``(cluster, energy)`` float64 counts.
    """
    from scipy import ndimage

    from sigma.analysis import cluster_spectra

    lab = np.asarray(label)
    core = np.full(lab.shape, -1, dtype=np.int64)
    for c in range(n_clusters):
        mask = lab == c
        n = int(mask.sum())
        for it in range(erosion, -1, -1):
            m = ndimage.binary_erosion(mask, iterations=it) if it > 0 else mask
            if it == 0 or int(m.sum()) >= max(9, 0.1 * n):
                core[m] = c
                break
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty clusters: reported elsewhere
        out = cluster_spectra(counts, core, n_clusters=n_clusters)
    return np.asarray(out["cluster_sum_spectrum"].values, dtype=np.float64)
