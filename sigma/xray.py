"""X-ray emission lines from a maintained table (xraydb), detector resolution, line lookup.

Line names follow HyperSpy/exspy: ``"Fe_Ka"``, ``"Fe_Kb"``, ``"Pb_La"``, ``"Pb_Lb1"``, ``"Pb_Ma"``.
A *family* groups the table's sub-lines that an EDS detector cannot separate (``Ka`` = Ka1 + Ka2 + Ka3);
its energy is the intensity-weighted mean of the sub-lines, its weight their summed intensity.

Energies are in keV throughout.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sigma.exceptions import XrayLineError

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
    "MNKA_KEV",
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
_SUBSHELL_POP = {"K": 1.0, "L1": 0.25, "L2": 0.25, "L3": 0.5, "M1": 0.1, "M2": 0.1, "M3": 0.2, "M4": 0.2, "M5": 0.4}

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


def fwhm_kev(energy_kev: float | npt.ArrayLike, mnka_resolution_ev: float = 130.0) -> npt.NDArray[np.float64]:
    """Detector resolution FWHM(E) in keV (Fiori & Newbury law used by SIGMA and HyperSpy).

    ``FWHM(E) = sqrt(2.5 * (E - 5.8987 keV) * 1000 + FWHM_MnKa**2) / 1000`` with ``FWHM_MnKa`` in eV.

    Examples
    --------
    >>> round(float(fwhm_kev(5.8987)), 4)
    0.13
    """
    if not mnka_resolution_ev > 0:
        raise ValueError(f"mnka_resolution_ev must be a positive number of eV. Got {mnka_resolution_ev!r} instead.")
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
        raise XrayLineError(f"X-ray line {name!r}: unknown family {family!r}; use one of {sorted(FAMILIES)}.")
    return element, family


@functools.lru_cache(maxsize=None)
def element_lines(element: str) -> dict[str, XrayLine]:
    """All line families of ``element`` in the table, keyed by name (``"Fe_Ka"`` ...).

    Examples
    --------
    >>> lines = element_lines("Fe")
    >>> round(lines["Fe_Ka"].energy_kev, 3), lines["Fe_Ka"].weight
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
            out[name] = XrayLine(name, element, family, float(energy), float(intensity / top), float(edge))
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
        raise XrayLineError(f"X-ray line {name!r} is not in the table; {element} has {sorted(lines)}.")
    return lines[name]


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
            if not lo <= line.energy_kev <= hi or line.weight < min_weight:
                continue
            if beam_energy_kev is not None and np.isfinite(beam_energy_kev) and line.edge_kev >= beam_energy_kev:
                continue
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
            if line.weight < min_weight or abs(line.energy_kev - energy_kev) > tolerance_kev:
                continue
            if beam_energy_kev is not None and np.isfinite(beam_energy_kev) and line.edge_kev >= beam_energy_kev:
                continue
            found.append(line)
    return sorted(found, key=lambda ln: (round(abs(ln.energy_kev - energy_kev), 3), -ln.weight))


def generated_weights(element: str, beam_energy_kev: float) -> dict[str, float]:
    """Relative generated intensity of each line of ``element`` at ``beam_energy_kev`` across shells.

    Within a shell the weights are the table's; across shells they scale with the fluorescence
    yield, the edge jump and a Bethe-like ionisation term ``ln(U) / (U * E_c**2)`` with overvoltage
    ``U = E0 / E_c``. Lines the beam cannot excite (``U <= 1``) are left out. Values are normalised
    so the strongest line of the element is 1. This is a physically plausible model for simulation,
    not a quantification.
    """
    import xraydb

    out: dict[str, float] = {}
    for name, line in element_lines(element).items():
        u = beam_energy_kev / line.edge_kev if line.edge_kev > 0 else 0.0
        if u <= 1.0:
            continue
        shell_edge = {"K": "K", "L": "L3", "M": "M5"}[line.shell]
        try:
            edge = xraydb.xray_edge(element, shell_edge)
            yield_ = float(edge.fyield)
            jump = float(edge.jump_ratio)
        except Exception:  # noqa: BLE001 - light elements lack some edges; fall back to a low yield
            yield_, jump = 0.01, 2.0
        jump_factor = (jump - 1) / jump if jump > 1 else 0.5
        ionisation = math.log(u) / (u * line.edge_kev**2)
        out[name] = line.weight * max(yield_, 1e-4) * jump_factor * ionisation
    if out:
        top = max(out.values())
        out = {k: v / top for k, v in out.items()}
    return out
