"""Spectra with X-ray line markers: the shared log/linear toggle, element picker and overlay.

The element picker is one per session so every spectrum marks the same lines.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import numpy.typing as npt
import panel as pn
import param

from gui import data as gd
from gui.cluster_figures import _spread_labels
from gui.images import _PLOT
from gui.state import ResultsState
from sigma._schema import as_str_list, finite_float_or_none
from sigma.xray import lines_in_range


def line_markers(elements: list[str], energy_range: tuple[float, float], beam_energy_kev: float | None,
                 y: float) -> hv.Overlay:  # fmt: skip
    """Vertical lines and labels at the X-ray lines (weight >= 0.3) of ``elements`` in range."""
    lines = (
        lines_in_range(elements, energy_range, beam_energy_kev=beam_energy_kev, min_weight=0.3)
        if elements
        else []
    )
    # below 2 keV lines crowd: keep the strongest of pairs closer than ~1/70 of the axis
    lines = _spread_labels(lines, min_gap_kev=(energy_range[1] - energy_range[0]) / 70)
    energies = [ln.energy_kev for ln in lines]
    vlines = hv.VLines(energies, kdims=["energy"]).opts(
        color="#555555", line_dash="dashed", line_width=1, alpha=0.7
    )
    labels = hv.Labels((energies, [y] * len(lines), [ln.name for ln in lines]), kdims=["energy", "counts"],
                       vdims=["line"]).opts(text_font_size="8pt", angle=90, text_align="left",
                                            text_baseline="middle", yoffset=0)  # fmt: skip
    return vlines * labels


def spectrum_overlay(energy: npt.NDArray[np.float64], curves: dict[str, tuple[npt.NDArray[np.float64], str]],
                     *, log: bool, elements: list[str], beam_energy_kev: float | None,
                     ylabel: str = "counts per pixel") -> hv.Overlay:  # fmt: skip
    """Curves over energy (keV) with X-ray line markers; on a log axis values are floored, not NaN."""
    peak = max((float(np.max(v)) for v, _ in curves.values()), default=1.0) or 1.0
    floor = peak * 1e-4
    layers = []
    for name, (values, color) in curves.items():
        v = np.maximum(values, floor) if log else values
        layers.append(hv.Curve((energy, v), hv.Dimension("energy", label="X-ray energy", unit="keV"),
                               hv.Dimension("counts", label=ylabel), label=name).opts(color=color))  # fmt: skip
    y_label = peak * (0.5 if log else 0.9)
    overlay = hv.Overlay(layers) * line_markers(
        elements, (float(energy[0]), float(energy[-1])), beam_energy_kev, y_label
    )
    return overlay.opts(
        hv.opts.Curve(logy=log, tools=["hover"], **_PLOT),
        hv.opts.Overlay(legend_position="top_right", responsive=True, min_height=300),
    )


# ------------------------------------------------------------------------------------- views
class SpectrumView(pn.viewable.Viewer):
    """Spectra with a log/linear toggle and X-ray line markers from an element picker.

    Shared by the tabs: the element picker is one per session so every spectrum marks the same lines.
    """

    log_scale = param.Boolean(default=True, doc="logarithmic counts axis")
    elements = param.ListSelector(
        default=[], objects=[], doc="elements whose X-ray lines are marked"
    )

    def __init__(self, state: ResultsState, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        from sigma.xray import ELEMENTS

        self.param.elements.objects = list(ELEMENTS[2:])
        if not self.elements:
            self.elements = [
                e for e in as_str_list(state.results.attrs.get("elements")) if e in ELEMENTS
            ]
        self.log_toggle = pn.widgets.Toggle.from_param(self.param.log_scale, name="log counts")
        self.element_picker = pn.widgets.MultiChoice.from_param(self.param.elements, name="X-ray lines of",
                                                                 placeholder="type an element, e.g. Fe")  # fmt: skip

    @property
    def beam_energy_kev(self) -> float | None:
        """Beam energy in keV, None when unknown."""
        return finite_float_or_none(self.state.results.attrs.get("beam_energy_kev"))

    def plot(
        self,
        curves: dict[str, tuple[npt.NDArray[np.float64], str]],
        ylabel: str = "counts per pixel",
    ) -> hv.Overlay:
        """Overlay ``curves`` ({label: (values, colour)}) on the results' energy axis."""
        keep = gd.display_channels(self.state.results)  # no zero peak, nothing past the beam energy
        energy = self.state.results["energy"].values[keep]
        curves = {name: (np.asarray(v)[keep], c) for name, (v, c) in curves.items()}
        return spectrum_overlay(energy, curves, log=self.log_scale, elements=list(self.elements),
                                beam_energy_kev=self.beam_energy_kev, ylabel=ylabel)  # fmt: skip

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Row(self.log_toggle, self.element_picker)
