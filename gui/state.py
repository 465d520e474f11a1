"""The state one session's views share: results (possibly edited), selection, messages.

Shared data is loaded once per server process through :func:`panel.cache`, not copied per
session; :func:`guarded` turns an exception in a callback into a notification (never a dead
page).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import panel as pn
import param
import xarray as xr

from gui import data as gd
from gui.live_text import LiveText
from sigma._schema import as_str_list
from sigma.analysis import default_colors

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


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

    # annotated: param types a ClassSelector as optional, but the state always holds results
    results: xr.Dataset = param.ClassSelector(  # type: ignore[assignment]
        class_=xr.Dataset, doc="results shown (possibly edited)"
    )
    path = param.String(default="", doc="file the results came from")
    selection = param.Array(default=None, allow_None=True, doc="bool mask over the y*x pixels")
    selection_source: str = param.Selector(  # type: ignore[assignment]
        default="none", objects=["none", "latent", "map", "cluster"]
    )
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
        #: the last edit or export that worked, shown under the edit and export controls
        self.status = LiveText("", css_classes=["edit-status"])

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
        # a copy: the maps show a view of it, and a caller's array may change after
        m = np.array(mask, dtype=bool).ravel()
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

    def short_labels(self) -> list[str]:
        """``"i: name"`` of each cluster, for plot legends and axes.

        Their size must not change with every edit's pixel counts: a legend or axis that changes
        size makes the browser lay out the whole page again.
        """
        return [f"{i}: {n}" for i, n in enumerate(self.names())]

    def notify(self, text: str, kind: str = "info") -> None:
        """Tell the user ``text`` and remember it in ``message``.

        A success (an edit or an export done) goes to the status line :attr:`status`, next to
        the controls; the rest is a notification when served. A notification is a new Bokeh
        model: adding it made the server walk the whole document (0.1-0.2 s after every edit of a
        1M-pixel result, and as much again to collect it), which a line of text does not.
        """
        self.message = text
        log = logger.warning if kind in ("error", "warning") else logger.info
        log("%s", text)
        if kind == "success":  # the time: the same message twice still shows it happened
            self.status.object = f"✓ {time.strftime('%H:%M:%S')} {text}"
            return
        self.status.object = ""  # no earlier success next to a new error
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
            as_str_list(ds["cluster_color"].values) if "cluster_color" in ds else default_colors(k)
        )


def guarded(method: _F) -> _F:
    """Turn an exception in a GUI callback into an error notification (never a dead page).

    The callback's changes to the page are held and sent together when it returns: one
    patch, applied by the browser in one go (an edit sent as ten patches made the browser lay
    the page out after each of them).
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with pn.io.hold():
                return method(self, *args, **kwargs)
        except Exception as err:  # the GUI reports every error instead of dying
            logger.exception("GUI callback %s failed", method.__name__)
            self.state.notify(f"{type(err).__name__}: {err}", "error")
            return None

    return wrapper  # type: ignore[return-value]
