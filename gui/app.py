"""The sigma GUI, served by ``panel serve gui/app.py`` or ``sigma gui RESULTS``.

The results path comes from, in order: ``panel serve gui/app.py --args RESULTS``, the URL
(``?results=/path/results.nc``), the environment variable ``SIGMA_RESULTS``; with none, the demo
opens. Serve it with ``--setup gui/warm.py`` to pay the file read, numba's first datashader compile
and the first page build before the first visitor.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import panel as pn

# `gui` is a package of the sigma distribution (installed with it, editable or not): no sys.path
from gui.security import allowed_roots, check_allowed, default_roots, set_roots
from gui.views import SigmaApp, error_page

logger = logging.getLogger("gui.app")
pn.extension("tabulator", notifications=True, loading_indicator=True, sizing_mode="stretch_width")


def results_path() -> str | None:
    """The results file asked for: ``--args PATH``, ``?results=PATH``, ``$SIGMA_RESULTS``, else None (demo)."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if args and Path(sys.argv[0]).name == "app.py":
        return args[0]
    session_args = pn.state.session_args if pn.state.curdoc is not None else {}
    if session_args.get("results"):  # from the browser: only inside the allowed folders
        return str(check_allowed(session_args["results"][0].decode(), what="results file"))
    return os.environ.get("SIGMA_RESULTS") or None


def create_app(path: str | None = None) -> pn.template.BaseTemplate:
    """Build the page for ``path`` (None: the demo); a bad file gives an error page, not a dead one."""
    try:
        return SigmaApp(path).template()
    except PermissionError as err:  # a path outside the allowed folders: no traceback in the log
        logger.warning("refused results path %r", path)
        return error_page(str(err))
    except Exception as err:  # the page must explain the problem instead of dying
        logger.exception("could not open results %r", path)
        return error_page(f"{type(err).__name__}: {err}")


if pn.state.served:
    if allowed_roots() is None:  # `panel serve gui/app.py` directly: the current folder
        _args = [a for a in sys.argv[1:] if not a.startswith("-")]
        set_roots(default_roots(results=_args[0] if _args else os.environ.get("SIGMA_RESULTS")))
    try:
        page = create_app(results_path())
    except PermissionError as err:  # ?results= outside the allowed folders
        page = error_page(str(err))
    page.servable()
