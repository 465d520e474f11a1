"""Which X-ray lines become features: the file's elements first, then what the spectra show.

HyperSpy/exspy users think in elements: a Bruker file carries the elements the operator chose,
rarely lines. :func:`select_lines` turns a ``lines`` argument (None, ``"auto"``, or a list
mixing elements such as ``"Fe"``/``"fe"`` and lines such as ``"Fe_Ka"``) into one feature per
element, each measured on the element's best line at the beam energy
(:func:`sigma.xray.default_line`, exspy's rule), and adds the elements of the peaks that the
given elements do not explain, identified on the sum spectrum and on a *maximum-pixel*
spectrum (per-channel maximum over spatially pooled pixels: a phase too small to show in the
sum still has its own maximum there). Every choice is returned with its reason, which
``sigma info`` prints.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma import xray
from sigma._schema import COUNTS, DIM_ENERGY, DIM_X, DIM_Y, as_str_list, finite_float_or_none
from sigma.exceptions import XrayLineError

logger = logging.getLogger(__name__)

__all__ = ["LineChoice", "select_lines", "max_pixel_spectrum", "parse_line_spec"]

#: pooled pixels for the maximum-pixel spectrum hold at least this many counts on average
_POOL_COUNTS = 50.0
#: and the pooling factor is at most this (larger would dilute small grains)
_POOL_MAX = 4


@dataclass(frozen=True)
class LineChoice:
    """One feature: its label (an element, or a line the user named), its line and why."""

    feature: str
    line: str
    energy_kev: float
    reason: str


def parse_line_spec(lines: Any) -> list[str]:
    """Split a user ``lines`` value into tokens: elements (proper case) and line names.

    Accepts a list or a comma-separated string; ``"fe"`` -> ``"Fe"``, ``"Fe_Ka"`` stays.

    Raises
    ------
    XrayLineError
        For a token that is neither a chemical symbol nor a valid line name.
    """
    items = lines.split(",") if isinstance(lines, str) else list(lines)
    out: list[str] = []
    for item in items:
        token = str(item).strip()
        if not token:
            continue
        if "_" in token:
            element, family = token.split("_", 1)
            name = f"{element[:1].upper()}{element[1:].lower()}_{family}"
            xray.get_line(name)  # raises naming the line (and the element's known lines)
            out.append(name)
        else:
            out.append(xray.parse_element(token))
    return out


def _energy(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    return np.asarray(ds[DIM_ENERGY].values, dtype=np.float64)


def _pool_factor(mean_counts: float) -> int:
    """Smallest square pooling (1 .. 4) whose pooled pixels hold ``_POOL_COUNTS`` on average."""
    for f in range(1, _POOL_MAX + 1):
        if f * f * mean_counts >= _POOL_COUNTS:
            return f
    return _POOL_MAX


def max_pixel_spectrum(
    ds: xr.Dataset, *, factor: int | None = None
) -> tuple[npt.NDArray[np.float64], int]:
    """Per-channel maximum over ``factor x factor`` pooled (summed) pixels.

    The maximum-pixel spectrum (Bright & Newbury 2004) shows the peaks of phases too small to
    show in the sum spectrum. Pooling first lifts sparse pixels above Poisson noise; ``factor``
    None picks the smallest pooling (1-4) whose pooled pixels hold 50 counts on average.

    Returns
    -------
    spectrum : ndarray (energy,)
    factor : int
        The pooling used.
    """
    counts = ds[COUNTS]
    if factor is None:
        mean = float(counts.sum(DIM_ENERGY).mean())
        factor = _pool_factor(mean)
    factor = max(1, min(int(factor), int(ds.sizes[DIM_Y]), int(ds.sizes[DIM_X])))
    pooled = counts
    if factor > 1:
        pooled = counts.coarsen({DIM_Y: factor, DIM_X: factor}, boundary="trim").sum()
    spec = pooled.max((DIM_Y, DIM_X))
    return np.asarray(spec.values, dtype=np.float64), factor


def _peak_is_real(
    ds: xr.Dataset, line: str, factor: int, mnka: float, n_sigma: float
) -> tuple[bool, float]:
    """Whether some pooled pixel shows ``line`` above its side bands by ``n_sigma``.

    Per pooled pixel: counts in +/- 0.6 FWHM of the line, less the mean of two side bands of
    the same width (1.2 .. 2.4 FWHM away) scaled to the window; ``z = net / sqrt(window +
    side)``. Returns (max z >= n_sigma, max z).
    """
    e = _energy(ds)
    ln = xray.get_line(line)
    f = float(xray.fwhm_kev(ln.energy_kev, mnka))

    def idx(a: float, b: float) -> tuple[int, int]:
        return int(np.searchsorted(e, a, "left")), int(np.searchsorted(e, b, "right"))

    w0, w1 = idx(ln.energy_kev - 0.6 * f, ln.energy_kev + 0.6 * f)
    l0, l1 = idx(ln.energy_kev - 2.4 * f, ln.energy_kev - 1.2 * f)
    r0, r1 = idx(ln.energy_kev + 1.2 * f, ln.energy_kev + 2.4 * f)
    n_side = (l1 - l0) + (r1 - r0)
    if w1 <= w0 or n_side <= 0:
        return False, 0.0
    counts = ds[COUNTS]
    if factor > 1:
        counts = counts.coarsen({DIM_Y: factor, DIM_X: factor}, boundary="trim").sum()
    win = np.asarray(counts.isel({DIM_ENERGY: slice(w0, w1)}).sum(DIM_ENERGY).values, float)
    side = np.asarray(
        counts.isel({DIM_ENERGY: slice(l0, l1)}).sum(DIM_ENERGY).values, float
    ) + np.asarray(counts.isel({DIM_ENERGY: slice(r0, r1)}).sum(DIM_ENERGY).values, float)
    side_scaled = side * (w1 - w0) / n_side
    z = (win - side_scaled) / np.sqrt(np.maximum(win + side_scaled * (w1 - w0) / n_side, 1.0))
    zmax = float(np.max(z)) if z.size else 0.0
    return zmax >= n_sigma, zmax


def select_lines(
    ds: xr.Dataset,
    lines: Any = None,
    *,
    mnka_resolution_ev: float = 130.0,
    ignore_below_kev: float = 0.1,
    max_pixel: bool = True,
) -> list[LineChoice]:
    """The features of :func:`sigma.preprocessing.line_features` and why each was chosen.

    Parameters
    ----------
    ds : xr.Dataset
        Spectrum image with ``counts (y, x, energy)``, energy in keV.
    lines : None, "auto", str or list of str
        ``None``: the file's ``elements`` (and the elements of its ``xray_lines``), one feature
        per element on its best line, plus elements identified for peaks they do not explain;
        ``"auto"``: only identified elements; a list (or comma-separated string) of elements
        (``"Fe"``, any case: one feature on the element's best line) and lines (``"Fe_Ka"``:
        exactly that line).
    mnka_resolution_ev : float
        Detector FWHM at Mn Ka in eV.
    ignore_below_kev : float
        The zero (noise) peak: no identification below this energy.
    max_pixel : bool
        Also identify on the maximum-pixel spectrum (:func:`max_pixel_spectrum`).

    Returns
    -------
    list of LineChoice
        One per feature, in order of line energy.

    Raises
    ------
    XrayLineError
        For an unknown element or line, a named line outside the energy range, or when no
        line can be found at all.
    """
    e = _energy(ds)
    lo, hi = max(float(e[0]), ignore_below_kev), float(e[-1])
    beam = finite_float_or_none(ds.attrs.get("beam_energy_kev"))
    choices: dict[str, LineChoice] = {}

    def add_element(element: str, reason: str, line: str | None = None) -> None:
        if element in choices:
            return
        ln = xray.get_line(line) if line else xray.default_line(element, beam, (lo, hi))
        if ln is None or not lo <= ln.energy_kev <= hi:
            logger.warning(
                "%s: no Ka, La or Ma line of %s lies in %.2f .. %.2f keV%s; left out",
                reason,
                element,
                lo,
                hi,
                "" if beam is None else f" at {beam:g} kV",
            )
            return
        choices[element] = LineChoice(element, ln.name, ln.energy_kev, reason)

    identify = lines is None or (isinstance(lines, str) and lines.strip().lower() == "auto")
    if lines is None:
        for token in as_str_list(ds.attrs.get("xray_lines")):
            element = token.split("_", 1)[0]
            add_element(element, "the file's line list", token)
        for element in as_str_list(ds.attrs.get("elements")):
            add_element(xray.parse_element(element), "the file's element list")
    elif not identify:
        tokens = parse_line_spec(lines)
        if not tokens:
            raise XrayLineError(
                "lines is empty; give elements or lines, e.g. 'Fe,Si' or ['Fe_Ka'], or 'auto'."
            )
        for token in tokens:
            if "_" in token:
                # (a line outside the energy axis is refused by the windows, naming it)
                ln = xray.get_line(token)
                choices[token] = LineChoice(token, token, ln.energy_kev, "given")
            else:
                add_element(token, "given")
                if token not in choices:
                    raise XrayLineError(
                        f"element {token!r}: none of its Ka, La or Ma lines lies in the energy "
                        f"range {lo:.2f} .. {hi:.2f} keV of the data"
                        + ("" if beam is None else f" (or the {beam:g} kV beam cannot excite it)")
                        + ". Remove it from lines or name a line, e.g. 'Pb_Lb1'."
                    )
    if identify:
        known = sorted({c.line.split("_")[0] for c in choices.values()})
        counts = ds[COUNTS]
        spectra = [("the sum spectrum", np.asarray(counts.sum((DIM_Y, DIM_X)).values, float))]
        factor = 1
        if max_pixel and ds.sizes[DIM_Y] * ds.sizes[DIM_X] > 1:
            mp, factor = max_pixel_spectrum(ds)
            spectra.append((f"the maximum-pixel spectrum ({factor}x{factor} pooled)", mp))
        n_pooled = max((ds.sizes[DIM_Y] // factor) * (ds.sizes[DIM_X] // factor), 1)
        # a maximum over many pooled pixels is large by chance: Bonferroni over them
        n_sigma = max(5.0, math.sqrt(2.0 * math.log(n_pooled)) + 2.0)
        for where, spec in spectra:
            found = xray.identify_lines(
                e,
                spec,
                beam,
                mnka_resolution_ev=mnka_resolution_ev,
                ignore_below_kev=ignore_below_kev,
                elements=known,
            )
            for name in found:
                element = name.split("_", 1)[0]
                if element in known or element in choices:
                    continue
                if where != "the sum spectrum":
                    real, z = _peak_is_real(ds, name, factor, mnka_resolution_ev, n_sigma)
                    if not real:
                        logger.info(
                            "%s: %s only in %s at %.1f sigma (< %.1f); not used",
                            name,
                            element,
                            where,
                            z,
                            n_sigma,
                        )
                        continue
                line = xray.default_line(element, beam, (lo, hi))
                add_element(
                    element,
                    f"identified in {where} ({name})",
                    None if line is not None else name,
                )
                if element in choices and known:
                    logger.info(
                        "added %s (%s): a peak the file's elements do not explain",
                        element,
                        choices[element].line,
                    )
        if not choices:
            total = float(counts.sum())
            raise XrayLineError(
                f"no significant X-ray peak found in the spectra ({total:.0f} counts above "
                f"{ignore_below_kev:g} keV). Give the elements or lines, e.g. lines='Fe,Si'."
            )
    if identify or lines is None:
        return sorted(choices.values(), key=lambda c: c.energy_kev)
    return list(choices.values())  # the user's order
