"""Line-window features: counts in +/- k FWHM windows around X-ray lines, one pass over the cube."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import xarray as xr

from sigma import xray
from sigma._schema import COUNTS, DIM_FEATURE, DIM_X, DIM_Y, FEATURES
from sigma.exceptions import XrayLineError
from sigma.preprocessing._common import (
    TOTAL_COUNTS,
    _accumulator,
    _channel_width,
    _energy_kev,
    _fmt_kwargs,
    _history,
    _is_dask,
    _mnka,
    _nav_vars,
    _require_counts,
    _total_dtype,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Window:
    name: str
    energy_kev: float
    lo_kev: float
    hi_kev: float
    i0: int
    i1: int  # exclusive
    bg: tuple[tuple[int, int], ...] = ()


def _resolve_lines(
    ds: xr.Dataset,
    lines: str | Sequence[str] | None,
    mnka: float,
    ignore_below_kev: float,
) -> tuple[list[str], list[str]]:
    """(line names, feature labels) for :func:`line_features` (see :func:`select_lines`)."""
    from sigma.preprocessing.lines import select_lines

    choices = select_lines(
        ds, lines, mnka_resolution_ev=mnka, ignore_below_kev=max(ignore_below_kev, 0.1)
    )
    for c in choices:
        logger.info("line_features: %s on %s (%s)", c.feature, c.line, c.reason)
    return [c.line for c in choices], [c.feature for c in choices]


def line_windows(
    energy_kev: npt.ArrayLike,
    lines: Sequence[str],
    *,
    width_fwhm: float = 1.0,
    mnka_resolution_ev: float = 130.0,
    background: bool = False,
) -> list[dict[str, Any]]:
    """Integration windows of X-ray lines on an energy axis.

    The window of a line at energy ``E`` covers the channels whose centres lie within
    ``E +/- width_fwhm * FWHM(E)`` (:func:`sigma.xray.fwhm_kev`); at least the nearest channel.
    With ``background=True`` each line also gets two side windows of the same number of channels
    right below and right above it (clipped at the ends of the axis).

    Returns
    -------
    list of dict
        ``name, energy_kev, lo_kev, hi_kev, i0, i1`` (channel slice ``i0:i1``) and ``bg`` (list
        of ``(i0, i1)`` slices).

    Raises
    ------
    XrayLineError
        If a line is unknown or its energy lies outside the energy axis.
    """
    return [
        w.__dict__ | {"bg": list(w.bg)}
        for w in _line_windows(
            np.asarray(energy_kev, dtype=np.float64),
            lines,
            width_fwhm,
            mnka_resolution_ev,
            background,
        )
    ]


def _line_windows(
    e: npt.NDArray[np.float64],
    lines: Sequence[str],
    width_fwhm: float,
    mnka: float,
    background: bool,
    warn_overlap: bool = True,
) -> list[_Window]:
    if not width_fwhm > 0:
        raise ValueError(
            f"width_fwhm must be a positive number of FWHM (e.g. 1.0). Got {width_fwhm!r} instead."
        )
    half_ch = 0.5 * _channel_width(e)
    e_lo, e_hi = float(e[0]) - half_ch, float(e[-1]) + half_ch
    out: list[_Window] = []
    seen: set[str] = set()
    for name in lines:
        if name in seen:
            raise XrayLineError(
                f"line_features: line {name!r} is given twice; give each line once."
            )
        seen.add(name)
        line = xray.get_line(name)
        if not e_lo <= line.energy_kev <= e_hi:
            raise XrayLineError(
                f"X-ray line {name!r} at {line.energy_kev:.3f} keV lies outside the energy range "
                f"{e_lo:.3f} .. {e_hi:.3f} keV of the data. Remove it from lines (or crop_energy "
                "less)."
            )
        half = width_fwhm * float(xray.fwhm_kev(line.energy_kev, mnka))
        lo, hi = line.energy_kev - half, line.energy_kev + half
        i0 = int(np.searchsorted(e, lo, side="left"))
        i1 = int(np.searchsorted(e, hi, side="right"))
        if i1 <= i0:  # window narrower than a channel: take the nearest channel
            i0 = int(np.clip(np.argmin(np.abs(e - line.energy_kev)), 0, e.size - 1))
            i1 = i0 + 1
        bg: tuple[tuple[int, int], ...] = ()
        if background:
            n = i1 - i0
            sides = ((max(i0 - n, 0), i0), (i1, min(i1 + n, e.size)))
            bg = tuple(s for s in sides if s[1] > s[0])
            if not bg:
                raise XrayLineError(
                    f"X-ray line {name!r}: its window covers the whole energy axis, so there is no "
                    "room for background windows; use background=False or a smaller width_fwhm."
                )
        out.append(_Window(name, float(line.energy_kev), float(lo), float(hi), i0, i1, bg))
    overlaps = [
        (a.name, b.name)
        for k, a in enumerate(out)
        for b in out[k + 1 :]
        if a.i0 < b.i1 and b.i0 < a.i1
    ]
    if overlaps:
        pairs = ", ".join(f"{a}/{b}" for a, b in overlaps)
        msg = (
            "line_features: the windows of these lines overlap, so their features share counts: "
            f"{pairs}. "
            "Drop one line of each pair or use a smaller width_fwhm."
        )
        if warn_overlap:
            warnings.warn(msg, stacklevel=3)
        else:  # sigma chose them (elements of the file, identified peaks): nothing to act on
            logger.info(msg)
    return out


def _window_sums(
    block: npt.NDArray[Any],
    windows: Sequence[_Window],
    n_skip: int,
    total_is_given: bool,
) -> npt.NDArray[np.float64]:
    """Per-pixel window sums (and background estimates) of one ``(y, x, energy)`` block.

    Returns ``(by, bx, 2 * n_lines + 1)`` float64: window sums, background estimates, and the
    pixel total (over channels ``n_skip:``) last. Sums are exact integer sums of slices (views).
    """
    acc = _accumulator(block.dtype, block.shape[-1])
    n = len(windows)
    out = np.zeros((*block.shape[:2], 2 * n + 1), dtype=np.float64)
    for k, w in enumerate(windows):
        i0 = max(w.i0, n_skip)
        if w.i1 > i0:
            out[..., k] = block[..., i0 : w.i1].sum(axis=-1, dtype=acc)
        if w.bg:
            side_sum = np.zeros(block.shape[:2], dtype=np.float64)
            n_side = 0
            for b0, b1 in w.bg:
                b0 = max(b0, n_skip)
                if b1 > b0:
                    side_sum += block[..., b0:b1].sum(axis=-1, dtype=acc)
                    n_side += b1 - b0
            if n_side:
                out[..., n + k] = side_sum * ((w.i1 - i0) / n_side)
    if not total_is_given:
        out[..., -1] = block[..., n_skip:].sum(axis=-1, dtype=acc)
    return out


def line_features(
    ds: xr.Dataset,
    lines: str | Sequence[str] | None = None,
    *,
    width_fwhm: float = 1.0,
    background: bool = False,
    mnka_resolution_ev: float | None = None,
    normalize: bool = False,
    ignore_below_kev: float | None = None,
) -> xr.Dataset:
    """Counts integrated over X-ray line windows: one feature per line.

    Parameters
    ----------
    ds : xr.Dataset
        Spectrum image, ``counts`` (y, x, energy) with energy in keV; integer counts (or the
        output of :func:`normalize_total`).
    lines : None, "auto", str or list of str
        Chosen by :func:`sigma.preprocessing.lines.select_lines`. ``None``: one feature per
        element of the file (``attrs["elements"]``, ``attrs["xray_lines"]``) on its best line,
        plus elements identified for the peaks they do not explain (sum and maximum-pixel
        spectra; for dask data this computes them, one pass each); ``"auto"``: identified
        elements only; or elements and lines such as ``["Fe", "Pb_Ma"]`` (an element gives a
        feature named by the element, a line one named by the line).
    width_fwhm : float
        Window half-width in FWHM(E) of the detector (SIGMA: 1.0).
    background : bool
        Subtract a background from every window: the mean counts per channel of two side windows
        (as many channels as the line window, right below and right above it) times the window's
        channel count. Net values below 0 are clipped to 0 (noise in empty regions would otherwise
        give negative features). Side windows may catch a neighbouring line; check
        :func:`line_windows`.
    mnka_resolution_ev : float, optional
        Detector FWHM at Mn Ka in eV; default ``attrs["energy_resolution_mnka_ev"]`` (or 130).
    normalize : bool
        Divide the window sums by the pixel's total counts (same numbers as
        :func:`normalize_total` before, without building a float cube). Empty pixels give 0.
    ignore_below_kev : float, optional
        Treat channels below this energy as zero (same as :func:`remove_noise_peak` before,
        without a copy of the cube).

    Returns
    -------
    xr.Dataset
        ``features`` (y, x, feature) float32 with coordinate ``feature`` = line names and
        ``line_energy``/``window_lo``/``window_hi`` (feature, keV); ``total_counts`` (y, x); the
        navigation images; the input's attrs with ``xray_lines`` set to the lines used and one
        history line. Dask input gives dask output (one ``map_blocks`` pass over the cube).

    Raises
    ------
    XrayLineError
        If a line is unknown, lies outside the energy range, or none can be found.

    Warns
    -----
    UserWarning
        If two lines the caller named have overlapping windows (the pairs are listed; for lines
        sigma chose itself the overlap is logged).

    Examples
    --------
    >>> import numpy as np
    >>> from sigma._schema import make_spectrum_image
    >>> counts = np.zeros((1, 2, 1000), np.uint16)
    >>> counts[0, 0, 640] = 7  # 6.40 keV: Fe Ka
    >>> ds = make_spectrum_image(counts, energy_scale_kev=0.01)
    >>> line_features(ds, ["Fe_Ka"]).features.values.ravel().tolist()
    [7.0, 0.0]
    """
    ds = _require_counts(ds, "line_features")
    mnka = _mnka(ds, mnka_resolution_ev)
    e = _energy_kev(ds)
    skip_kev = float(ignore_below_kev) if ignore_below_kev is not None else -np.inf
    n_skip = int(np.searchsorted(e, skip_kev, side="left")) if ignore_below_kev is not None else 0
    names, labels = _resolve_lines(
        ds, lines, mnka, skip_kev if ignore_below_kev is not None else 0.1
    )
    chosen = lines is None or (isinstance(lines, str) and lines.strip().lower() == "auto")
    windows = _line_windows(e, names, width_fwhm, mnka, background, warn_overlap=not chosen)
    counts = ds[COUNTS]
    n = len(windows)
    given_total = TOTAL_COUNTS in ds.data_vars and n_skip == 0
    data = counts.data
    if _is_dask(data):
        import dask.array as da

        if data.numblocks[2] > 1:
            data = data.rechunk({2: -1})
        sums = da.map_blocks(
            _window_sums,
            data,
            windows,
            n_skip,
            given_total,
            dtype=np.float64,
            chunks=(data.chunks[0], data.chunks[1], (2 * n + 1,)),
        )
        xp: Any = da
    else:
        sums = _window_sums(np.asarray(data), windows, n_skip, given_total)
        xp = np
    raw = sums[..., :n]
    if background:
        raw = xp.clip(raw - sums[..., n : 2 * n], 0, None)
    if given_total:
        total_da = ds[TOTAL_COUNTS]
        total = total_da.data
    else:
        tdtype = _total_dtype(counts.dtype)
        total = sums[..., -1].astype(tdtype)
        total_da = None
    if normalize:
        tot = total[..., None].astype(np.float64)
        feats = xp.where(tot > 0, raw / xp.where(tot > 0, tot, 1.0), 0.0).astype(np.float32)
    else:
        feats = raw.astype(np.float32)
    out_vars: dict[str, Any] = {
        FEATURES: xr.DataArray(
            feats,
            dims=(DIM_Y, DIM_X, DIM_FEATURE),
            attrs={
                "units": "1" if normalize else "counts",
                "long_name": "X-ray line intensity" + (" / pixel total" if normalize else ""),
                "kind": "xray_lines",
            },
        ),
        TOTAL_COUNTS: total_da
        if total_da is not None
        else xr.DataArray(
            total,
            dims=(DIM_Y, DIM_X),
            attrs={"units": "counts", "long_name": "total counts per pixel"},
        ),
    }
    for name in _nav_vars(ds):
        if name != TOTAL_COUNTS:
            out_vars[name] = ds[name]
    coords = {
        DIM_Y: ds[DIM_Y],
        DIM_X: ds[DIM_X],
        DIM_FEATURE: xr.DataArray(
            np.array(labels, dtype=str),
            dims=DIM_FEATURE,
            attrs={"long_name": "element or X-ray line"},
        ),
        "xray_line": (DIM_FEATURE, np.array(names, dtype=str), {"long_name": "X-ray line"}),
        "line_energy": (
            DIM_FEATURE,
            [w.energy_kev for w in windows],
            {"units": "keV", "long_name": "line energy"},
        ),
        "window_lo": (
            DIM_FEATURE,
            [w.lo_kev for w in windows],
            {"units": "keV", "long_name": "window start"},
        ),
        "window_hi": (
            DIM_FEATURE,
            [w.hi_kev for w in windows],
            {"units": "keV", "long_name": "window end"},
        ),
    }
    attrs = _history(
        ds,
        "line_features("
        + _fmt_kwargs(
            lines=labels,
            width_fwhm=width_fwhm,
            background=background,
            mnka_resolution_ev=mnka,
            normalize=normalize,
            ignore_below_kev=ignore_below_kev,
        )
        + ")",
    )
    attrs["xray_lines"] = list(names)
    attrs["feature_lines"] = list(labels)
    return xr.Dataset(out_vars, coords=coords, attrs=attrs)
