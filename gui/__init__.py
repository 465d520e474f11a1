"""sigma's Panel GUI: latent density, lasso-selected clusters, linked maps and spectra.

The GUI reads a results dataset (see ``docs/results_schema.md``) and never imports torch.

- :mod:`gui.demo` gives the demo (the ``sigma demo`` results, built once) and results of the same
  scene with known phases for tests;
- :mod:`gui.data` loads and validates results and holds the pure selection / editing / export
  functions the views call;
- :mod:`gui.state` holds what one session's views share (results, selection, messages);
- :mod:`gui.latent`, :mod:`gui.dataset`, :mod:`gui.clusters`, :mod:`gui.phases` are the tabs
  (:class:`panel.viewable.Viewer` classes), :mod:`gui.spectra` the shared spectrum controls;
- :mod:`gui.views` assembles them into the page (:class:`gui.views.SigmaApp`);
- ``gui/app.py`` is the script served by ``panel serve gui/app.py`` and ``sigma gui``.
"""

from __future__ import annotations
