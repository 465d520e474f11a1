"""No-data pixels: outside the scanned area, dead scan lines, frames that stopped, zero peak only.

Real maps often hold pixels without X-ray data: a Hitachi map records EDS only inside a
rectangle, an EBSD+EDS map in a few pixels, a TEM map may have scan columns that hold nothing
but zero (noise) peak counts. Such pixels are not a phase. :func:`no_data_mask` finds them
from the data's own Poisson statistics, with no constant tuned on a scene:

1. each pixel's counts ``c`` above the zero peak (channels from ``ignore_below_kev``);
2. the rate ``lam`` of the pixels that hold data: the mean of a zero-truncated Poisson fitted
   to the non-empty pixels (``mean(c | c > 0) = lam / (1 - exp(-lam))``), so a map that is
   79 % empty still gives the rate inside its data area, and a sparse map (1 count/px, many
   zeros by chance) gives its true rate;
3. a pixel is *low* when ``c <= 0.1 * lam`` (no counts at all for ``lam < 10``);
4. a low pixel is no data when the evidence around it says so, at odds of
   ``exp(-10) / n_pixels`` (a Bonferroni bound over the map's pixels): either its square window of ``w x w`` pixels (``w``
   the smallest odd size with ``w**2 * lam`` beyond those odds) holds improbably few counts for
   ``w**2`` data pixels (Poisson lower tail), or it lies on a run of consecutive low pixels
   along its row or its column whose probability as data, ``P(c <= 0.1 lam)**L``, is below the
   same odds (a dead scan column or row is one pixel wide).

The mask never spreads: neighbours of no-data pixels keep their own counts, and the 3x3 mean
of :func:`sigma.preprocessing.neighbor_average` averages over valid neighbours only.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma._schema import COUNTS, DIM_ENERGY, DIM_X, DIM_Y
from sigma.exceptions import EmptySelectionError

logger = logging.getLogger(__name__)

__all__ = ["VALID", "no_data_mask", "data_rate"]

#: name of the (y, x) boolean variable marking pixels with data (True) in feature datasets
VALID = "valid_pixel"
#: log of the odds (per map, before the Bonferroni term) at which low pixels are no data
_LOG_ODDS = -10.0


def data_rate(c: npt.NDArray[np.float64]) -> float:
    """Poisson rate of the pixels that hold data: zero-truncated Poisson fit to ``c > 0``."""
    nz = c[c > 0]
    if nz.size == 0:
        return 0.0
    m = float(nz.mean())
    if m <= 1.0 + 1e-9:
        return 1e-3
    lam = m  # fixed point of lam = m * (1 - exp(-lam)), from above
    for _ in range(200):
        new = m * (1.0 - math.exp(-lam))
        if abs(new - lam) < 1e-9 * m:
            break
        lam = new
    return lam


def _runs(low: npt.NDArray[np.bool_], axis: int) -> npt.NDArray[np.int_]:
    """Length of the run of consecutive ``low`` pixels each pixel lies on, along ``axis``."""
    a = np.moveaxis(low, axis, 0)
    n = a.shape[0]
    fwd = np.zeros(a.shape, dtype=np.int64)
    bwd = np.zeros(a.shape, dtype=np.int64)
    for i in range(n):
        fwd[i] = np.where(a[i], (fwd[i - 1] if i else 0) + 1, 0)
    for i in range(n - 1, -1, -1):
        bwd[i] = np.where(a[i], (bwd[i + 1] if i < n - 1 else 0) + 1, 0)
    return np.moveaxis(np.where(a, fwd + bwd - 1, 0), 0, axis)


def no_data_mask(ds: xr.Dataset, *, ignore_below_kev: float = 0.1) -> xr.DataArray:
    """Pixels without X-ray data (True), by the rule in the module docstring.

    Parameters
    ----------
    ds : xr.Dataset
        Spectrum image, ``counts (y, x, energy)`` with energy in keV (numpy or dask).
    ignore_below_kev : float
        The zero (noise) peak: counts below this energy do not count as data.

    Returns
    -------
    xr.DataArray
        bool ``(y, x)``, True where a pixel has no data; attrs ``data_rate`` (counts per data
        pixel) and ``n_no_data``.

    Raises
    ------
    EmptySelectionError
        If the map holds no counts above the zero peak at all, or every pixel is no data.

    Examples
    --------
    >>> from sigma._schema import make_spectrum_image
    >>> rng = np.random.default_rng(0)
    >>> c = rng.poisson(0.05, (20, 20, 200)).astype(np.uint16)
    >>> c[:, :5] = 0  # a no-data band 5 pixels wide
    >>> mask = no_data_mask(make_spectrum_image(c, energy_scale_kev=0.01))
    >>> int(mask[:, :5].sum()), int(mask[:, 5:].sum())
    (100, 0)
    """
    from scipy import ndimage
    from scipy.stats import poisson

    energy = np.asarray(ds[DIM_ENERGY].values, dtype=np.float64)
    first = int(np.searchsorted(energy, ignore_below_kev, side="left"))
    counts = ds[COUNTS].isel({DIM_ENERGY: slice(first, None)})
    c = np.asarray(counts.sum(DIM_ENERGY).values, dtype=np.float64)
    if not np.any(c > 0):
        raise EmptySelectionError(
            f"the map holds no X-ray counts above {ignore_below_kev:g} keV (the zero peak): "
            "there is nothing to find phases in. Check the file holds the EDS data (not only "
            "images), and its energy axis (units keV)."
        )
    lam = data_rate(c)
    log_odds = _LOG_ODDS - math.log(c.size)
    limit = math.floor(0.1 * lam)
    low = c <= limit
    p_low = float(poisson.cdf(limit, lam))
    mask = np.zeros(c.shape, dtype=bool)
    if low.any() and p_low < 1.0:
        # runs along rows and columns (dead scan lines are one pixel wide)
        need = log_odds / math.log(p_low) if p_low > 0 else 1.0
        mask |= _runs(low, 0) >= need
        mask |= _runs(low, 1) >= need
        # square windows (areas outside the scanned region, stopped frames)
        w = 1
        while w * w * lam < -log_odds:
            w += 2
        w = min(w, 2 * (min(c.shape) // 2) + 1)
        window = ndimage.uniform_filter(c, size=w, mode="reflect") * (w * w)
        log_p = poisson.logcdf(np.floor(window + 1e-9), w * w * lam)
        mask |= low & (log_p < log_odds)
    n_bad = int(mask.sum())
    if n_bad == mask.size:
        raise EmptySelectionError(
            "every pixel of the map was found to hold no X-ray data (counts at the level of "
            f"empty pixels, {lam:.3g} counts per data pixel); nothing is left to find phases in."
        )
    if n_bad:
        logger.info(
            "%d of %d pixels (%.1f %%) hold no X-ray data (data pixels: %.3g counts each); "
            "they are labelled -1 and left out",
            n_bad,
            mask.size,
            100.0 * n_bad / mask.size,
            lam,
        )
    return xr.DataArray(
        mask,
        dims=(DIM_Y, DIM_X),
        coords={d: ds[d] for d in (DIM_Y, DIM_X) if d in ds.coords},
        attrs={"long_name": "no X-ray data", "data_rate": lam, "n_no_data": n_bad},
    )
