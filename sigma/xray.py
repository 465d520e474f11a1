"""X-ray emission lines from a maintained table (xraydb), detector resolution, line lookup.

Line names follow HyperSpy/exspy: ``"Fe_Ka"``, ``"Fe_Kb"``, ``"Pb_La"``, ``"Pb_Lb1"``, ``"Pb_Ma"``.
A *family* groups the table's sub-lines that an EDS detector cannot separate (``Ka`` = Ka1 + Ka2 + Ka3);
its energy is the intensity-weighted mean of the sub-lines, its weight their summed intensity.

Energies are in keV throughout.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from sigma.exceptions import XrayLineError

logger = logging.getLogger(__name__)

__all__ = [
    "XrayLine",
    "FAMILIES",
    "ELEMENTS",
    "fwhm_kev",
    "parse_line",
    "get_line",
    "element_lines",
    "lines_in_range",
    "candidate_lines",
    "generated_weights",
    "ionisation_yield",
    "MNKA_KEV",
    "SpectrumPeak",
    "snip_background",
    "find_xray_peaks",
    "identify_lines",
    "default_line",
    "parse_element",
    "is_element",
]

#: Mn Ka energy used by the FWHM(E) law (keV)
MNKA_KEV = 5.8987

# family -> sub-line keys of xraydb that it groups (HyperSpy's family names)
FAMILIES: dict[str, tuple[str, ...]] = {
    "Ka": ("Ka1", "Ka2", "Ka3"),
    "Kb": ("Kb1", "Kb2", "Kb3", "Kb4", "Kb5"),
    "La": ("La1", "La2"),
    "Lb1": ("Lb1",),
    "Lb2": ("Lb2,15",),
    "Lb3": ("Lb3",),
    "Lb4": ("Lb4",),
    "Lg1": ("Lg1",),
    "Lg3": ("Lg3",),
    "Ll": ("Ll",),
    "Ln": ("Ln",),
    "Ma": ("Ma",),
    "Mb": ("Mb",),
    "Mg": ("Mg",),
    "Mz": ("Mz",),
}
_SHELL_OF = {fam: fam[0] for fam in FAMILIES}
# relative population of sub-shells used to put L1/L2/L3 (M1..M5) lines on one scale
_SUBSHELL_POP = {
    "K": 1.0,
    "L1": 0.25,
    "L2": 0.25,
    "L3": 0.5,
    "M1": 0.1,
    "M2": 0.1,
    "M3": 0.2,
    "M4": 0.2,
    "M5": 0.4,
}

ELEMENTS: tuple[str, ...] = (
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar",
    "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br",
    "Kr", "Rb", "Sr", "Y", "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te",
    "I", "Xe", "Cs", "Ba", "La", "Ce", "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm",
    "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn",
    "Fr", "Ra", "Ac", "Th", "Pa", "U",
)  # fmt: skip
_LINE_RE = re.compile(r"^([A-Z][a-z]?)_([KLM][a-z]\d?)$")


@dataclass(frozen=True)
class XrayLine:
    """One X-ray line family of one element.

    Attributes
    ----------
    name : str
        ``"Fe_Ka"``.
    element, family : str
        ``"Fe"``, ``"Ka"``.
    energy_kev : float
        Intensity-weighted mean energy of the family's sub-lines.
    weight : float
        Relative intensity within the element's shell group, strongest family of each shell = 1
        (HyperSpy's convention).
    edge_kev : float
        Ionisation edge energy of the family's initial level (the beam must exceed it).
    """

    name: str
    element: str
    family: str
    energy_kev: float
    weight: float
    edge_kev: float

    @property
    def shell(self) -> str:
        """``"K"``, ``"L"`` or ``"M"``."""
        return self.family[0]


def fwhm_kev(
    energy_kev: float | npt.ArrayLike, mnka_resolution_ev: float = 130.0
) -> npt.NDArray[np.float64]:
    """Detector resolution FWHM(E) in keV (Fiori & Newbury law used by SIGMA and HyperSpy).

    ``FWHM(E) = sqrt(2.5 * (E - 5.8987 keV) * 1000 + FWHM_MnKa**2) / 1000`` with ``FWHM_MnKa`` in eV.

    Examples
    --------
    >>> round(float(fwhm_kev(5.8987)), 4)
    0.13
    """
    if not mnka_resolution_ev > 0:
        raise ValueError(
            f"mnka_resolution_ev must be a positive number of eV. Got {mnka_resolution_ev!r} instead."
        )
    e = np.asarray(energy_kev, dtype=np.float64)
    inner = 2.5 * (e - MNKA_KEV) * 1000.0 + mnka_resolution_ev**2
    # below ~0.1 keV the law goes negative for good detectors: floor at a quarter of FWHM(MnKa)
    return np.sqrt(np.maximum(inner, (mnka_resolution_ev / 4) ** 2)) / 1000.0


def parse_line(name: str) -> tuple[str, str]:
    """Split ``"Fe_Ka"`` into ``("Fe", "Ka")``, checking both parts.

    Raises
    ------
    XrayLineError
        If the name is malformed, the element unknown or the family not one of :data:`FAMILIES`.
    """
    match = _LINE_RE.match(str(name).strip())
    if not match:
        raise XrayLineError(
            f"X-ray line {name!r} is not of the form 'Element_Family', e.g. 'Fe_Ka', 'Pb_Ma', 'Cu_La'."
        )
    element, family = match.groups()
    if element not in ELEMENTS:
        raise XrayLineError(f"X-ray line {name!r}: unknown element {element!r}.")
    if family not in FAMILIES:
        raise XrayLineError(
            f"X-ray line {name!r}: unknown family {family!r}; use one of {sorted(FAMILIES)}."
        )
    return element, family


@functools.cache
def element_lines(element: str) -> dict[str, XrayLine]:
    """All line families of ``element`` in the table, keyed by name (``"Fe_Ka"`` ...).

    Examples
    --------
    >>> lines = element_lines("Fe")
    >>> round(lines["Fe_Ka"].energy_kev, 2), lines["Fe_Ka"].weight
    (6.4, 1.0)
    """
    import xraydb

    if element not in ELEMENTS:
        raise XrayLineError(f"unknown element {element!r}; use a chemical symbol such as 'Fe'.")
    try:
        table = xraydb.xray_lines(element)
    except Exception as err:  # xraydb raises ValueError/KeyError for elements it lacks
        raise XrayLineError(f"no X-ray lines in the table for element {element!r}.") from err
    raw: dict[str, tuple[float, float, float]] = {}
    for family, keys in FAMILIES.items():
        subs = [table[k] for k in keys if k in table and table[k].intensity > 0]
        if not subs:
            continue
        intensity = sum(s.intensity * _SUBSHELL_POP.get(s.initial_level, 0.1) for s in subs)
        energy = sum(s.energy * s.intensity for s in subs) / sum(s.intensity for s in subs) / 1000.0
        level = subs[0].initial_level
        try:
            edge = xraydb.xray_edge(element, level).energy / 1000.0
        except Exception:  # noqa: BLE001 - a missing edge only loses the beam-energy check
            edge = energy
        raw[family] = (energy, intensity, edge)
    out: dict[str, XrayLine] = {}
    for shell in "KLM":
        fams = {f: v for f, v in raw.items() if f[0] == shell}
        if not fams:
            continue
        top = max(v[1] for v in fams.values())
        for family, (energy, intensity, edge) in fams.items():
            name = f"{element}_{family}"
            out[name] = XrayLine(
                name, element, family, float(energy), float(intensity / top), float(edge)
            )
    return out


def get_line(name: str) -> XrayLine:
    """Return the :class:`XrayLine` called ``name`` (``"Fe_Ka"``).

    Raises
    ------
    XrayLineError
        If the name is malformed or the table has no such line for the element.
    """
    element, _family = parse_line(name)
    lines = element_lines(element)
    if name not in lines:
        raise XrayLineError(
            f"X-ray line {name!r} is not in the table; {element} has {sorted(lines)}."
        )
    return lines[name]


def is_element(name: str) -> bool:
    """Whether ``name`` is a chemical symbol (any case: ``"Fe"``, ``"fe"``, ``"FE"``)."""
    text = str(name).strip()
    return text[:1].upper() + text[1:].lower() in ELEMENTS


def parse_element(name: str) -> str:
    """The chemical symbol ``name`` in its proper case (``"fe"`` -> ``"Fe"``).

    Raises
    ------
    XrayLineError
        If ``name`` is not a chemical symbol.
    """
    text = str(name).strip()
    symbol = text[:1].upper() + text[1:].lower()
    if symbol not in ELEMENTS:
        raise XrayLineError(
            f"{name!r} is neither a chemical symbol (e.g. 'Fe') nor an X-ray line (e.g. 'Fe_Ka')."
        )
    return symbol


def default_line(
    element: str,
    beam_energy_kev: float | None = None,
    energy_range_kev: tuple[float, float] | None = None,
) -> XrayLine | None:
    """The line HyperSpy/exspy would use for ``element``: its best ``Ka``/``La``/``Ma`` line.

    exspy's rule (``EDSSpectrum._get_lines_from_elements(only_one=True)``): of the element's
    ``Ka``, ``La`` and ``Ma`` lines inside the energy range, the first (in that order) whose
    energy is below half the beam energy (an overvoltage of at least 2, so the line is well
    excited); if none is, the last one in range. Lines the beam cannot excite are left out.

    Returns
    -------
    XrayLine or None
        None when none of the three lines lies in the range.

    Examples
    --------
    >>> default_line("Fe", 15.0).name, default_line("Pb", 15.0).name, default_line("Pb", 30.0).name
    ('Fe_Ka', 'Pb_Ma', 'Pb_La')
    """
    symbol = parse_element(element)
    lines = element_lines(symbol)
    cands = []
    for fam in ("Ka", "La", "Ma"):
        line = lines.get(f"{symbol}_{fam}")
        if line is None or not _excited(line, beam_energy_kev):
            continue
        if energy_range_kev is not None and not (
            energy_range_kev[0] <= line.energy_kev <= energy_range_kev[1]
        ):
            continue
        cands.append(line)
    if not cands:
        return None
    beam = beam_energy_kev if beam_energy_kev is not None and np.isfinite(beam_energy_kev) else None
    if beam is None:
        return cands[0]
    for line in cands:
        if line.energy_kev < beam / 2:
            return line
    return cands[-1]


def _excited(line: XrayLine, beam_energy_kev: float | None) -> bool:
    """Whether a beam of ``beam_energy_kev`` (None or NaN: unknown, so yes) ionises the line's edge."""
    return (
        beam_energy_kev is None
        or not np.isfinite(beam_energy_kev)
        or line.edge_kev < beam_energy_kev
    )


def lines_in_range(
    elements: Iterable[str],
    energy_range_kev: tuple[float, float],
    *,
    beam_energy_kev: float | None = None,
    min_weight: float = 0.0,
) -> list[XrayLine]:
    """Lines of ``elements`` inside ``energy_range_kev`` that the beam can excite, sorted by energy."""
    lo, hi = energy_range_kev
    out = []
    for element in elements:
        for line in element_lines(element).values():
            if (
                lo <= line.energy_kev <= hi
                and line.weight >= min_weight
                and _excited(line, beam_energy_kev)
            ):
                out.append(line)
    return sorted(out, key=lambda ln: ln.energy_kev)


def candidate_lines(
    energy_kev: float,
    *,
    tolerance_kev: float | None = None,
    beam_energy_kev: float | None = None,
    mnka_resolution_ev: float = 130.0,
    min_weight: float = 0.1,
) -> list[XrayLine]:
    """Lines whose energy lies within ``tolerance_kev`` (default: half the FWHM) of ``energy_kev``.

    Sorted by distance, strong families (weight 1) first among equals. The energy-to-line lookup of
    the GUI and the automatic line identification both use this.

    Examples
    --------
    >>> [ln.name for ln in candidate_lines(6.40, tolerance_kev=0.01)][:1]
    ['Fe_Ka']
    """
    if tolerance_kev is None:
        tolerance_kev = float(fwhm_kev(energy_kev, mnka_resolution_ev)) / 2
    found = []
    for element in ELEMENTS[2:]:  # no H, He lines
        for line in element_lines(element).values():
            if (
                line.weight >= min_weight
                and abs(line.energy_kev - energy_kev) <= tolerance_kev
                and _excited(line, beam_energy_kev)
            ):
                found.append(line)
    return sorted(found, key=lambda ln: (round(abs(ln.energy_kev - energy_kev), 3), -ln.weight))


def ionisation_yield(
    beam_energy_kev: float, edge_kev: float, geometry: Literal["bulk", "thin"] = "thin"
) -> float:
    r"""Ionisations of one shell per atom and beam electron, in arbitrary units (0 if ``U <= 1``).

    With the overvoltage :math:`U = E_0 / E_c` (beam energy over the shell's edge energy):

    ``"thin"`` (TEM film: the electron keeps its energy)
        the Bethe-like cross-section at the beam energy, :math:`Q \propto \ln U / (U E_c^2)`.
    ``"bulk"`` (SEM: the electron slows down to rest in the sample; thick-target law)
        :math:`Q` integrated along the electron's path with Bethe's continuous slowing-down in
        its simplest form, :math:`dE/ds \propto -(Z/A) / E` (the logarithmic term left out):

        .. math::
            \int_{E_c}^{E_0} \frac{Q(E)}{|dE/ds|} dE \propto \int_1^{U_0} \ln U\, dU
            = U_0 \ln U_0 - U_0 + 1,

        independent of :math:`E_c` (the :math:`E_c^2` of :math:`Q` cancels). Near threshold
        it grows as :math:`(U_0 - 1)^2 / 2`, at large overvoltage as :math:`U_0 \ln U_0` (more
        slowly than the empirical :math:`(U_0 - 1)^{1.67}` of Green & Cosslett). The matrix's
        stopping power :math:`Z/A` (0.47-0.54 in the demo's minerals and epoxy) and its
        backscatter loss are common to all lines of one phase and left out, as is the
        fluorescence yield (applied per line by :func:`generated_weights`).

    References: S. J. B. Reed, *Electron Microprobe Analysis* (2nd ed., Cambridge University
    Press, 1993) and J. I. Goldstein et al., *Scanning Electron Microscopy and X-Ray
    Microanalysis* (4th ed., Springer, 2018): their chapters on X-ray generation (ionisation
    cross-section, electron stopping power, thick-target intensity).

    Examples
    --------
    >>> round(ionisation_yield(20.0, 0.532, "bulk") / ionisation_yield(20.0, 7.112, "bulk"))
    91
    >>> round(ionisation_yield(20.0, 0.532, "thin") / ionisation_yield(20.0, 7.112, "thin"))
    47
    """
    if edge_kev <= 0:
        return 0.0
    u = beam_energy_kev / edge_kev
    if u <= 1.0:
        return 0.0
    if geometry == "bulk":
        return u * math.log(u) - u + 1.0
    if geometry == "thin":
        return math.log(u) / (u * edge_kev**2)
    raise ValueError(f"geometry must be 'bulk' or 'thin'. Got {geometry!r}.")


def generated_weights(
    element: str,
    beam_energy_kev: float,
    *,
    normalise: bool = True,
    geometry: Literal["bulk", "thin"] = "thin",
) -> dict[str, float]:
    """Relative generated intensity of each line of ``element`` at ``beam_energy_kev`` across shells.

    Within a shell the weights are the table's; across shells they scale with the fluorescence
    yield, the edge jump and the ionisation of :func:`ionisation_yield` for ``geometry``: the
    thin-film Bethe-like cross-section ``ln(U) / (U * E_c**2)`` (``"thin"``, the default, also
    used where the sample is unknown, e.g. by :func:`identify_lines`) or the thick-target law
    ``U ln U - U + 1`` (``"bulk"``), with overvoltage ``U = E0 / E_c``. Lines the beam cannot
    excite (``U <= 1``) are left out. Values are normalised so the strongest line of the element
    is 1 (with ``normalise=True``; otherwise they compare across elements up to a factor
    ``mass fraction / atomic mass``). This is a physically plausible model for simulation and
    standardless quantification, not a full ZAF.
    """
    import xraydb

    out: dict[str, float] = {}
    for name, line in element_lines(element).items():
        ionisation = ionisation_yield(beam_energy_kev, line.edge_kev, geometry)
        if ionisation <= 0.0:
            continue
        shell_edge = {"K": "K", "L": "L3", "M": "M5"}[line.shell]
        try:
            edge = xraydb.xray_edge(element, shell_edge)
            yield_ = float(edge.fyield)
            jump = float(edge.jump_ratio)
        except Exception:  # noqa: BLE001 - light elements lack some edges; fall back to a low yield
            yield_, jump = 0.01, 2.0
        jump_factor = (jump - 1) / jump if jump > 1 else 0.5
        out[name] = line.weight * max(yield_, 1e-4) * jump_factor * ionisation
    if out and normalise:
        top = max(out.values())
        out = {k: v / top for k, v in out.items()}
    return out


# ---------------------------------------------------------------------------------------------
# Automatic line identification
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpectrumPeak:
    """One peak found in a spectrum by :func:`find_xray_peaks`.

    Attributes
    ----------
    energy_kev : float
        Energy of the peak maximum (of the smoothed, background-subtracted spectrum).
    net_counts : float
        Counts above the background in a window of +/- 0.6 FWHM around the peak.
    background_counts : float
        Background counts in the same window.
    significance : float
        ``net / sqrt(net + background)``: the peak's size in Poisson standard deviations.
    """

    energy_kev: float
    net_counts: float
    background_counts: float
    significance: float


def snip_background(
    spectrum: npt.ArrayLike, width_channels: int | npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Background under a spectrum by SNIP peak clipping (Ryan et al. 1988; Morhac 2009).

    The spectrum goes through the LLS transform ``log(log(sqrt(y + 1) + 1) + 1)`` and each channel
    is repeatedly replaced by the mean of its neighbours at distance ``m`` when that is lower,
    for ``m = 1 .. width_channels``; peaks narrower than about ``width_channels`` are clipped.

    Parameters
    ----------
    spectrum
        1-D counts (non-negative).
    width_channels
        Clipping half-width in channels, about one to two FWHM of the peaks: one int, or one
        value per channel (the detector resolution grows with energy).

    Returns
    -------
    numpy.ndarray
        Background estimate, float64, same length, never above the input.

    Examples
    --------
    >>> y = np.full(200, 10.0)
    >>> y[100] = 1000
    >>> b = snip_background(y, 8)
    >>> bool(abs(b[100] - 10) < 1)
    True
    """
    y = np.asarray(spectrum, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"spectrum must be 1-D. Got shape {y.shape!r} instead.")
    width = np.broadcast_to(np.asarray(width_channels, dtype=np.float64), y.shape)
    if not np.all(width >= 1):
        raise ValueError(
            f"width_channels must be in the range [1, inf). Got minimum {float(np.min(width))!r} "
            "instead."
        )
    v = np.log(np.log(np.sqrt(np.clip(y, 0, None) + 1.0) + 1.0) + 1.0)
    n = v.size
    for m in range(1, min(int(np.max(width)), (n - 1) // 2) + 1):
        mean = 0.5 * (v[: n - 2 * m] + v[2 * m :])
        inner = v[m : n - m]
        v[m : n - m] = np.where(width[m : n - m] >= m, np.minimum(inner, mean), inner)
    back = (np.exp(np.exp(v) - 1.0) - 1.0) ** 2 - 1.0
    return np.minimum(np.clip(back, 0, None), np.clip(y, 0, None))


def _background(
    y: npt.NDArray[np.float64], fwhm_ch: npt.NDArray[np.float64], first: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """SNIP background of ``y`` (zero below channel ``first``) and the smoothed ``y[first:]``."""
    from scipy.ndimage import gaussian_filter1d

    sigma_ch = max(float(np.median(fwhm_ch[first:])) / 2.3548, 0.5)
    smooth = gaussian_filter1d(y[first:], sigma_ch, mode="nearest")
    back = np.zeros_like(y)
    back[first:] = snip_background(smooth, np.maximum(1.5 * fwhm_ch[first:], 2.0))
    return back, smooth


def find_xray_peaks(
    energy_kev: npt.ArrayLike,
    spectrum: npt.ArrayLike,
    *,
    mnka_resolution_ev: float = 130.0,
    min_significance: float = 5.0,
    min_relative_intensity: float = 0.002,
    ignore_below_kev: float = 0.1,
) -> list[SpectrumPeak]:
    """Significant peaks of a counts spectrum, strongest first.

    The spectrum is smoothed with a Gaussian of the detector resolution, its background is
    estimated with :func:`snip_background`, and :func:`scipy.signal.find_peaks` runs on the
    smoothed net spectrum. A peak is kept when its net counts in +/- 0.6 FWHM exceed
    ``min_significance`` Poisson standard deviations and ``min_relative_intensity`` of the
    strongest peak.

    Parameters
    ----------
    energy_kev, spectrum
        Channel energies (keV, increasing) and counts (a sum spectrum: raw counts, not normalised,
        so that the Poisson significance means something).
    mnka_resolution_ev
        Detector FWHM at Mn Ka in eV.
    min_significance
        Minimum net counts in standard deviations of the counts in the peak window.
    min_relative_intensity
        Minimum net counts relative to the strongest peak.
    ignore_below_kev
        Channels below this energy (detector noise peak) are left out.

    Returns
    -------
    list of SpectrumPeak
    """
    from scipy.signal import find_peaks

    e = np.asarray(energy_kev, dtype=np.float64)
    y = np.asarray(spectrum, dtype=np.float64)
    if e.shape != y.shape or e.ndim != 1:
        raise ValueError(
            "energy_kev and spectrum must be 1-D arrays of the same length. Got shapes "
            f"{e.shape!r} and {y.shape!r}."
        )
    if e.size < 8:
        return []
    scale = float((e[-1] - e[0]) / (e.size - 1))
    keep = e >= ignore_below_kev
    y = np.where(keep, y, 0.0)
    first = int(np.argmax(keep)) if keep.any() else e.size
    if e.size - first < 8:
        return []
    fwhm_ch = fwhm_kev(e, mnka_resolution_ev) / scale
    back, smooth = _background(y, fwhm_ch, first)
    net_smooth = np.zeros_like(y)
    net_smooth[first:] = smooth - back[first:]
    idx, _ = find_peaks(net_smooth, distance=max(int(0.5 * float(np.min(fwhm_ch[first:]))), 1))
    cum_y = np.concatenate([[0.0], np.cumsum(y)])
    cum_b = np.concatenate([[0.0], np.cumsum(back)])
    peaks = []

    def window(a: float, b: float) -> tuple[int, int]:
        lo_, hi_ = max(int(round(a)), first), min(int(round(b)) + 1, e.size)
        return min(lo_, e.size), max(hi_, min(lo_, e.size))

    for i in idx:
        f = float(fwhm_ch[i])
        lo, hi = window(i - 0.6 * f, i + 0.6 * f)
        total = cum_y[hi] - cum_y[lo]
        bg = cum_b[hi] - cum_b[lo]
        net = total - bg
        if net <= 0:
            continue
        sig = net / math.sqrt(max(total, 1.0))
        # local check against side bands at 1.2 .. 2.4 FWHM: curvature of the Bremsstrahlung
        # or a SNIP underestimate does not make a peak
        l0, l1 = window(i - 2.4 * f, i - 1.2 * f)
        r0, r1 = window(i + 1.2 * f, i + 2.4 * f)
        n_side = (l1 - l0) + (r1 - r0)
        if n_side > 0:
            side = ((cum_y[l1] - cum_y[l0]) + (cum_y[r1] - cum_y[r0])) / n_side * (hi - lo)
            local_sig = (total - side) / math.sqrt(max(total + side * (hi - lo) / n_side, 1.0))
            sig = min(sig, max(local_sig, 0.0)) if local_sig < sig else sig
        # centroid of the net counts refines the position to a fraction of a channel
        w = np.clip(y[lo:hi] - back[lo:hi], 0, None)
        centre = float(np.sum(w * e[lo:hi]) / np.sum(w)) if np.sum(w) > 0 else float(e[i])
        peaks.append(SpectrumPeak(centre, float(net), float(bg), float(sig)))
    if not peaks:
        return []
    # maxima closer than half a FWHM are one peak (noise on a peak top): keep the stronger
    merged: list[SpectrumPeak] = []
    for p in sorted(peaks, key=lambda p: -p.net_counts):
        half_fwhm = 0.5 * float(fwhm_kev(p.energy_kev, mnka_resolution_ev))
        if all(abs(p.energy_kev - q.energy_kev) > half_fwhm for q in merged):
            merged.append(p)
    peaks = merged
    top = max(p.net_counts for p in peaks)
    kept = [
        p
        for p in peaks
        if p.significance >= min_significance and p.net_counts >= min_relative_intensity * top
    ]
    return sorted(kept, key=lambda p: -p.net_counts)


def identify_lines(
    energy_kev: npt.ArrayLike,
    spectrum: npt.ArrayLike,
    beam_energy_kev: float | None = None,
    *,
    mnka_resolution_ev: float = 130.0,
    min_significance: float = 5.0,
    min_relative_intensity: float = 0.002,
    ignore_below_kev: float = 0.1,
    tolerance_fwhm: float = 0.6,
    elements: Iterable[str] | None = None,
) -> list[str]:
    """Find the X-ray lines present in a sum spectrum and name them from the table.

    Peaks come from :func:`find_xray_peaks`. Each unexplained peak, strongest first, is named by
    the candidate element (:func:`candidate_lines` within ``tolerance_fwhm`` * FWHM, lines the
    beam can excite) with the best score:

    - +1 for the peak itself, and for every other detected peak that one of the element's lines
      explains, +min(1, 2 * that line's strength) (an element whose Ka explains the peak and whose
      La explains another beats a lone coincidence; minor lines add little). A line's strength is
      its :func:`generated_weights` value at the beam energy (its table weight when the beam
      energy is unknown), so lines the atom hardly emits (``K_Ll``, ``Pd_Mz``) count for little;
    - + the line's weight within its shell, capped by its strength (prefer ``Ka``/``La``/``Ma``);
    - minus (offset / tolerance) ** 2: of two lines within tolerance, the one on the peak wins
      (``Al_Ka`` 1.487 keV, not ``Yb_Ma`` 1.526 keV, for a peak at 1.482 keV);
    - +0.25 for a K line: a lone peak is more often a K line, whose shell puts nearly all its
      intensity in one family, than an M line whose element shows no other line;
    - -2 for every other line of the same shell that should be detectable at the observed
      intensity (table weight ratio) but has no peak, or one less than a quarter of the predicted
      size (this rejects e.g. ``Ta_Lb1`` for a peak whose ``Ta_La`` is missing); weaker lines
      within 2 FWHM of the peak, and lines within 2 FWHM of another peak, may hide in a shoulder
      and are not counted; -2 likewise for a line of another shell whose generated intensity
      predicts a peak but nothing above 3 % of that is seen (this rejects ``K_Ll`` for a C peak
      when K Ka is weak, or ``Pd_Mz`` when the Pd L lines are missing);

    - -2 when another shell of the element is stronger at this beam energy (generated
      intensity) and lies in range, but none of its stronger lines has a peak (this rejects
      ``Tm_Ma`` for the Al Ka peak of a 200 kV spectrum without Tm L lines). Other shells'
      strengths need a beam energy: without one, the top of the energy axis stands in;
    - -2 when the peak is far too strong for the line: the element's strongest line (generated
      intensity at the beam energy) lies elsewhere in range and its measured net counts times
      the strength ratio predict less than a fifth of the peak (this rejects ``K_Ll`` for the
      C Ka peak when K Ka is present but weak in comparison).

    Other lines of the element that have no peak of their own (they may sit in the shoulder of
    a stronger peak) are measured directly: net counts above the background in +/- 0.6 FWHM.
    Such a line supports the candidate like a matched peak when it holds at least a quarter of
    its predicted counts, and such a measurement also counts as "seen" for the penalties above.

    Lines weaker than 4.5 % of their shell's main line do not claim peaks, and elements without
    stable isotopes (Tc, Pm, Po ... Pa) are never proposed. Ties go to the line closest in
    energy. Every peak the chosen element explains is then marked
    explained. A peak is skipped (and logged) when its best score is below 1, or below 1.5 where
    it also sits at a Si escape or sum-peak energy of stronger peaks.

    Parameters
    ----------
    energy_kev, spectrum
        Channel energies in keV and raw counts (a sum spectrum).
    beam_energy_kev
        Primary beam energy; lines whose edge lies above it are not considered. ``None`` or NaN:
        no such filter.
    mnka_resolution_ev
        Detector FWHM at Mn Ka in eV.
    min_significance, min_relative_intensity, ignore_below_kev
        Passed to :func:`find_xray_peaks`.
    tolerance_fwhm
        A line explains a peak when their energies differ by at most this many FWHM.
    elements
        Elements known to be present (e.g. the file's ``attrs["elements"]``): their lines explain
        the peaks they fall on first (a minor line only when its shell's main line has a peak),
        and only the peaks left over are named from the table.

    Returns
    -------
    list of str
        Line names (one per explained peak, e.g. ``["C_Ka", "Mn_La", "Mn_Ka", "Mn_Kb"]``),
        sorted by energy, no duplicates.

    Examples
    --------
    >>> e = np.arange(0, 10.24, 0.01)
    >>> fe = element_lines("Fe")
    >>> y = 20 + sum(
    ...     5000 * fe[n].weight * np.exp(-0.5 * ((e - fe[n].energy_kev) / 0.06) ** 2)
    ...     for n in ("Fe_Ka", "Fe_Kb")
    ... )
    >>> identify_lines(e, y, 15.0)
    ['Fe_Ka', 'Fe_Kb']
    """
    e = np.asarray(energy_kev, dtype=np.float64)
    y = np.asarray(spectrum, dtype=np.float64)
    peaks = find_xray_peaks(
        e,
        y,
        mnka_resolution_ev=mnka_resolution_ev,
        min_significance=min_significance,
        min_relative_intensity=min_relative_intensity,
        ignore_below_kev=ignore_below_kev,
    )
    if not peaks:
        return []
    beam = beam_energy_kev if beam_energy_kev is not None and np.isfinite(beam_energy_kev) else None
    lo_e, hi_e = max(float(e[0]), ignore_below_kev), float(e[-1])
    scale = float((e[-1] - e[0]) / (e.size - 1))
    keep = e >= ignore_below_kev
    first = int(np.argmax(keep))
    y_kept = np.where(keep, y, 0.0)
    back, _smooth = _background(y_kept, fwhm_kev(e, mnka_resolution_ev) / scale, first)
    cum_net = np.concatenate([[0.0], np.cumsum(y_kept - back)])

    from scipy.special import ndtr

    peak_e = np.array([p.energy_kev for p in peaks])
    peak_sd = fwhm_kev(peak_e, mnka_resolution_ev) / 2.3548
    # a Gaussian holds 84.3 % of its area within +/- 0.6 FWHM (the peaks' net-count window)
    peak_area = np.array([p.net_counts for p in peaks]) / 0.843

    def net_at(energy: float) -> float:
        """Net counts in +/- 0.6 FWHM around ``energy`` that the detected peaks do not explain.

        Measured above the background, less the tails of the detected peaks (Gaussians of the
        detector resolution), so a line in the shoulder of a stronger peak is measured alone.
        """
        half = 0.6 * float(fwhm_kev(energy, mnka_resolution_ev))
        i0 = max(int(np.searchsorted(e, energy - half, side="left")), first)
        i1 = int(np.searchsorted(e, energy + half, side="right"))
        if i1 <= i0:
            return 0.0
        a, b = e[i0] - 0.5 * scale, e[i1 - 1] + 0.5 * scale
        tails = peak_area * (ndtr((b - peak_e) / peak_sd) - ndtr((a - peak_e) / peak_sd))
        return float(cum_net[i1] - cum_net[i0] - tails.sum())

    def tol(energy: float) -> float:
        # below 0.5 keV peaks sit on the tail of the zero (noise) peak and on a steep
        # detector-efficiency edge, which pulls their centroids by up to ~35 eV
        floor = 0.035 if energy < 0.5 else 0.0
        return max(tolerance_fwhm * float(fwhm_kev(energy, mnka_resolution_ev)), 1.5 * scale, floor)

    def detection_limit(energy: float) -> float:
        # min_significance * sqrt(counts in a +/- 0.6 FWHM window), counts from the raw spectrum
        half = 0.6 * float(fwhm_kev(energy, mnka_resolution_ev))
        sel = (e >= energy - half) & (e <= energy + half)
        return min_significance * math.sqrt(max(float(y[sel].sum()), 1.0))

    def usable(line: XrayLine) -> bool:
        return lo_e <= line.energy_kev <= hi_e and (beam is None or line.edge_kev < beam)

    def peak_of(line: XrayLine) -> int | None:
        best = None
        for k, p in enumerate(peaks):
            d = abs(p.energy_kev - line.energy_kev)
            if d <= tol(p.energy_kev) and (
                best is None or d < abs(peaks[best].energy_kev - line.energy_kev)
            ):
                best = k
        return best

    # relative line strengths across shells need a beam energy; when the file has none, the top
    # of the energy axis stands in (detectors are set to cover up to the beam energy, and a
    # 200 kV TEM spectrum cut at 20-40 keV excites every edge in range anyway)
    gen_beam = round(beam if beam is not None else max(hi_e, 1.0), 1)
    explained: dict[int, str] = {}
    for element in dict.fromkeys(parse_element(el) for el in elements or ()):
        known = [ln for ln in element_lines(element).values() if usable(ln) and ln.weight >= 0.045]
        mains = {ln.shell: peak_of(ln) for ln in known if ln.weight >= 0.999}
        for ln in sorted(known, key=lambda ln: -ln.weight):
            j = peak_of(ln)
            if j is None or j in explained:
                continue
            if ln.weight < 0.999 and mains.get(ln.shell) is None:
                continue  # a minor line explains a peak only beside its shell's main line
            explained[j] = ln.name
    for k, peak in enumerate(peaks):
        if k in explained:
            continue
        cands = candidate_lines(
            peak.energy_kev,
            tolerance_kev=tol(peak.energy_kev),
            beam_energy_kev=beam,
            mnka_resolution_ev=mnka_resolution_ev,
            min_weight=0.05,
        )
        best: tuple[tuple[float, float], XrayLine, dict[int, str]] | None = None
        for cand in cands:
            if not usable(cand) or cand.element in _UNSTABLE:
                continue
            lines = {
                n: ln
                for n, ln in element_lines(cand.element).items()
                if usable(ln) and ln.weight >= 0.045
            }
            # across shells, generated intensities (fluorescence yield, ionisation at this beam
            # energy) say how strong each line is relative to the element's strongest line
            gen = _generated_cached(cand.element, gen_beam)

            def strength(ln: XrayLine, gen: dict[str, float] = gen) -> float:
                return gen.get(ln.name, 0.0) if gen else ln.weight

            matches: dict[int, str] = {k: cand.name}
            for ln in sorted(lines.values(), key=lambda ln: -ln.weight):
                j = peak_of(ln)
                if j is None or j in matches or j in explained:
                    continue
                # a line of another shell counts only when that shell's main line is seen too
                main = [m for m in lines.values() if m.shell == ln.shell and m.weight >= 0.999]
                if ln.shell != cand.shell and main and peak_of(main[0]) is None:
                    continue
                # below 1 keV (light elements' K lines) a weak line (generated intensity below
                # a tenth of the element's strongest) does not claim a peak: that peak is named
                # for itself (C Ka, not K Ll beside K Ka)
                if gen and strength(ln) < 0.1 and ln.energy_kev < 1.0:
                    continue
                # nor when its peak is far stronger than the line can be (it is another
                # element's peak): five times the predicted counts, plus the detection limit
                ratio = (
                    ln.weight / cand.weight
                    if ln.shell == cand.shell or not gen
                    else strength(ln) / max(strength(cand), 1e-12)
                )
                predicted = peak.net_counts * ratio
                if peaks[j].net_counts > 5.0 * predicted + detection_limit(ln.energy_kev):
                    continue
                matches[j] = ln.name
            penalty = 0
            fwhm_c = float(fwhm_kev(cand.energy_kev, mnka_resolution_ev))
            for ln in lines.values():
                if ln.shell != cand.shell or ln.name == cand.name:
                    continue
                if (
                    ln.shell == "K"
                    and ln.weight < cand.weight
                    and ELEMENTS.index(ln.element) + 1 <= LIGHT_KB_MAX_Z
                ):
                    continue  # the tables overrate a light element's K-beta (LIGHT_KB_MAX_Z)
                j = peak_of(ln)
                if j == k:
                    continue  # merged into this very peak
                # a weaker line within 2 FWHM sits in the peak's shoulder (La + Lb1 + Lb3 ...),
                # any line may hide in the shoulder of another peak
                close = abs(ln.energy_kev - cand.energy_kev)
                if close <= 2.0 * fwhm_c and ln.weight <= cand.weight:
                    # resolvable (1.5 FWHM or more apart): measured beside the peak's own tail
                    predicted = peak.net_counts * ln.weight / cand.weight
                    if (
                        close >= 1.5 * fwhm_c
                        and ln.weight >= 0.1
                        and predicted > 2.0 * detection_limit(ln.energy_kev)
                        and net_at(ln.energy_kev) < 0.25 * predicted
                    ):
                        penalty += 1
                    continue
                if ln.weight < 0.1:
                    continue  # minor lines' table weights are too uncertain to demand a peak
                # otherwise the table's intensity ratio predicts its peak (which may hide in the
                # shoulder of another peak within 2 FWHM)
                predicted = peak.net_counts * ln.weight / cand.weight
                fwhm_l = float(fwhm_kev(ln.energy_kev, mnka_resolution_ev))
                near = [
                    p.net_counts
                    for i, p in enumerate(peaks)
                    if i != k
                    and abs(p.energy_kev - ln.energy_kev)
                    <= (tol(p.energy_kev) if j is not None else 2.0 * fwhm_l)
                ]
                observed = max(max(near, default=0.0), net_at(ln.energy_kev))
                if predicted > 2.0 * detection_limit(ln.energy_kev) and observed < 0.25 * predicted:
                    penalty += 1
                    matches.pop(j, None) if j is not None else None
            if gen and strength(cand) > 0:
                for ln in lines.values():
                    # only the other shell's main lines: its minor lines' cross-shell ratios
                    # are too uncertain to demand a peak
                    if ln.shell == cand.shell or ln.weight < 0.5 or strength(ln) <= strength(cand):
                        continue
                    predicted = peak.net_counts * strength(ln) / strength(cand)
                    fwhm_l = float(fwhm_kev(ln.energy_kev, mnka_resolution_ev))
                    observed = max(
                        max(
                            (
                                p.net_counts
                                for p in peaks
                                if abs(p.energy_kev - ln.energy_kev) <= 2.0 * fwhm_l
                            ),
                            default=0.0,
                        ),
                        net_at(ln.energy_kev),
                    )
                    # lenient (3 %): absorption and detector efficiency move cross-shell
                    # ratios a lot
                    if (
                        predicted > 2.0 * detection_limit(ln.energy_kev)
                        and observed < 0.03 * predicted
                    ):
                        penalty += 1
                # a stronger shell in range must show: at least one of its lines has a peak
                own_shell = max(strength(ln) for ln in lines.values() if ln.shell == cand.shell)
                for shell in {ln.shell for ln in lines.values()} - {cand.shell}:
                    stronger = [
                        ln
                        for ln in lines.values()
                        if ln.shell == shell and strength(ln) > own_shell
                    ]
                    if stronger and all(peak_of(ln) is None for ln in stronger):
                        penalty += 1
                # the peak must not be far stronger than the element's strongest line allows
                top = max(
                    (ln for ln in lines.values() if ln.name != cand.name),
                    key=strength,
                    default=None,
                )
                if top is not None and strength(top) > strength(cand) and peak_of(top) != k:
                    j_top = peak_of(top)
                    fwhm_t = float(fwhm_kev(top.energy_kev, mnka_resolution_ev))
                    # with no peak of its own it may hide in a neighbour's shoulder (Cu Ka
                    # beside Ni Kb): that neighbour bounds what it can hold
                    seen = (
                        peaks[j_top].net_counts
                        if j_top is not None
                        else max(
                            [net_at(top.energy_kev)]
                            + [
                                p.net_counts
                                for i, p in enumerate(peaks)
                                if i != k and abs(p.energy_kev - top.energy_kev) <= 2.0 * fwhm_t
                            ]
                        )
                    )
                    expected = max(seen, 0.0) * strength(cand) / strength(top)
                    if peak.net_counts > 5.0 * expected + detection_limit(cand.energy_kev):
                        penalty += 1
            support = sum(
                min(1.0, 2.0 * strength(lines[name]))
                for j, name in matches.items()
                if j != k and name in lines
            )
            # lines with no peak of their own (in the shoulder of a stronger one), measured
            matched = set(matches.values())
            for ln in lines.values():
                if ln.name in matched or ln.weight < 0.1 or strength(cand) <= 0:
                    continue
                if peak_of(ln) is not None:
                    continue
                ratio = (
                    ln.weight / cand.weight
                    if ln.shell == cand.shell
                    else strength(ln) / strength(cand)
                )
                predicted = peak.net_counts * ratio
                measured = net_at(ln.energy_kev)
                if (
                    predicted > 2.0 * detection_limit(ln.energy_kev)
                    and measured >= 0.25 * predicted
                    and measured >= 0.6 * detection_limit(ln.energy_kev)  # 3 sigma on its own
                ):
                    support += min(1.0, 2.0 * strength(ln))
            own = min(cand.weight, strength(cand) / max(gen.values())) if gen else cand.weight
            # closeness: a line at the edge of the tolerance (a blend's centroid may sit there)
            # loses up to 1 against one on the peak (Al Ka 1.487 beats Yb Ma 1.526 for 1.482)
            offset = abs(cand.energy_kev - peak.energy_kev) / tol(peak.energy_kev)
            score = (
                1.0
                + support
                + own
                - 2.0 * penalty
                + (0.25 if cand.shell == "K" else 0.0)
                - min(offset, 1.0) ** 2
            )
            logger.debug(
                "peak %.3f keV: %s explains %s, penalty %d, score %.2f",
                peak.energy_kev,
                cand.name,
                sorted(matches.values()),
                penalty,
                score,
            )
            key = (score, -abs(cand.energy_kev - peak.energy_kev))
            if best is None or key > best[0]:
                best = (key, cand, matches)
        escape = _escape_explains(peak, peaks[:k], tol(peak.energy_kev))
        if escape:
            logger.info(
                "the peak at %.3f keV is the Si escape peak of %s; no element added",
                peak.energy_kev,
                escape,
            )
            continue
        artefact = _artefact_of(peak, peaks[:k], tol(peak.energy_kev))
        if best is None or best[0][0] < 1.0 or (artefact and best[0][0] < 1.5):
            logger.info(
                "no X-ray line explains the peak at %.3f keV%s; skipped",
                peak.energy_kev,
                f" (probably {artefact})" if artefact else "",
            )
            continue
        explained.update(best[2])
    names = sorted(set(explained.values()), key=lambda n: get_line(n).energy_kev)
    return names


#: up to this atomic number (Ar) a K line's K-beta is never demanded by :func:`identify_lines`:
#: the tables (xraydb, free atoms) give Kb/Ka = 0.12-0.13 from Mg to Ar, but in solids the 3p
#: shell of these elements is partly empty and their Kb is a few % of Ka at most, so a
#: "missing" Kb says nothing about the element (P in the 30x30 map's apatite was missed)
LIGHT_KB_MAX_Z = 18
#: elements without stable or long-lived isotopes: never proposed by :func:`identify_lines`
_UNSTABLE = frozenset({"Tc", "Pm", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Pa"})

#: Si Ka energy: escape peaks of a Si detector lie this far below their parent
_SI_KA_KEV = 1.7398


#: an escape peak up to this many times its Reed & Ware estimate is taken for one: the
#: normal-incidence fraction is an estimate, and a detector's collimation and incidence angle
#: change it
ESCAPE_MARGIN = 2.0


def _escape_explains(peak: SpectrumPeak, stronger: list[SpectrumPeak], tolerance_kev: float) -> str:
    """Name the stronger peak whose Si escape peak holds all of ``peak``'s counts, or ``""``.

    The escape peak of a parent of ``N`` net counts at ``E`` lies at ``E - 1.74 keV`` and holds
    ``f(E) N`` counts (Reed & Ware's escape fraction, as sigma's simulator models it). A peak
    there with no more than :data:`ESCAPE_MARGIN` times that plus 3 standard deviations of its
    own counting noise needs no element (Fe Ka's escape at 4.66 keV is not La La, Ca Ka's at
    1.95 keV is not Y La).
    """
    from sigma.datasets._spectrum import _si_escape

    sd = peak.net_counts / peak.significance if peak.significance > 0 else math.inf
    for p in stronger:
        if abs(p.energy_kev - _SI_KA_KEV - peak.energy_kev) > tolerance_kev:
            continue
        frac, _ = _si_escape(np.array([p.energy_kev]))
        expected = float(frac[0]) * p.net_counts
        if expected > 0 and peak.net_counts <= ESCAPE_MARGIN * expected + 3.0 * sd:
            return f"{p.energy_kev:.3f} keV (expected {expected:.0f} counts, found {peak.net_counts:.0f})"
    return ""


def _artefact_of(peak: SpectrumPeak, stronger: list[SpectrumPeak], tolerance_kev: float) -> str:
    """Name the sum or escape peak that ``peak`` may be, or ``""``.

    A peak is taken for a sum peak of two stronger peaks (``E1 + E2``) or a Si escape peak
    (``E - 1.74 keV``) when it sits there within the tolerance and holds less than 10 % of the
    weaker parent's net counts.
    """
    for i, p in enumerate(stronger):
        if (
            peak.net_counts < 0.1 * p.net_counts
            and abs(p.energy_kev - _SI_KA_KEV - peak.energy_kev) <= tolerance_kev
        ):
            return f"the Si escape peak of {p.energy_kev:.3f} keV"
        for q in stronger[i:]:
            if (
                peak.net_counts < 0.1 * min(p.net_counts, q.net_counts)
                and abs(p.energy_kev + q.energy_kev - peak.energy_kev) <= tolerance_kev
            ):
                return f"the sum peak of {p.energy_kev:.3f} and {q.energy_kev:.3f} keV"
    return ""


@functools.lru_cache(maxsize=1024)
def _generated_cached(element: str, beam_energy_kev: float) -> dict[str, float]:
    """:func:`generated_weights`, cached (it queries xraydb for every edge)."""
    return generated_weights(element, beam_energy_kev)
