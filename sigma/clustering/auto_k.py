"""More phases where the counts demand them: split a phase while a split is significant.

The latent density decides the first phases (:class:`sigma.clustering.AutoGaussianMixture`),
but a small map (900 pixels) gives too few points for a density estimate to show all its peaks,
and a phase that fills a small part of a map can hide in the shoulder of a large one.
:func:`split_phases` asks the counts themselves, phase by phase, largest first:

1. *count splitting* (Neufeld et al. 2022): every pixel's counts ``c`` become two independent
   Poisson halves, ``a ~ Binomial(c, 1/2)`` and ``b = c - a``. The candidate split is found on
   ``a`` and tested on ``b``, so the test is not fooled by the noise that shaped the split;
2. the split: 2-means on the first principal components of ``a`` (spectra scaled to unit sum,
   square-root variance-stabilised), and along each of those components alone (2-means and
   the deepest valley of its histogram); the candidate with the deepest valley (test ii) is
   tested;
3. the tests, both on ``b``: (i) the two groups' summed spectra differ beyond Poisson noise
   (G-test of homogeneity over channels on the unpooled halves, p below ``alpha`` divided by
   the number of tests);
   (ii) the groups are separate, not two ends of a gradient or a phase and its boundary: the
   pixels' projections on the direction between the groups (learnt on ``a``) have a density
   valley between the two groups' medians deeper than ``valley`` of its lower end (and, for
   phases under 200 pixels, deeper than a unimodal sample of that size shows by chance); the
   ``b`` counts are jittered within each integer first, so that a channel of ~1 count per
   pixel ("0" or ">= 1") makes no valley of its own;
4. where the smaller group goes: a group closer in composition to another phase than to the
   rest of its own joins that phase (pixels the first clustering misplaced); a group that lies
   on boundaries and that a non-negative mix of the phases explains is mixed pixels and stays;
   otherwise it becomes a new phase, and both are tested again (at most ``k_max`` phases).

Groups smaller than ``min_pixels`` are never split off.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = ["split_phases", "split_clustering", "apply_moves", "coarse_channels"]

#: maps under this many counts per pixel are pooled until each half holds as many on average
_POOL_COUNTS = 100.0


def coarse_channels(counts: npt.NDArray[Any], factor: int = 3) -> npt.NDArray[Any]:
    """``(pixels, channels)`` counts with every ``factor`` adjacent channels summed.

    The split test needs no finer channels than the detector resolution: channels a third of the
    FWHM wide (the spatial assignment's) summed by 3 keep every line separate and make the test
    three times cheaper.
    """
    c = np.asarray(counts)
    n_ch = c.shape[1] // factor
    if n_ch < 2:
        return c
    return c[:, : n_ch * factor].reshape(c.shape[0], n_ch, factor).sum(axis=2)


def _g_test(t1: npt.NDArray[np.float64], t2: npt.NDArray[np.float64]) -> float:
    """Log p-value of the G-test that two count spectra come from one spectrum shape."""
    from scipy.stats import chi2

    keep = (t1 + t2) > 0
    t1, t2 = t1[keep], t2[keep]
    if t1.size < 2 or t1.sum() <= 0 or t2.sum() <= 0:
        return 0.0
    n1, n2 = t1.sum(), t2.sum()
    p = (t1 + t2) / (n1 + n2)
    e1, e2 = n1 * p, n2 * p
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 2.0 * (
            np.sum(np.where(t1 > 0, t1 * np.log(t1 / e1), 0.0))
            + np.sum(np.where(t2 > 0, t2 * np.log(t2 / e2), 0.0))
        )
    return float(chi2.logsf(g, t1.size - 1))


def _valley(x: npt.NDArray[np.float64], m1: float, m2: float) -> float:
    """Lowest smoothed density between ``m1`` and ``m2``, over the lower of the two ends."""
    from scipy import ndimage

    lo, hi = sorted((m1, m2))
    if hi - lo <= 0:
        return 1.0
    span = np.percentile(x, [0.5, 99.5])
    bins = int(np.clip(np.sqrt(x.size), 10, 80))
    H, edges = np.histogram(x, bins=bins, range=(float(span[0]), float(span[1])))
    H = ndimage.gaussian_filter1d(H.astype(np.float64), 1.0)
    c = (edges[:-1] + edges[1:]) / 2
    ia, ib = int(np.argmin(np.abs(c - lo))), int(np.argmin(np.abs(c - hi)))
    ends = min(H[ia], H[ib])
    if ends <= 0 or ib <= ia:
        return 1.0
    return float(H[ia : ib + 1].min() / ends)


def _scaled(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Spectra as compositions (unit sum), square-root variance-stabilised.

    (Keenan & Kotula's per-channel Poisson scaling was tried: it splits the demo scenes'
    boundaries into phases, ARI 0.872 -> 0.856 on demo10, and finds nothing more on P45.)
    """
    return np.sqrt(x / np.maximum(x.sum(axis=1, keepdims=True), 1.0))


def _candidates(
    a: npt.NDArray[np.float64], rng: np.random.Generator
) -> tuple[list[npt.NDArray[np.int_]], npt.NDArray[np.float64]]:
    """Candidate 2-group splits of the ``a`` halves, and the PCA projector they live in.

    2-means in the space of the first principal components, and 2-means along each of them
    alone: the largest variance of a phase may be a gradient (no valley) while a separate
    sub-population lies along a lesser component.
    """
    from scipy.linalg import eigh
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    z = _scaled(a)
    n_pc = int(min(5, z.shape[0] - 1, z.shape[1]))
    # the first components from the (channels x channels) covariance: exact, one matrix product
    # over the pixels (a randomized SVD made ~8 passes); one thread: BLAS threads only spin on
    # matrices this small
    with threadpool_limits(1):
        zc = z - z.mean(axis=0)
        n_ch = zc.shape[1]
        _, vecs = eigh(zc.T @ zc, subset_by_index=[n_ch - n_pc, n_ch - 1])
        components = np.ascontiguousarray(vecs[:, ::-1].T)
        s = zc @ components.T
        seed = int(rng.integers(2**31 - 1))
        out = [KMeans(2, n_init=3, random_state=seed).fit(s).labels_]
    for j in range(n_pc):
        out.append(_two_means_1d(s[:, j]))
        cut = _deepest_cut(s[:, j])
        if cut is not None:
            out.append((s[:, j] > cut).astype(np.int_))
    return out, components


def _two_means_1d(x: npt.NDArray[np.float64]) -> npt.NDArray[np.int_]:
    """Exact 2-means of 1-D values (the cut of sorted values with the least squared error)."""
    order = np.argsort(x)
    v = x[order]
    n = v.size
    c1, c2 = np.cumsum(v), np.cumsum(v**2)
    i = np.arange(1, n)  # left part: the first i values
    sse_l = c2[i - 1] - c1[i - 1] ** 2 / i
    sse_r = (c2[-1] - c2[i - 1]) - (c1[-1] - c1[i - 1]) ** 2 / (n - i)
    best = int(i[np.argmin(sse_l + sse_r)]) if n > 1 else 0
    out = np.zeros(n, dtype=np.int_)
    out[order[best:]] = 1
    return out


@functools.lru_cache(maxsize=256)
def _null_valley(n: int, n_candidates: int, quantile: float = 0.01) -> float:
    """The valley a unimodal phase of ``n`` pixels shows by chance (``quantile`` of the null).

    A phase whose composition varies smoothly (a gradient, not two populations) gives a
    Gaussian-like projection; its histogram of ``n`` values has dips by chance, and the deepest
    of ``n_candidates`` candidate cuts is kept. Simulated: the same cut and valley on Gaussian
    samples, so small phases need a deeper valley than large ones.
    """
    if n >= 200:
        return 1.0  # measured: above 0.5 (the fixed ``valley`` then decides) from ~50 pixels on
    rng = np.random.default_rng(n)
    out = []
    for _ in range(100):
        best = 1.0
        for _c in range(n_candidates):
            x = rng.standard_normal(n)
            cut = _deepest_cut(x)
            if cut is None or (x > cut).sum() < 2 or (x <= cut).sum() < 2:
                continue
            m1, m2 = float(np.median(x[x <= cut])), float(np.median(x[x > cut]))
            best = min(best, _valley(x, m1, m2))
        out.append(best)
    return float(np.quantile(out, quantile))


def _deepest_cut(x: npt.NDArray[np.float64]) -> float | None:
    """The position of the deepest density valley between two modes of ``x``, or None.

    2-means cuts a skewed mixture (a large phase and a small, distinct one) in the middle of
    the large one; the valley of the smoothed histogram is where the two separate.
    """
    from scipy import ndimage

    span = np.percentile(x, [0.5, 99.5])
    if not span[1] > span[0]:
        return None
    bins = int(np.clip(np.sqrt(x.size), 10, 80))
    H, edges = np.histogram(x, bins=bins, range=(float(span[0]), float(span[1])))
    H = ndimage.gaussian_filter1d(H.astype(np.float64), 1.0)
    best: tuple[float, int] | None = None
    for i in range(1, bins - 1):
        left, right = H[:i].max(), H[i + 1 :].max()
        depth = H[i] / max(min(left, right), 1e-12)
        if H[i] < left and H[i] < right and (best is None or depth < best[0]):
            best = (depth, i)
    if best is None:
        return None
    return float(0.5 * (edges[best[1]] + edges[best[1] + 1]))


def _boundary_mixture(
    label: npt.NDArray[np.int_],
    group: npt.NDArray[np.int_],
    rest: npt.NDArray[np.int_],
    phase: int,
    counts: npt.NDArray[Any],
    shape: tuple[int, int],
    *,
    min_boundary: float = 0.85,
    min_sigma: float = 8.0,
) -> bool:
    """Whether ``group`` (split off ``phase``) is mixed pixels on boundaries, not a phase.

    Such a group (1) lies on boundaries: at least ``min_boundary`` of its pixels touch another
    phase; and (2) its summed counts are explained by a non-negative mix of the other phases'
    and the rest of its own phase's spectra: no channel window exceeds the mix by
    ``min_sigma`` (:func:`sigma.clustering.residual.poisson_mix`). ``counts`` are the held-out
    halves, so the test does not see the noise that shaped the group.
    """
    from scipy import ndimage

    from sigma.clustering.residual import _dev_resid, poisson_mix

    ny, nx = shape
    mask = np.zeros(ny * nx, dtype=bool)
    mask[group] = True
    img = mask.reshape(ny, nx)
    interior = ndimage.binary_erosion(img, np.ones((3, 3), dtype=bool), border_value=1)
    if 1.0 - interior.sum() / max(img.sum(), 1) < min_boundary:
        return False
    k = int(label.max()) + 1
    lab = label.copy()
    lab[group] = -1
    lab[rest] = phase
    shapes = []
    for j in range(k):
        sel = lab == j
        if sel.any():
            t = np.asarray(counts[sel].sum(axis=0), dtype=np.float64) + 0.5
            shapes.append(t / t.sum())
    s = np.asarray(counts[group].sum(axis=0), dtype=np.float64)
    _, mu = poisson_mix(s, np.array(shapes))
    r3 = _dev_resid(np.convolve(s, np.ones(3), "same"), np.convolve(mu, np.ones(3), "same"))
    mixed = float(r3.max()) < min_sigma
    logger.debug(
        "split_phases: group of %d px on boundaries, largest excess over a mix %.1f sigma: %s",
        group.size,
        float(r3.max()),
        "boundary pixels" if mixed else "a phase",
    )
    return mixed


def _same_phase_pool(label: npt.NDArray[np.int_], w: int) -> Any:
    """Sparse ``(pixels, pixels)`` sum over each pixel's ``w x w`` window, same-phase pixels only.

    Pooling across a phase boundary would mix the neighbour's spectrum into the boundary
    pixels, and the split test would then find "boundary pixels" as a sub-population of every
    phase; pooling within the phase keeps edges out of the test.
    """
    from scipy import sparse

    ny, nx = label.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    r = w // 2
    rows, cols = [], []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ys = slice(max(0, -dy), ny - max(0, dy))
            xs = slice(max(0, -dx), nx - max(0, dx))
            yd = slice(max(0, dy), ny - max(0, -dy))
            xd = slice(max(0, dx), nx - max(0, -dx))
            same = label[ys, xs] == label[yd, xd]
            rows.append(idx[ys, xs][same])
            cols.append(idx[yd, xd][same])
    i, j = np.concatenate(rows), np.concatenate(cols)
    return sparse.csr_matrix((np.ones(i.size), (i, j)), shape=(ny * nx, ny * nx))


def _best_split(
    a: npt.NDArray[np.float64],
    b: npt.NDArray[np.float64],
    rng: np.random.Generator,
    min_pixels: int,
    sub: Any = None,
) -> tuple[float, npt.NDArray[np.int_], int] | None:
    """The candidate split of the ``a`` halves with the deepest valley in the ``b`` halves.

    ``sub`` (a same-phase pooling operator over these pixels, or None) averages the ``b``
    projections twice more over the same windows. Returns ``(valley, groups, number of
    candidates tried)`` or None.
    """
    groups, comps = _candidates(a, rng)
    # counts are integers: a channel of about one count per pixel splits the pixels into
    # "0" and ">= 1", a gap in any transform of the counts that looks like two populations.
    # The held-out halves are jittered uniformly within each count (randomised quantiles):
    # a continuous density with the same information, where only a gap in the rates
    # makes a valley
    za, zb = _scaled(a), _scaled(b + rng.random(b.shape))
    if sub is not None:
        sub_n = np.maximum(np.asarray(sub.sum(axis=1)).ravel(), 1.0)
    best: tuple[float, npt.NDArray[np.int_], int] | None = None
    for g in groups:
        if np.bincount(g, minlength=2).min() < min_pixels:
            continue
        # projections of the b halves on the direction between the groups (learnt on a)
        w = za[g == 1].mean(axis=0) - za[g == 0].mean(axis=0)
        w = comps.T @ (comps @ w)  # within the principal subspace: noise left out
        proj = zb @ w
        if sub is not None:
            # pooled halves: the projections averaged twice over the same window of the same
            # phase (a pyramid twice its width; still the b halves only): two sub-phases
            # in separate grains keep apart, while the Poisson scatter of a pixel shrinks
            for _ in range(2):
                proj = np.asarray(sub @ proj) / sub_n
        d = _valley(proj, float(np.median(proj[g == 0])), float(np.median(proj[g == 1])))
        if best is None or d < best[0]:
            best = (d, g, len(groups))
    return best


def split_phases(
    spectra: npt.NDArray[Any],
    label: npt.NDArray[np.int_],
    *,
    k_max: int = 16,
    alpha: float = 1e-6,
    valley: float = 0.5,
    min_pixels: int | None = None,
    random_state: int | None = 0,
    shape: tuple[int, int] | None = None,
    tests_out: list[dict[str, Any]] | None = None,
) -> tuple[npt.NDArray[np.int_], list[dict[str, Any]]]:
    """Split phases while the counts show a significant, separate sub-population.

    Parameters
    ----------
    spectra : array (n_pixels, n_channels)
        Raw counts per pixel (channels may be summed, the zero peak left out).
    label : int array (n_pixels,)
        Current phases (``-1`` = no data, ignored).
    k_max : int
        Never more phases than this.
    alpha : float
        Significance of the G-test (divided by the number of phases tested).
    valley : float
        Required density valley between the two groups (module docstring).
    min_pixels : int or None
        Smallest group split off; None: ``max(10, 0.2 % of the data pixels)``.
    random_state : int or None
        Seed of the count splitting and the 2-means.
    shape : (ny, nx) or None
        Image shape of the pixels. Sparse maps (under :data:`_POOL_COUNTS` per pixel) are pooled
        before the split and the tests: each half is summed over the pixels of the same phase
        in the smallest odd square (3, 5 or 7 pixels wide) in which each half holds
        :data:`_POOL_COUNTS` counts on average; the halves stay independent, and boundaries
        do not mix phases. The valley is then measured on the ``b`` projections averaged twice
        more over the same windows.

    tests_out : list or None
        Every test made is appended here (``phase``, ``pixels`` of the two groups,
        ``log10_p``, ``valley``, ``valley_max`` (the valley the split needed), ``split``).

    Returns
    -------
    label : int array
        New labels (new phases numbered after the existing ones).
    splits : list of dict
        One record per split: ``phase``, ``new``, ``pixels``, ``log10_p``, ``valley``.
    """
    rng = np.random.default_rng(random_state)
    label = np.asarray(label).copy()
    valid = label >= 0
    n_valid = int(valid.sum())
    if min_pixels is None:
        min_pixels = max(10, int(math.ceil(0.002 * n_valid)))
    counts = np.asarray(spectra).astype(np.int64)
    A: npt.NDArray[Any] = rng.binomial(counts, 0.5)
    B: npt.NDArray[Any] = counts - A
    B_raw = B
    smooth_op = None
    pool3: Any = None
    mean = float(counts[valid].sum(axis=1).mean()) if n_valid else 0.0
    if shape is not None and 0 < mean < _POOL_COUNTS:
        # each half (half the counts) holds _POOL_COUNTS on average
        w = next((w for w in (3, 5) if w * w * mean >= 2 * _POOL_COUNTS), 7)
        ny, nx = shape
        op = _same_phase_pool(label.reshape(ny, nx), w)

        def pool(h: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
            return np.asarray(op @ h.astype(np.float64))

        A, B = pool(A), pool(B)
        smooth_op = op
    splits: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    queue = sorted(
        (int(c) for c in np.unique(label[valid])), key=lambda c: -int((label == c).sum())
    )
    n_tests = 0
    while queue and int(label.max()) + 1 < k_max and len(tests) < 4 * k_max:
        c = queue.pop(0)
        idx = np.flatnonzero(label == c)
        if idx.size < 2 * min_pixels:
            continue
        a = np.asarray(A[idx], dtype=np.float64)
        b = np.asarray(B[idx], dtype=np.float64)
        best = _best_split(
            a, b, rng, min_pixels, None if smooth_op is None else smooth_op[idx][:, idx]
        )
        if best is None:
            continue
        dip, g, n_cand = best
        sizes = np.bincount(g, minlength=2)
        n_tests += 1
        # on the raw (unpooled) halves: a pooled count stands in up to w x w sums, and the
        # G-test would take those copies for independent Poisson counts
        b_raw = np.asarray(B_raw[idx], dtype=np.float64)
        log_p = _g_test(b_raw[g == 0].sum(axis=0), b_raw[g == 1].sum(axis=0))
        significant = log_p < math.log(alpha / max(n_tests, 1))
        ok = significant and dip < valley and dip < _null_valley(idx.size, n_cand)
        if significant and not ok and smooth_op is None and shape is not None:
            # well-exposed pixels whose groups differ beyond doubt but overlap pixel by pixel
            # (two pyroxene/olivine-like phases at ~100 counts per half are 2-3 sd apart):
            # a second look on the halves pooled over 3 x 3 windows of the same phase, as a
            # sparse map gets, where a real sub-population in its own grains shows a valley
            # and a gradient or a noisy phase still shows none
            if pool3 is None:
                pool3 = _same_phase_pool(label.reshape(shape), 3)
            sub = pool3[idx][:, idx]
            second = _best_split(
                np.asarray(sub @ A[idx], dtype=np.float64),
                np.asarray(sub @ B[idx], dtype=np.float64),
                rng,
                min_pixels,
                sub,
            )
            if second is not None and second[0] < min(valley, _null_valley(idx.size, second[2])):
                dip, g, n_cand = second
                sizes = np.bincount(g, minlength=2)
                log_p = _g_test(b_raw[g == 0].sum(axis=0), b_raw[g == 1].sum(axis=0))
                ok = log_p < math.log(alpha / max(n_tests, 1))
        logger.debug(
            "split_phases: phase %d (%d px) -> %s, log10 p %.1f, valley %.2f: %s",
            c,
            idx.size,
            sizes.tolist(),
            log_p / math.log(10),
            dip,
            "split" if ok else "kept",
        )
        tests.append(
            {
                "phase": c,
                "pixels": [int(n) for n in sizes],
                "log10_p": round(max(log_p / math.log(10), -999.0), 1),
                "valley": round(dip, 3),
                "valley_max": round(min(valley, _null_valley(idx.size, n_cand)), 3),
                "split": bool(ok),
            }
        )
        if not ok:
            continue
        small = int(np.argmin(sizes))
        group = idx[g == small]
        # pixels the first clustering put in the wrong phase are not a new phase: a group whose
        # composition is closer to another phase than to the rest of its own joins that phase
        home = _closest_phase(B, label, group, idx[g != small], c)
        tests[-1]["moved_to"] = home
        if home is not None:
            label[group] = home
            moves.append({"phase": c, "to": home, "pixels": int(group.size)})
            queue = [c, *[q for q in queue if q != home], home]
            continue
        if shape is not None and _boundary_mixture(label, group, idx[g != small], c, B_raw, shape):
            tests[-1]["boundary"] = True
            tests[-1]["split"] = False
            continue
        new = int(label.max()) + 1
        label[group] = new
        splits.append(
            {
                "phase": c,
                "new": new,
                "pixels": int(sizes[small]),
                "log10_p": round(log_p / math.log(10), 1),
                "valley": round(dip, 3),
            }
        )
        queue = [c, new, *queue]
    if tests_out is not None:
        tests_out.extend(tests)
    if moves:
        logger.info(
            "split_phases: %d group(s) of %d px moved to the phase they match",
            len(moves),
            sum(m["pixels"] for m in moves),
        )
    return label, splits


def _closest_phase(
    B: npt.NDArray[Any],
    label: npt.NDArray[np.int_],
    group: npt.NDArray[np.intp],
    rest: npt.NDArray[np.intp],
    parent: int,
) -> int | None:
    """The other phase whose composition is closer to ``group`` than ``rest`` is, or None.

    Hellinger distance between summed, unit-sum spectra of the ``b`` halves.
    """
    others = [int(o) for o in np.unique(label) if o >= 0 and o != parent]
    if not others:
        return None

    def comp(rows: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        t = np.asarray(B[rows], dtype=np.float64).sum(axis=0)
        return np.sqrt(t / max(float(t.sum()), 1.0))

    zg = comp(group)
    d_rest = float(np.linalg.norm(zg - comp(rest)))
    d = [float(np.linalg.norm(zg - comp(np.flatnonzero(label == o)))) for o in others]
    j = int(np.argmin(d))
    return others[j] if d[j] < d_rest else None


def split_clustering(
    clustering: Any,
    latent: Any,
    spectra: npt.NDArray[Any],
    *,
    k_max: int = 16,
    random_state: int | None = 0,
) -> Any:
    """:func:`split_phases` applied to a :func:`sigma.clustering.cluster` result (spatial).

    A pixel moved to a new phase takes its old phase's probability there; the phases' latent
    moments are recomputed. The splits are recorded in the ``clustering`` attr (``splits``).
    """
    import json

    label_da = clustering["label"]
    ny, nx = label_da.shape
    label = np.asarray(label_da.values).ravel().astype(np.int64)
    tests: list[dict[str, Any]] = []
    new, splits = split_phases(
        spectra, label, k_max=k_max, random_state=random_state, shape=(ny, nx), tests_out=tests
    )
    info = json.loads(clustering.attrs.get("clustering", "{}"))
    info["splits"] = splits
    info["split_tests"] = tests
    out = apply_moves(clustering, latent, label, new, info)
    if not (new == label).all():
        logger.info(
            "split_phases: %d phases after %d significant split(s)",
            out.sizes["cluster"],
            len(splits),
        )
    return out


def apply_moves(
    clustering: Any,
    latent: Any,
    label: npt.NDArray[np.int_],
    new: npt.NDArray[np.int_],
    info: dict[str, Any],
) -> Any:
    """``clustering`` with the pixels moved from ``label`` to ``new`` and ``info`` as its attr.

    A pixel moved to another (new or existing) phase takes its old phase's probability there;
    a phase emptied by the moves keeps its column; the latent moments are recomputed. With no
    pixel moved only the attr changes.
    """
    import json

    from sigma.clustering.result import _repackage

    if (new == label).all():
        return clustering.assign_attrs(clustering=json.dumps(info))
    n = label.size
    prob_old = np.asarray(clustering["probability"].values).reshape(n, -1)
    k = max(int(new.max()) + 1, prob_old.shape[1])
    prob = np.zeros((n, k), dtype=np.float64)
    prob[:, : prob_old.shape[1]] = prob_old
    moved = np.flatnonzero((new != label) & (new >= 0) & (label >= 0))
    prob[moved, new[moved]] += prob[moved, label[moved]]
    prob[moved, label[moved]] = 0.0
    return _repackage(clustering, latent, new, prob, info)
