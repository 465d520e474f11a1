"""Clusters tab: phase and cluster maps, spectra, NMF, particles, BIC, edits and exports.

Figures are built once (:mod:`gui.cluster_figures`); an edit pushes only what it changed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from bokeh.models import (
    LinearColorMapper,
)
from bokeh.models.annotations import ColorBar  # (bokeh's stubs miss the re-export)
from bokeh.palettes import Viridis256

from gui import data as gd
from gui import exports
from gui.cluster_figures import ClusterFigures, legend_html
from gui.images import _PLOT, ScreenImage, _grey_u8
from gui.spectra import SpectrumView
from gui.state import ResultsState, guarded
from sigma.exceptions import EmptySelectionError


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
        self._abundance: ScreenImage | None = None
        self._abundance_bar: LinearColorMapper | None = None
        self._map_figs: tuple[Any, Any] = (None, None)
        self._nmf_weight_fig: Any = None
        self._switching_cluster = False
        self._particle_cache: tuple[Any, int, Any, pd.DataFrame] | None = None
        #: True when :meth:`edit_controls` is shown elsewhere (the served page's sidebar)
        self.controls_in_sidebar = False
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
        self.param.watch(self._on_opacity, ["opacity"])
        self.param.watch(self._on_cluster, ["cluster"])
        self.param.watch(lambda e: self._fill_cluster_spectra(), ["shown"])
        self.param.watch(lambda e: self._fill_nmf(), ["component"])
        self.spectra.param.watch(self._on_spectra_inputs, ["elements"])
        self.state.param.watch(self._on_results, ["results_version"])

    def _on_opacity(self, *events: Any) -> None:
        if self._figs is not None:
            self._figs.set_opacity(self.opacity)

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
            self._show_particles()

    def _show_particles(self) -> None:
        """The chosen cluster's particle table and histogram, once the edit's other changes are out.

        Served, this runs on the next tick of the server's loop: the maps, legend and spectra of
        an edit reach the browser as one patch, then the particles as another. Their statistics
        (0.1-0.4 s for a large cluster of a 1M-pixel map) and the table's re-render in the page
        (its rows restyled: 0.2-0.5 s) no longer hold up the rest. Without a server (tests,
        notebooks) it runs at once.
        """
        pn.state.execute(self._update_particles, schedule=True)

    @guarded
    def _update_particles(self) -> None:
        if self._figs is not None:
            self._figs.update_particles(self.particles(), self._particles_title())

    def _on_spectra_inputs(self, *events: Any) -> None:
        """New elements: the line markers of both spectra figures."""
        with pn.io.hold():
            self._fill_cluster_spectra()
            self._fill_nmf()

    @guarded
    def _on_results(self, *events: Any) -> None:
        """An edit: push only what changed (labels, colours, names) to the figures."""
        figs, change = self._figs, self.state.last_change
        if figs is None:
            return
        with pn.io.hold():
            if "labels" in change and figs._label_mapper is not None:
                figs.set_labels()
            if change & {"labels", "colors"} and figs._label_mapper is not None:
                palette = figs._palette()
                if list(figs._label_mapper.palette) != palette:
                    figs._label_mapper.palette = palette
            figs.update_legend()
            if "labels" in change and not self._switching_cluster:
                figs.update_cluster_maps(self.cluster)
                self._show_particles()
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
                         self._figs.legend.panel(), sizing_mode="stretch_width")  # type: ignore[union-attr]  # fmt: skip

    def cluster_maps(self) -> pn.viewable.Viewable:
        """Probability and binary map of the chosen cluster."""
        self._build_figures()
        prob, binary = self._map_figs
        return pn.Row(pn.pane.Bokeh(prob, sizing_mode="stretch_width"),
                      pn.pane.Bokeh(binary, sizing_mode="stretch_width"), sizing_mode="stretch_width")  # fmt: skip

    def _fill_cluster_spectra(self) -> None:
        parts, figs = self._spectra_parts, self._figs
        ds = self.state.results
        if parts is None or figs is None or "cluster_mean_spectrum" not in ds:
            return
        cms = ds["cluster_mean_spectrum"].transpose("cluster", "energy").values
        labels, colors = self.state.short_labels(), self.state.colors()
        curves = {labels[i]: (cms[i], colors[i]) for i in sorted(self.shown) if i < len(labels)}
        figs.fill_spectra(parts, curves, list(self.spectra.elements), self.spectra.beam_energy_kev)

    def _relabel_cluster_spectra(self) -> None:
        """New cluster names in the spectra legend: a patch of the label column only."""
        parts = self._spectra_parts
        if parts is None:
            return
        labels = self.state.short_labels()
        new = [labels[i] for i in sorted(self.shown) if i < len(labels)]
        if len(new) == len(parts["src"].data["label"]):
            parts["src"].patch({"label": [(slice(0, len(new)), new)]})
            if "_last" in parts:
                parts["_last"]["labels"] = new
            if "legend" in parts:
                parts["legend"].object = legend_html(new, list(parts["src"].data["color"]))
        else:
            self._fill_cluster_spectra()

    @param.depends("spectra.log_scale")
    def cluster_spectra(self) -> pn.viewable.Viewable:
        """Mean spectrum per pixel of the shown clusters (rebuilt only for a log/linear switch)."""
        self._build_figures()
        if "cluster_mean_spectrum" not in self.state.results:
            return pn.pane.Markdown("No cluster spectra in these results.")
        fig, self._spectra_parts = self._figs.spectra_figure(  # type: ignore[union-attr]
            bool(self.spectra.log_scale),
            "cluster mean spectra",
            "counts per pixel",
            html_legend=True,
        )
        self._fill_cluster_spectra()
        return pn.Column(self._spectra_parts["legend"].panel(), pn.pane.Bokeh(fig, sizing_mode="stretch_width"),
                         sizing_mode="stretch_width")  # fmt: skip

    def _fill_nmf(self) -> None:
        parts, figs = self._nmf_parts, self._figs
        ds = self.state.results
        if parts is None or figs is None or "nmf_spectrum" not in ds:
            return
        comps = ds["nmf_spectrum"].transpose("component", "energy").values
        curves = {
            f"component {j}": (comps[j], gd.PALETTE[(j + 10) % len(gd.PALETTE)])
            for j in range(len(comps))
        }
        figs.fill_spectra(parts, curves, list(self.spectra.elements), self.spectra.beam_energy_kev)
        if self._abundance is not None and "nmf_abundance" in ds:
            ab = (
                ds["nmf_abundance"]
                .isel(component=min(self.component, ds.sizes["component"] - 1))
                .values
            )
            # one byte per pixel (1/255 of the largest abundance), sent only when it changed; the
            # colour bar's top rounded up to 2 digits, so a small change of the largest
            # abundance leaves the bar (and the figure's layout) as it is
            top = float(np.nanmax(ab, initial=0.0)) or 1.0
            if 0 < top <= 1:  # 2 significant digits, rounded up (0.0034 -> 0.0034, 0.934 -> 0.94)
                step = 10.0 ** (np.floor(np.log10(top)) - 1)
                top = min(1.0, float(np.ceil(round(top / step, 9)) * step))
            image = np.round(np.clip(np.nan_to_num(ab) / top, 0, 1) * 255).astype(np.uint8)
            self._abundance.set(image)
            if self._abundance_bar is not None and self._abundance_bar.high != top:
                self._abundance_bar.high = top
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
            from gui.cluster_figures import _map_figure, image_place
            from gui.images import map_image

            self._abundance_fig = _map_figure(ds, "abundance")
            mapper = LinearColorMapper(palette=Viridis256, low=0, high=255)
            self._abundance_bar = LinearColorMapper(palette=Viridis256, low=0, high=1)
            self._abundance = map_image(
                self._abundance_fig,
                image_place(ds),
                np.zeros((1, 1), np.uint8),
                color_mapper=mapper,
            )
            self._abundance_fig.add_layout(
                ColorBar(color_mapper=self._abundance_bar, width=10, title="abundance"), "right"
            )
        if self._abundance_fig is not None:
            items.append(pn.pane.Bokeh(self._abundance_fig, sizing_mode="stretch_width"))
        self._fill_nmf()
        return pn.Row(*items, sizing_mode="stretch_width")

    def particles(self) -> pd.DataFrame:
        """Particle statistics of the chosen cluster, kept while its pixels are the same.

        A rename, a recolour or a merge of other clusters recomputes nothing.
        """
        label = self.state.results["label"].values
        hit = self._particle_cache
        if hit is not None and hit[0] is label and hit[1] == self.cluster:
            return hit[3]
        mask = label == self.cluster
        if hit is not None and np.array_equal(hit[2], mask):
            table = hit[3]
        else:
            table = gd.particle_table(self.state.results, self.cluster)
        self._particle_cache = (label, self.cluster, mask, table)
        return table

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
    @guarded
    def new_cluster_from_selection(self, event: Any = None) -> int:
        """Make the current selection a new cluster; return its index."""
        selection = self.state.selection
        if selection is None or not self.state.n_selected:
            raise EmptySelectionError(
                "no pixels selected: lasso some points in the Latent tab first."
            )
        ds = gd.add_cluster_from_mask(
            self.state.results, selection, name=self.new_name.strip() or None
        )
        self._switching_cluster = True  # the new cluster's maps and particles come once, below
        try:
            self.state.update_results(ds)
        finally:
            self._switching_cluster = False
        k = gd.n_clusters(ds) - 1
        self.param.update(cluster=k, new_name="")
        self.state.notify(
            f"New cluster {k} ({self.state.names()[k]}) with {int(ds['n_pixels'][k])} pixels.",
            "success",
        )
        return k

    @guarded
    def merge_selected(self, event: Any = None) -> None:
        """Merge the clusters chosen in ``merge``."""
        ds = gd.merge_clusters(self.state.results, self.merge, name=self.merge_name.strip() or None)
        merged = sorted(self.merge)
        self.param.update(merge=[], merge_name="")
        self.state.update_results(ds)
        self.state.notify(f"Merged clusters {merged} into {merged[0]}.", "success")

    @guarded
    def rename(self, event: Any = None) -> None:
        """Rename the chosen cluster to ``new_name``."""
        name = self.new_name.strip()
        self.state.update_results(gd.rename_cluster(self.state.results, self.cluster, name))
        self.new_name = ""  # used once: a later new cluster does not take it too
        self.state.notify(f"Cluster {self.cluster} is now {name!r}.", "success")

    @guarded
    def recolor(self, event: Any = None) -> None:
        """Give the chosen cluster ``new_color``."""
        self.state.update_results(
            gd.recolor_cluster(self.state.results, self.cluster, self.new_color)
        )

    recolour = recolor  # the former name

    @guarded
    def refit(self, event: Any = None) -> None:
        """Re-cluster the embedding with a ``n_components`` Gaussian mixture."""
        self.state.update_results(gd.refit_clusters(self.state.results, int(self.n_components)))
        self.state.select(None, "none")
        self.state.notify(f"Refitted a Gaussian mixture with k = {self.n_components}.", "success")

    @guarded
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

    @guarded
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

    @guarded
    def export_maps(self, event: Any = None) -> list[Path]:
        """Write the element maps (net line counts) and NMF abundance maps as TIFFs."""
        folder = self._out(f"{self._stem()}_element_x.tif").parent
        paths = exports.export_maps(
            self.state.results, folder, self._stem(), overwrite=self.overwrite
        )
        self.last_export = paths[-1]
        self.state.notify(f"Wrote {len(paths)} maps to {folder}", "success")
        return paths

    @guarded
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

    @guarded
    def export_spectra(self, event: Any = None) -> Path:
        """Write the cluster mean spectra as CSV."""
        path = self._out(f"{self._stem()}_cluster_spectra.csv")
        self._refuse_existing(path)
        gd.cluster_spectra_frame(self.state.results).to_csv(path)
        return self._exported(path)

    @guarded
    def export_particles(self, event: Any = None) -> Path:
        """Write the chosen cluster's particle table as CSV."""
        path = self._out(f"{self._stem()}_cluster{self.cluster}_particles.csv")
        self._refuse_existing(path)
        self.particles().to_csv(path)
        return self._exported(path)

    @guarded
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

    def edit_controls(self) -> pn.viewable.Viewable:
        """The "Edit clusters" card: rename, new cluster, recolour, merge, refit, phases shown.

        In the served page (:meth:`gui.views.SigmaApp.template`) it sits in the sidebar, a Bokeh
        root of its own: its pickers' options change on every edit, and a picker whose options
        change makes the browser lay out the root it is in again (every plot measured: 0.2-0.4 s
        per picker inside the tabs, a few ms in the sidebar).
        """
        button = functools.partial(pn.widgets.Button, color="primary")
        return pn.Card(
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
                button(label="Recolour", on_click=self.recolor),
            ),  # fmt: skip
            pn.widgets.MultiChoice.from_param(
                self.param.merge, name="merge clusters", css_classes=["merge-choice"]
            ),
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
            self._shown_picker(),
            self.state.status.panel(),
            title="Edit clusters",
            sizing_mode="stretch_width",
        )

    def _shown_picker(self) -> pn.widgets.MultiChoice:
        return pn.widgets.MultiChoice.from_param(
            self.param.shown, name="phases shown (tiny ones start hidden)"
        )

    def __panel__(self) -> pn.viewable.Viewable:
        button = functools.partial(pn.widgets.Button, color="primary")
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
            self.state.status.panel(),
            title="Export",
            sizing_mode="stretch_width",
        )
        left = [export] if self.controls_in_sidebar else [self.edit_controls(), export]
        return pn.Row(
            pn.Column(*left, width=330),
            pn.Column(
                pn.widgets.FloatSlider.from_param(self.param.opacity, name="phase-map opacity"),
                # called, not passed: a method without @param.depends would be re-run by Panel
                # on every parameter change; these figures are built once and updated in place
                pn.Row(self.phase_map(), self.cluster_maps(), sizing_mode="stretch_width"),
                *([] if self.controls_in_sidebar else [self._shown_picker()]),
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
