"""Phases defined by composition, and a small library of minerals and TEM materials."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sigma.exceptions import SimulationParameterError
from sigma.xray import ELEMENTS

__all__ = ["Phase", "PHASES", "SEM_DEMO_PHASES", "TEM_DEMO_PHASES", "get_phase", "resolve_phases"]

_SUM_TOLERANCE = 0.01


def _atomic_mass(element: str) -> float:
    import xraydb

    return float(xraydb.atomic_mass(element))


def _atomic_number(element: str) -> int:
    return ELEMENTS.index(element) + 1


@dataclass(frozen=True)
class Phase:
    """A phase (mineral, compound, alloy) given by its element mass fractions.

    Parameters
    ----------
    name : str
        Display name, used as the ``phase`` coordinate of the ground truth.
    composition : dict of str to float
        Element symbol -> mass fraction. Fractions must be positive and sum to 1 within 1 %;
        they are stored normalised to sum exactly 1.
    density : float, optional
        Density in g/cm^3 (informational; the simulator's absorption model works in mass
        thickness and does not need it).

    Raises
    ------
    SimulationParameterError
        If an element symbol is unknown, a fraction is not positive, or the sum is not 1.

    See Also
    --------
    Phase.from_formula : build a phase from a chemical formula.

    Examples
    --------
    >>> quartz = Phase("quartz", {"Si": 0.4674, "O": 0.5326}, density=2.65)
    >>> sorted(quartz.composition)
    ['O', 'Si']
    >>> round(quartz.mean_z, 2)
    10.8
    """

    name: str
    composition: dict[str, float] = field(compare=True)
    density: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.composition, Mapping) or not self.composition:
            raise SimulationParameterError(
                f"Phase {self.name!r}: composition must be a non-empty dict of element -> mass "
                f"fraction, e.g. {{'Si': 0.467, 'O': 0.533}}. Got {self.composition!r}."
            )
        clean: dict[str, float] = {}
        for element, fraction in self.composition.items():
            if element not in ELEMENTS:
                raise SimulationParameterError(
                    f"Phase {self.name!r}: unknown element {element!r} in composition; use a "
                    "chemical symbol such as 'Fe' (case matters)."
                )
            value = float(fraction)
            if not math.isfinite(value) or value <= 0:
                raise SimulationParameterError(
                    f"Phase {self.name!r}: mass fraction of {element} must be a positive number. "
                    f"Got {fraction!r}; leave absent elements out of the dict."
                )
            clean[element] = value
        total = sum(clean.values())
        if abs(total - 1.0) > _SUM_TOLERANCE:
            raise SimulationParameterError(
                f"Phase {self.name!r}: mass fractions must sum to 1 (within 1 %). Got {total!r} "
                f"from {self.composition!r}. Give mass fractions (not atom counts), or use "
                "Phase.from_formula(name, 'NaAlSi3O8')."
            )
        if self.density is not None and not (math.isfinite(self.density) and self.density > 0):
            raise SimulationParameterError(
                f"Phase {self.name!r}: density must be a positive number of g/cm^3 or None. "
                f"Got {self.density!r}."
            )
        object.__setattr__(self, "composition", {el: v / total for el, v in clean.items()})

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.composition.items())), self.density))

    @classmethod
    def from_formula(cls, name: str, formula: str, density: float | None = None) -> Phase:
        """Build a phase from a chemical formula, with mass fractions from atomic masses (xraydb).

        Parameters
        ----------
        name : str
            Display name.
        formula : str
            Formula such as ``"NaAlSi3O8"`` or ``"Fe2O3"`` (parsed by ``xraydb.chemparse``).
        density : float, optional
            Density in g/cm^3.

        Examples
        --------
        >>> hem = Phase.from_formula("hematite", "Fe2O3", density=5.26)
        >>> round(hem.composition["Fe"], 3)
        0.699
        """
        import xraydb

        try:
            atoms = xraydb.chemparse(formula)
        except Exception as err:  # noqa: BLE001 - chemparse raises several types
            raise SimulationParameterError(
                f"Phase {name!r}: cannot parse formula {formula!r}; write it like 'NaAlSi3O8'."
            ) from err
        unknown = [el for el in atoms if el not in ELEMENTS]
        if not atoms or unknown:
            raise SimulationParameterError(
                f"Phase {name!r}: formula {formula!r} has unknown element(s) {unknown!r}; "
                "write it like 'NaAlSi3O8'."
            )
        masses = {el: float(n) * _atomic_mass(el) for el, n in atoms.items()}
        total = sum(masses.values())
        return cls(name, {el: m / total for el, m in masses.items()}, density)

    @property
    def elements(self) -> list[str]:
        """Element symbols of the phase, in periodic-table order."""
        return sorted(self.composition, key=_atomic_number)

    @property
    def mean_z(self) -> float:
        """Mass-fraction-weighted mean atomic number (Kramers' continuum, BSE contrast)."""
        return sum(c * _atomic_number(el) for el, c in self.composition.items())

    @property
    def mean_a(self) -> float:
        """Mass-fraction-weighted mean atomic mass (g/mol)."""
        return sum(c * _atomic_mass(el) for el, c in self.composition.items())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (``name``, ``composition``, ``density``)."""
        return {"name": self.name, "composition": dict(self.composition), "density": self.density}


def _library() -> dict[str, Phase]:
    f = Phase.from_formula
    phases = [
        # SEM: a polished rock section in epoxy
        f("epoxy", "C21H24O4", 1.2),  # bisphenol-A diglycidyl ether resin
        f("quartz", "SiO2", 2.65),
        f("albite", "NaAlSi3O8", 2.62),
        f("orthoclase", "KAlSi3O8", 2.56),
        f("calcite", "CaCO3", 2.71),
        f("hematite", "Fe2O3", 5.26),
        f("rutile", "TiO2", 4.23),
        f("ilmenite", "FeTiO3", 4.72),
        f("magnetite", "Fe3O4", 5.17),
        f("pyrite", "FeS2", 5.01),
        f("apatite", "Ca5P3O13H", 3.19),  # hydroxyapatite Ca5(PO4)3(OH)
        f("forsterite", "Mg2SiO4", 3.27),
        f("carbon", "C", 2.2),
        # TEM: thin films and nanoparticles on a carbon film
        f("carbon film", "C", 2.0),
        f("FePt", "FePt", 15.2),
        f("tenorite", "CuO", 6.31),
        f("anatase", "TiO2", 3.79),
        f("palladium", "Pd", 12.0),
        f("copper", "Cu", 8.96),
        f("palladium oxide", "PdO", 8.3),
    ]
    return {p.name: p for p in phases}


#: library of phases by name (minerals for SEM demos, materials for TEM demos)
PHASES: dict[str, Phase] = _library()

#: the 8 phases of :func:`sigma.datasets.demo_scene`, matrix first, with area fractions
SEM_DEMO_PHASES: dict[str, float] = {
    "epoxy": 0.30,
    "quartz": 0.24,
    "albite": 0.16,
    "orthoclase": 0.12,
    "calcite": 0.09,
    "hematite": 0.04,
    "ilmenite": 0.03,
    "rutile": 0.02,
}

#: the default phases of :func:`sigma.datasets.synthetic_tem`, support film first
TEM_DEMO_PHASES: dict[str, float] = {
    "carbon film": 0.50,
    "anatase": 0.22,
    "tenorite": 0.15,
    "FePt": 0.08,
    "palladium": 0.05,
}


def get_phase(phase: Phase | str) -> Phase:
    """Return ``phase`` itself, or the library phase of that name (see :data:`PHASES`).

    Examples
    --------
    >>> get_phase("quartz").elements
    ['O', 'Si']
    """
    if isinstance(phase, Phase):
        return phase
    if isinstance(phase, str) and phase in PHASES:
        return PHASES[phase]
    raise SimulationParameterError(
        f"phases: unknown phase {phase!r}. Use a sigma.datasets.Phase or one of the library names "
        f"{sorted(PHASES)!r}."
    )


def resolve_phases(
    phases: Any, area_fractions: Any, default: Mapping[str, float]
) -> tuple[list[Phase], list[float]]:
    """Turn the ``phases``/``area_fractions`` arguments into phases and fractions summing to 1.

    ``phases`` may be None (use ``default``), a mapping name/Phase -> area fraction, or a sequence
    of Phase/str. Without fractions the first phase (the matrix) gets the largest share and the
    others decrease geometrically (factor 0.6), like a real sample.
    """
    if phases is None:
        phases = dict(default)
    if isinstance(phases, Mapping):
        if area_fractions is not None:
            raise SimulationParameterError(
                "give area fractions either as the values of a phases dict or as area_fractions, "
                "not both."
            )
        items = list(phases.items())
        resolved = [get_phase(k) for k, _ in items]
        fractions = [float(v) for _, v in items]
    else:
        if isinstance(phases, (str, Phase)):
            phases = [phases]
        resolved = [get_phase(p) for p in phases]
        if area_fractions is None:
            fractions = [0.6**k for k in range(len(resolved))]
        else:
            fractions = [float(v) for v in area_fractions]
    if not resolved:
        raise SimulationParameterError("phases: give at least one phase. Got an empty list.")
    if len(fractions) != len(resolved):
        raise SimulationParameterError(
            f"area_fractions: need one value per phase ({len(resolved)}). Got {len(fractions)}: "
            f"{fractions!r}."
        )
    if any(not math.isfinite(v) or v <= 0 for v in fractions):
        raise SimulationParameterError(
            f"area_fractions must be positive numbers. Got {fractions!r}; leave absent phases out."
        )
    names = [p.name for p in resolved]
    if len(set(names)) != len(names):
        raise SimulationParameterError(f"phases: names must be unique. Got {names!r}.")
    total = sum(fractions)
    return resolved, [v / total for v in fractions]
