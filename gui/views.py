"""Panel views of a results dataset: Dataset, Latent and Clusters tabs, linked by one selection.

Every view is a :class:`panel.viewable.Viewer` whose state lives in ``param`` parameters and whose
widgets come from ``.from_param``. All views of one session share one :class:`ResultsState`,
which holds the (possibly edited) results, the selected pixels and the last message. Shared data
is loaded once per server process through :func:`panel.cache`, not copied per session.

Heavy lifting is vectorised: datashader renders the latent density of all pixels; a lasso is a
bounding-box prefilter, a grid of cells and ``shapely.contains_xy`` for the points near its edges;
no Python loop runs per pixel. The Latent tab's linked plots are plain Bokeh figures whose data
sources a new selection updates in place (tens of ms on a million pixels); the Dataset and
Clusters tabs, which change rarely, are HoloViews. Errors never kill the page: handlers catch them
and show a notification.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import datashader as dsh
import holoviews as hv
import numpy as np
import numpy.typing as npt
import pandas as pd
import panel as pn
import param
import xarray as xr
from bokeh.core.property.descriptors import UnsetValueError
from bokeh.events import RangesUpdate, SelectionGeometry
from bokeh.models import (
    ColorBar,
    ColorMapper,
    ColumnDataSource,
    DataRange1d,
    EqHistColorMapper,
    FactorRange,
    HoverTool,
    LabelSet,
    LassoSelectTool,
    LinearColorMapper,
    LogColorMapper,
    Range1d,
    WheelZoomTool,
)
from bokeh.palettes import Viridis256
from bokeh.plotting import figure
from bokeh.transform import dodge
from datashader import transfer_functions as tf

from gui import data as gd
from gui import exports
from gui.cluster_figures import ClusterFigures, _spread_labels, image_place, label_image
from sigma._schema import as_str_list, finite_float_or_none
from sigma.exceptions import EmptySelectionError
from sigma.xray import candidate_lines, lines_in_range

__all__ = [
    "open_results",
    "ResultsState",
    "SpectrumView",
    "DatasetView",
    "LatentView",
    "ClustersView",
    "SigmaApp",
]

logger = logging.getLogger(__name__)
hv.extension("bokeh", logo=False)

_F = TypeVar("_F", bound=Callable[..., Any])
_PLOT = {
    "responsive": True,
    "min_height": 300,
    "toolbar": "above",
    "default_tools": ["pan", "wheel_zoom", "reset"],
}
_IMAGE = {**_PLOT, "data_aspect": 1, "xlabel": "x", "ylabel": "y"}


# ------------------------------------------------------------------------------------- loading
@pn.cache(max_items=4)
def _cached_results(path: str, mtime: float) -> xr.Dataset:
    """One read per (file, modification time) per server process, shared by all sessions."""
    logger.info("loading results %s", path)
    return gd.load_results(path)


@pn.cache(max_items=4)
def _cached_xy(path: str, mtime: float) -> npt.NDArray[np.float32]:
    return gd.latent_xy(_cached_results(path, mtime))


def open_results(path: str | os.PathLike[str]) -> tuple[xr.Dataset, npt.NDArray[np.float32]]:
    """Return the (cached, shared, read-only) results at ``path`` and their latent ``(n, 2)`` array."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        return gd.load_results(p), np.empty((0, 2), np.float32)  # raises the clear error
    mtime = p.stat().st_mtime
    return _cached_results(str(p), mtime), _cached_xy(str(p), mtime)


# -------------------------------------------------------------------------------------- state
class ResultsState(param.Parameterized):
    """What all views of one session share: results, selection and messages.

    Parameters
    ----------
    results
        The results dataset shown (edits replace it by a new dataset; the cached original is
        never modified).
    path
        The file it came from (``""`` for an in-memory dataset).
    """

    results = param.ClassSelector(class_=xr.Dataset, doc="results shown (possibly edited)")
    path = param.String(default="", doc="file the results came from")
    selection = param.Array(default=None, allow_None=True, doc="bool mask over the y*x pixels")
    selection_source = param.Selector(default="none", objects=["none", "latent", "map", "cluster"])
    message = param.String(default="", doc="last message shown to the user")
    edited = param.Boolean(default=False, doc="True once the results differ from the file")
    selection_version = param.Integer(
        default=0, doc="bumped on every selection change (cheap for streams to hash)"
    )
    results_version = param.Integer(default=0, doc="bumped on every results change")
    hidden = param.List(
        default=[], doc="clusters left out of spectra and ellipses (tiny ones at first)"
    )

    def __init__(
        self, results: xr.Dataset, xy: npt.NDArray[np.float32] | None = None, **params: Any
    ) -> None:
        super().__init__(results=results, **params)
        self.hidden = gd.small_clusters(results)
        self.last_change: set[str] = {"labels", "colors", "names"}
        self.xy = gd.latent_xy(results) if xy is None else xy
        self.pixel_xy = gd.pixel_xy(results)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> ResultsState:
        """Open ``path`` through the shared cache."""
        ds, xy = open_results(path)
        return cls(ds, xy, path=str(path))

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the scan."""
        return int(self.results.sizes["y"]), int(self.results.sizes["x"])

    @property
    def n_selected(self) -> int:
        """Number of selected pixels."""
        return 0 if self.selection is None else int(np.count_nonzero(self.selection))

    def select(self, mask: npt.ArrayLike | None, source: str) -> int:
        """Set the selection (bool mask over all pixels) and return its pixel count."""
        if mask is None:
            self.param.update(
                selection=None,
                selection_source="none",
                selection_version=self.selection_version + 1,
            )
            return 0
        m = np.asarray(mask, dtype=bool).ravel()
        n = self.shape[0] * self.shape[1]
        if m.size != n:
            raise ValueError(f"mask must have {n} elements (one per pixel). Got {m.size}.")
        self.param.update(
            selection=m, selection_source=source, selection_version=self.selection_version + 1
        )
        return int(m.sum())

    def update_results(self, ds: xr.Dataset) -> None:
        """Replace the results by an edited dataset (same pixels and embedding).

        ``last_change`` says what differs ("labels", "colors", "names") so views push only that.
        """
        old = self.results
        change = set()
        if gd.n_clusters(old) != gd.n_clusters(ds) or not np.array_equal(
            old["label"].values, ds["label"].values
        ):
            change |= {"labels", "colors", "names"}
        else:
            if self.colors() != gd._names_colors(ds)[1]:
                change.add("colors")
            if self.names() != gd._names_colors(ds)[0]:
                change.add("names")
        self.last_change = change
        self.param.update(results=ds, edited=True, results_version=self.results_version + 1,
                          hidden=gd.small_clusters(ds) if "labels" in change else self.hidden)  # fmt: skip

    def pixel_counts(self) -> list[int]:
        """Pixels of each cluster."""
        ds = self.results
        if "n_pixels" in ds:
            return [int(v) for v in ds["n_pixels"].values]
        lab = ds["label"].values.ravel()
        return [int(v) for v in np.bincount(lab[lab >= 0], minlength=gd.n_clusters(ds))]

    def labels(self) -> list[str]:
        """``"i: name (n px)"`` of each cluster, for legends and pickers."""
        return [
            f"{i}: {n} ({p:,} px)"
            for i, (n, p) in enumerate(zip(self.names(), self.pixel_counts(), strict=True))
        ]

    def notify(self, text: str, kind: str = "info") -> None:
        """Show ``text`` as a notification (when served) and remember it in ``message``."""
        self.message = text
        log = logger.warning if kind in ("error", "warning") else logger.info
        log("%s", text)
        notifications = pn.state.notifications
        if notifications is not None:
            getattr(notifications, kind)(text, duration=6000 if kind != "error" else 0)

    def names(self) -> list[str]:
        """Cluster names."""
        ds = self.results
        k = gd.n_clusters(ds)
        return (
            as_str_list(ds["cluster_name"].values)
            if "cluster_name" in ds
            else [f"phase {i}" for i in range(k)]
        )

    def colors(self) -> list[str]:
        """Cluster colours ``#rrggbb``."""
        ds = self.results
        k = gd.n_clusters(ds)
        return (
            as_str_list(ds["cluster_color"].values)
            if "cluster_color" in ds
            else list(gd.PALETTE[:k])
        )


def _guarded(method: _F) -> _F:
    """Turn an exception in a GUI callback into an error notification (never a dead page)."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as err:  # the GUI reports every error instead of dying
            logger.exception("GUI callback %s failed", method.__name__)
            self.state.notify(f"{type(err).__name__}: {err}", "error")
            return None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------- plot helpers
def _image(
    da: xr.DataArray | npt.NDArray[Any], ds: xr.Dataset, label: str, **opts: Any
) -> hv.Image:
    values = np.asarray(da)
    units = ds["x"].attrs.get("units", "px")
    x, y = ds["x"].values, ds["y"].values
    img = hv.Image((x, y, values), kdims=[hv.Dimension("x", unit=units), hv.Dimension("y", unit=units)],
                   vdims=[label])  # fmt: skip
    axes = {"xlabel": f"x ({units})", "ylabel": f"y ({units})"}
    return img.opts(invert_yaxis=True, **{**_IMAGE, **axes, "colorbar": True, **opts})


def _rgba(rgba: npt.NDArray[np.uint8], ds: xr.Dataset, **opts: Any) -> hv.RGB:
    units = ds["x"].attrs.get("units", "px")
    x, y = ds["x"].values, ds["y"].values
    dx = (x[1] - x[0]) if len(x) > 1 else 1.0
    dy = (y[1] - y[0]) if len(y) > 1 else 1.0
    bounds = (x[0] - dx / 2, y[0] - dy / 2, x[-1] + dx / 2, y[-1] + dy / 2)
    # hv.RGB's first row is the top (max y): flip so row 0 (y[0]) sits at the bottom, then invert the axis
    rgb = hv.RGB(rgba[::-1], bounds=bounds, kdims=[hv.Dimension("x", unit=units), hv.Dimension("y", unit=units)],
                 vdims=["R", "G", "B", "A"])  # fmt: skip
    return rgb.opts(
        invert_yaxis=True, **{**_IMAGE, "xlabel": f"x ({units})", "ylabel": f"y ({units})", **opts}
    )


_GREY_CACHE: dict[int, tuple[Any, npt.NDArray[np.float64]]] = {}


def _grey(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    """The navigation image scaled to [0, 1] (1st-99th percentile), cached per image array."""
    src = ds["nav_image"].values if "nav_image" in ds else None
    key = id(src) if src is not None else -1
    hit = _GREY_CACHE.get(key)
    if hit is not None and hit[0] is src:
        return hit[1]
    grey = _grey_uncached(ds)
    if src is not None:
        if len(_GREY_CACHE) > 8:
            _GREY_CACHE.clear()
        _GREY_CACHE[key] = (src, grey)
    return grey


def _grey_uncached(ds: xr.Dataset) -> npt.NDArray[np.float64]:
    if "nav_image" in ds:
        nav = ds["nav_image"].values.astype(np.float64)
    else:
        nav = (
            ds["total_counts"].values.astype(np.float64)
            if "total_counts" in ds
            else np.ones(ds["label"].shape)
        )
    lo, hi = np.percentile(nav, [1, 99])
    return np.clip((nav - lo) / max(hi - lo, 1e-12), 0, 1)


_GREY_U8: dict[int, tuple[Any, npt.NDArray[np.uint8]]] = {}


def _grey_u8(ds: xr.Dataset) -> npt.NDArray[np.uint8]:
    """:func:`_grey` as uint8 0..255, cached per navigation image."""
    src = ds["nav_image"].values if "nav_image" in ds else None
    hit = _GREY_U8.get(id(src))
    if src is not None and hit is not None and hit[0] is src:
        return hit[1]
    grey = np.round(_grey(ds) * 255).astype(np.uint8)
    if src is not None:
        if len(_GREY_U8) > 8:
            _GREY_U8.clear()
        _GREY_U8[id(src)] = (src, grey)
    return grey


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


class DatasetView(pn.viewable.Viewer):
    """Dataset tab: navigation image, sum spectrum, element maps, counts map and histogram, line lookup."""

    feature = param.Selector(
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
            counts_row = pn.Row(pn.pane.HoloViews(counts, sizing_mode="stretch_width"),
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
    geom = event.geometry
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


def _inner_size(fig: figure, default: tuple[int, int]) -> tuple[int, int]:
    """The figure's drawing area in screen pixels as the browser reported it, else ``default``."""
    try:
        return int(fig.inner_width) or default[0], int(fig.inner_height) or default[1]
    except UnsetValueError:  # not shown in a browser yet
        return default


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

    shading = param.Selector(
        default="eq_hist", objects=["eq_hist", "log", "linear"], doc="density colour scaling"
    )
    color_by = param.Selector(
        default="cluster", objects=["cluster", "density"], doc="colour points by"
    )
    show_ellipses = param.Boolean(default=True, doc="draw the GMM 2-sigma ellipses")
    color_key = param.List(default=[], doc="cluster colours (internal)")
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
        self._map_sources: list[ColumnDataSource] = []
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
        self.summary = pn.pane.Markdown(
            self.summary_text(), css_classes=["selection-count"], sizing_mode="stretch_width"
        )
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
        cvs = dsh.Canvas(plot_width=width, plot_height=height, x_range=x_range, y_range=y_range)
        per_cluster = cvs.points(self._frame, "latent 0", "latent 1", agg=dsh.count_cat("cluster"))
        counts = per_cluster.sum(dim=per_cluster.dims[-1]).values.astype(np.float32)
        counts[counts == 0] = np.nan
        rgba = tf.shade(
            per_cluster, color_key=self._color_map(), how=self.shading, min_alpha=60
        ).data
        return counts, np.ascontiguousarray(rgba, dtype=np.uint32)

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
        fig = figure(title="latent space (lasso or box to select)", x_range=Range1d(x0, x1), y_range=Range1d(y0, y1),
                     tools="pan,wheel_zoom,box_select,lasso_select,reset", toolbar_location="above",
                     sizing_mode="stretch_width", height=460, min_height=420, x_axis_label="latent 0 (arbitrary units)",
                     y_axis_label="latent 1 (arbitrary units)", output_backend="canvas")  # fmt: skip
        fig.toolbar.active_drag = fig.select_one(LassoSelectTool)
        fig.toolbar.active_scroll = fig.select_one(WheelZoomTool)
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
        fig.on_event(SelectionGeometry, self._on_latent_geometry)
        return fig

    def _render_view(self, parts: dict[str, Any]) -> None:
        """Re-aggregate the density and cluster layers (and the selection layer) on the figure's grid."""
        (x0, x1), (y0, y1), w, h = parts["grid"]
        counts, rgba = self.layers((x0, x1), (y0, y1), w, h)
        place = {"x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]}
        parts["density"].data_source.data = {"image": [counts], **place}
        parts["clusters"].data_source.data = {"image": [rgba], **place}
        parts["selected"].data_source.data = {"image": [self.selected_layer(parts)], **place}

    def _on_ranges(self, parts: dict[str, Any], event: RangesUpdate) -> None:
        if None in (event.x0, event.x1, event.y0, event.y1):
            return
        w, h = _inner_size(parts["fig"], self.default_size)
        parts["grid"] = (
            (float(event.x0), float(event.x1)),
            (float(event.y0), float(event.y1)),
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
            for parts in self._latent_figs:
                mapper = _density_mapper(self.shading)
                parts["density"].glyph.color_mapper = mapper
                parts["colorbar"].color_mapper = mapper
                self._render_view(parts)

    def _on_alpha(self, *events: param.parameterized.Event) -> None:
        for parts in self._latent_figs:
            parts["clusters"].glyph.global_alpha = self.cluster_alpha

    def _on_ellipses(self, *events: param.parameterized.Event) -> None:
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
                for parts in self._latent_figs:
                    self._render_view(parts)
            for parts in self._latent_figs:
                self._draw_ellipses(parts)
            if "labels" in change:
                self._update_linked()
            else:
                self.summary.object = self.summary_text()

    # -- selection
    @_guarded
    def select_polygon(self, geometry: npt.ArrayLike | None) -> int:
        """Select the pixels whose latent point lies inside ``geometry`` (lasso vertices)."""
        if geometry is None or len(np.asarray(geometry)) < 3:
            return 0
        mask = gd.select_polygon(self.state.xy, geometry)
        return self._report(mask, "latent")

    @_guarded
    def select_box(self, bounds: tuple[float, float, float, float] | None) -> int:
        """Select the pixels whose latent point lies inside ``bounds`` ``(x0, y0, x1, y1)``."""
        if bounds is None:
            return 0
        return self._report(gd.select_bounds(self.state.xy, bounds), "latent")

    @_guarded
    def select_map_polygon(self, geometry: npt.ArrayLike | None) -> int:
        """Select the pixels whose scan position lies inside ``geometry`` (map lasso)."""
        if geometry is None or len(np.asarray(geometry)) < 3:
            return 0
        return self._report(gd.select_polygon(self.state.pixel_xy, geometry), "map")

    @_guarded
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
        text = f"**Selected pixels: {n}** of {total} ({100 * n / total:.1f} %)"
        if n:
            lab = self.state.results["label"].values.ravel()[self.state.selection]
            k = gd.n_clusters(self.state.results)
            counts = np.bincount(lab[lab >= 0], minlength=k)
            names = self.state.names()
            top = np.argsort(counts)[::-1][:3]
            text += " — mostly " + ", ".join(f"{names[i]} ({counts[i]})" for i in top if counts[i])
        return text

    @_guarded
    def _on_selection(self, *events: param.parameterized.Event) -> None:
        with pn.io.hold():
            self._update_linked()

    def _update_linked(self) -> None:
        """Push the selection to every linked plot: count, latent layer, map, spectrum, bars."""
        self.summary.object = self.summary_text()
        for parts in self._latent_figs:
            parts["selected"].data_source.data["image"] = [self.selected_layer(parts)]
        if self._map_sources:
            mask = self.map_mask()
            for src in self._map_sources:
                src.data["image"] = [mask]
        if self._spectrum_parts:
            curves = self.spectrum_curves()
            for parts in self._spectrum_parts:
                self._fill_spectrum(parts, curves)
        if self._bar_sources:
            bars = self.feature_table()
            for src in self._bar_sources:
                src.data = bars

    def map_mask(self) -> npt.NDArray[np.uint8]:
        """The selection as a ``(y, x)`` 0/1 image (a view of the mask, no copy)."""
        sel = self.state.selection
        if sel is None:
            return np.zeros(self.state.shape, np.uint8)
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
        grey = _grey_u8(ds)
        rgba = np.empty(grey.shape + (4,), np.uint8)
        rgba[..., :3] = grey[..., None]
        rgba[..., 3] = 255
        fig.image_rgba(image=[rgba.view(np.uint32)[..., 0]], **place)
        src = ColumnDataSource({"image": [self.map_mask()], **place})
        fig.image(
            source=src,
            color_mapper=_transparent_mapper("#ff2020"),
            global_alpha=0.65,
            name="selection",
        )
        self._map_sources.append(src)
        fig.on_event(SelectionGeometry, self._on_map_geometry)
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
            how = (
                "exact counts"
                if exact
                else "estimated from cluster spectra: these results keep no per-pixel counts"
            )
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
                                renderers=fig.renderers[:2]))  # fmt: skip
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
            self.summary,
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


class ClustersView(pn.viewable.Viewer):
    """Clusters tab: maps, spectra, NMF, particles; make/merge/rename/recolour/refit; export."""

    cluster = param.Integer(
        default=0, bounds=(0, None), doc="cluster shown in the per-cluster maps"
    )
    opacity = param.Number(
        default=0.6, bounds=(0, 1), step=0.05, doc="phase-map opacity over the nav image"
    )
    shown = param.ListSelector(default=[], objects=[], doc="clusters whose spectra are drawn")
    component = param.Integer(
        default=0, bounds=(0, None), doc="NMF component whose abundance is shown"
    )
    new_name = param.String(
        default="", doc="name of a new cluster, or the new name of the chosen one"
    )
    new_color = param.Color(
        default="#1f77b4", doc="colour for the chosen cluster (follows the cluster)"
    )
    merge = param.ListSelector(default=[], objects=[], doc="clusters to merge")
    merge_name = param.String(
        default="", doc="name of the merged cluster (empty: the lowest one's name)"
    )
    n_components = param.Integer(default=8, bounds=(1, 30), doc="k of a refit")
    output_dir = param.String(default="", doc="folder exports are written to")
    output_name = param.String(default="results_edited.nc", doc="file name for the edited results")
    overwrite = param.Boolean(default=False, doc="allow replacing an existing file")
    bic = param.Parameter(default=None, doc="BIC sweep computed in this session (pandas Series)")

    def __init__(self, state: ResultsState, spectra: SpectrumView, **params: Any) -> None:
        super().__init__(**params)
        self.state, self.spectra = state, spectra
        if not self.output_dir:
            self.output_dir = (
                str(Path(state.path).expanduser().resolve().parent)
                if state.path
                else str(Path.cwd())
            )
        self.n_components = gd.n_clusters(state.results)
        self._figs: ClusterFigures | None = None
        self._spectra_parts: dict[str, Any] | None = None
        self._nmf_parts: dict[str, Any] | None = None
        self._abundance_fig: Any = None
        self._abundance_src: ColumnDataSource | None = None
        self._map_figs: tuple[Any, Any] = (None, None)
        self._nmf_weight_fig: Any = None
        self._sync_options()
        self._colour_of_cluster()
        state.param.watch(lambda e: self._sync_options(), ["results"])
        self.last_export: Path | None = None

    def _options(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.state.labels())}

    def _sync_options(self) -> None:
        opts = self._options()
        k = len(opts)
        self.param.cluster.bounds = (0, max(k - 1, 0))
        self.param.shown.objects = opts
        self.param.merge.objects = opts
        # the k box follows the results: after a merge, a new cluster or a refit it shows their k
        self.param.update(cluster=min(self.cluster, k - 1), shown=[v for v in opts.values() if v not in self.state.hidden],
                          merge=[m for m in self.merge if m < k], n_components=min(max(k, 1), 30))  # fmt: skip
        if "component" in self.state.results.sizes:
            self.param.component.bounds = (0, int(self.state.results.sizes["component"]) - 1)

    # -- figures (Bokeh, built once per session, updated in place: see gui.cluster_figures)
    def _build_figures(self) -> None:
        if self._figs is not None:
            return
        self._figs = ClusterFigures(self.state, _grey_u8(self.state.results))
        self._phase_fig = self._figs.phase_map(self.opacity)
        self._map_figs = self._figs.cluster_maps(self.cluster)
        self._particle_row = self._figs.particles(self.particles(), self._particles_title())
        self._nmf_weight_fig = (
            self._figs.nmf_weights() if "nmf_weight" in self.state.results else None
        )
        self.param.watch(lambda e: self._figs and self._figs.set_opacity(self.opacity), ["opacity"])
        self.param.watch(self._on_cluster, ["cluster"])
        self.param.watch(self._on_spectra_inputs, ["shown", "component"])
        self.spectra.param.watch(self._on_spectra_inputs, ["elements"])
        self.state.param.watch(self._on_results, ["results_version"])

    @param.depends("shown", watch=True)
    def _hide_unshown(self) -> None:
        hidden = [i for i in range(gd.n_clusters(self.state.results)) if i not in self.shown]
        if hidden != self.state.hidden:
            self.state.hidden = hidden

    @param.depends("cluster", watch=True)
    def _colour_of_cluster(self) -> None:
        """The colour picker shows the chosen cluster's colour (it used to stay magenta)."""
        colors = self.state.colors()
        if 0 <= self.cluster < len(colors) and colors[self.cluster].startswith("#"):
            self.new_color = colors[self.cluster]

    def _particles_title(self) -> str:
        return f"particles of {self.state.names()[self.cluster]}"

    def _on_cluster(self, *events: Any) -> None:
        if self._figs is None:
            return
        with pn.io.hold():
            self._figs.update_cluster_maps(self.cluster)
            self._figs.update_particles(self.particles(), self._particles_title())

    def _on_spectra_inputs(self, *events: Any) -> None:
        with pn.io.hold():
            self._fill_cluster_spectra()
            self._fill_nmf()

    @_guarded
    def _on_results(self, *events: Any) -> None:
        """An edit: push only what changed (labels, colours, names) to the figures."""
        figs, change = self._figs, self.state.last_change
        if figs is None:
            return
        with pn.io.hold():
            if "labels" in change and figs._label_src is not None:
                k = gd.n_clusters(self.state.results)
                figs._label_src.data["image"] = [label_image(self.state.results)]
                figs._label_mapper.high = k + 0.5  # type: ignore[union-attr]
            if change & {"labels", "colors"} and figs._label_mapper is not None:
                figs._label_mapper.palette = figs._palette()
            figs.update_legend()
            if "labels" in change:
                figs.update_cluster_maps(self.cluster)
                figs.update_particles(self.particles(), self._particles_title())
            elif "names" in change:  # a rename: titles only, no map or particle table recomputed
                figs.set_titles(self.cluster)
                figs.set_particles_title(self._particles_title())
            if change & {"labels", "names"}:
                figs.update_nmf_weights()
            if change == {"names"}:  # a rename: patch the legend labels, not the curves
                self._relabel_cluster_spectra()
            else:
                self._fill_cluster_spectra()
                self._fill_nmf()

    def phase_map(self) -> pn.viewable.Viewable:
        """Phase map in cluster colours over the navigation image, with its legend (built once)."""
        self._build_figures()
        return pn.Column(pn.Column(pn.pane.Bokeh(self._phase_fig, sizing_mode="stretch_width"),
                                   css_classes=["phase-map"], sizing_mode="stretch_width"),
                         self._figs.legend, sizing_mode="stretch_width")  # type: ignore[union-attr]  # fmt: skip

    def cluster_maps(self) -> pn.viewable.Viewable:
        """Probability and binary map of the chosen cluster."""
        self._build_figures()
        prob, binary = self._map_figs
        return pn.Row(pn.pane.Bokeh(prob, sizing_mode="stretch_width"),
                      pn.pane.Bokeh(binary, sizing_mode="stretch_width"), sizing_mode="stretch_width")  # fmt: skip

    def _fill_cluster_spectra(self) -> None:
        parts = self._spectra_parts
        ds = self.state.results
        if parts is None or "cluster_mean_spectrum" not in ds:
            return
        cms = ds["cluster_mean_spectrum"].transpose("cluster", "energy").values
        labels, colors = self.state.labels(), self.state.colors()
        curves = {labels[i]: (cms[i], colors[i]) for i in sorted(self.shown) if i < len(labels)}
        self._figs.fill_spectra(
            parts, curves, list(self.spectra.elements), self.spectra.beam_energy_kev
        )  # type: ignore[union-attr]

    def _relabel_cluster_spectra(self) -> None:
        """New cluster names in the spectra legend: a patch of the label column only."""
        parts = self._spectra_parts
        if parts is None:
            return
        labels = self.state.labels()
        new = [labels[i] for i in sorted(self.shown) if i < len(labels)]
        if len(new) == len(parts["src"].data["label"]):
            parts["src"].patch({"label": [(slice(0, len(new)), new)]})
        else:
            self._fill_cluster_spectra()

    @param.depends("spectra.log_scale")
    def cluster_spectra(self) -> pn.viewable.Viewable:
        """Mean spectrum per pixel of the shown clusters (rebuilt only for a log/linear switch)."""
        self._build_figures()
        if "cluster_mean_spectrum" not in self.state.results:
            return pn.pane.Markdown("No cluster spectra in these results.")
        fig, self._spectra_parts = self._figs.spectra_figure(  # type: ignore[union-attr]
            bool(self.spectra.log_scale), "cluster mean spectra", "counts per pixel"
        )
        self._fill_cluster_spectra()
        return pn.pane.Bokeh(fig, sizing_mode="stretch_width")

    def _fill_nmf(self) -> None:
        parts = self._nmf_parts
        ds = self.state.results
        if parts is None or "nmf_spectrum" not in ds:
            return
        comps = ds["nmf_spectrum"].transpose("component", "energy").values
        curves = {
            f"component {j}": (comps[j], gd.PALETTE[(j + 10) % len(gd.PALETTE)])
            for j in range(len(comps))
        }
        self._figs.fill_spectra(
            parts, curves, list(self.spectra.elements), self.spectra.beam_energy_kev
        )  # type: ignore[union-attr]
        if self._abundance_src is not None and "nmf_abundance" in ds:
            ab = (
                ds["nmf_abundance"]
                .isel(component=min(self.component, ds.sizes["component"] - 1))
                .values
            )
            self._abundance_src.data["image"] = [np.asarray(ab, np.float32)]
            self._abundance_fig.title.text = f"component {self.component} abundance"  # type: ignore[union-attr]

    @param.depends("spectra.log_scale")
    def nmf(self) -> pn.viewable.Viewable:
        """NMF component spectra, the weights of each cluster and one abundance map."""
        self._build_figures()
        ds = self.state.results
        if "nmf_spectrum" not in ds:
            return pn.pane.Markdown("No NMF decomposition in these results.")
        fig, self._nmf_parts = self._figs.spectra_figure(  # type: ignore[union-attr]
            bool(self.spectra.log_scale), "NMF components", "intensity (arbitrary units)"
        )
        items: list[Any] = [pn.pane.Bokeh(fig, sizing_mode="stretch_width")]
        if self._nmf_weight_fig is not None:
            items.append(pn.pane.Bokeh(self._nmf_weight_fig, sizing_mode="stretch_width"))
        if "nmf_abundance" in ds and self._abundance_fig is None:
            from gui.cluster_figures import _map_figure

            self._abundance_fig = _map_figure(ds, "abundance")
            mapper = LinearColorMapper(palette=Viridis256)
            self._abundance_src = ColumnDataSource(
                {"image": [np.zeros((1, 1), np.float32)], **image_place(ds)}
            )
            self._abundance_fig.image(source=self._abundance_src, color_mapper=mapper)
            self._abundance_fig.add_layout(
                ColorBar(color_mapper=mapper, width=10, title="abundance"), "right"
            )
        if self._abundance_fig is not None:
            items.append(pn.pane.Bokeh(self._abundance_fig, sizing_mode="stretch_width"))
        self._fill_nmf()
        return pn.Row(*items, sizing_mode="stretch_width")

    def particles(self) -> pd.DataFrame:
        """Particle statistics of the chosen cluster."""
        return gd.particle_table(self.state.results, self.cluster)

    def particle_view(self) -> pn.viewable.Viewable:
        """Particle table and equivalent-diameter histogram of the chosen cluster."""
        self._build_figures()
        return self._particle_row

    @param.depends("bic")
    def bic_plot(self) -> pn.viewable.Viewable:
        """Stored model-selection scores and any BIC sweep run here."""
        ds = self.state.results
        layers = []
        if "model_selection_score" in ds:
            ks = (
                ds["n_components_tried"].values
                if "n_components_tried" in ds.coords
                else np.arange(ds.sizes["n_components_tried"])
            )
            layers.append(hv.Curve((ks, ds["model_selection_score"].values), hv.Dimension("n_components", label="number of Gaussians"), hv.Dimension("score", label="BIC"),
                                   label="stored (from the run)") * hv.Scatter((ks, ds["model_selection_score"].values),
                                                                               hv.Dimension("n_components", label="number of Gaussians"), hv.Dimension("score", label="BIC")))  # fmt: skip
        if self.bic is not None:
            layers.append(hv.Curve((self.bic.index.values, self.bic.values), hv.Dimension("n_components", label="number of Gaussians"), hv.Dimension("score", label="BIC"), label="GUI sweep").opts(
                color="#d62728") * hv.Scatter((self.bic.index.values, self.bic.values), hv.Dimension("n_components", label="number of Gaussians"), hv.Dimension("score", label="BIC")).opts(color="#d62728"))  # fmt: skip
        if not layers:
            return pn.pane.Markdown("No model-selection scores yet: run a BIC sweep.")
        return pn.pane.HoloViews(hv.Overlay(layers).opts(title="BIC per number of clusters", **_PLOT),
                                 sizing_mode="stretch_width")  # fmt: skip

    # -- edits
    @_guarded
    def new_cluster_from_selection(self, event: Any = None) -> int:
        """Make the current selection a new cluster; return its index."""
        if not self.state.n_selected:
            raise EmptySelectionError(
                "no pixels selected: lasso some points in the Latent tab first."
            )
        ds = gd.add_cluster_from_mask(
            self.state.results, self.state.selection, name=self.new_name.strip() or None
        )
        self.state.update_results(ds)
        k = gd.n_clusters(ds) - 1
        self.param.update(cluster=k, new_name="")
        self.state.notify(
            f"New cluster {k} ({self.state.names()[k]}) with {int(ds['n_pixels'][k])} pixels.",
            "success",
        )
        return k

    @_guarded
    def merge_selected(self, event: Any = None) -> None:
        """Merge the clusters chosen in ``merge``."""
        ds = gd.merge_clusters(self.state.results, self.merge, name=self.merge_name.strip() or None)
        merged = sorted(self.merge)
        self.param.update(merge=[], merge_name="")
        self.state.update_results(ds)
        self.state.notify(f"Merged clusters {merged} into {merged[0]}.", "success")

    @_guarded
    def rename(self, event: Any = None) -> None:
        """Rename the chosen cluster to ``new_name``."""
        name = self.new_name.strip()
        self.state.update_results(gd.rename_cluster(self.state.results, self.cluster, name))
        self.new_name = ""  # used once: a later new cluster does not take it too
        self.state.notify(f"Cluster {self.cluster} is now {name!r}.", "success")

    @_guarded
    def recolour(self, event: Any = None) -> None:
        """Give the chosen cluster ``new_color``."""
        self.state.update_results(
            gd.recolour_cluster(self.state.results, self.cluster, self.new_color)
        )

    @_guarded
    def refit(self, event: Any = None) -> None:
        """Re-cluster the embedding with a ``n_components`` Gaussian mixture."""
        self.state.update_results(gd.refit_clusters(self.state.results, int(self.n_components)))
        self.state.select(None, "none")
        self.state.notify(f"Refitted a Gaussian mixture with k = {self.n_components}.", "success")

    @_guarded
    def sweep(self, event: Any = None) -> None:
        """BIC of Gaussian mixtures with k = 2 .. max(12, k + 4)."""
        top = max(12, int(self.n_components) + 4)
        self.bic = gd.bic_sweep(self.state.results, range(2, top + 1))
        best = int(self.bic.idxmin())
        self.state.notify(f"BIC sweep done: lowest BIC at k = {best}.", "success")

    # -- export
    def _out(self, name: str) -> Path:
        from gui.security import check_allowed

        folder = Path(self.output_dir).expanduser()
        check_allowed(folder / name, what="output file")  # a served page writes only where allowed
        if not folder.is_dir():
            raise FileNotFoundError(
                f"output folder {str(folder)!r} does not exist; create it or choose another."
            )
        return folder / name

    def _stem(self) -> str:
        return Path(self.state.path).stem if self.state.path else "results"

    def _refuse_existing(self, path: Path) -> None:
        if path.exists() and not self.overwrite:
            raise FileExistsError(
                f"{str(path)!r} already exists. Tick 'overwrite' to replace it or choose another name."
            )

    @_guarded
    def export_phase_map(self, event: Any = None, suffix: str = ".png") -> Path:
        """Write the phase map (as shown) to ``<stem>_phase_map.png|tif``."""
        path = self._out(f"{self._stem()}_phase_map{suffix}")
        self._refuse_existing(path)
        ds = self.state.results
        if suffix == ".png":  # a picture: upscaled, legend, scale bar
            exports.write_png(exports.phase_map_png(ds, opacity=self.opacity), path)
        else:  # the data: one RGB pixel per scan pixel, with the pixel size in the TIFF tags
            exports.write_tiff(gd.phase_rgba(ds, opacity=self.opacity)[..., :3], path, ds,
                               description={"map": "phase map", "phases": self.state.labels()})  # fmt: skip
        return self._exported(path)

    @_guarded
    def export_maps(self, event: Any = None) -> list[Path]:
        """Write the element maps (net line counts) and NMF abundance maps as TIFFs."""
        folder = self._out(f"{self._stem()}_element_x.tif").parent
        paths = exports.export_maps(
            self.state.results, folder, self._stem(), overwrite=self.overwrite
        )
        self.last_export = paths[-1]
        self.state.notify(f"Wrote {len(paths)} maps to {folder}", "success")
        return paths

    @_guarded
    def export_cluster_map(self, event: Any = None) -> Path:
        """Write the chosen cluster's probability map (float32 TIFF) or binary map."""
        ds = self.state.results
        data = (ds["probability"].isel(cluster=self.cluster).values if "probability" in ds
                else (ds["label"].values == self.cluster).astype(np.float32))  # fmt: skip
        path = self._out(f"{self._stem()}_cluster{self.cluster}_probability.tif")
        self._refuse_existing(path)
        exports.write_tiff(data.astype(np.float32), path, ds,
                           description={"map": f"probability of {self.state.labels()[self.cluster]}"})  # fmt: skip
        return self._exported(path)

    @_guarded
    def export_spectra(self, event: Any = None) -> Path:
        """Write the cluster mean spectra as CSV."""
        path = self._out(f"{self._stem()}_cluster_spectra.csv")
        self._refuse_existing(path)
        gd.cluster_spectra_frame(self.state.results).to_csv(path)
        return self._exported(path)

    @_guarded
    def export_particles(self, event: Any = None) -> Path:
        """Write the chosen cluster's particle table as CSV."""
        path = self._out(f"{self._stem()}_cluster{self.cluster}_particles.csv")
        self._refuse_existing(path)
        self.particles().to_csv(path)
        return self._exported(path)

    @_guarded
    def save(self, event: Any = None) -> Path:
        """Write the edited results to ``output_dir/output_name`` (never the input unless ``overwrite``)."""
        path = self._out(self.output_name.strip())
        if (
            self.state.path
            and path.resolve() == Path(self.state.path).expanduser().resolve()
            and not self.overwrite
        ):
            raise FileExistsError(
                f"{str(path)!r} is the input file. Choose another name or tick 'overwrite'."
            )
        gd.save_results(self.state.results, path, overwrite=self.overwrite)
        return self._exported(path)

    def _exported(self, path: Path) -> Path:
        self.last_export = path
        self.state.notify(f"Wrote {path}", "success")
        return path

    def _phase_png(self) -> Any:
        import io

        return io.BytesIO(exports.phase_map_png(self.state.results, opacity=self.opacity))

    def __panel__(self) -> pn.viewable.Viewable:
        button = functools.partial(pn.widgets.Button, color="primary")
        edit = pn.Card(
            pn.widgets.IntSlider.from_param(self.param.cluster, name="cluster"),
            pn.widgets.TextInput.from_param(
                self.param.new_name,
                name="name",
                placeholder="new name",
                css_classes=["cluster-name-input"],
            ),
            button(label="Rename", on_click=self.rename, sizing_mode="stretch_width"),
            # on its own row: next to another button the label was cut
            button(
                label="New cluster from selection",
                on_click=self.new_cluster_from_selection,
                sizing_mode="stretch_width",
            ),  # fmt: skip
            pn.Row(
                pn.widgets.ColorPicker.from_param(self.param.new_color, name="colour"),
                button(label="Recolour", on_click=self.recolour),
            ),  # fmt: skip
            pn.widgets.MultiChoice.from_param(self.param.merge, name="merge clusters"),
            pn.widgets.TextInput.from_param(
                self.param.merge_name,
                name="merged name (optional)",
                placeholder="keeps the lowest's name",
            ),
            button(label="Merge", on_click=self.merge_selected),
            pn.widgets.IntInput.from_param(
                self.param.n_components, name="k (number of clusters)", css_classes=["refit-k"]
            ),  # fmt: skip
            pn.Row(
                button(label="Refit GMM", on_click=self.refit),
                button(label="BIC sweep", on_click=self.sweep),
            ),
            title="Edit clusters",
            sizing_mode="stretch_width",
        )
        export = pn.Card(
            pn.widgets.TextInput.from_param(self.param.output_dir, name="output folder"),
            pn.Row(
                button(
                    label="Phase map PNG",
                    on_click=self.export_phase_map,
                    css_classes=["export-png"],
                ),
                button(
                    label="Phase map TIFF", on_click=lambda e: self.export_phase_map(suffix=".tif")
                ),
            ),  # fmt: skip
            pn.Row(
                button(label="Cluster probability TIFF", on_click=self.export_cluster_map),
                button(label="Spectra CSV", on_click=self.export_spectra),
            ),  # fmt: skip
            pn.Row(
                button(label="Particles CSV", on_click=self.export_particles),
                button(label="Element/NMF TIFFs", on_click=self.export_maps),
            ),
            pn.widgets.FileDownload(
                callback=self._phase_png, filename="phase_map.png", label="Download phase map PNG"
            ),
            pn.widgets.TextInput.from_param(self.param.output_name, name="edited results file"),
            pn.widgets.Checkbox.from_param(self.param.overwrite, name="overwrite existing files"),
            button(label="Save edited results", on_click=self.save, css_classes=["save-results"]),
            title="Export",
            sizing_mode="stretch_width",
        )
        return pn.Row(
            pn.Column(edit, export, width=330),
            pn.Column(
                pn.widgets.FloatSlider.from_param(self.param.opacity, name="phase-map opacity"),
                # called, not passed: a method without @param.depends would be re-run by Panel
                # on every parameter change; these figures are built once and updated in place
                pn.Row(self.phase_map(), self.cluster_maps(), sizing_mode="stretch_width"),
                pn.widgets.MultiChoice.from_param(
                    self.param.shown, name="phases shown (tiny ones start hidden)"
                ),
                self.cluster_spectra,
                pn.widgets.IntSlider.from_param(self.param.component, name="NMF component"),
                self.nmf,
                "### Particles",
                self.particle_view(),
                self.bic_plot,
                sizing_mode="stretch_width",
            ),
            sizing_mode="stretch_width",
        )


class SigmaApp(pn.viewable.Viewer):
    """The whole GUI: one results file in three linked tabs.

    Parameters
    ----------
    path
        Results file; ``None`` opens the demo (see :func:`gui.demo.demo_results_path`).

    Examples
    --------
    >>> from gui.demo import scene_results
    >>> app = SigmaApp(results=scene_results((16, 16), n_phases=3, n_channels=256, energy_scale_kev=0.04))
    >>> app.state.n_selected
    0
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, results: xr.Dataset | None = None,
                 **params: Any) -> None:  # fmt: skip
        super().__init__(**params)
        self.error: str | None = None
        if results is not None:
            self.state = ResultsState(gd.validate_results(results))
        else:
            if path is None:
                from gui.demo import demo_results_path

                path = demo_results_path()
            self.state = ResultsState.from_path(path)
        self.spectra = SpectrumView(self.state)
        self.dataset = DatasetView(self.state, self.spectra)
        self.latent = LatentView(self.state, self.spectra)
        self.clusters = ClustersView(self.state, self.spectra)
        from gui.phases import PhasesView

        self.phases = PhasesView(self.state)

    def _title_text(self) -> str:
        ds = self.state.results
        src = self.state.path or ds.attrs.get("source", "in-memory results")
        edited = " — <b>edited, not saved</b>" if self.state.edited else ""
        return (f"<code>{src}</code>: {ds.sizes['y']}×{ds.sizes['x']} pixels, "
                f"{gd.n_clusters(ds)} clusters{edited}")  # fmt: skip

    @property
    def _title(self) -> pn.pane.HTML:
        """One HTML pane whose text an edit changes (replacing a pane makes Bokeh walk the document)."""
        if getattr(self, "_title_pane", None) is None:
            self._title_pane = pn.pane.HTML(self._title_text())
            self.state.param.watch(
                lambda *e: setattr(self._title_pane, "object", self._title_text()),
                ["results", "edited"],
            )
        return self._title_pane

    def __panel__(self) -> pn.viewable.Viewable:
        # only the first tab is built for the first paint; the others when first opened
        views = {"Latent": self.latent, "Dataset": self.dataset, "Clusters": self.clusters,
                 "Phases": self.phases}  # fmt: skip
        tabs = pn.Tabs(("Latent", self.latent), *((name, pn.Column(pn.indicators.LoadingSpinner(
            value=True, size=40), name=name)) for name in list(views)[1:]), sizing_mode="stretch_width")  # fmt: skip
        built = {0}

        def build(event: param.parameterized.Event) -> None:
            i = event.new
            if i in built:
                return
            built.add(i)
            name = list(views)[i]
            tabs[i] = (name, pn.panel(views[name]))

        tabs.param.watch(build, "active")
        self.tabs = tabs
        return pn.Column(self._title, tabs, sizing_mode="stretch_width")

    def template(self) -> pn.template.BaseTemplate:
        """The app in a Panel template, ready for ``.servable()``."""
        # Bootstrap, not Fast: the Fast design fetches a Google web font, which fails offline
        return pn.template.BootstrapTemplate(title="sigma: phases in spectrum images", main=[self],
                                             header_background="#1f3b73", main_max_width="1800px")  # fmt: skip


_WARMED: set[str] = set()


def warm_up(app: SigmaApp) -> float:
    """Build ``app``'s first page once per file per process into a throwaway Bokeh document.

    Run before the first visitor (``panel serve --setup gui/warm.py``): numba compiles
    datashader's pipelines, and Panel, Bokeh and the views run their first-use code paths, so the
    first session costs what every later one does. Returns the seconds it took (0 when done before).
    """
    import time

    from bokeh.document import Document

    key = app.state.path or "memory"
    if key in _WARMED:
        return 0.0
    start = time.perf_counter()
    pn.panel(app).get_root(Document())
    _WARMED.add(key)
    return time.perf_counter() - start


def error_page(message: str) -> pn.template.BaseTemplate:
    """A page that explains why the results could not be opened (instead of a dead page)."""
    if pn.state.notifications is not None:
        pn.state.notifications.error(message, duration=0)
    body = pn.pane.Alert(f"**Could not open the results.**\n\n{message}\n\nStart it again with a results file: "
                         "`sigma gui results.nc`, or with no path for the demo.", alert_type="danger")  # fmt: skip
    return pn.template.BootstrapTemplate(
        title="sigma: phases in spectrum images", main=[body], header_background="#1f3b73"
    )
