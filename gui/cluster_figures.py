"""Bokeh figures of the Clusters tab, updated in place when the results are edited.

Rebuilding a HoloViews pane re-creates every Bokeh model of its plot (hundreds per figure) and
sends them all to the browser; on a rename that was 8 panes and seconds of server time, and far
more in the browser. Here each figure is built once; an edit changes only what it must:

- the phase map is the label map as a ``uint8`` image (0 = no data, shown grey; ``i + 1`` =
  cluster ``i``) under a categorical colour mapper: a rename changes no image, a recolour only
  the mapper's palette, a merge or refit one 1-byte-per-pixel image; the opacity is the glyph's
  ``global_alpha``;
- probability and binary maps of the chosen cluster are ``uint8`` images (probability in 1/255
  steps) updated in their data sources;
- spectra are one ``multi_line`` source each; the NMF weights a ``rect`` source;
- the particle table is a Tabulator whose value is replaced.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import panel as pn
import xarray as xr
from bokeh.models import (
    ColumnDataSource,
    CustomJSHover,
    DataRange1d,
    FactorRange,
    HoverTool,
    LinearColorMapper,
)
from bokeh.models.annotations import ColorBar, LabelSet  # (bokeh's stubs miss the re-export)
from bokeh.palettes import Blues256, Viridis256
from bokeh.plotting import figure

from gui import data as gd
from gui.images import ScreenImage, full_extent_ranges, grey_rgba, map_image
from gui.live_text import LiveText
from sigma.xray import lines_in_range

__all__ = ["NO_DATA_COLOR", "ClusterFigures", "image_place", "label_image"]

#: colour of no-data pixels (label -1)
NO_DATA_COLOR = "#9e9e9e"
_MAP: dict[str, Any] = {"sizing_mode": "stretch_width", "height": 380, "min_height": 300, "match_aspect": True,
        "toolbar_location": "above", "tools": "pan,wheel_zoom,reset", "output_backend": "canvas"}  # fmt: skip


def image_place(ds: xr.Dataset) -> dict[str, list[float]]:
    """``x, y, dw, dh`` of a ``(y, x)`` image in the scan's coordinates (pixel edges)."""
    x, y = ds["x"].values.astype(float), ds["y"].values.astype(float)
    dx = (x[1] - x[0]) if len(x) > 1 else 1.0
    dy = (y[1] - y[0]) if len(y) > 1 else 1.0
    return {"x": [x[0] - dx / 2], "y": [y[0] - dy / 2], "dw": [len(x) * dx], "dh": [len(y) * dy]}


#: values a label image can hold (uint8: no data and up to 255 clusters); its mappers span them all
LABEL_VALUES = 256


def label_image(ds: xr.Dataset) -> npt.NDArray[np.uint8]:
    """The label map as ``uint8``: 0 for no data (label -1), ``i + 1`` for cluster ``i``."""
    lab = ds["label"].values
    out = np.zeros(lab.shape, np.uint8)
    np.add(lab, 1, out=out, where=lab >= 0, casting="unsafe")
    return out


def _map_figure(ds: xr.Dataset, title: str) -> figure:
    """A map figure whose ranges (and reset) span the whole scan, whatever window is sent."""
    units = ds["x"].attrs.get("units", "px")
    fig = figure(title=title, x_range=DataRange1d(range_padding=0), y_range=DataRange1d(range_padding=0, flipped=True),
                 x_axis_label=f"x ({units})", y_axis_label=f"y ({units})", **_MAP)  # fmt: skip
    full_extent_ranges(fig, image_place(ds))
    return fig


class ClusterFigures:
    """The Clusters tab's Bokeh figures of one session, with in-place updates.

    Parameters
    ----------
    state
        The session's :class:`gui.state.ResultsState`.
    grey
        ``(y, x)`` uint8 navigation image (or counts map) under the phase map.
    """

    def __init__(self, state: Any, grey: npt.NDArray[np.uint8]) -> None:
        self.state = state
        self._grey = grey
        self._labels: ScreenImage | None = None
        self._hover_names: CustomJSHover | None = None
        self._grey_image: ScreenImage | None = None
        self._label_mapper: LinearColorMapper | None = None
        self._label_glyph: Any = None
        self._prob: dict[str, Any] | None = None
        self._spectra: dict[str, Any] | None = None
        self._nmf: dict[str, Any] | None = None
        self._particles: dict[str, Any] | None = None
        self.legend = LiveText("", css_classes=["phase-legend"])

    # -- phase map ------------------------------------------------------------------------
    def _palette(self) -> list[str]:
        """One colour per value of the label image (0: no data), padded to :data:`LABEL_VALUES`.

        The mappers of the label images keep their range (``low``/``high``) through every
        edit: a merge or a new cluster changes the palette only, and each change of a mapper
        makes the page recolour every image drawn with it.
        """
        colors = [NO_DATA_COLOR, *self.state.colors()]
        return colors + [NO_DATA_COLOR] * (LABEL_VALUES - len(colors))

    def phase_map(self, opacity: float) -> figure:
        """Phase map in the cluster colours over the grey image; no-data pixels grey."""
        ds = self.state.results
        fig = _map_figure(ds, "phase map")
        place = image_place(ds)
        self._grey_image = map_image(fig, place, grey_rgba(self._grey), rgba=True)
        self._label_mapper = LinearColorMapper(
            palette=self._palette(), low=-0.5, high=LABEL_VALUES - 0.5
        )
        self._labels = map_image(fig, place, label_image(ds), color_mapper=self._label_mapper,
                                 global_alpha=opacity, name="phases")  # fmt: skip
        self._label_glyph = fig.select_one({"name": "phases"})
        # the label image holds cluster + 1 (0: no data): the tooltip names the cluster (a plain
        # "@image{0} - 1" format showed the text "5 - 1")
        self._hover_names = CustomJSHover(args={"labels": self.state.labels()},
                                          code="return value > 0 ? labels[value - 1] : 'no data'")  # fmt: skip
        fig.add_tools(HoverTool(tooltips=[("x", "$x{0.00}"), ("y", "$y{0.00}"), ("cluster", "@image{custom}")],
                                formatters={"@image": self._hover_names}, renderers=[self._label_glyph]))  # fmt: skip
        self.update_legend()
        return fig

    def set_labels(self) -> None:
        """The results' label map in the phase map and the binary map (sent only where it changed)."""
        image = label_image(self.state.results)
        if self._labels is not None:
            self._labels.set(image)
        if self._prob is not None:
            self._prob["binary_image"].set(image)

    def update_legend(self) -> None:
        """Legend entries that never wrap inside one entry (and the phase map's hover names)."""
        if (
            self._hover_names is not None
            and list(self._hover_names.args["labels"]) != self.state.labels()
        ):
            self._hover_names.args = {"labels": self.state.labels()}
        items = _legend_items(self.state.labels(), self.state.colors())
        n_nodata = int(np.count_nonzero(self.state.results["label"].values < 0))
        if n_nodata:
            items.append(f"<span style='white-space:nowrap'><span style='color:{NO_DATA_COLOR}'>&#9632;</span> "
                         f"no data ({n_nodata:,} px)</span>")  # fmt: skip
        self.legend.object = _legend_div(items)

    def set_opacity(self, opacity: float) -> None:
        """Phase colours' opacity over the grey image."""
        if self._label_glyph is not None:
            self._label_glyph.glyph.global_alpha = opacity

    # -- per-cluster maps ------------------------------------------------------------------
    def cluster_maps(self, cluster: int) -> tuple[figure, figure]:
        """Probability and binary map of ``cluster``."""
        ds = self.state.results
        prob = _map_figure(ds, "probability")
        mapper = LinearColorMapper(palette=Viridis256, low=0, high=255)
        prob_image = map_image(
            prob, image_place(ds), np.zeros((1, 1), np.uint8), color_mapper=mapper
        )
        prob.add_layout(ColorBar(color_mapper=LinearColorMapper(palette=Viridis256, low=0, high=1), width=10,
                                 title="probability"), "right")  # fmt: skip
        binary = _map_figure(ds, "binary map")
        # the label image under a palette black for the chosen cluster only: showing another
        # cluster, or a merge, sends a palette, not an image
        bmapper = LinearColorMapper(
            palette=self._binary_palette(cluster), low=-0.5, high=LABEL_VALUES - 0.5
        )
        binary_image = map_image(binary, image_place(ds), label_image(ds), color_mapper=bmapper)
        self._prob = {"prob": prob, "prob_image": prob_image, "binary": binary,
                      "binary_image": binary_image, "bmapper": bmapper}  # fmt: skip
        self.update_cluster_maps(cluster)
        return prob, binary

    def _binary_palette(self, cluster: int) -> list[str]:
        """Palette over the label image (0 = no data, ``i + 1`` = cluster ``i``): ``cluster`` black."""
        return ["#000000" if i == cluster + 1 else "#ffffff" for i in range(LABEL_VALUES)]

    def update_cluster_maps(self, cluster: int) -> None:
        """Show ``cluster``'s maps."""
        if self._prob is None:
            return
        ds = self.state.results
        if "probability" in ds:
            p = ds["probability"].isel(cluster=cluster).values
            prob = np.round(np.clip(p, 0, 1) * 255).astype(np.uint8)
        else:
            prob = (ds["label"].values == cluster).view(np.uint8) * np.uint8(255)
        # a merge or a new cluster elsewhere leaves this cluster's map as it is: not sent again;
        # the binary map's labels follow edits in set_labels, here only its palette changes
        self._prob["prob_image"].set(prob)
        bmapper = self._prob["bmapper"]
        palette = self._binary_palette(cluster)
        if list(bmapper.palette) != palette:
            bmapper.palette = palette
        self.set_titles(cluster)

    def set_titles(self, cluster: int) -> None:
        """Titles of the per-cluster maps (all a rename changes)."""
        if self._prob is None:
            return
        name = self.state.names()[cluster]
        self._prob["prob"].title.text = f"{cluster}: {name}: probability"
        self._prob["binary"].title.text = f"{cluster}: {name}: binary map"

    def set_particles_title(self, title: str) -> None:
        """Title of the particle histogram."""
        if self._particles is not None:
            self._particles["hist"].title.text = title

    # -- spectra ---------------------------------------------------------------------------
    def spectra_figure(self, log: bool, title: str, ylabel: str, *, html_legend: bool = False
                       ) -> tuple[figure, dict[str, Any]]:  # fmt: skip
        """An empty spectra figure (lines, line markers) to fill with :meth:`fill_spectra`.

        With ``html_legend`` the legend is ``parts["legend"]`` (a :class:`LiveText` to show above
        the figure), not a Bokeh legend inside it: a legend inside resizes with its entries,
        and the figure is laid out and painted again after each edit that changes them.
        """
        fig = figure(title=title, y_axis_type="log" if log else "linear", sizing_mode="stretch_width", height=340,
                     min_height=300, toolbar_location="above", tools="pan,wheel_zoom,reset",
                     x_axis_label="X-ray energy (keV)", y_axis_label=ylabel, output_backend="canvas")  # fmt: skip
        src = ColumnDataSource({"xs": [], "ys": [], "color": [], "label": []})
        legend_opts = {} if html_legend else {"legend_field": "label"}
        lines = fig.multi_line(
            "xs", "ys", line_color="color", line_width=1.5, source=src, **legend_opts
        )
        fig.add_tools(HoverTool(tooltips=[("", "@label"), ("energy", "$x{0.000} keV"), ("value", "$y{0.00}")],
                                renderers=[lines]))  # fmt: skip
        markers = ColumnDataSource({"energy": [], "y": [], "line": []})
        fig.vspan(
            x="energy", source=markers, line_color="#555555", line_dash="dashed", line_alpha=0.6
        )
        fig.add_layout(LabelSet(x="energy", y="y", text="line", source=markers, angle=np.pi / 2, text_font_size="8pt",
                                text_baseline="middle", x_offset=-4))  # fmt: skip
        parts = {"fig": fig, "src": src, "markers": markers, "log": log}
        if html_legend:
            parts["legend"] = LiveText("", css_classes=["spectra-legend"])
        else:
            legend = fig.legend[0]
            legend.label_text_font_size = "8pt"
            # beside the plot: the legend never hides lines or labels
            fig.add_layout(legend, "right")
        return fig, parts

    def fill_spectra(self, parts: dict[str, Any], curves: dict[str, tuple[npt.NDArray[Any], str]],
                     elements: list[str], beam_energy_kev: float | None) -> None:  # fmt: skip
        """Put ``curves`` ({label: (values over energy, colour)}) and the line markers in place."""
        ds = self.state.results
        keep = gd.display_channels(ds)
        e = ds["energy"].values[keep]
        ys = [np.asarray(v, dtype=np.float64)[keep] for v, _ in curves.values()]
        top = max((float(np.max(v)) for v in ys if v.size), default=1.0) or 1.0
        if parts["log"]:
            ys = [np.maximum(v, top * 1e-4) for v in ys]
        colors, labels = [c for _, c in curves.values()], list(curves)
        # An edit fills the spectra from several watchers (the shown clusters, the results); what
        # the page already has is not sent again (each resend repaints the figure in the browser).
        last = parts.get("_last")
        same_curves = (
            last is not None
            and last["labels"] == labels
            and last["colors"] == colors
            and len(last["ys"]) == len(ys)
            and np.array_equal(last["e"], e)
            and all(np.array_equal(a, b) for a, b in zip(last["ys"], ys, strict=True))
        )
        if not same_curves:
            parts["src"].data = {"xs": [e] * len(ys), "ys": ys, "color": colors, "label": labels}
        if "legend" in parts:
            parts["legend"].object = legend_html(labels, colors)
        lines = (
            lines_in_range(elements, (float(e[0]), float(e[-1])), beam_energy_kev=beam_energy_kev, min_weight=0.3)
            if elements
            else []
        )  # fmt: skip
        lines = _spread_labels(lines, min_gap_kev=(float(e[-1]) - float(e[0])) / 70)  # ~12 px apart
        y = top * (0.5 if parts["log"] else 0.9)
        markers = {"energy": [ln.energy_kev for ln in lines], "y": [y] * len(lines),
                   "line": [ln.name for ln in lines]}  # fmt: skip
        if last is None or last["markers"] != markers:
            parts["markers"].data = markers
        parts["_last"] = {"labels": labels, "colors": colors, "e": e, "ys": ys, "markers": markers}

    # -- NMF weights -------------------------------------------------------------------------
    def nmf_weights(self) -> figure:
        """Heat map of each cluster's NMF weights."""
        units = self.state.results["nmf_weight"].attrs.get("units", "")
        fig = figure(title="NMF weight per cluster", x_range=FactorRange(), y_range=FactorRange(),
                     sizing_mode="stretch_width", height=340, min_height=300, toolbar_location=None,
                     tools="hover", tooltips=[("cluster", "@cluster"), ("component", "@component"),
                                              ("share of the cluster", "@share{0.0%}"),
                                              ("weight", f"@weight{{0.000}} {units}".rstrip())],
                     output_backend="canvas")  # fmt: skip
        src = ColumnDataSource(
            {"cluster": [], "component": [], "weight": [], "share": [], "color": []}
        )
        # colour: each cluster's share of its summed weights on a fixed 0-1 scale, mapped here: a
        # mapper in the page re-measures its colour bar whenever it maps new data, and the
        # figure is laid out again (4 times per edit); the bar's own mapper maps nothing else
        mapper = LinearColorMapper(palette=Blues256[::-1], low=0, high=1)
        fig.rect("component", "cluster", 1, 1, source=src, fill_color="color", line_color=None)
        fig.add_layout(ColorBar(color_mapper=mapper, width=10, title="share"), "right")
        fig.xaxis.major_label_orientation = np.pi / 4
        self._nmf = {"fig": fig, "src": src, "mapper": mapper}
        self.update_nmf_weights()
        return fig

    def update_nmf_weights(self) -> None:
        """Refill the NMF weight heat map (clusters may have changed)."""
        if self._nmf is None or "nmf_weight" not in self.state.results:
            return
        w = self.state.results["nmf_weight"].transpose("cluster", "component").values
        labels = self.state.short_labels()
        comps = [f"component {j}" for j in range(w.shape[1])]
        ii, jj = np.meshgrid(np.arange(w.shape[0]), np.arange(w.shape[1]), indexing="ij")
        self._nmf["fig"].x_range.factors = comps
        self._nmf["fig"].y_range.factors = labels[::-1]
        rows = w.sum(axis=1, keepdims=True)
        ok = np.isfinite(rows) & (rows > 0)
        share = np.divide(w, rows, out=np.full(w.shape, np.nan), where=ok)  # NaN: no weights
        palette = np.array(self._nmf["mapper"].palette)
        flat = share.ravel()
        index = np.clip(np.nan_to_num(flat * len(palette)).astype(int), 0, len(palette) - 1)
        colors = np.where(np.isfinite(flat), palette[index], self._nmf["mapper"].nan_color)
        self._nmf["src"].data = {"cluster": [labels[i] for i in ii.ravel()],
                                 "component": [comps[j] for j in jj.ravel()], "weight": w.ravel(),
                                 "share": share.ravel(), "color": colors.tolist()}  # fmt: skip

    # -- particles -------------------------------------------------------------------------
    def particles(self, table: pd.DataFrame, title: str) -> pn.Row:
        """Particle table and equivalent-diameter histogram, filled by :meth:`update_particles`."""
        dcol = [c for c in table.columns if c.startswith("equivalent_diameter")][0]
        hist = figure(title=title, sizing_mode="stretch_width", height=300, toolbar_location=None, tools="",
                      x_axis_label=dcol, y_axis_label="particles", output_backend="canvas")  # fmt: skip
        src = ColumnDataSource({"left": [], "right": [], "top": []})
        hist.quad(left="left", right="right", top="top", bottom=0, source=src, color="#2a7f62")
        tab = pn.widgets.Tabulator(
            table.round(4), height=300, disabled=True, pagination="remote", page_size=10
        )
        self._particles = {"hist": hist, "src": src, "table": tab, "dcol": dcol}
        self.update_particles(table, title)
        return pn.Row(
            tab, pn.pane.Bokeh(hist, sizing_mode="stretch_width"), sizing_mode="stretch_width"
        )

    def update_particles(self, table: pd.DataFrame, title: str) -> None:
        """Show ``table`` (one cluster's particles)."""
        if self._particles is None:
            return
        p = self._particles
        if p.get("table_shown") is table:  # the same particles (an edit elsewhere): title only
            p["hist"].title.text = title
            return
        p["table_shown"] = table
        if len(table):
            freq, edges = np.histogram(table[p["dcol"]].values, bins=min(30, max(len(table), 1)))
        else:
            freq, edges = np.zeros(1), np.array([0.0, 1.0])
        p["src"].data = {"left": edges[:-1], "right": edges[1:], "top": freq}
        p["hist"].title.text = title
        p["table"].value = table.round(4)


def _legend_items(labels: list[str], colors: list[str]) -> list[str]:
    """One HTML legend entry per label, a square in its colour; an entry never wraps inside."""
    return [f"<span style='white-space:nowrap;margin-right:1em'><span style='color:{c}'>&#9632;</span> {html.escape(label)}</span>"
            for label, c in zip(labels, colors, strict=True)]  # fmt: skip


def legend_html(labels: list[str], colors: list[str]) -> str:
    """An HTML legend of ``labels`` in ``colors`` that wraps between entries only."""
    return _legend_div(_legend_items(labels, colors))


def _legend_div(items: list[str]) -> str:
    """Legend entries in a row that wraps between entries only."""
    return "<div style='display:flex;flex-wrap:wrap'>" + "".join(items) + "</div>"


def _spread_labels(lines: list[Any], min_gap_kev: float = 0.06) -> list[Any]:
    """Drop the weaker of two line labels closer than ``min_gap_kev`` (below 2 keV they overlap)."""
    kept: list[Any] = []
    for ln in sorted(lines, key=lambda ln: -ln.weight):
        if all(abs(ln.energy_kev - k.energy_kev) >= min_gap_kev for k in kept):
            kept.append(ln)
    return sorted(kept, key=lambda ln: ln.energy_kev)
