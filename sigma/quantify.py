r"""Compositions of the phases: element atomic and weight fractions with counting errors.

Line intensities are background-subtracted by fitting the spectrum (:mod:`sigma._linefit`:
one template per element shell and a smooth continuum, sigma's simulator physics at the file's
beam energy, energy axis and detector resolution). Each element is quantified from its main
shell (the one that yields the most counts per unit mass fraction at this beam energy; for bulk
samples after absorption in the pure element, so Fe is quantified from Fe K, not the more
strongly generated but absorbed Fe L, at 15 kV).

Methods
-------
``"cliff-lorimer"`` (TEM, thin films)
    :math:`C_A / C_B = k_{AB} I_A / I_B` with theoretical k-factors: the generated intensity
    per unit mass fraction of each element's main shell, from xraydb line energies, line
    weights, fluorescence yields and edge jumps, a Bethe-like ionisation cross-section
    :math:`\ln U / (U E_c^2)` and the detector efficiency (:func:`k_factors`); the weight
    fractions are normalised to 100 %.
``"standardless-za"`` (SEM, bulk samples; semi-quantitative)
    Generated intensities from the thick-target law :math:`U_0 \ln U_0 - U_0 + 1` (the same
    cross-section integrated along the electron's path with Bethe's :math:`dE/ds \propto -1/E`,
    :func:`sigma.xray.ionisation_yield`) with an absorption (A) correction, the simplified
    Philibert model at a 35 degree take-off angle, iterated to convergence on the composition;
    no backscatter/stopping-power (Z) or fluorescence (F) correction. Standardless analysis of this kind is
    good to a few % relative for major elements above 1 keV and much worse for light elements.

The errors are 1-sigma from counting statistics alone (the line-fit covariance propagated
through the normalisation); the model (k-factor) error is not included. Hydrogen and lithium
have no lines and are not reported.

Examples
--------
>>> import numpy as np
>>> from sigma.datasets import PHASES, phase_spectrum
>>> energy = np.arange(2048) * 0.01
>>> counts = np.random.default_rng(0).poisson(phase_spectrum(PHASES["albite"], energy) * 1e6)
>>> comp = quantify_spectrum(counts, energy, beam_energy_kev=15.0)
>>> {el: round(100 * v) for el, v in comp.atomic.items()}
{'O': 62, 'Na': 8, 'Al': 8, 'Si': 23}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sigma._linefit import Geometry, Physics, fit_lines, geometry_of
from sigma.exceptions import ConfigurationError
from sigma.xray import ELEMENTS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

__all__ = [
    "Composition",
    "quantify_spectrum",
    "quantify_results",
    "k_factors",
    "plot_ternary",
    "ternary_xy",
]

#: an element whose main line is measured at fewer sigma is reported as not detected (0)
DETECTION_SIGMA = 3.0


@dataclass(frozen=True)
class Composition:
    """Quantified composition of one spectrum (fractions, summing to 1).

    Attributes
    ----------
    atomic, weight : dict of str to float
        Atomic and weight fractions by element.
    atomic_error, weight_error : dict of str to float
        Their 1-sigma counting errors (fractions).
    method : str
        ``"cliff-lorimer"`` or ``"standardless-za"``.
    lines : dict of str to str
        The shell each element was quantified from (``"Fe_K"``).
    """

    atomic: dict[str, float]
    weight: dict[str, float]
    atomic_error: dict[str, float]
    weight_error: dict[str, float]
    method: str
    lines: dict[str, str]


def _physics(
    energy: npt.NDArray[np.float64],
    beam: float,
    resolution: float,
    geometry: Geometry,
    elements: Iterable[str],
) -> Physics:
    from sigma.phases import _physics as cached

    scale = float(np.median(np.diff(energy)))
    return cached(
        (float(energy[0]), scale, energy.size),
        float(beam),
        float(resolution),
        geometry,
        tuple(sorted(set(elements))),
    )


def k_factors(
    elements: Sequence[str],
    energy_kev: npt.ArrayLike,
    *,
    beam_energy_kev: float,
    mnka_resolution_ev: float = 130.0,
    reference: str = "Si",
) -> dict[str, float]:
    """Theoretical thin-film Cliff-Lorimer k-factors ``k_{X,reference}`` of each element's main shell.

    ``C_X / C_ref = k_X,ref * I_X / I_ref``; the shell is the element's strongest at this beam
    energy inside ``energy_kev`` (see the module notes for the physics).

    Examples
    --------
    >>> import numpy as np
    >>> k = k_factors(["Fe", "Si"], np.arange(2048) * 0.01, beam_energy_kev=200.0)
    >>> k["Si"], bool(0.8 < k["Fe"] < 3.0)
    (1.0, True)
    """
    energy = np.asarray(energy_kev, dtype=np.float64)
    phys = _physics(energy, beam_energy_kev, mnka_resolution_ev, "thin", [*elements, reference])
    unit = {}
    for el in [*elements, reference]:
        idx = phys.shells_of([el])
        if not idx:
            raise ConfigurationError(
                f"element {el!r} has no line the beam excites between "
                f"{energy[0]:.2f} and {energy[-1]:.2f} keV."
            )
        unit[el] = max(float(phys.unit_yield[i]) for i in idx)
    return {el: unit[reference] / unit[el] for el in elements}


def quantify_spectrum(
    spectrum: npt.ArrayLike,
    energy_kev: npt.ArrayLike,
    *,
    beam_energy_kev: float,
    mnka_resolution_ev: float = 130.0,
    geometry: Geometry = "bulk",
    elements: Iterable[str] | None = None,
    n_iter: int = 8,
) -> Composition:
    """Quantify one spectrum (raw counts).

    Parameters
    ----------
    spectrum, energy_kev : array
        Counts per channel and channel centres (keV).
    beam_energy_kev, mnka_resolution_ev : float
        Beam energy (keV) and detector FWHM at Mn Ka (eV).
    geometry : {"bulk", "thin"}
        ``"bulk"``: standardless ZA (SEM); ``"thin"``: Cliff-Lorimer (TEM).
    elements : iterable of str, optional
        Elements to quantify; default: identified from the peaks. Elements measured at fewer
        than :data:`DETECTION_SIGMA` sigma are reported as 0.
    n_iter : int
        Absorption iterations (bulk).

    Returns
    -------
    Composition
    """
    from sigma._linefit import spectrum_elements

    energy, y, els = spectrum_elements(
        energy_kev, spectrum, beam_energy_kev, mnka_resolution_ev, elements
    )
    els = [el for el in els if el not in ("H", "He", "Li")]
    phys = _physics(energy, beam_energy_kev, mnka_resolution_ev, geometry, els)
    els = [el for el in els if el in phys.elements]
    method = "cliff-lorimer" if geometry == "thin" else "standardless-za"
    if not els:
        return Composition({}, {}, {}, {}, method, {})
    fit, _ = fit_lines(y, phys, els)
    pos = {k: i for i, k in enumerate(fit.keys)}
    main = {el: phys.main_shell(el) for el in els}
    rows = [pos[phys.keys[main[el]]] for el in els]
    intensity = fit.intensity[rows]
    cov = fit.covariance[np.ix_(rows, rows)]
    sig = np.sqrt(np.clip(np.diag(cov), 0, None))
    detected = intensity > DETECTION_SIGMA * sig
    # mass fractions: I / (yield per unit mass fraction), absorption iterated for bulk
    per_unit = np.array([phys.unit_yield[main[el]] for el in els])
    comp = _normalise(els, np.where(detected, intensity, 0.0) / per_unit)
    for _ in range(n_iter if geometry == "bulk" else 0):
        if not comp:
            break
        yields = phys.shell_yields(comp)
        per_unit = np.array(
            [
                yields[main[el]] / comp[el] if comp.get(el, 0) > 0 else phys.unit_yield[main[el]]
                for el in els
            ]
        )
        new = _normalise(els, np.where(detected, intensity, 0.0) / per_unit)
        converged = all(abs(new.get(el, 0) - comp.get(el, 0)) < 1e-6 for el in els)
        comp = new
        if converged:
            break
    u = np.where(detected, intensity, 0.0) / per_unit  # unnormalised mass
    jac_u = np.diag(np.where(detected, 1.0 / per_unit, 0.0))
    weight, weight_err = _fractions(u, jac_u @ cov @ jac_u.T)
    masses = np.array([_mass(el) for el in els])
    a = u / masses
    jac_a = np.diag(np.where(detected, 1.0 / (per_unit * masses), 0.0))
    atomic, atomic_err = _fractions(a, jac_a @ cov @ jac_a.T)
    return Composition(
        atomic=dict(zip(els, atomic.tolist(), strict=True)),
        weight=dict(zip(els, weight.tolist(), strict=True)),
        atomic_error=dict(zip(els, atomic_err.tolist(), strict=True)),
        weight_error=dict(zip(els, weight_err.tolist(), strict=True)),
        method=method,
        lines={el: phys.keys[main[el]] for el in els},
    )


def _mass(el: str) -> float:
    from sigma._linefit import _atomic_mass

    return _atomic_mass(el)


def _normalise(els: list[str], values: npt.NDArray[np.float64]) -> dict[str, float]:
    total = float(values.sum())
    if total <= 0:
        return {}
    return {el: float(v) / total for el, v in zip(els, values, strict=True) if v > 0}


def _fractions(
    u: npt.NDArray[np.float64], cov: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``u / sum(u)`` and its 1-sigma error by the delta method."""
    total = float(u.sum())
    if total <= 0:
        return np.zeros_like(u), np.zeros_like(u)
    x = u / total
    jac = (np.eye(u.size) - x[:, None]) / total  # d x_i / d u_j = (delta_ij - x_i) / S
    var = np.einsum("ij,jk,ik->i", jac, cov, jac)
    return x, np.sqrt(np.clip(var, 0, None))


def quantify_results(results: Any, *, spectra: npt.ArrayLike | None = None) -> Any:
    """Add the compositions of every cluster to :class:`~sigma.results.SigmaResults`.

    Adds ``composition_at``, ``composition_wt`` and their ``*_error`` (cluster, element) as
    fractions, with ``attrs["quantification"]`` naming the method. ``spectra`` (cluster,
    energy) replaces ``cluster_sum_spectrum`` (e.g. :func:`sigma.phases.core_spectra`).
    Results without cluster spectra or beam energy are returned unchanged.
    """
    from sigma.results import SigmaResults

    ds = results.dataset if hasattr(results, "dataset") else results
    if "cluster_sum_spectrum" not in ds or "energy" not in ds.coords:
        return results
    beam = float(ds.attrs.get("beam_energy_kev", float("nan")))
    if not math.isfinite(beam):
        return results
    res_ev = float(ds.attrs.get("energy_resolution_mnka_ev", float("nan")))
    if not (math.isfinite(res_ev) and res_ev > 0):
        res_ev = 130.0
    geometry = geometry_of(ds.attrs)
    energy = np.asarray(ds["energy"].values, dtype=np.float64)
    all_spec = np.asarray(
        ds["cluster_sum_spectrum"].values if spectra is None else spectra, dtype=np.float64
    )
    from sigma.phases import match_elements

    comps: list[Composition | None] = []
    for c in range(ds.sizes["cluster"]):
        if all_spec[c].sum() <= 0:
            comps.append(None)
            continue
        measured = quantify_spectrum(
            all_spec[c],
            energy,
            beam_energy_kev=beam,
            mnka_resolution_ev=res_ev,
            geometry=geometry,
            # the elements the library match found: a cluster's name and composition agree
            elements=match_elements(ds, c) or None,
        )
        if not any(v > 0 for v in measured.atomic.values()):
            logger.info(
                "cluster %d: no element above %g sigma; its composition is left undefined (NaN)",
                c,
                DETECTION_SIGMA,
            )
            comps.append(None)
            continue
        comps.append(measured)
    elements = sorted({el for c in comps if c for el in c.atomic}, key=ELEMENTS.index)
    out = ds.copy()
    k = ds.sizes["cluster"]
    for var, attr, long in (
        ("composition_at", "atomic", "atomic fraction"),
        ("composition_wt", "weight", "weight fraction"),
        ("composition_at_error", "atomic_error", "1-sigma counting error of the atomic fraction"),
        ("composition_wt_error", "weight_error", "1-sigma counting error of the weight fraction"),
    ):
        arr = np.full((k, len(elements)), np.nan)
        for c, comp in enumerate(comps):
            if comp is None:
                continue
            values = getattr(comp, attr)
            arr[c] = [values.get(el, 0.0) for el in elements]
        out[var] = (("cluster", "element"), arr, {"units": "1", "long_name": long})
    out = out.assign_coords(element=np.array(elements, dtype=str))
    method = "cliff-lorimer" if geometry == "thin" else "standardless-za"
    out.attrs["quantification"] = method
    return SigmaResults(out)


def ternary_xy(
    a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Cartesian coordinates of ternary fractions (a at the bottom left, b bottom right, c top).

    Examples
    --------
    >>> x, y = ternary_xy([1, 0, 0], [0, 1, 0], [0, 0, 1])
    >>> x.round(3).tolist(), y.round(3).tolist()
    ([0.0, 1.0, 0.5], [0.0, 0.0, 0.866])
    """
    a_, b_, c_ = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    total = a_ + b_ + c_
    with np.errstate(invalid="ignore", divide="ignore"):
        bn, cn = b_ / total, c_ / total
    return bn + 0.5 * cn, cn * math.sqrt(3) / 2


def plot_ternary(
    results: Any,
    elements: Sequence[str],
    *,
    pixels: bool = False,
    ax: Any = None,
    max_pixels: int = 20_000,
) -> Figure:
    """Ternary plot of the phases' compositions (atomic) for three elements.

    Parameters
    ----------
    results : SigmaResults
        With compositions (:func:`quantify_results`).
    elements : three str
        Corners: bottom left, bottom right, top.
    pixels : bool
        Also plot pixels (a random subset): their line-intensity fractions from the
        results' ``features`` when these are line features (not quantified: counts, not atoms).
    """
    import matplotlib.pyplot as plt

    ds = results.dataset if hasattr(results, "dataset") else results
    if len(elements) != 3:
        raise ConfigurationError(f"elements must name three elements. Got {list(elements)!r}.")
    if "composition_at" not in ds:
        raise ConfigurationError(
            "the results have no compositions; run sigma.quantify.quantify_results(results)."
        )
    known = [str(v) for v in ds["element"].values]
    missing = [el for el in elements if el not in known]
    if missing:
        raise ConfigurationError(
            f"element(s) {missing!r} not quantified in these results; choose from {known!r}."
        )
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 5))
    else:
        fig = ax.figure
    tri = np.array([[0, 0], [1, 0], [0.5, math.sqrt(3) / 2], [0, 0]])
    ax.plot(tri[:, 0], tri[:, 1], color="0.3", lw=1)
    for (x, y), el, ha in zip(tri[:3], elements, ("right", "left", "center"), strict=True):
        ax.annotate(
            el,
            (x, y),
            xytext=(0, 8 if ha == "center" else -14),
            textcoords="offset points",
            ha=ha,
            fontsize=11,
        )
    if pixels and "features" in ds:
        feats = [str(v) for v in ds["feature"].values]
        cols = []
        for el in elements:
            match = [i for i, f in enumerate(feats) if f.split("_")[0] == el]
            cols.append(match[0] if match else None)
        if all(c is not None for c in cols):
            sel = [int(c) for c in cols if c is not None]
            f = np.asarray(ds["features"].values).reshape(-1, len(feats))
            rng = np.random.default_rng(0)
            idx = rng.choice(f.shape[0], min(max_pixels, f.shape[0]), replace=False)
            v = np.clip(f[idx][:, sel], 0, None)
            x, y = ternary_xy(v[:, 0], v[:, 1], v[:, 2])
            ax.scatter(x, y, s=2, c="0.6", alpha=0.3, label="pixels (line intensities)")
    at = ds["composition_at"].sel(element=list(elements)).values
    names = [str(v) for v in ds["cluster_name"].values]
    colors = [str(v) for v in ds["cluster_color"].values] if "cluster_color" in ds else None
    x, y = ternary_xy(at[:, 0], at[:, 1], at[:, 2])
    for c in range(at.shape[0]):
        if not (np.isfinite(x[c]) and np.isfinite(y[c])):
            continue
        ax.scatter(
            x[c],
            y[c],
            s=60,
            color=colors[c] if colors else None,
            edgecolor="k",
            label=names[c],
            zorder=3,
        )
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"atomic fractions, {'-'.join(elements)} (normalised to the three)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return fig


def composition_table(results: Any) -> Any:
    """The compositions as a pandas DataFrame: one row per cluster and element (at.%, wt.%)."""
    import pandas as pd

    ds = results.dataset if hasattr(results, "dataset") else results
    if "composition_at" not in ds:
        raise ConfigurationError(
            "the results have no compositions; run sigma.quantify.quantify_results(results)."
        )
    rows = []
    for c in range(ds.sizes["cluster"]):
        for e, el in enumerate(ds["element"].values):
            rows.append(
                {
                    "cluster": c,
                    "name": str(ds["cluster_name"].values[c]),
                    "element": str(el),
                    "at.%": 100 * float(ds["composition_at"].values[c, e]),
                    "at.% error": 100 * float(ds["composition_at_error"].values[c, e]),
                    "wt.%": 100 * float(ds["composition_wt"].values[c, e]),
                    "wt.% error": 100 * float(ds["composition_wt_error"].values[c, e]),
                }
            )
    return pd.DataFrame(rows)
