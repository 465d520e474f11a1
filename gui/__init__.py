"""sigma's Panel GUI: latent density, lasso-selected clusters, linked maps and spectra.

The GUI reads a results dataset (see ``docs/results_schema.md``) and never imports torch.

- :mod:`gui.demo` gives the demo (the ``sigma demo`` results, built once) and results of the same
  scene with known phases for tests;
- :mod:`gui.data` loads and validates results and holds the pure selection / editing / export
  functions the views call;
- :mod:`gui.views` holds the :class:`panel.viewable.Viewer` classes;
- ``gui/app.py`` is the script served by ``panel serve gui/app.py`` and ``sigma gui``.
"""

from __future__ import annotations
