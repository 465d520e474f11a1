"""The whole GUI page of one session: the tabs on one shared state, its warm-up, the error page.

The tabs live in their own modules (:mod:`gui.state`, :mod:`gui.spectra`, :mod:`gui.dataset`,
:mod:`gui.latent`, :mod:`gui.clusters`); their names are importable from here too.
"""

from __future__ import annotations

import os
from typing import Any, cast

import panel as pn
import param
import xarray as xr

from gui import data as gd
from gui.clusters import ClustersView
from gui.dataset import DatasetView
from gui.latent import LatentView
from gui.live_text import LiveText
from gui.spectra import SpectrumView
from gui.state import ResultsState, open_results

__all__ = [
    "open_results",
    "ResultsState",
    "SpectrumView",
    "DatasetView",
    "LatentView",
    "ClustersView",
    "SigmaApp",
    "warm_up",
    "error_page",
]


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
    def _title(self) -> LiveText:
        """The title line, whose text an edit changes (:class:`gui.live_text.LiveText`)."""
        if getattr(self, "_title_pane", None) is None:
            self._title_pane = LiveText(self._title_text())
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
        # edits made in another tab re-colour the latent layers when the Latent tab is shown
        tabs.param.watch(lambda e: setattr(self.latent, "tab_visible", e.new == 0), "active")
        self.tabs = tabs
        return pn.Column(self._title.panel(), tabs, sizing_mode="stretch_width")

    def template(self) -> pn.template.BaseTemplate:
        """The app in a Panel template, ready for ``.servable()``."""
        # Bootstrap, not Fast: the Fast design fetches a Google web font, which fails offline.
        # The edit controls go in the sidebar, a root of its own (see ClustersView.edit_controls),
        # where they are also at hand in the Latent tab, next to the lasso
        self.clusters.controls_in_sidebar = True
        return pn.template.BootstrapTemplate(title="sigma: phases in spectrum images", main=[self],
                                             sidebar=[self.clusters.edit_controls()], sidebar_width=340,
                                             header_background="#1f3b73", main_max_width="1800px")  # fmt: skip


_WARMED: set[str] = set()


def warm_up(app: SigmaApp) -> float:
    """Build ``app``'s first page once per file per process into a throwaway Bokeh document.

    Run before the first visitor (``panel serve --setup gui/warm.py``): numba compiles
    datashader's pipelines, Panel, Bokeh and the views run their first-use code paths and the
    clustering library (scikit-learn) is imported, so the first session and its first refit cost
    what every later one does. Returns the seconds it took (0 when done before).
    """
    import time

    from bokeh.document import Document

    key = app.state.path or "memory"
    if key in _WARMED:
        return 0.0
    start = time.perf_counter()
    from sigma.clustering import fit_gmm  # noqa: F401  (scikit-learn: 1-1.5 s a first refit would wait)

    cast(Any, pn.panel(app)).get_root(Document())
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
