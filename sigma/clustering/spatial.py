"""Spatially aware phase assignment: a Potts prior over the pixels' Poisson likelihoods.

At a few counts per pixel a single pixel's spectrum says little about its phase, but its
neighbours usually belong to the same phase. :func:`potts_assign` combines the two without
blurring edges or small grains:

- **likelihood**: each phase ``k`` has a spectrum shape ``p_k`` (summed counts of its pixels,
  on channels summed to about a third of the detector FWHM); a pixel's counts ``c`` have the
  multinomial log-likelihood ``sum_ch c log p_k`` under phase ``k``. A pixel of 6 counts gives
  a few nats of evidence; one of 2,000 counts gives thousands;
- **prior**: a Potts Markov random field, ``beta`` nats per agreeing neighbour (8-neighbourhood,
  diagonals weighted ``1/sqrt(2)``), plus the phases' area fractions;
- **inference**: mean-field updates in four interleaved sub-lattices (no checkerboard
  oscillation), a few sweeps; the phase spectra are re-estimated from the result (hard EM);
- **strength from the data**: ``beta`` maximises the pseudo-likelihood of the current labels
  given the likelihoods (Besag 1975), so sparse maps lean on their neighbours and well-exposed
  maps hardly at all, without a constant tuned to one scene. Because the prior is in the same
  units (nats) as the likelihood, a strongly exposed pixel or a small grain whose spectrum is
  clearly different keeps its own label.

Everything works on ``(pixels, channels)`` counts and ``(pixels, phases)`` matrices: one matrix
product per EM round and a 3x3 correlation per sub-sweep.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = [
    "cluster_channels",
    "phase_spectra",
    "log_likelihood",
    "potts_assign",
    "spatial_clustering",
]

#: neighbour weights of the 8-neighbourhood (the centre takes no part)
_D = 1.0 / math.sqrt(2.0)
_KERNEL = np.array([[_D, 1.0, _D], [1.0, 0.0, 1.0], [_D, 1.0, _D]])
#: the largest Potts strength considered (nats per agreeing neighbour)
BETA_MAX = 2.0
#: the split test is repeated on the spatial labels when at least this share of pixels moved
RESPLIT_CHANGED = 0.05
#: ... and only below this many counts per pixel: above it a pixel's own spectrum decides its
#: phase, the first split test already ran on every pixel at full power, and what the spatial
#: assignment moves are mixed boundary pixels, not phases hidden by noise (the 30x30 Bruker map,
#: 20,700 counts/px: 9 phases with the second test, 5-8 expected from its element maps)
RESPLIT_MAX_COUNTS = 1000.0
#: pixels used to estimate the strength
_BETA_PIXELS = 20_000


def cluster_channels(
    counts: npt.NDArray[Any],
    energy_kev: npt.NDArray[np.float64],
    fwhm_mnka_ev: float,
    *,
    width_fwhm: float = 1.0 / 3.0,
    min_energy_kev: float = 0.1,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Counts ``(y, x, energy)`` summed into channels ``width_fwhm`` x the Mn Ka FWHM wide.

    Channels below ``min_energy_kev`` (the zero-energy noise peak) are left out. Returns the
    ``(pixels, channels)`` counts and the channels' centre energies in keV.
    """
    energy = np.asarray(energy_kev, dtype=np.float64)
    keep = energy >= min_energy_kev
    width_ev = 1000.0 * float(np.median(np.diff(energy))) if energy.size > 1 else 0.0
    factor = max(1, int(fwhm_mnka_ev * width_fwhm // width_ev)) if width_ev > 0 else 1
    n_ch = int(keep.sum()) // factor
    ny, nx = counts.shape[:2]
    c = np.asarray(counts)[..., keep][..., : n_ch * factor]
    dtype = np.int64 if c.dtype.kind in "biu" else np.float64
    c = c.reshape(ny * nx, n_ch, factor).sum(axis=2, dtype=dtype)
    centres = energy[keep][: n_ch * factor].reshape(n_ch, factor).mean(axis=1)
    return c, centres


def as_sparse(counts: Any) -> Any:
    """``(pixels, channels)`` counts as a CSR matrix (EDS counts are mostly zeros), float64."""
    from scipy import sparse

    if sparse.issparse(counts):
        out = counts.tocsr()
        return out if out.dtype == np.float64 else out.astype(np.float64)
    return sparse.csr_matrix(np.asarray(counts), dtype=np.float64)


def phase_spectra(counts: Any, label: npt.NDArray[np.int_], k: int) -> npt.NDArray[np.float64]:
    """Summed counts ``(phases, channels)`` of the pixels of each phase (label -1 left out)."""
    from scipy import sparse

    lab = np.asarray(label).ravel()
    ok = np.flatnonzero(lab >= 0)
    onehot = sparse.csr_matrix(
        (np.ones(ok.size), (lab[ok], ok)), shape=(k, lab.size), dtype=np.float64
    )
    return np.asarray((onehot @ counts).toarray() if sparse.issparse(counts) else onehot @ counts)


def _log_shapes(sums: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Log of the phases' spectrum shapes; half a count of the map's mean shape keeps zeros finite."""
    mean = sums.sum(axis=0)
    mean = mean / max(float(mean.sum()), 1e-300)
    n_ch = sums.shape[1]
    smoothed = sums + 0.5 * n_ch * mean[None, :] + 1e-12
    return np.asarray(np.log(smoothed / smoothed.sum(axis=1, keepdims=True)))


def log_likelihood(counts: Any, sums: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Multinomial log-likelihood ``(pixels, phases)`` of each pixel's counts under each phase.

    ``counts`` may be dense or a scipy sparse matrix (:func:`as_sparse`).
    """
    return np.asarray(counts @ _log_shapes(sums).T, dtype=np.float64)


def _neighbour_sum(q: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Weighted sum of each pixel's 8 neighbours' ``q`` (``(y, x, k)``; outside counts 0)."""
    from scipy import ndimage

    return np.asarray(ndimage.correlate(q, _KERNEL[:, :, None], mode="constant", cval=0.0))


def _softmax(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def estimate_beta(
    loglik: npt.NDArray[np.float64],
    label: npt.NDArray[np.int_],
    shape: tuple[int, int],
    valid: npt.NDArray[np.bool_] | None = None,
) -> float:
    """Potts strength that maximises the pseudo-likelihood of ``label`` given ``loglik``."""
    ny, nx = shape
    k = loglik.shape[1]
    ok = label >= 0 if valid is None else valid & (label >= 0)
    onehot = np.zeros((ny * nx, k))
    onehot[ok, label[ok]] = 1.0
    nb = _neighbour_sum(onehot.reshape(ny, nx, k)).reshape(ny * nx, k)
    idx = np.flatnonzero(ok)
    if idx.size > _BETA_PIXELS:  # a fixed subsample: the estimate needs no more
        idx = np.sort(np.random.default_rng(0).choice(idx, _BETA_PIXELS, replace=False))
    L, nb, z = loglik[idx], nb[idx], label[idx]
    rows = np.arange(z.size)

    def pseudo_loglik(b: float) -> float:
        s = L + b * nb
        m = s.max(axis=1)
        return float((s[rows, z] - m - np.log(np.exp(s - m[:, None]).sum(axis=1))).sum())

    from scipy.optimize import minimize_scalar

    # the pseudo-likelihood is concave in beta: a bounded scalar search finds its maximum
    opt = minimize_scalar(
        lambda b: -pseudo_loglik(b),
        bounds=(0.0, BETA_MAX),
        method="bounded",
        options={"xatol": 0.02},
    )
    return float(opt.x)


def _mean_field(
    loglik: npt.NDArray[np.float64],
    q: npt.NDArray[np.float64],
    shape: tuple[int, int],
    beta: float,
    log_prior: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_] | None,
    n_sweeps: int,
) -> npt.NDArray[np.float64]:
    """Mean-field sweeps over four sub-lattices (pixels of one (y % 2, x % 2) class at a time)."""
    ny, nx = shape
    k = loglik.shape[1]
    Q = q.reshape(ny, nx, k).copy()
    L = (loglik + log_prior[None, :]).reshape(ny, nx, k)
    V = None if valid is None else valid.reshape(ny, nx)
    for _ in range(n_sweeps):
        for oy in (0, 1):
            for ox in (0, 1):
                nb = _neighbour_sum(Q)[oy::2, ox::2]
                new = _softmax(L[oy::2, ox::2] + beta * nb)
                if V is not None:
                    new[~V[oy::2, ox::2]] = 0.0
                Q[oy::2, ox::2] = new
    return Q.reshape(ny * nx, k)


def potts_assign(
    counts: npt.NDArray[Any],
    prob: npt.NDArray[np.float64],
    shape: tuple[int, int],
    *,
    beta: float | str = "auto",
    valid: npt.NDArray[np.bool_] | None = None,
    max_iter: int = 4,
    n_sweeps: int = 4,
    fixed_spectra: npt.NDArray[np.float64] | None = None,
) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
    """Phase probabilities from the pixels' Poisson likelihoods and a Potts prior (module doc).

    Parameters
    ----------
    counts : int array (pixels, channels)
        Raw counts (e.g. from :func:`cluster_channels`), pixels in row-major ``shape`` order.
    prob : float array (pixels, phases)
        Starting phase probabilities (e.g. a clustering's); they also give the first spectra.
    shape : (ny, nx)
        Image shape of the pixels.
    beta : float or "auto"
        Potts strength in nats per agreeing neighbour; ``"auto"``: pseudo-likelihood estimate,
        re-estimated every round.
    valid : bool array (pixels,) or None
        Pixels holding data; the others keep probability 0 and are no one's neighbour.
    max_iter : int
        EM rounds (spectra -> beta -> mean field); stops early when under 0.1 % of the labels
        change.
    n_sweeps : int
        Mean-field sweeps per round.
    fixed_spectra : float array (phases, channels) or None
        Summed counts of phases whose spectrum is known and kept (rows of NaN are re-estimated).

    Returns
    -------
    prob : float array (pixels, phases)
    info : dict
        ``beta`` (the last strength), ``n_iter``, ``changed`` (fraction of labels that moved
        from the start).
    """
    ny, nx = shape
    q = np.asarray(prob, dtype=np.float64)
    n, k = q.shape
    if n != ny * nx or counts.shape[0] != n:
        msg = f"potts_assign: {n} probabilities and {counts.shape[0]} spectra for a {shape} map."
        raise ValueError(msg)
    ok = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    counts = as_sparse(counts)
    start = np.where(ok & (q.max(axis=1) > 0), q.argmax(axis=1), -1)
    label = start.copy()
    b = 0.0
    it = 0
    for it in range(1, max_iter + 1):
        sums = phase_spectra(counts, label, k)
        if fixed_spectra is not None:
            known = ~np.isnan(fixed_spectra).any(axis=1)
            sums[known] = fixed_spectra[known]
        L = log_likelihood(counts, sums)
        b = estimate_beta(L, label, shape, ok) if beta == "auto" else float(beta)
        weight = np.bincount(label[label >= 0], minlength=k) + 1.0
        log_prior = np.log(weight / weight.sum())
        q = _mean_field(L, q, shape, b, log_prior, None if valid is None else ok, n_sweeps)
        new = np.where(ok, q.argmax(axis=1), -1)
        moved = float((new != label).mean())
        label = new
        logger.debug("potts_assign: round %d, beta %.2f, %.3f %% moved", it, b, 100 * moved)
        if moved < 1e-3:
            break
    q = _dominant_of_mix(counts, q, start, label, sums, shape, b, log_prior)
    label = np.where(ok, q.argmax(axis=1), -1)
    q[~ok] = 0.0
    return q, {
        "beta": round(b, 3),
        "n_iter": it,
        "changed": round(float((label != start).mean()), 4),
    }


def _dominant_of_mix(
    counts: Any,
    q: npt.NDArray[np.float64],
    start: npt.NDArray[np.int_],
    label: npt.NDArray[np.int_],
    sums: npt.NDArray[np.float64],
    shape: tuple[int, int],
    beta: float,
    log_prior: npt.NDArray[np.float64],
    n_grid: int = 21,
) -> npt.NDArray[np.float64]:
    """Moved pixels keep their starting phase unless it holds under half of their mix.

    A pixel on a blurred boundary is a mix of two phases, and a heavy phase gives several times
    the counts of a light one (epoxy next to hematite): its spectrum then looks most like the
    heavy phase although the light one covers most of it. For every pixel the assignment moved
    from phase ``o`` to ``j``, the abundance ``f`` of ``j`` in the mix ``f R_j p_j + (1 - f)
    R_o p_o`` (``R``: the phases' mean counts per pixel, ``p``: their spectrum shapes) is
    weighed by its multinomial likelihood, and the move stands where the best mix with
    ``f > 1/2`` plus the Potts neighbour term beats the best mix with ``f < 1/2``. A pure pixel
    of ``j`` (``f = 1``) keeps the move; a sparse pixel is decided by its neighbours as before
    (moved neighbours count half for each of their two phases).
    """
    from scipy import sparse

    moved = np.flatnonzero((label != start) & (label >= 0) & (start >= 0))
    if moved.size == 0:
        return q
    k = q.shape[1]
    n_px = np.bincount(label[label >= 0], minlength=k).astype(np.float64)
    rate = sums.sum(axis=1) / np.maximum(n_px, 1.0)
    shapes = np.exp(_log_shapes(sums))
    ny, nx = shape
    # a moved neighbour counts half for its old phase and half for its new one: a band of
    # mixed pixels that moved together does not vouch for itself
    q_nb = q.copy()
    q_nb[moved] = 0.0
    q_nb[moved, label[moved]] = 0.5
    q_nb[moved, start[moved]] += 0.5
    nb = _neighbour_sum(q_nb.reshape(ny, nx, k)).reshape(ny * nx, k)
    f = np.linspace(0.0, 1.0, n_grid)
    hi, lo = f > 0.5, f < 0.5
    c = counts if sparse.issparse(counts) else sparse.csr_matrix(counts)
    new, old = label[moved], start[moved]
    revert = np.zeros(moved.size, dtype=bool)
    for j, o in {(int(a), int(b)) for a, b in zip(new, old, strict=True)}:
        if not (rate[j] > 0 and rate[o] > 0):
            continue  # a phase left without counts (all its pixels moved): the move stands
        sel = np.flatnonzero((new == j) & (old == o))
        mix = f[:, None] * rate[j] * shapes[j] + (1.0 - f[:, None]) * rate[o] * shapes[o]
        logmix = np.log(mix / mix.sum(axis=1, keepdims=True))
        ll = np.asarray(c[moved[sel]] @ logmix.T)  # (pixels, n_grid)
        evidence = ll[:, hi].max(axis=1) - ll[:, lo].max(axis=1)
        px = moved[sel]
        evidence += beta * (nb[px, j] - nb[px, o]) + log_prior[j] - log_prior[o]
        revert[sel] = evidence < 0.0
    if revert.any():
        q = q.copy()
        rows, to, back = moved[revert], new[revert], old[revert]
        q[rows, to], q[rows, back] = q[rows, back], q[rows, to].copy()
        logger.debug("potts_assign: %d moved pixels are mostly their old phase", int(revert.sum()))
    return q


def merge_alike(
    counts: Any,
    prob: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_],
    *,
    alpha: float = 1e-6,
) -> tuple[npt.NDArray[np.float64], list[dict[str, Any]]]:
    """Merge phases whose summed spectra do not differ beyond Poisson noise.

    A G-test of homogeneity between every two phases' summed counts (channels summed to the
    FWHM); the pair least different is merged while its p-value is above ``alpha`` divided by
    the number of pairs. The assignment chose each pixel's phase from these same counts, which
    makes two phases look *more* different than they are, so the test errs towards keeping
    them apart: a pair it merges is one phase split in two (e.g. a phase that the split test
    divided into grains). Returns the merged probabilities and one record per merge
    (``phase``, ``into``, ``log10_p``).
    """
    from sigma.clustering.auto_k import _g_test, coarse_channels

    merges: list[dict[str, Any]] = []
    q = np.asarray(prob, dtype=np.float64)
    c = as_sparse(counts)
    n_ch = c.shape[1] // 3
    while q.shape[1] > 1:
        k = q.shape[1]
        label = np.where(valid, q.argmax(axis=1), -1)
        sums = phase_spectra(c, label, k)
        if n_ch >= 2:
            sums = coarse_channels(sums)
        n_pairs = k * (k - 1) // 2
        best = (-np.inf, -1, -1)
        for i in range(k):
            for j in range(i + 1, k):
                if sums[i].sum() <= 0 or sums[j].sum() <= 0:
                    continue
                lp = _g_test(sums[i], sums[j])
                if lp > best[0]:
                    best = (lp, i, j)
        lp, i, j = best
        if i < 0 or lp < math.log(alpha / max(n_pairs, 1)):
            break
        q[:, i] += q[:, j]
        q = np.delete(q, j, axis=1)
        merges.append({"phase": int(j), "into": int(i), "log10_p": round(lp / math.log(10), 1)})
        logger.info("spatial: phases %d and %d merged (log10 p %.1f)", i, j, lp / math.log(10))
    return q, merges


def spatial_clustering(
    clustering: Any,
    latent: Any,
    counts: npt.NDArray[Any],
    energy_kev: npt.NDArray[np.float64],
    *,
    beta: float | str = "auto",
    find_missed: bool = True,
    beam_energy_kev: float | None = None,
    fwhm_mnka_ev: float = 130.0,
    k_max: int = 16,
    split: bool = False,
    random_state: int | None = 0,
    split_blocks_b: int = 1,
) -> Any:
    """:func:`potts_assign` and the residual search applied to a spatial clustering result.

    With ``split``, the automatic number of phases is tested again on the spatially assigned
    labels (when the assignment moved at least :data:`RESPLIT_CHANGED` of the pixels of a map
    with fewer than :data:`RESPLIT_MAX_COUNTS` counts per pixel):
    :func:`sigma.clustering.auto_k.split_phases` tests every phase for a significant, separate
    sub-population (count splitting, so the test is honest), and the pixels are assigned again
    when it splits one. At a few counts per pixel the Potts labels are much cleaner than the
    latent clustering's, and sub-populations the latter blurred together become testable.

    Parameters
    ----------
    clustering : xr.Dataset
        A :func:`sigma.clustering.cluster` result with dims ``(y, x)``.
    latent : xr.DataArray
        The embedding ``(y, x, latent)`` the clustering was made from (for the phases' moments).
    counts : int array or scipy sparse matrix (pixels, channels)
        :func:`cluster_channels` of the same pixels (or
        :func:`sigma.clustering.coarse.sparse_cluster_channels` for a large map).
    energy_kev : float array (channels,)
        The channels' centre energies.
    beta : float or "auto"
        Potts strength (:func:`potts_assign`).
    find_missed : bool
        Run :func:`sigma.clustering.residual.find_missed_phases` after the assignment and add
        the phases it proposes (kept only when the new phase still holds its pixels after a
        second assignment).
    beam_energy_kev, fwhm_mnka_ev : float
        For naming the lines of an added phase.
    k_max : int
        Never more phases than this.
    split : bool
        Split phases where the counts demand it (``n_components="auto"``), see above.
    random_state : int or None
        Seed of the split test.
    split_blocks_b : int
        Above 1 (a map too large for dense counts, ``counts`` sparse): the split test runs on
        the counts summed over blocks this many pixels wide
        (:func:`sigma.clustering.coarse.split_blocks`), and the labels are not reassigned pixel
        by pixel; the merge test still runs on every pixel's counts, the missed-phase search
        (whose proposals must survive a reassignment) does not run.

    Returns
    -------
    xr.Dataset
        The clustering with new ``label`` and ``probability``; the ``clustering`` attr gains
        ``spatial`` (``beta``, ``n_iter``, ``changed``) and ``added_phases`` (one record per
        added phase: ``phase``, ``n_pixels``, ``line``, ``sigma``, ``lines``, ``log10_p``,
        ``host``).
    """
    import json

    from sigma.clustering.result import _repackage

    label_da = clustering["label"]
    ny, nx = label_da.shape
    shape = (int(ny), int(nx))
    label0 = np.asarray(label_da.values).ravel().astype(np.int64)
    valid = label0 >= 0
    prob0 = np.asarray(clustering["probability"].values, dtype=np.float64).reshape(ny * nx, -1)
    info = json.loads(clustering.attrs.get("clustering", "{}"))
    from scipy import sparse

    dense = None if sparse.issparse(counts) else counts
    counts = as_sparse(counts)
    on_blocks = split_blocks_b > 1

    def assign(
        start: npt.NDArray[np.float64], b: float | str
    ) -> tuple[npt.NDArray[np.float64], dict[str, Any]]:
        if on_blocks:
            # a map tested on blocks is too sparse per pixel for a pixel-wise assignment: at
            # 1-2 counts a pixel, the mean field dissolves a phase of scattered blocks into the
            # majority; the block labels stand
            return start, {"beta": b, "n_iter": 0, "changed": 0.0, "skipped": "blocks"}
        return potts_assign(counts, start, shape, beta=b, valid=valid)

    prob, sp = assign(prob0, beta)
    # the split test again only where the assignment changed the labels (sparse maps): on
    # well-exposed maps the spatial labels are the latent ones and the test would repeat itself
    n_valid = max(int(np.count_nonzero(valid)), 1)
    sparse_map = float(counts.sum()) / n_valid < RESPLIT_MAX_COUNTS
    if split and sp["changed"] >= RESPLIT_CHANGED and sparse_map:
        label = np.where(valid, prob.argmax(axis=1), -1)
        if dense is not None:
            from sigma.clustering.auto_k import coarse_channels, split_phases

            new, splits = split_phases(
                coarse_channels(np.asarray(dense)),
                label,
                k_max=k_max,
                random_state=random_state,
                shape=shape,
            )
        else:  # a map too large for dense counts: the test on block sums
            from sigma.clustering.coarse import split_blocks

            new, splits, _ = split_blocks(
                counts, label, shape, split_blocks_b, k_max=k_max, random_state=random_state
            )
        info["splits"] = [*info.get("splits", []), *splits]
        if splits:
            k = int(new.max()) + 1
            start = np.zeros((ny * nx, k))
            start[valid, new[valid]] = 1.0
            prob, sp = assign(start, sp["beta"])
    prob, merges = merge_alike(counts, prob, valid)
    if merges:
        prob, sp = assign(prob, sp["beta"])
    info["merges"] = merges
    info["spatial"] = sp
    added: list[dict[str, Any]] = []
    if find_missed and on_blocks:
        # a proposal is kept only if it holds its pixels on reassignment, which blocks skip
        logger.info("missed-phase search skipped: the map is tested on %d x %d blocks", *(
            split_blocks_b, split_blocks_b))  # fmt: skip
    elif find_missed:
        from sigma.clustering.residual import find_missed_phases

        label = np.where(valid, prob.argmax(axis=1), -1)
        proposals = find_missed_phases(
            counts,
            label,
            shape,
            energy_kev,
            beam_energy_kev=beam_energy_kev,
            fwhm_mnka_ev=fwhm_mnka_ev,
        )
        for prop in proposals:
            k = prob.shape[1]
            if k >= k_max:
                break
            trial = np.concatenate([prob, np.zeros((ny * nx, 1))], axis=1)
            trial[prop["pixels"]] = 0.0
            trial[prop["pixels"], k] = 1.0
            new_prob, _ = assign(trial, sp["beta"])
            n_new = int((new_prob.argmax(axis=1)[valid] == k).sum())
            if n_new < max(4, prop["n_pixels"] // 4):
                logger.info("residual: %s phase lost its pixels on reassignment", prop["line"])
                continue
            prob = new_prob
            rec = {key: v for key, v in prop.items() if key != "pixels"}
            rec.update(phase=k, n_pixels=n_new)
            added.append(rec)
    info["added_phases"] = added
    label = np.where(valid, prob.argmax(axis=1), -1)
    return _repackage(clustering, latent, label, prob, info)
