"""A search for what the clusters miss: phases too rare to shape the latent or the mixture.

An accessory mineral covering 0.3 % of a map (a few small grains) rarely gets a cluster of its
own, yet its pixels are poorly explained by the phase they were put in. :func:`find_missed_phases`
looks for them in the counts, with Poisson statistics throughout:

1. **excess map**: every pixel's counts are pooled over its 3x3 window and compared, channel by
   channel, with what the window's assigned phases predict (each pixel's total counts times its
   phase's spectrum shape); the largest signed Poisson deviance residual over the channels is
   the pixel's *excess* (in sigma). A window over a missed phase shows its unique line as a
   large excess; windows of well-explained pixels stay near 0;
2. **candidates**: connected groups of pixels whose excess passes a lenient Bonferroni
   threshold over all pixel x channel tests (about ``screen_false`` false alarms per map);
3. **test**: a candidate's summed spectrum is fitted by a non-negative mix of all the phases'
   spectra (Poisson likelihood, EM updates). Mixed pixels on a boundary are such a mix and
   pass; a missed phase leaves lines the mix cannot reach. The candidate is kept when its
   largest channel residual passes ``min_sigma`` and the significance threshold, and when the
   unexplained counts are a sizeable share of the counts in those channels (``min_share``), so
   small calibration differences between phases do not become phases;
4. **grouping**: kept candidates with the same strongest excess line are one phase (five
   zircon grains are one zircon phase); the merged group is tested again.

The result is a list of proposals with their evidence (pixels, significance, the lines that
differ); :mod:`sigma.clustering.spatial` then assigns the pixels with the new phase included.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = ["find_missed_phases", "poisson_mix"]


def _dev_resid(c: npt.NDArray[Any], m: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Signed Poisson deviance residuals of counts ``c`` against expectations ``m`` (> 0)."""
    m = np.maximum(m, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(c > 0, c * np.log(c / m), 0.0) - (c - m)
    return np.asarray(np.sign(c - m) * np.sqrt(np.maximum(2.0 * t, 0.0)))


def poisson_mix(
    s: npt.NDArray[np.float64], shapes: npt.NDArray[np.float64], n_iter: int = 50
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Non-negative amounts ``a`` maximising the Poisson likelihood of ``s`` under ``a @ shapes``.

    ``shapes`` (phases, channels) are spectrum shapes (rows sum to 1). Started from the
    variance-weighted non-negative least squares solution (exact, scipy's NNLS), then polished
    by EM (Richardson-Lucy) updates, which keep ``a >= 0`` and converge to the Poisson
    maximum. Returns ``(a, a @ shapes)``.
    """
    from scipy.optimize import nnls

    w = 1.0 / np.sqrt(np.maximum(s, 0.0) + 1.0)
    a, _ = nnls(shapes.T * w[:, None], s * w)
    total = max(float(s.sum()), 1e-12)
    a = np.maximum(a, 1e-9 * total)
    for _ in range(n_iter):
        mu = np.maximum(a @ shapes, 1e-300)
        a = a * (shapes @ (s / mu))
    return a, np.asarray(a @ shapes)


def _line_name(
    energy_kev: float,
    beam_energy_kev: float | None,
    fwhm_mnka_ev: float,
    support: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]] | None = None,
) -> str:
    """The principal X-ray line nearest ``energy_kev`` (within half the FWHM), or the energy.

    With ``support`` (``excess``, ``expected`` and ``energy`` per channel, counts summed over
    one FWHM), a line is passed over when a stronger line of its element lies in the spectrum
    and shows under a quarter of the excess it would have (and that share would be at least 5
    sigma): 2.05 keV is Zr La, not Pt Ma, when there is no Pt La at 9.44 keV.
    """
    from sigma.xray import candidate_lines

    try:
        lines = candidate_lines(
            energy_kev,
            beam_energy_kev=beam_energy_kev,
            mnka_resolution_ev=fwhm_mnka_ev,
            min_weight=1.0,
        )
    except Exception:  # noqa: BLE001 - a name is a nicety; the energy always works
        lines = []
    if support is not None:
        supported = [
            ln for ln in lines if _other_lines_agree(ln, support, beam_energy_kev, fwhm_mnka_ev)
        ]
        lines = supported or lines
    return lines[0].name if lines else f"{energy_kev:.2f} keV"


def _other_lines_agree(
    line: Any,
    support: tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]],
    beam_energy_kev: float | None,
    fwhm_mnka_ev: float,
) -> bool:
    """Whether the stronger lines of ``line``'s element show the excess ``line`` implies."""
    from sigma.xray import element_lines, fwhm_kev, generated_weights

    excess, expected, energy = support
    if energy.size < 2:
        return True
    at = int(np.argmin(np.abs(energy - line.energy_kev)))
    own = float(excess[at])
    if own <= 0:
        return True
    table = element_lines(line.element)
    try:
        if beam_energy_kev is None:
            raise ValueError
        weight = generated_weights(line.element, beam_energy_kev)
    except Exception:  # noqa: BLE001 - without the beam energy: the table's weights
        weight = {n: ln.weight for n, ln in table.items() if ln.shell == line.shell}
    w0 = weight.get(line.name, 0.0)
    if w0 <= 0:
        return True
    width = float(fwhm_kev(line.energy_kev, fwhm_mnka_ev))
    for name, w in weight.items():
        other = table[name]
        if (
            w < w0
            or abs(other.energy_kev - line.energy_kev) < 2 * width
            or not energy[0] <= other.energy_kev <= energy[-1]
        ):
            continue
        j = int(np.argmin(np.abs(energy - other.energy_kev)))
        implied = own * w / w0
        if implied / np.sqrt(max(float(expected[j]), 1.0)) >= 5.0 and excess[j] < implied / 4:
            return False
    return True


def _evidence(
    s: npt.NDArray[np.float64],
    shapes: npt.NDArray[np.float64],
    energy: npt.NDArray[np.float64],
    beam_energy_kev: float | None,
    fwhm_mnka_ev: float,
    *,
    name_lines: bool = True,
    n_iter: int = 50,
) -> dict[str, Any]:
    """How badly the best non-negative mix of the phases explains the summed counts ``s``."""
    a, mu = poisson_mix(s, shapes, n_iter=n_iter)
    r = _dev_resid(s, mu)
    # excess over 3 channels (one FWHM) centred on each channel
    s3 = np.convolve(s, np.ones(3), mode="same")
    m3 = np.convolve(mu, np.ones(3), mode="same")
    r3 = _dev_resid(s3, m3)
    j = int(np.argmax(r3))
    share = float((s3[j] - m3[j]) / max(s3[j], 1e-12))
    lo, hi = max(0, j - 1), min(s.size, j + 2)
    w = np.clip(s[lo:hi] - mu[lo:hi], 0, None)
    centre = float((w * energy[lo:hi]).sum() / w.sum()) if w.sum() > 0 else float(energy[j])
    lines: list[dict[str, Any]] = []
    if name_lines:
        used: list[int] = []
        for i in np.argsort(-r3)[:40]:
            if r3[i] < 5.0 or len(lines) == 3:
                break
            if any(abs(int(i) - u) < 3 for u in used):  # one line per FWHM
                continue
            used.append(int(i))
            name = _line_name(
                float(energy[i]), beam_energy_kev, fwhm_mnka_ev, (s3 - m3, m3, energy)
            )
            lines.append({"line": name, "sigma": round(float(r3[i]), 1)})
    return {
        "channel": j,
        "sigma": float(r3[j]),
        "share": share,
        "line": _line_name(centre, beam_energy_kev, fwhm_mnka_ev, (s3 - m3, m3, energy))
        if name_lines
        else "",
        "energy_kev": round(centre, 3),
        "excess_counts": float(s3[j] - m3[j]),
        "lines": lines,
        "deviance": float((r**2).sum()),
        "mix": a / max(float(a.sum()), 1e-12),
    }


#: values (pixels x channels) of one block of the pooled excess map
_BLOCK_VALUES = 2_000_000


def _pool_operator(ny: int, nx: int) -> Any:
    """Sparse ``(pixels, pixels)`` matrix summing each pixel's 3x3 window (zeros outside)."""
    from scipy import sparse

    idx = np.arange(ny * nx).reshape(ny, nx)
    rows, cols = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            src = idx[max(0, -dy) : ny - max(0, dy), max(0, -dx) : nx - max(0, dx)]
            dst = idx[max(0, dy) : ny - max(0, -dy), max(0, dx) : nx - max(0, -dx)]
            rows.append(src.ravel())
            cols.append(dst.ravel())
    r, c = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(r.size), (r, c)), shape=(ny * nx, ny * nx))


def find_missed_phases(
    counts: npt.NDArray[Any],
    label: npt.NDArray[np.int_],
    shape: tuple[int, int],
    energy_kev: npt.NDArray[np.float64],
    *,
    alpha: float = 1e-6,
    screen_false: float = 100.0,
    min_sigma: float = 8.0,
    min_share: float = 0.25,
    min_pixels: int | None = None,
    beam_energy_kev: float | None = None,
    fwhm_mnka_ev: float = 130.0,
    max_candidates: int = 200,
) -> list[dict[str, Any]]:
    """Groups of pixels that their phase explains poorly and no mix of phases explains.

    Parameters
    ----------
    counts : int array (pixels, channels)
        Raw counts, pixels in row-major ``shape`` order (e.g.
        :func:`sigma.clustering.spatial.cluster_channels`).
    label : int array (pixels,)
        Current phases (-1: no data).
    shape : (ny, nx)
        Image shape.
    energy_kev : float array (channels,)
        Channel centres in keV (names the lines that differ).
    alpha : float
        Family-wise false-alarm rate of the candidate tests (Bonferroni over groups x channels).
    screen_false : float
        Expected number of false alarms among all pixel x channel tests of the screening
        stage (a lenient Bonferroni: noise gives a few isolated pixels, which form no group
        or fail the candidate test; a rare phase's grains pass it at 30 counts/px).
    min_sigma : float
        A proposal's strongest line must exceed the mix by at least this many sigma.
    min_share : float
        ... and the unexplained counts must be at least this share of the counts there.
    min_pixels : int or None
        Smallest proposal; None: ``max(4, 0.02 % of the pixels)``.
    beam_energy_kev, fwhm_mnka_ev : float
        For naming the lines.
    max_candidates : int
        Only this many largest candidate groups are tested.

    Returns
    -------
    list of dict
        One per proposed phase, strongest first: ``pixels`` (int array of pixel indices),
        ``n_pixels``, ``line`` (strongest excess line, e.g. ``"Zr_La"``), ``sigma`` (its excess
        over the best mix of the existing phases), ``lines`` (up to 3 lines with their excess),
        ``log10_p`` (Bonferroni-corrected, from the deviance), ``host`` (the phase most of its
        pixels were in), ``n_groups`` (spatial groups merged).
    """
    from scipy import ndimage, stats

    ny, nx = shape
    n, n_ch = counts.shape
    label = np.asarray(label).ravel()
    ok = label >= 0
    k = int(label.max()) + 1 if ok.any() else 0
    if k == 0 or n_ch < 3:
        return []
    if min_pixels is None:
        min_pixels = max(4, int(math.ceil(2e-4 * ok.sum())))
    from sigma.clustering.spatial import as_sparse, phase_spectra

    cs = as_sparse(counts)
    sums = phase_spectra(cs, label, k)
    mean = sums.sum(axis=0) / max(float(sums.sum()), 1e-300)
    smoothed = sums + 0.5 * n_ch * mean[None, :] + 1e-12
    shapes = smoothed / smoothed.sum(axis=1, keepdims=True)
    total = np.asarray(cs.sum(axis=1)).ravel()
    # 1. counts and expectations pooled over 3x3 windows, a block of image rows at a time
    pool = _pool_operator(ny, nx)
    onehot = np.zeros((n, k))
    onehot[ok, label[ok]] = 1.0
    W = np.asarray(pool @ (onehot * total[:, None]))  # (pixels, phases): pooled counts by phase
    n_tests = max(int(ok.sum()) * n_ch, 1)
    threshold = float(stats.norm.isf(min(screen_false / n_tests, 0.5)))
    excess = np.zeros(n)
    step = max(1, _BLOCK_VALUES // max(n_ch, 1))
    shapes32 = shapes.astype(np.float32)
    for i0 in range(0, n, step):
        C = (pool[i0 : i0 + step] @ cs).toarray().astype(np.float32)
        M = np.maximum(W[i0 : i0 + step].astype(np.float32) @ shapes32, 1e-12)
        # the deviance residual of an excess never exceeds the Pearson residual: only the
        # entries whose Pearson residual passes the threshold need the (costlier) deviance
        r, j = np.nonzero((C - M) > threshold * np.sqrt(M))
        if r.size:
            dev = _dev_resid(C[r, j].astype(np.float64), M[r, j].astype(np.float64))
            np.maximum.at(excess, i0 + r, dev)
    del W
    excess[~ok] = 0.0
    flagged = (excess > threshold).reshape(ny, nx)
    groups, n_groups = ndimage.label(flagged, structure=np.ones((3, 3), dtype=bool))
    if n_groups == 0:
        return []
    sizes = np.bincount(groups.ravel(), minlength=n_groups + 1)
    sizes[0] = 0
    order = np.argsort(-sizes)[: min(n_groups, max_candidates)]
    order = order[sizes[order] >= 2]
    gflat = groups.ravel()
    cand_threshold = float(stats.norm.isf(alpha / max(len(order) * n_ch, 1)))
    need = max(min_sigma, cand_threshold)
    kept: list[tuple[int, npt.NDArray[np.int_]]] = []
    for g in order:
        px = np.flatnonzero(gflat == g)
        s = np.asarray(cs[px].sum(axis=0)).ravel()
        ev = _evidence(
            s, shapes, energy_kev, beam_energy_kev, fwhm_mnka_ev, name_lines=False, n_iter=20
        )
        logger.debug(
            "residual: group of %d px, excess %.1f sigma at %.2f keV, share %.2f",
            px.size,
            ev["sigma"],
            ev["energy_kev"],
            ev["share"],
        )
        if ev["sigma"] >= need and ev["share"] >= min_share:
            kept.append((int(ev["channel"]), px))
    # one phase per excess line: groups whose strongest excess lies within a channel of each
    # other's (five grains of one accessory mineral) are merged
    kept.sort(key=lambda t: t[0])
    merged: list[list[npt.NDArray[np.int_]]] = []
    last = -10
    for ch, px in kept:
        if ch - last > 1:
            merged.append([])
        merged[-1].append(px)
        last = ch
    proposals: list[dict[str, Any]] = []
    for parts in merged:
        px = np.concatenate(parts)
        if px.size < min_pixels:
            continue
        s = np.asarray(cs[px].sum(axis=0)).ravel()
        ev = _evidence(s, shapes, energy_kev, beam_energy_kev, fwhm_mnka_ev)
        if ev["sigma"] < need or ev["share"] < min_share:
            continue
        dof = max(n_ch - k, 1)
        log10_p = float(stats.chi2.logsf(ev["deviance"], dof)) / math.log(10) + math.log10(
            max(len(order), 1)
        )
        host = int(np.bincount(label[px], minlength=k).argmax())
        proposals.append(
            {
                "pixels": px,
                "n_pixels": int(px.size),
                "line": ev["line"],
                "energy_kev": ev["energy_kev"],
                "sigma": round(ev["sigma"], 1),
                "share": round(ev["share"], 3),
                "lines": ev["lines"],
                "log10_p": round(min(max(log10_p, -300.0), 0.0), 1),  # finite: JSON
                "host": host,
                "n_groups": len(parts),
            }
        )
        logger.info(
            "residual: proposed phase: %d px in %d group(s), %s excess %.1f sigma",
            px.size,
            len(parts),
            ev["line"],
            ev["sigma"],
        )
    proposals.sort(key=lambda p: -p["sigma"])
    return proposals
