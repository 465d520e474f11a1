"""The GUI's "Phases" tab: library names, match table, compositions and a ternary plot.

Reads only the results dataset (the variables :mod:`sigma.phases` and :mod:`sigma.quantify`
add: ``match_*``, ``cluster_lines``, ``composition_*``); results without them show a note.
"""

from __future__ import annotations

import math
from typing import Any

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


def _patch_table(table: pn.widgets.Tabulator, frame: pd.DataFrame) -> None:
    """Show ``frame`` in ``table``: the changed cells only when the rows and columns are the same.

    A rename changes one cell: that cell is sent, not the table (whose rows the browser would
    draw again).
    """
    old = table.value
    if old is not None and list(old.columns) == list(frame.columns) and len(old) == len(frame):
        patch: dict[str, list[tuple[int, Any]]] = {}
        for col in frame.columns:
            new_col, old_col = frame[col].tolist(), old[col].tolist()
            changed = [(i, v) for i, (v, w) in enumerate(zip(new_col, old_col, strict=True))
                       if not (v == w or (v != v and w != w))]  # fmt: skip
            if changed:
                patch[col] = changed
        if patch:
            table.patch(patch)
        return
    table.value = frame


class PhasesView(pn.viewable.Viewer):
    """Library match table, compositions and a ternary plot for three chosen elements.

    Built once; an edit patches the changed table cells and the ternary plot's points (it used
    to rebuild the tab, tables and plot, on every edit once opened).
    """

    corner_a: str | None = param.Selector(objects=[], doc="bottom-left element")  # type: ignore[assignment]
    corner_b: str | None = param.Selector(objects=[], doc="bottom-right element")  # type: ignore[assignment]
    corner_c: str | None = param.Selector(objects=[], doc="top element")  # type: ignore[assignment]

    def __init__(self, state: Any, **params: Any) -> None:
        super().__init__(**params)
        self.state = state
        self._set_elements()
        self._parts: dict[str, Any] | None = None
        state.param.watch(lambda *_: self._on_results(), "results")
        self.param.watch(lambda *_: self._fill_ternary(), ["corner_a", "corner_b", "corner_c"])

    def _set_elements(self) -> None:
        ds = self.state.results
        els = [str(e) for e in ds["element"].values] if "element" in ds.coords else []
        if "composition_at" in ds and els:
            order = np.argsort(-np.nanmax(ds["composition_at"].values, axis=0))
            els = [els[i] for i in order]
        corners = ("corner_a", "corner_b", "corner_c")
        if els == list(self.param["corner_a"].objects):
            return  # the same elements: keep the user's corners
        with param.parameterized.batch_call_watchers(self):
            for i, name in enumerate(corners):
                self.param[name].objects = els
                if els:
                    setattr(self, name, els[min(i, len(els) - 1)])

    def _on_results(self) -> None:
        self._set_elements()
        if self._parts is not None:
            self._fill_tables()
            self._fill_ternary()

    def _fill_tables(self) -> None:
        assert self._parts is not None
        ds = self.state.results
        has = "match_kind" in ds or "composition_at" in ds
        self._parts["note"].visible = not has
        self._parts["tables"].visible = has
        if has:
            _patch_table(self._parts["match"], match_frame(ds))
            _patch_table(self._parts["composition"], composition_frame(ds))
            self._parts[
                "quant"
            ].object = f"**Composition** ({ds.attrs.get('quantification', '')}; ± counting error)"

    def _fill_ternary(self) -> None:
        if self._parts is None:
            return
        corners = [c for c in (self.corner_a, self.corner_b, self.corner_c) if c is not None]
        ok = len(set(corners)) == 3
        self._parts["ternary_note"].visible = not ok
        self._parts["ternary"].visible = ok
        pts = ternary_points(self.state.results, corners if ok else [])
        self._parts["points"].data = {
            "x": pts["x"].to_numpy(float),
            "y": pts["y"].to_numpy(float),
            "name": [str(v) for v in pts["name"]],
            "color": [str(v) for v in pts["color"]],
        }
        if ok:
            self._parts["corners"].data = {**self._parts["corners"].data, "text": corners}

    def _build(self) -> None:
        if self._parts is not None:
            return
        from bokeh.models import ColumnDataSource, HoverTool, Range1d
        from bokeh.models.annotations import LabelSet  # (bokeh's stubs miss the re-export)
        from bokeh.plotting import figure

        h = math.sqrt(3) / 2
        fig = figure(title="atomic fractions", width=460, height=420, toolbar_location=None,
                     tools="", x_range=Range1d(start=-0.1, end=1.1), y_range=Range1d(start=-0.1, end=h + 0.12), output_backend="canvas")  # fmt: skip
        fig.axis.visible = False
        fig.grid.visible = False
        fig.line([0, 1, 0.5, 0], [0, 0, h, 0], color="gray")
        points = ColumnDataSource({"x": [], "y": [], "name": [], "color": []})
        glyph = fig.scatter("x", "y", source=points, color="color", size=12, line_color="black")
        fig.add_tools(HoverTool(tooltips=[("", "@name")], renderers=[glyph]))
        corners = ColumnDataSource({"x": [-0.04, 1.04, 0.5], "y": [-0.06, -0.06, h + 0.05],
                                    "text": ["", "", ""]})  # fmt: skip
        fig.add_layout(LabelSet(x="x", y="y", text="text", source=corners, text_align="center"))
        tables = pn.Column(
            pn.pane.Markdown(
                "**Library match** (candidate misfit: chi-square per degree of freedom; "
                "*unmatched* when no entry explains the spectrum with confidence)"
            ),
            match := pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False),
            quant := pn.pane.Markdown(""),
            composition := pn.widgets.Tabulator(pd.DataFrame(), disabled=True, show_index=False),
        )
        note = pn.pane.Markdown(
            "These results have no library names or compositions (element-map input, or "
            "made with `library: none` / an older sigma)."
        )
        self._parts = {"tables": tables, "note": note, "match": match, "composition": composition,
                       "quant": quant, "points": points, "corners": corners,
                       "ternary": pn.pane.Bokeh(fig),
                       "ternary_note": pn.pane.Markdown("Choose three different elements for the ternary plot.")}  # fmt: skip
        self._fill_tables()
        self._fill_ternary()

    def __panel__(self) -> pn.viewable.Viewable:
        self._build()
        assert self._parts is not None
        widgets = pn.Row(
            pn.widgets.Select.from_param(self.param.corner_a, name="left"),
            pn.widgets.Select.from_param(self.param.corner_b, name="right"),
            pn.widgets.Select.from_param(self.param.corner_c, name="top"),
        )
        p = self._parts
        return pn.Row(pn.Column(p["note"], p["tables"]),
                      pn.Column(widgets, p["ternary_note"], p["ternary"]))  # fmt: skip
