"""Dataset tab: navigation image, element maps, sum spectrum, line lookup, counts map.

Edits change clusters, not these maps: nothing here is rebuilt on an edit.
"""

from __future__ import annotations

from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from gui import data as gd
from gui.images import _PLOT, _image
from gui.spectra import SpectrumView
from gui.state import ResultsState
from sigma._schema import as_str_list
from sigma.xray import candidate_lines


class DatasetView(pn.viewable.Viewer):
    """Dataset tab: navigation image, sum spectrum, element maps, counts map and histogram, line lookup."""

    feature: str | None = param.Selector(  # type: ignore[assignment]
        default=None, objects=[], doc="feature (X-ray line) whose map is shown"
    )
    lookup_energy = param.Number(
        default=None, allow_None=True, bounds=(0, None), doc="energy (keV) to identify"
    )

    def __init__(self, state: ResultsState, spectra: SpectrumView, **params: Any) -> None:
        super().__init__(**params)
        self.state, self.spectra = state, spectra
        ds = state.results
        feats = as_str_list(ds["feature"].values) if "feature" in ds.coords else []
        self.param.feature.objects = feats
        if feats and self.feature is None:
            self.feature = feats[0]
        self._spectrum_dmap = hv.DynamicMap(self._sum_spectrum, streams=[
            hv.streams.Params(spectra, ["log_scale", "elements"])])  # fmt: skip
        self._tap = hv.streams.SingleTap(source=self._spectrum_dmap, transient=True)
        self._tap.add_subscriber(self._on_tap)

    def _sum_spectrum(self, log_scale: bool, elements: list[str]) -> hv.Overlay:
        return self.spectra.plot(
            {"mean spectrum": (gd.mean_spectrum(self.state.results).values, "#1f3b73")}
        )

    def _on_tap(self, x: float | None = None, y: float | None = None) -> None:
        if x is not None:
            self.lookup_energy = round(float(x), 4)

    def candidates(self) -> pd.DataFrame:
        """X-ray lines within half an FWHM of ``lookup_energy``."""
        cols = ["line", "energy (keV)", "weight", "distance (eV)"]
        if self.lookup_energy is None:
            return pd.DataFrame(columns=cols)
        mnka = float(self.state.results.attrs.get("energy_resolution_mnka_ev", 130.0))
        lines = candidate_lines(
            self.lookup_energy,
            beam_energy_kev=self.spectra.beam_energy_kev,
            mnka_resolution_ev=mnka,
        )
        return pd.DataFrame([(ln.name, round(ln.energy_kev, 4), round(ln.weight, 3),
                              round(1000 * (ln.energy_kev - self.lookup_energy), 1)) for ln in lines], columns=cols)  # fmt: skip

    @param.depends("lookup_energy")
    def _candidates_table(self) -> pn.viewable.Viewable:
        if self.lookup_energy is None:
            return pn.pane.Markdown(
                "Click the spectrum or type an energy to list the X-ray lines there."
            )
        return pn.widgets.Tabulator(
            self.candidates(),
            show_index=False,
            height=220,
            disabled=True,
            sizing_mode="stretch_width",
        )

    @param.depends("feature")  # edits change clusters, not the line maps: no rebuild on an edit
    def _feature_map(self) -> pn.viewable.Viewable:
        ds = self.state.results
        maps, units = gd.feature_maps(ds)
        if maps is None or self.feature is None:
            return pn.pane.Markdown("No features in these results.")
        label = f"{self.feature} ({units})"
        title = (
            f"{self.feature} net line intensity"
            if units.startswith("counts")
            else f"{self.feature} (z-score)"
        )
        return pn.pane.HoloViews(_image(maps.sel(feature=self.feature).values, ds, label, cmap="viridis", title=title),
                                 sizing_mode="stretch_width")  # fmt: skip

    def __panel__(self) -> pn.viewable.Viewable:
        ds = self.state.results
        nav_name = (
            ds["nav_image"].attrs.get("kind", "navigation").upper() if "nav_image" in ds else None
        )
        # no navigation image (e.g. JEOL .pts): a note, not a HoloViews pane around Markdown
        nav = (pn.pane.HoloViews(_image(ds["nav_image"].values, ds, "intensity", cmap="gray", title=f"{nav_name} image"),
                                 sizing_mode="stretch_width")
               if nav_name else pn.pane.Markdown("No navigation image in these results: the counts map "
                                                 "below shows the scan.", css_classes=["no-nav-image"]))  # fmt: skip
        if "total_counts" in ds:
            tc = ds["total_counts"].values
            counts = _image(tc, ds, "counts", cmap="magma", title="counts per pixel")
            freq, edges = np.histogram(tc, bins=60)
            hist = hv.Histogram((edges, freq), kdims=[hv.Dimension("counts", label="counts per pixel")], vdims=["pixels"]).opts(
                **_PLOT, title="counts-per-pixel histogram", color="#7a4b94")  # fmt: skip
            counts_row: pn.viewable.Viewable = pn.Row(pn.pane.HoloViews(counts, sizing_mode="stretch_width"),
                                pn.pane.HoloViews(hist, sizing_mode="stretch_width"))  # fmt: skip
        else:
            counts_row = pn.pane.Markdown("No total_counts in these results.")
        energy_input = pn.widgets.FloatInput.from_param(self.param.lookup_energy, name="energy (keV)", step=0.01,
                                                        placeholder="e.g. 6.40")  # fmt: skip
        return pn.Column(
            pn.Row(
                nav,
                self._feature_map,
                sizing_mode="stretch_width",
            ),
            pn.widgets.Select.from_param(self.param.feature, name="element map"),
            pn.Row(self.spectra, sizing_mode="stretch_width"),
            pn.pane.HoloViews(
                self._spectrum_dmap.opts(title="mean spectrum per pixel"),
                sizing_mode="stretch_width",
            ),
            pn.Row(
                # a fixed height: the table must not run over the counts map below it
                pn.Column(
                    "### Energy → X-ray lines",
                    energy_input,
                    self._candidates_table,
                    height=340,
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            pn.pane.HTML(
                "<hr>", sizing_mode="stretch_width"
            ),  # not pn.layout.Divider: its CSS comes from a CDN
            counts_row,
            sizing_mode="stretch_width",
        )
