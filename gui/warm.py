"""Start-up script for ``panel serve gui/app.py --setup gui/warm.py``.

Runs once per server process before the first visitor: reads the results named by
``$SIGMA_RESULTS`` (the demo when unset) into the shared :func:`panel.cache` and builds the first
page once into a throwaway document (:func:`gui.views.warm_up`), so numba compiles datashader's
pipelines and Panel/Bokeh run their first-use code before a visitor waits for them. (``panel serve --warm`` would do the same but
fails in panel 1.9.4 with "Set changed size during iteration" while cleaning its warm session.)
"""

from __future__ import annotations

import logging
import os

from gui.views import SigmaApp, warm_up  # the installed package (sigma ships `gui`): no sys.path

logger = logging.getLogger("gui.warm")

try:
    _seconds = warm_up(SigmaApp(os.environ.get("SIGMA_RESULTS") or None))
    logger.info("warmed up the GUI in %.1f s", _seconds)
except Exception:  # a bad file is reported to the visitor by the app itself
    logger.exception("warm-up failed; the app will report the problem when a page opens")
