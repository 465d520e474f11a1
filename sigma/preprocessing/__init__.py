"""Preprocessing: from a spectrum image (counts) to per-pixel spectral features.

Every step is a pure function ``f(ds, *, ...) -> xr.Dataset``: the input is never modified, dims
are used by name, one line is appended to ``attrs["history"]``, and numpy-backed data stays numpy
while dask-backed data stays dask (lazy) unless a step says otherwise.

Steps on **counts** (``counts`` with dims ``(y, x, energy)``):
:func:`bin_spatial`, :func:`rebin_energy`, :func:`crop_energy`, :func:`remove_noise_peak`,
:func:`normalize_total`.

Steps from counts to **features** (``features`` with dims ``(y, x, feature)``, float32):
:func:`line_features` (counts in X-ray line windows) and :func:`pca_features` (Poisson-scaled PCA).

Steps on **features**: :func:`neighbor_average`, :func:`zscore`, :func:`softmax`.

:class:`Preprocessor` holds an ordered chain of steps as plain data (dict / JSON), applies it,
and records it in ``attrs["preprocessing"]`` of the result, so the same chain can be re-applied
to another file. ``Preprocessor.sigma_default()`` is the chain of the published SIGMA method.

Memory
------
The line-feature path never builds a float copy of the cube: the per-pixel total and the window
sums are integer reductions of slices of the counts (views for numpy, one ``map_blocks`` pass for
dask), and only the small ``(y, x, n_lines)`` result is divided by the total. A
``Preprocessor`` fuses ``remove_noise_peak`` and ``normalize_total`` that come right before
``line_features`` into that single pass (same numbers, no copy of the cube).
"""

from sigma.preprocessing._common import TOTAL_COUNTS, _counts_total, _mnka  # noqa: F401
from sigma.preprocessing.chain import STEPS, Preprocessor
from sigma.preprocessing.counts import (
    bin_spatial,
    crop_energy,
    normalize_total,
    rebin_energy,
    remove_noise_peak,
)
from sigma.preprocessing.features import neighbor_average, softmax, zscore
from sigma.preprocessing.pca import pca_features
from sigma.preprocessing.windows import line_features, line_windows

__all__ = [
    "bin_spatial",
    "rebin_energy",
    "crop_energy",
    "remove_noise_peak",
    "normalize_total",
    "line_features",
    "line_windows",
    "pca_features",
    "neighbor_average",
    "zscore",
    "softmax",
    "Preprocessor",
    "STEPS",
]
