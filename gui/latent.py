"""Latent tab: latent density, GMM ellipses, lasso/box selection and the linked views.

The linked map, spectrum and feature bars are Bokeh figures whose sources are updated in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

import datashader as dsh
import holoviews as hv
import numpy as np
import numpy.typing as npt
import pandas as pd
import panel as pn
import param
import xarray as xr
from bokeh.events import RangesUpdate, SelectionGeometry
from bokeh.models import (
    ColorMapper,
    ColumnDataSource,
    DataRange1d,
    EqHistColorMapper,
    FactorRange,
    HoverTool,
    LassoSelectTool,
    LinearColorMapper,
    LogColorMapper,
    Range1d,
    WheelZoomTool,
)
from bokeh.models.annotations import ColorBar, LabelSet  # (bokeh's stubs miss the re-export)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure
from bokeh.transform import dodge

from gui import data as gd
from gui.cluster_figures import _spread_labels
from gui.images import (
    ScreenImage,
    _grey_u8,
    full_extent_ranges,
    grey_rgba,
    map_image,
    screen_extent,
)
from gui.live_text import LiveText
from gui.spectra import SpectrumView
from gui.state import ResultsState, guarded
from sigma.xray import lines_in_range


def shade_categories(agg: npt.NDArray[Any], colors: list[str], *, how: str = "eq_hist",
                     min_alpha: int = 60) -> npt.NDArray[np.uint32]:  # fmt: skip
    """RGBA (uint32) of a ``(height, width, category)`` count aggregate, as ``datashader.tf.shade``.

    Each cell's colour is the count-weighted mean of its categories' ``colors``; its opacity
    runs from ``min_alpha`` to 255 with the cell's total count, scaled by ``how`` ("eq_hist",
    "log" or "linear"); empty cells are transparent. datashader's shade gives the same picture
    (within one level of 255) in 2-4 times the time: its generic colouring was most of a
    re-render after an edit.
    """
    from matplotlib.colors import to_rgb

    h, w, n = agg.shape
    flat = agg.reshape(-1, n).astype(np.float32)
    rgb_of = np.array([to_rgb(c) for c in colors[:n]], np.float32) * 255
    total = flat.sum(axis=1)
    nz = np.flatnonzero(total > 0)
    t = total[nz].astype(np.float64)
    if how == "eq_hist":  # the rank of each total among the occupied cells' totals
        _, inverse, freq = np.unique(t, return_inverse=True, return_counts=True)
        cdf = np.cumsum(freq).astype(np.float64)
        level = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
        a = level[inverse]
    else:
        v = t - (t.min() if t.size else 0.0)  # from the smallest occupied count, as datashader
        v = np.log1p(v) if how == "log" else v
        a = v / max(float(v.max()) if v.size else 0.0, 1e-12)
    rgb = np.round((flat[nz] @ rgb_of) / total[nz, None]).astype(np.uint32)
    alpha = np.round(min_alpha + a * (255 - min_alpha)).astype(np.uint32)
    out = np.zeros(h * w, np.uint32)
    out[nz] = rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16) | (alpha << 24)
    return out.reshape(h, w)


def _transparent_mapper(color: str) -> LinearColorMapper:
    """Colour map of a 0/1 mask: 0 transparent, 1 ``color``."""
    return LinearColorMapper(palette=["rgba(0, 0, 0, 0)", color], low=0, high=1)


def _density_mapper(shading: str) -> ColorMapper:
    """Viridis colour map with datashader's ``cnorm`` names: eq_hist, log, linear; no-data transparent."""
    cls = {"eq_hist": EqHistColorMapper, "log": LogColorMapper, "linear": LinearColorMapper}[
        shading
    ]
    return cls(palette=Viridis256, nan_color="rgba(0, 0, 0, 0)")


def _selection_geometry(event: SelectionGeometry) -> tuple[str, Any] | None:
    """A Bokeh selection event as ``("poly", (n, 2) vertices)`` or ``("rect", (x0, y0, x1, y1))``."""
    geom: dict[str, Any] = dict(event.geometry or {})
    if not event.final:
        return None
    if geom.get("type") == "poly":
        return "poly", np.column_stack([np.asarray(geom["x"], float), np.asarray(geom["y"], float)])
    if geom.get("type") == "rect":
        return "rect", (float(geom["x0"]), float(geom["y0"]), float(geom["x1"]), float(geom["y1"]))
    return None


def _forward_geometry(event: SelectionGeometry, lasso: Any, bounds: Any) -> None:
    """Send a final Bokeh lasso to the ``lasso`` stream and a final box to ``bounds``."""
    geom = _selection_geometry(event)
    if geom is None:
        return
    if geom[0] == "poly":
        lasso.event(geometry=geom[1])
    else:
        bounds.event(bounds=geom[1])


class LatentView(pn.viewable.Viewer):
    """Latent tab: datashaded density of every pixel, GMM ellipses, lasso/box selection, linked views.

    The four linked plots are plain Bokeh figures whose data sources are updated in place when the
    selection changes (no HoloViews element is rebuilt): the selected-points layer is a bincount
    of the selected pixels on the plot's current pixel grid, the map tint a 0/1 mask image over
    the navigation image, the spectrum and the feature bars a few hundred numbers. Datashader
    re-aggregates the density and cluster layers only when the view (pan/zoom) or the results change.
    ``lasso``/``bounds`` (and ``map_lasso``/``map_bounds``) are HoloViews streams fed by the
    figures' Bokeh selection events, so code and tests can drive them with ``.event(...)``.
    """

    shading: str = param.Selector(  # type: ignore[assignment]
        default="eq_hist", objects=["eq_hist", "log", "linear"], doc="density colour scaling"
    )
    color_by: str = param.Selector(  # type: ignore[assignment]
        default="cluster", objects=["cluster", "density"], doc="colour points by"
    )
    show_ellipses = param.Boolean(default=True, doc="draw the GMM 2-sigma ellipses")
    color_key = param.List(default=[], doc="cluster colours (internal)")
    tab_visible = param.Boolean(
        default=True, doc="the Latent tab is shown (edits elsewhere re-colour it when it is)"
    )
    cluster_alpha = param.Number(
        default=1.0, bounds=(0, 1), doc="opacity of the cluster colours (internal)"
    )

    #: canvas of the datashader layers before the browser reports the plot's size
    default_size: tuple[int, int] = (600, 420)

    def __init__(self, state: ResultsState, spectra: SpectrumView, **params: Any) -> None:
        super().__init__(**params)
        self.state, self.spectra = state, spectra
        self.color_key = state.colors()
        self._frame = self._points_frame()
        self._feature_all: npt.NDArray[np.float64] | None = None
        self._selection_means: tuple[xr.Dataset, gd.SelectionMeans] | None = None
        self._overall_spectrum: tuple[xr.Dataset, npt.NDArray[Any]] | None = None
        self._latent_figs: list[dict[str, Any]] = []
        #: redraws asked for while the tab was hidden, run when it is shown (:meth:`_hidden`)
        self._pending: dict[str, Callable[[], None]] = {}
        #: the last aggregation: (points frame, grid, (height, width, category) counts)
        self._agg_cache: tuple[pd.DataFrame, Any, npt.NDArray[Any]] | None = None
        #: the selection masks of the map figures (the navigation images: ``_map_images``)
        self._map_sources: list[ScreenImage] = []
        self._map_images: list[ScreenImage] = []
        self._spectrum_parts: list[dict[str, Any]] = []
        self._bar_sources: list[ColumnDataSource] = []
        self.lasso = hv.streams.Lasso()
        self.bounds = hv.streams.BoundsXY()
        self.lasso.add_subscriber(self._on_lasso)
        self.bounds.add_subscriber(self._on_bounds)
        self.map_lasso = hv.streams.Lasso()
        self.map_bounds = hv.streams.BoundsXY()
        self.map_lasso.add_subscriber(lambda geometry=None: self.select_map_polygon(geometry))
        self.map_bounds.add_subscriber(lambda bounds=None: self.select_map_box(bounds))
        self.summary = LiveText(self.summary_text(), css_classes=["selection-count"])
        state.param.watch(self._on_selection, ["selection_version"])
        state.param.watch(self._on_results, ["results_version"])
        self.param.watch(self._on_style, ["shading", "color_key"])
        self.param.watch(self._on_alpha, ["cluster_alpha"])
        self.param.watch(self._on_ellipses, ["show_ellipses"])
        state.param.watch(self._on_ellipses, ["hidden"])
        self.spectra.param.watch(self._on_elements, ["elements"])

    @param.depends("color_by", watch=True)
    def _on_color_by(self) -> None:
        self.cluster_alpha = 1.0 if self.color_by == "cluster" else 0.0

    # -- data
    def _points_frame(self) -> pd.DataFrame:
        ds, xy = self.state.results, self.state.xy
        lab = ds["label"].values.ravel().astype(np.int64)
        k = gd.n_clusters(ds)
        # a fixed number of categories (32, or k when more): numba compiles datashader's count_cat
        # once per number of categories, so a merge or a new cluster must not change it (1.4 s)
        n_cats = max(32, k)
        cats = pd.Categorical.from_codes(
            np.where(lab < k, lab, -1), categories=[str(i) for i in range(n_cats)]
        )
        return pd.DataFrame({"latent 0": xy[:, 0], "latent 1": xy[:, 1], "cluster": cats})

    def _extent(self) -> tuple[float, float, float, float]:
        xy = self.state.xy
        if not len(xy):
            return -1.0, 1.0, -1.0, 1.0
        (x0, y0), (x1, y1) = xy.min(axis=0).astype(float), xy.max(axis=0).astype(float)
        px, py = 0.05 * max(x1 - x0, 1e-9), 0.05 * max(y1 - y0, 1e-9)
        return x0 - px, x1 + px, y0 - py, y1 + py

    def layers(self, x_range: tuple[float, float], y_range: tuple[float, float], width: int,
               height: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint32]]:  # fmt: skip
        """Density (counts, NaN where empty) and cluster-colour RGBA of all pixels on a ``width`` x ``height`` grid.

        One datashader aggregation (counts per cluster) gives both; rows go up in latent 1.
        """
        key = (tuple(x_range), tuple(y_range), width, height)
        cached = self._agg_cache
        if cached is not None and cached[0] is self._frame and cached[1] == key:
            agg = cached[2]  # a recolour or a new shading: same points, same grid
        else:
            cvs = dsh.Canvas(plot_width=width, plot_height=height, x_range=x_range, y_range=y_range)
            per_cluster = cvs.points(
                self._frame, "latent 0", "latent 1", agg=dsh.count_cat("cluster")
            )
            agg = np.asarray(per_cluster.values)
            self._agg_cache = (self._frame, key, agg)
        counts = agg.sum(axis=2, dtype=np.float32)
        rgba = shade_categories(agg, list(self._color_map().values()), how=self.shading)
        counts[counts == 0] = np.nan
        return counts, rgba

    def _color_map(self) -> dict[str, str]:
        """Colour of every category of the points frame (the padding categories hold no points)."""
        n_cats = len(self._frame["cluster"].cat.categories)
        return {
            str(i): (self.color_key[i] if i < len(self.color_key) else "#000000")
            for i in range(n_cats)
        }

    def _bin_index(self, fig: dict[str, Any]) -> npt.NDArray[np.int32]:
        """Index of each pixel's latent point in the figure's current grid (-1 outside), cached per view."""
        key = fig["grid"]
        if fig.get("bins_key") != key:
            (x0, x1), (y0, y1), w, h = key
            xy = self.state.xy
            ix = np.floor((xy[:, 0] - x0) * (w / (x1 - x0))).astype(np.int32)
            iy = np.floor((xy[:, 1] - y0) * (h / (y1 - y0))).astype(np.int32)
            idx = iy * w + ix
            idx[(ix < 0) | (ix >= w) | (iy < 0) | (iy >= h)] = -1
            fig["bins"], fig["bins_key"] = idx, key
        return fig["bins"]

    def selected_layer(self, fig: dict[str, Any]) -> npt.NDArray[np.uint8]:
        """1 where a selected pixel's latent point falls in the figure's grid cell, else 0."""
        (_, _), (_, _), w, h = fig["grid"]
        sel = self.state.selection
        if sel is None:
            return np.zeros((h, w), np.uint8)
        idx = self._bin_index(fig)[sel]
        hits = np.bincount(idx[idx >= 0], minlength=w * h)
        return (hits > 0).astype(np.uint8).reshape(h, w)

    # -- the latent figure
    def latent_plot(self) -> figure:
        """The latent figure: density, cluster colours, selection, ellipses; lasso/box select pixels."""
        x0, x1, y0, y1 = self._extent()
        fig = figure(title="latent space (lasso or box to select)", x_range=Range1d(start=x0, end=x1), y_range=Range1d(start=y0, end=y1),
                     tools="pan,wheel_zoom,box_select,lasso_select,reset", toolbar_location="above",
                     sizing_mode="stretch_width", height=460, min_height=420, x_axis_label="latent 0 (arbitrary units)",
                     y_axis_label="latent 1 (arbitrary units)", output_backend="canvas")  # fmt: skip
        fig.toolbar.active_drag = cast(Any, fig).select_one(LassoSelectTool)
        fig.toolbar.active_scroll = cast(Any, fig).select_one(WheelZoomTool)
        image = {
            "image": [np.zeros((1, 1), np.float32)],
            "x": [x0],
            "y": [y0],
            "dw": [x1 - x0],
            "dh": [y1 - y0],
        }
        mapper = _density_mapper(self.shading)
        density = fig.image(
            source=ColumnDataSource(dict(image)), color_mapper=mapper, name="density"
        )
        clusters = fig.image_rgba(source=ColumnDataSource({**image, "image": [np.zeros((1, 1), np.uint32)]}),
                                  name="clusters", global_alpha=self.cluster_alpha)  # fmt: skip
        selected = fig.image(source=ColumnDataSource({**image, "image": [np.zeros((1, 1), np.uint8)]}),
                             color_mapper=_transparent_mapper("#ff2020"), global_alpha=0.9, name="selected")  # fmt: skip
        ellipses = fig.multi_line(xs="xs", ys="ys", line_color="color", line_width=2, name="ellipses",
                                  source=ColumnDataSource({"xs": [], "ys": [], "color": []}))  # fmt: skip
        labels = LabelSet(x="x", y="y", text="name", text_font_size="9pt", text_color="black",
                          source=ColumnDataSource({"x": [], "y": [], "name": []}))  # fmt: skip
        fig.add_layout(labels)
        colorbar = ColorBar(color_mapper=mapper, width=10, title="pixels")
        fig.add_layout(colorbar, "right")
        parts = {"fig": fig, "density": density, "clusters": clusters, "selected": selected, "ellipses": ellipses,
                 "labels": labels, "colorbar": colorbar, "grid": ((x0, x1), (y0, y1), *self.default_size)}  # fmt: skip
        self._latent_figs.append(parts)
        self._render_view(parts)
        self._draw_ellipses(parts)
        fig.on_event(RangesUpdate, functools.partial(self._on_ranges, parts))
        fig.on_event(SelectionGeometry, cast(Any, self._on_latent_geometry))
        return fig

    def _render_view(self, parts: dict[str, Any], *, clusters_only: bool = False) -> None:
        """Re-aggregate the density and cluster layers (and the selection layer) on the figure's grid.

        ``clusters_only``: the points and the grid are the same (an edit, a recolour, another
        shading): only the cluster colours are sent; the density image (its colours come from a
        mapper in the browser) and the selection layer stay as they are.
        """
        (x0, x1), (y0, y1), w, h = parts["grid"]
        counts, rgba = self.layers((x0, x1), (y0, y1), w, h)
        place = {"x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]}
        parts["clusters"].data_source.data = {"image": [rgba], **place}
        if clusters_only:
            return
        parts["density"].data_source.data = {"image": [counts], **place}
        parts["selected"].data_source.data = {"image": [self.selected_layer(parts)], **place}

    def _render_clusters(self) -> None:
        """New cluster colours in every latent figure, now if the tab is shown, else when it is."""
        if self._hidden(self._render_clusters):
            return
        for parts in self._latent_figs:
            self._render_view(parts, clusters_only=True)

    @param.depends("tab_visible", watch=True)
    def _on_tab_visible(self) -> None:
        """Draw what changed while the tab was hidden (edits and selections made elsewhere)."""
        if not self.tab_visible:
            return
        pending, self._pending = list(self._pending.values()), {}
        with pn.io.hold():
            for redraw in pending:
                redraw()

    def _hidden(self, redraw: Callable[[], None]) -> bool:
        """True while the tab is hidden, with ``redraw`` kept to run (once) when it is shown.

        A hidden plot still repaints in the browser when its data changes (30-50 ms each, for
        nothing on screen): edits and selections made in other tabs wait until this one is shown.
        """
        if self.tab_visible:
            return False
        self._pending[redraw.__name__] = redraw
        return True

    def _on_ranges(self, parts: dict[str, Any], event: RangesUpdate) -> None:
        x0, x1, y0, y1 = event.x0, event.x1, event.y0, event.y1
        if x0 is None or x1 is None or y0 is None or y1 is None:
            return
        w, h = screen_extent(parts["fig"], self.default_size)
        parts["grid"] = (
            (float(x0), float(x1)),
            (float(y0), float(y1)),
            max(w, 16),
            max(h, 16),
        )
        with pn.io.hold():
            self._render_view(parts)

    def _on_latent_geometry(self, event: SelectionGeometry) -> None:
        _forward_geometry(event, self.lasso, self.bounds)

    def _draw_ellipses(self, parts: dict[str, Any]) -> None:
        results = self.state.results
        xs: list[list[float]] = []
        ys: list[list[float]] = []
        colors, lx, ly, names = [], [], [], []
        if self.show_ellipses and "gmm_mean" in results and "gmm_covariance" in results:
            t = np.linspace(0, 2 * np.pi, 64)
            circle = np.stack([np.cos(t), np.sin(t)])
            all_names, all_colors = self.state.names(), self.state.colors()
            for k, (mean, cov) in enumerate(zip(results["gmm_mean"].values, results["gmm_covariance"].values,
                                                strict=True)):  # fmt: skip
                if k in self.state.hidden:  # a tiny phase's wide ellipse would swamp the others
                    continue
                vals, vecs = np.linalg.eigh(cov)
                pts = mean[:, None] + 2 * vecs @ (np.sqrt(np.clip(vals, 0, None))[:, None] * circle)
                xs.append(pts[0].tolist())
                ys.append(pts[1].tolist())
                colors.append(all_colors[k])
                lx.append(float(mean[0]))
                ly.append(float(mean[1]))
                names.append(f"{k}: {all_names[k]}")
        parts["ellipses"].data_source.data = {"xs": xs, "ys": ys, "color": colors}
        parts["labels"].source.data = {"x": lx, "y": ly, "name": names}

    def _on_style(self, *events: param.parameterized.Event) -> None:
        with pn.io.hold():
            if any(e.name == "shading" for e in events):
                # a new mapper model (a new model makes Bokeh walk the document: only here,
                # never on a recolour or an edit)
                for parts in self._latent_figs:
                    mapper = _density_mapper(self.shading)
                    parts["density"].glyph.color_mapper = mapper
                    parts["colorbar"].color_mapper = mapper
            self._render_clusters()

    def _on_alpha(self, *events: param.parameterized.Event) -> None:
        for parts in self._latent_figs:
            parts["clusters"].glyph.global_alpha = self.cluster_alpha

    def _on_ellipses(self, *events: param.parameterized.Event) -> None:
        """Redraw the ellipses and their labels, now if the tab is shown, else when it is."""
        if self._hidden(self._on_ellipses):
            return
        for parts in self._latent_figs:
            self._draw_ellipses(parts)

    def _on_results(self, *events: param.parameterized.Event) -> None:
        change = self.state.last_change  # a rename re-renders nothing but the ellipse labels
        if "labels" in change:
            self._frame = self._points_frame()
            self._feature_all = None
        with pn.io.hold():
            if self.color_key != self.state.colors():
                self.color_key = self.state.colors()  # re-renders through _on_style
            elif "labels" in change:
                self._render_clusters()
            self._on_ellipses()
            # the selection's exact spectrum and its feature bars do not depend on the clusters:
            # only the count's "mostly ..." line changes (a refit clears the selection itself);
            # a spectrum estimated from the cluster spectra (no kept counts) is redrawn
            self.summary.object = self.summary_text()
            if "labels" in change and self._spectrum_parts and not self._means().exact:
                curves = self.spectrum_curves()
                for parts in self._spectrum_parts:
                    self._fill_spectrum(parts, curves)

    # -- selection
    @guarded
    def select_polygon(self, geometry: npt.ArrayLike | None) -> int:
        """Select the pixels whose latent point lies inside ``geometry`` (lasso vertices)."""
        if geometry is None or len(np.asarray(geometry)) < 3:
            return 0
        mask = gd.select_polygon(self.state.xy, geometry)
        return self._report(mask, "latent")

    @guarded
    def select_box(self, bounds: tuple[float, float, float, float] | None) -> int:
        """Select the pixels whose latent point lies inside ``bounds`` ``(x0, y0, x1, y1)``."""
        if bounds is None:
            return 0
        return self._report(gd.select_bounds(self.state.xy, bounds), "latent")

    @guarded
    def select_map_polygon(self, geometry: npt.ArrayLike | None) -> int:
        """Select the pixels whose scan position lies inside ``geometry`` (map lasso)."""
        if geometry is None or len(np.asarray(geometry)) < 3:
            return 0
        return self._report(gd.select_polygon(self.state.pixel_xy, geometry), "map")

    @guarded
    def select_map_box(self, bounds: tuple[float, float, float, float] | None) -> int:
        """Select the pixels inside the scan-coordinate box ``bounds``."""
        if bounds is None:
            return 0
        return self._report(gd.select_bounds(self.state.pixel_xy, bounds), "map")

    def _report(self, mask: npt.NDArray[np.bool_], source: str) -> int:
        n = self.state.select(mask, source)
        if n == 0:
            self.state.notify(
                "The selection is empty: no pixel lies inside it. Draw around the points.",
                "warning",
            )
        return n

    def _on_lasso(self, geometry: npt.ArrayLike | None = None) -> None:
        self.select_polygon(geometry)

    def _on_bounds(self, bounds: tuple[float, float, float, float] | None = None) -> None:
        self.select_box(bounds)

    def clear_selection(self, event: Any = None) -> None:
        """Forget the selection."""
        self.state.select(None, "none")

    # -- linked views
    def summary_text(self) -> str:
        """The selected-pixel count (and its share) and the clusters the selection covers."""
        n, total = self.state.n_selected, self.state.shape[0] * self.state.shape[1]
        text = f"<b>Selected pixels: {n}</b> of {total} ({100 * n / total:.1f} %)"
        if n:
            lab = self.state.results["label"].values.ravel()[self.state.selection]
            k = gd.n_clusters(self.state.results)
            counts = np.bincount(lab[lab >= 0], minlength=k)
            names = self.state.names()
            top = np.argsort(counts)[::-1][:3]
            text += " — mostly " + ", ".join(f"{names[i]} ({counts[i]})" for i in top if counts[i])
        return text

    @guarded
    def _on_selection(self, *events: param.parameterized.Event) -> None:
        with pn.io.hold():
            self._update_linked()

    def _update_linked(self) -> None:
        """Push the selection to every linked plot: count, latent layer, map, spectrum, bars.

        Only while the tab is shown: a selection changed elsewhere (a refit clears it; the
        Clusters tab's edits) is drawn when the tab is shown again (:meth:`_hidden`).
        """
        if self._hidden(self._update_linked):
            return
        self.summary.object = self.summary_text()
        for parts in self._latent_figs:
            parts["selected"].data_source.data["image"] = [self.selected_layer(parts)]
        if self._map_sources:
            mask = self.map_mask()
            for image in self._map_sources:
                image.set(mask)
        if self._spectrum_parts:
            curves = self.spectrum_curves()
            for parts in self._spectrum_parts:
                self._fill_spectrum(parts, curves)
        if self._bar_sources:
            bars = self.feature_table()
            for src in self._bar_sources:
                src.data = bars

    def map_mask(self) -> npt.NDArray[np.uint8]:
        """The selection as a ``(y, x)`` 0/1 image (a view of the mask, no copy); ``(1, 1)`` zeros without one."""
        sel = self.state.selection
        if sel is None:  # one transparent pixel stretched over the map: 1 byte, not one per pixel
            return np.zeros((1, 1), np.uint8)
        return sel.view(np.uint8).reshape(self.state.shape)

    def map_plot(self) -> figure:
        """Navigation image with the selection in red; lasso/box on it selects pixels by position."""
        ds = self.state.results
        units = ds["x"].attrs.get("units", "px")
        x, y = ds["x"].values.astype(float), ds["y"].values.astype(float)
        dx = (x[1] - x[0]) if len(x) > 1 else 1.0
        dy = (y[1] - y[0]) if len(y) > 1 else 1.0
        place = {
            "x": [x[0] - dx / 2],
            "y": [y[0] - dy / 2],
            "dw": [len(x) * dx],
            "dh": [len(y) * dy],
        }
        fig = figure(title="selected pixels on the navigation image", tools="pan,wheel_zoom,box_select,lasso_select,reset",
                     toolbar_location="above", sizing_mode="stretch_width", height=460, min_height=300,
                     match_aspect=True, x_range=DataRange1d(range_padding=0),
                     y_range=DataRange1d(range_padding=0, flipped=True), x_axis_label=f"x ({units})",
                     y_axis_label=f"y ({units})", output_backend="canvas")  # fmt: skip
        full_extent_ranges(fig, place)
        self._map_images.append(map_image(fig, place, grey_rgba(_grey_u8(ds)), rgba=True))
        self._map_sources.append(map_image(fig, place, self.map_mask(), name="selection",
                                           color_mapper=_transparent_mapper("#ff2020"), global_alpha=0.65))  # fmt: skip
        fig.on_event(SelectionGeometry, cast(Any, self._on_map_geometry))
        return fig

    def _on_map_geometry(self, event: SelectionGeometry) -> None:
        _forward_geometry(event, self.map_lasso, self.map_bounds)

    def spectrum_curves(self) -> dict[str, Any]:
        """Energy, all-pixel and selection summed spectra in counts (selection empty when none).

        With a selection, the selection's summed counts (exact from the kept counts) are drawn
        against the mean spectrum of all pixels times the selection's pixel count, so the two
        compare on one axis; without one, the summed counts of all pixels.
        """
        ds, selection = self.state.results, self.state.selection
        if self._overall_spectrum is None or self._overall_spectrum[0] is not ds:
            self._overall_spectrum = (ds, gd.mean_spectrum(ds).values)
        overall = self._overall_spectrum[1]
        n_all = self.state.shape[0] * self.state.shape[1]
        keep = gd.display_channels(ds)  # no zero peak, nothing past the beam energy / last line
        energy, overall = ds["energy"].values[keep], overall[keep]
        if selection is not None and selection.any():
            n = int(np.count_nonzero(selection))
            sel, exact = self._means().sum_spectrum(selection)
            sel = sel[keep]
            reason = self._means().source_error or "these results keep no per-pixel counts"
            how = "exact counts" if exact else f"estimated from cluster spectra: {reason}"
            title = f"summed spectrum of the {n} selected pixels ({how})"
            return {"energy": energy, "all": overall * n, "selection": sel, "title": title,
                    "all_label": "all pixels (mean × selected pixels)"}  # fmt: skip
        return {"energy": energy, "all": overall * n_all, "selection": overall[:0],
                "title": f"summed spectrum of all {n_all} pixels", "all_label": "all pixels"}  # fmt: skip

    def _fill_spectrum(self, parts: dict[str, Any], curves: dict[str, Any]) -> None:
        log, e = parts["log"], curves["energy"]
        floor = 0.5 if log else 0.0  # counts: half a count is the floor of a log axis
        for name in ("all", "selection"):
            v = curves[name]
            parts[name].data = {"energy": e[: len(v)], "counts": np.maximum(v, floor) if log else v}
        parts["fig"].title.text = curves["title"]
        if parts.get("legend_all") is not None:
            parts["legend_all"].label = {"value": curves["all_label"]}

    def _fill_markers(self, parts: dict[str, Any], curves: dict[str, Any]) -> None:
        energy = curves["energy"]
        elements = list(self.spectra.elements)
        lines = lines_in_range(elements, (float(energy[0]), float(energy[-1])),
                               beam_energy_kev=self.spectra.beam_energy_kev, min_weight=0.3) if elements else []  # fmt: skip
        lines = _spread_labels(lines, min_gap_kev=(float(energy[-1]) - float(energy[0])) / 70)
        y = float(np.max(curves["all"], initial=1.0)) * (0.5 if parts["log"] else 0.9)
        parts["markers"].data = {"energy": [ln.energy_kev for ln in lines], "y": [y] * len(lines),
                                 "line": [ln.name for ln in lines]}  # fmt: skip

    def _on_elements(self, *events: param.parameterized.Event) -> None:
        if self._spectrum_parts:
            curves = self.spectrum_curves()
            for parts in self._spectrum_parts:
                self._fill_markers(parts, curves)

    @param.depends("spectra.log_scale")
    def selection_spectrum(self) -> pn.viewable.Viewable:
        """Mean spectrum of the selection against the overall mean, with X-ray line markers.

        Rebuilt only when the axis type (log/linear) changes; a new selection or element choice
        updates its data sources in place.
        """
        log = bool(self.spectra.log_scale)
        fig = figure(title="summed spectrum", y_axis_type="log" if log else "linear", toolbar_location="above",
                     tools="pan,wheel_zoom,reset", sizing_mode="stretch_width", height=320, min_height=300,
                     x_axis_label="X-ray energy (keV)", y_axis_label="counts", output_backend="canvas")  # fmt: skip
        parts: dict[str, Any] = {"fig": fig, "log": log}
        for name, color in (("all", "#1f3b73"), ("selection", "#e02020")):
            parts[name] = ColumnDataSource({"energy": [], "counts": []})
            fig.line("energy", "counts", source=parts[name], color=color, line_width=1.5,
                     legend_label="all pixels" if name == "all" else "selection")  # fmt: skip
        fig.y_range = DataRange1d(renderers=list(fig.renderers))
        parts["markers"] = ColumnDataSource({"energy": [], "y": [], "line": []})
        fig.vspan(
            x="energy",
            source=parts["markers"],
            line_color="#555555",
            line_dash="dashed",
            line_alpha=0.7,
        )
        fig.add_layout(LabelSet(x="energy", y="y", text="line", source=parts["markers"], angle=np.pi / 2,
                                text_font_size="8pt", text_baseline="middle", x_offset=-4))  # fmt: skip
        fig.add_tools(HoverTool(tooltips=[("energy", "$x{0.000} keV"), ("counts", "$y{0.000}")], mode="vline",
                                renderers=cast(Any, fig.renderers[:2])))  # fmt: skip
        fig.legend.location = "top_right"
        parts["legend_all"] = fig.legend[0].items[0]
        curves = self.spectrum_curves()
        self._fill_spectrum(parts, curves)
        self._fill_markers(parts, curves)
        self._spectrum_parts = [parts]  # the previous figure (other axis type) is no longer shown
        return pn.pane.Bokeh(fig, sizing_mode="stretch_width")

    def feature_table(self) -> dict[str, Any]:
        """Columns ``feature``, ``all`` and ``selection`` (0 without a selection) of the feature bars."""
        means, selection = self._means(), self.state.selection
        if self._feature_all is None:
            self._feature_all = means.features()
        sel = (means.features(selection) if selection is not None and selection.any()
               else np.zeros_like(self._feature_all))  # fmt: skip
        return {"feature": means.feature_names, "all": self._feature_all, "selection": sel}

    def _means(self) -> gd.SelectionMeans:
        """The results' :class:`gui.data.SelectionMeans`, rebuilt when the results change."""
        if self._selection_means is None or self._selection_means[0] is not self.state.results:
            self._selection_means = (self.state.results, gd.SelectionMeans(self.state.results))
        return self._selection_means[1]

    def feature_bars(self) -> pn.viewable.Viewable:
        """Mean of each feature, all pixels against the selection."""
        if "features" not in self.state.results:
            return pn.pane.Markdown("No features in these results.")
        table = self.feature_table()
        units = self._means().feature_units
        title = (
            "mean net line intensity per pixel"
            if units.startswith("counts")
            else "mean feature (z-score)"
        )
        fig = figure(title=title, x_range=FactorRange(factors=table["feature"]), toolbar_location=None,
                     tools="hover", tooltips=[("line", "@feature"), ("all", "@all{0.00}"),
                                              ("selection", "@selection{0.00}")], y_axis_label=units,
                     sizing_mode="stretch_width", height=320, min_height=300, output_backend="canvas")  # fmt: skip
        src = ColumnDataSource(table)
        fig.vbar(x=dodge("feature", -0.2, range=fig.x_range), top="all", width=0.38, source=src, color="#1f3b73",
                 legend_label="all pixels")  # fmt: skip
        fig.vbar(x=dodge("feature", 0.2, range=fig.x_range), top="selection", width=0.38, source=src, color="#e02020",
                 legend_label="selection")  # fmt: skip
        fig.y_range = DataRange1d()  # net counts can be slightly negative (noise): no clipping at 0
        fig.xaxis.major_label_orientation = np.pi / 3
        fig.legend.location = "top_right"
        self._bar_sources.append(src)
        return pn.pane.Bokeh(fig, sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        controls = pn.Row(
            pn.widgets.RadioButtonGroup.from_param(self.param.shading, name="shading"),
            pn.widgets.RadioButtonGroup.from_param(self.param.color_by, name="colour by"),
            pn.widgets.Checkbox.from_param(self.param.show_ellipses, name="GMM ellipses"),
            pn.widgets.Button(
                label="Clear selection", color="light", on_click=self.clear_selection
            ),
        )
        return pn.Column(
            controls,
            self.summary.panel(),
            pn.Row(
                # the classes sit on a wrapper: on the figure itself no selector reaches its canvas
                pn.Column(
                    pn.pane.Bokeh(self.latent_plot(), sizing_mode="stretch_width"),
                    css_classes=["latent-plot"],
                    sizing_mode="stretch_width",
                ),
                pn.Column(
                    pn.pane.Bokeh(self.map_plot(), sizing_mode="stretch_width"),
                    css_classes=["selection-map"],
                    sizing_mode="stretch_width",
                ),
                sizing_mode="stretch_width",
            ),
            self.spectra,
            pn.Row(self.selection_spectrum, self.feature_bars(), sizing_mode="stretch_width"),
            sizing_mode="stretch_width",
        )
