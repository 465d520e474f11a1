"""Synthetic EDS spectrum images with ground truth; the built-in demo data.

A scene is a set of :class:`Phase` objects (element mass fractions) laid out as hard-edged
grains and particles (:func:`phase_map`). Each phase's expected spectrum
(:func:`phase_spectrum`) has characteristic lines at the energies of :mod:`sigma.xray`, a Kramers
continuum, absorption, detector efficiency and resolution, and a zero-energy noise peak. Counts
are sampled photon by photon (never through a dense float cube), eagerly or lazily with dask.

Functions
---------
synthetic_sem
    Bulk sample in an SEM (15 kV, polished rock section by default). Returns ``(ds, truth)``.
synthetic_tem
    Thin film in a TEM (200 kV, nanoparticles and grains on a carbon film).
demo_scene
    The default demo: 8 minerals in epoxy, 280 x 512 pixels x 2048 channels, ~30 counts/pixel.
synthetic_cube
    A tiny cube (16 x 16 x 64 by default) for doctests and tests, built in milliseconds.

The spectrum image follows sigma's data contract (:mod:`sigma._schema`). The ground truth is a
Dataset with ``label`` (y, x), ``abundance`` (phase, y, x), ``phase_spectrum`` (phase, energy),
``expected_counts`` (y, x) and ``area_fraction`` / ``relative_yield`` (phase).

The simulation itself lives in :mod:`sigma.datasets._simulate`; this package only re-exports.

Examples
--------
>>> from sigma.datasets import synthetic_cube
>>> synthetic_cube().counts.dims
('y', 'x', 'energy')
"""

from __future__ import annotations

from sigma.datasets._phases import (
    PHASES,
    SEM_DEMO_PHASES,
    TEM_DEMO_PHASES,
    Phase,
    get_phase,
)
from sigma.datasets._scene import backscatter_coefficient, phase_map
from sigma.datasets._simulate import demo_scene, synthetic_cube, synthetic_sem, synthetic_tem
from sigma.datasets._spectrum import detector_efficiency, phase_spectrum

__all__ = [
    "Phase",
    "PHASES",
    "SEM_DEMO_PHASES",
    "TEM_DEMO_PHASES",
    "get_phase",
    "phase_spectrum",
    "phase_map",
    "detector_efficiency",
    "backscatter_coefficient",
    "synthetic_sem",
    "synthetic_tem",
    "synthetic_cube",
    "demo_scene",
]
