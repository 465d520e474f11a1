"""The GUI's "Phases" tab: library names, match table, compositions and a ternary plot.

Reads only the results dataset (the variables :mod:`sigma.phases` and :mod:`sigma.quantify`
add: ``match_*``, ``cluster_lines``, ``composition_*``); results without them show a note.
"""

from __future__ import annotations

import math
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
import xarray as xr

__all__ = ["PhasesView", "match_frame", "composition_frame", "ternary_points"]


def match_frame(ds: xr.Dataset) -> pd.DataFrame:
    """One row per cluster: name, kind, confidence, the three best candidates, mixture, lines."""
    k = ds.sizes["cluster"]
    rows = []
    for c in range(k):
        row: dict[str, Any] = {"cluster": c, "name": str(ds["cluster_name"].values[c])}
        if "match_kind" in ds:
            row["match"] = str(ds["match_kind"].values[c])
            conf = float(ds["match_confidence"].values[c])
            row["confidence"] = round(conf, 3) if math.isfinite(conf) else None
            for r in range(ds.sizes.get("rank", 0)):
                name = str(ds["match_name"].values[c, r])
                misfit = float(ds["match_misfit"].values[c, r])
                row[f"candidate {r + 1}"] = f"{name} ({misfit:.2g})" if name else ""
            row["best mixture"] = str(ds["match_mixture"].values[c])
            row["lines"] = str(ds["cluster_lines"].values[c])
        rows.append(row)
    return pd.DataFrame(rows)


def composition_frame(ds: xr.Dataset) -> pd.DataFrame:
    """Atomic percent +- counting error of every element, one row per cluster."""
    if "composition_at" not in ds:
        return pd.DataFrame()
    els = [str(e) for e in ds["element"].values]
    at = ds["composition_at"].values * 100
    err = ds["composition_at_error"].values * 100
    rows = []
    for c in range(ds.sizes["cluster"]):
        row: dict[str, Any] = {"cluster": c, "name": str(ds["cluster_name"].values[c])}
        for e, el in enumerate(els):
            row[f"{el} at.%"] = f"{at[c, e]:.1f} ± {err[c, e]:.1f}" if np.isfinite(at[c, e]) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def ternary_points(ds: xr.Dataset, elements: list[str]) -> pd.DataFrame:
    """Ternary (x, y) of each cluster's atomic fractions of three elements (normalised)."""
    if "composition_at" not in ds or len(elements) != 3:
        return pd.DataFrame(columns=["x", "y", "name", "color"])
    a, b, c = (ds["composition_at"].sel(element=el).values for el in elements)
    total = a + b + c
    with np.errstate(invalid="ignore", divide="ignore"):
        bn, cn = b / total, c / total
    df = pd.DataFrame(
        {
            "x": bn + 0.5 * cn,
            "y": cn * math.sqrt(3) / 2,
            "name": [str(v) for v in ds["cluster_name"].values],
            "color": [str(v) for v in ds["cluster_color"].values]
            if "cluster_color" in ds
            else "#1f77b4",
        }
    )
    return df[np.isfinite(df["x"]) & np.isfinite(df["y"])]


class PhasesView(pn.viewable.Viewer):
    """Library match table, compositions and a ternary plot for three chosen elements."""

    corner_a: str | None = param.Selector(objects=[], doc="bottom-left element")  # type: ignore[assignment]
    corner_b: str | None = param.Selector(objects=[], doc="bottom-right element")  # type: ignore[assignment]
    corner_c: str | None = param.Selector(objects=[], doc="top element")  # type: ignore[assignment]

    def __init__(self, state: Any, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._set_elements()
        state.param.watch(lambda *_: self._set_elements(), "results")

    def _set_elements(self) -> None:
        ds = self.state.results
        els = [str(e) for e in ds["element"].values] if "element" in ds.coords else []
        if "composition_at" in ds and els:
            order = np.argsort(-np.nanmax(ds["composition_at"].values, axis=0))
            els = [els[i] for i in order]
        for i, name in enumerate(("corner_a", "corner_b", "corner_c")):
            self.param[name].objects = els
            if els:
                setattr(self, name, els[min(i, len(els) - 1)])

    @param.depends("state.results")
    def _tables(self) -> pn.viewable.Viewable:
        ds = self.state.results
        if "match_kind" not in ds and "composition_at" not in ds:
            return pn.pane.Markdown(
                "These results have no library names or compositions (element-map input, or "
                "made with `library: none` / an older sigma)."
            )
        return pn.Column(
            pn.pane.Markdown(
                "**Library match** (candidate misfit: chi-square per degree of freedom; "
                "*unmatched* when no entry explains the spectrum with confidence)"
            ),
            pn.widgets.Tabulator(match_frame(ds), disabled=True, show_index=False),
            pn.pane.Markdown(
                f"**Composition** ({ds.attrs.get('quantification', '')}; ± counting error)"
            ),
            pn.widgets.Tabulator(composition_frame(ds), disabled=True, show_index=False),
        )

    @param.depends("state.results", "corner_a", "corner_b", "corner_c")
    def _ternary(self) -> pn.viewable.Viewable:
        ds = self.state.results
        corners = [c for c in (self.corner_a, self.corner_b, self.corner_c) if c is not None]
        if len(set(corners)) < 3:
            return pn.pane.Markdown("Choose three different elements for the ternary plot.")
        pts = ternary_points(ds, corners)
        h = math.sqrt(3) / 2
        frame = hv.Curve([(0, 0), (1, 0), (0.5, h), (0, 0)]).opts(color="gray")
        labels = hv.Labels(
            {"x": [-0.04, 1.04, 0.5], "y": [-0.04, -0.04, h + 0.05], "text": corners},
            ["x", "y"],
            "text",
        )
        scatter = hv.Points(pts, ["x", "y"], ["name", "color"]).opts(
            color="color", size=12, line_color="black", tools=["hover"]
        )
        return pn.pane.HoloViews(
            (frame * scatter * labels).opts(
                width=460,
                height=420,
                xaxis=None,
                yaxis=None,
                title="atomic fractions",
                show_grid=False,
            )
        )

    def __panel__(self) -> pn.viewable.Viewable:
        widgets = pn.Row(
            pn.widgets.Select.from_param(self.param.corner_a, name="left"),
            pn.widgets.Select.from_param(self.param.corner_b, name="right"),
            pn.widgets.Select.from_param(self.param.corner_c, name="top"),
        )
        return pn.Row(self._tables, pn.Column(widgets, self._ternary))
