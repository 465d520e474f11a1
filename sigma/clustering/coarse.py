"""Count-based phase tests on maps too large for dense ``(pixels, channels)`` counts.

The split test (:func:`sigma.clustering.auto_k.split_phases`) works on dense per-pixel counts,
which a 512 x 512 map of 1,000 channels makes a 2 GB array; the spatial assignment, the merge
test and the missed-phase search (:mod:`sigma.clustering.spatial`,
:mod:`sigma.clustering.residual`) need only sparse counts, and EDS counts are mostly zeros (a
STEM map at 1 count per pixel holds about one non-zero value per pixel). On such a map:

1. :func:`sparse_cluster_channels` builds the full-resolution ``(pixels, channels)`` counts as a
   CSR matrix, a block of rows at a time, without a dense copy;
2. :func:`split_on_blocks` runs the split test on the counts summed over ``b x b`` blocks of
   pixels (``b`` the smallest that fits the dense budget, :func:`block_factor`), each block
   labelled with the phase most of its pixels hold; a block split off to a new phase takes
   those of its pixels that held that phase. A sparse map loses little by this: its split test pools pixels
   over windows of 3-7 pixels anyway, and at 1-2 counts a pixel the phase of a single pixel is
   mostly noise. The labels then stand as the blocks give them (boundaries on a ``b``-pixel
   grid): a pixel-wise reassignment at such counts dissolves a phase of scattered blocks into
   the majority (:func:`sigma.clustering.spatial.spatial_clustering`), and the merge test
   still runs on every pixel's counts.

Examples
--------
>>> import numpy as np
>>> cube = np.zeros((4, 4, 20), dtype=np.uint16)
>>> cube[0, 0, 10] = 3
>>> csr, centres = sparse_cluster_channels(cube, np.arange(20) * 0.01 + 0.1, 66.0)
>>> csr.shape, int(csr.sum()), csr.nnz
((16, 10), 3, 1)
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

__all__ = [
    "sparse_cluster_channels",
    "block_factor",
    "block_counts",
    "block_labels",
    "split_blocks",
    "split_on_blocks",
]

#: rows of the cube read at a time when building the sparse counts
_ROWS_PER_BLOCK = 32


def sparse_cluster_channels(
    cube: Any,
    energy_kev: npt.ArrayLike,
    fwhm_mnka_ev: float,
    *,
    width_fwhm: float = 1.0 / 3.0,
    min_energy_kev: float = 0.1,
    max_nnz: int | None = None,
) -> tuple[Any, npt.NDArray[np.float64]]:
    """:func:`sigma.clustering.spatial.cluster_channels` as a CSR matrix, without a dense copy.

    ``cube`` ``(y, x, energy)`` (NumPy, or a dask array, read along its own row chunks) is
    read ``_ROWS_PER_BLOCK`` rows at a time, its energies sliced before reading; only its
    non-zero counts are kept. Returns the ``(pixels, channels)`` float64 CSR counts and the
    channels' centre energies in keV; the counts are None as soon as they hold more than
    ``max_nnz`` non-zero values (nothing larger is built).
    """
    from scipy import sparse

    energy = np.asarray(energy_kev, dtype=np.float64)
    keep = np.flatnonzero(energy >= min_energy_kev)
    width_ev = 1000.0 * float(np.median(np.diff(energy))) if energy.size > 1 else 0.0
    factor = max(1, int(fwhm_mnka_ev * width_fwhm // width_ev)) if width_ev > 0 else 1
    n_ch = keep.size // factor
    keep = keep[: n_ch * factor]
    centres = energy[keep].reshape(n_ch, factor).mean(axis=1)
    ny, nx = int(cube.shape[0]), int(cube.shape[1])
    lo, hi = (int(keep[0]), int(keep[-1]) + 1) if keep.size else (0, 0)
    chunks = getattr(cube, "chunks", None)
    if chunks and isinstance(chunks[0], tuple):  # dask: read along its own row chunks
        starts = np.concatenate([[0], np.cumsum(chunks[0])]).astype(int).tolist()
    else:
        starts = list(range(0, ny, _ROWS_PER_BLOCK)) + [ny]
    blocks = []
    nnz = 0
    for y0, y1 in zip(starts[:-1], starts[1:], strict=True):
        block = np.asarray(cube[y0:y1, :, lo:hi])  # energies sliced before reading
        rows, cols = block.shape[0] * nx, block.shape[2]
        flat = block.reshape(rows, cols)
        r, c = np.nonzero(flat)
        v = flat[r, c].astype(np.float64)
        part = sparse.csr_matrix(
            (v, (r, c // factor)), shape=(rows, max(n_ch, 1)), dtype=np.float64
        )
        part.sum_duplicates()
        nnz += part.nnz
        if max_nnz is not None and nnz > max_nnz:
            return None, centres
        blocks.append(part)
    out = sparse.vstack(blocks, format="csr") if blocks else sparse.csr_matrix((0, n_ch))
    return out, centres


def block_factor(n_pixels: int, n_channels: int, max_values: int) -> int:
    """The smallest block side ``b`` with ``ceil(n_pixels / b^2) * n_channels <= max_values``.

    Examples
    --------
    >>> block_factor(512 * 512, 1000, 40_000_000), block_factor(100, 10, 10_000)
    (3, 1)
    """
    b = 1
    while math.ceil(n_pixels / (b * b)) * n_channels > max_values:
        b += 1
    return b


def _block_index(shape: tuple[int, int], b: int) -> tuple[npt.NDArray[np.int64], tuple[int, int]]:
    """Block number of every pixel (row-major) and the block grid's shape."""
    ny, nx = shape
    gy, gx = -(-ny // b), -(-nx // b)
    yy, xx = np.divmod(np.arange(ny * nx), nx)
    return (yy // b) * gx + (xx // b), (gy, gx)


def block_counts(
    counts: Any, shape: tuple[int, int], b: int, valid: npt.NDArray[np.bool_] | None = None
) -> tuple[npt.NDArray[np.int64], tuple[int, int]]:
    """Counts summed over ``b x b`` blocks of valid pixels: dense ``(blocks, channels)`` int64.

    Examples
    --------
    >>> import numpy as np
    >>> c = np.arange(16).reshape(16, 1)  # a 4 x 4 map, one channel
    >>> sums, grid = block_counts(c, (4, 4), 2)
    >>> grid, sums.ravel().tolist()
    ((2, 2), [10, 18, 42, 50])
    """
    from scipy import sparse

    block, grid = _block_index(shape, b)
    n = block.size
    ok = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    pool = sparse.csr_matrix(
        (np.ones(int(ok.sum())), (block[ok], np.flatnonzero(ok))), shape=(grid[0] * grid[1], n)
    )
    summed = pool @ counts
    dense = summed.toarray() if sparse.issparse(summed) else np.asarray(summed)
    return np.rint(dense).astype(np.int64), grid


def block_labels(
    label: npt.NDArray[np.int_], shape: tuple[int, int], b: int, n_phases: int
) -> npt.NDArray[np.int64]:
    """The phase most valid pixels of each ``b x b`` block hold (-1 for blocks without data).

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.array([[0, 0, 1, 1], [0, 1, 1, 1], [-1, -1, 1, 0], [-1, -1, 0, 0]])
    >>> block_labels(lab.ravel(), (4, 4), 2, 2).tolist()
    [0, 1, -1, 0]
    """
    lab = np.asarray(label).ravel()
    block, grid = _block_index(shape, b)
    ok = lab >= 0
    votes = np.zeros((grid[0] * grid[1], max(n_phases, 1)), dtype=np.int64)
    np.add.at(votes, (block[ok], lab[ok]), 1)
    out = votes.argmax(axis=1).astype(np.int64)
    out[votes.sum(axis=1) == 0] = -1
    return out


def split_blocks(
    counts: Any,
    label: npt.NDArray[np.int_],
    shape: tuple[int, int],
    b: int,
    *,
    k_max: int = 16,
    random_state: int | None = 0,
) -> tuple[npt.NDArray[np.int64], list[dict[str, Any]], list[dict[str, Any]]]:
    """:func:`sigma.clustering.auto_k.split_phases` on ``b x b`` block sums of a large map.

    Each block carries the phase most of its pixels hold; a block split off to a new phase (or
    moved to another) takes those of its pixels that held the block's phase; new phases are
    numbered after every full-resolution phase. Returns the new
    full-resolution labels, the splits and the tests (as ``split_phases``'s).
    """
    from sigma.clustering.auto_k import coarse_channels, split_phases

    lab = np.asarray(label).ravel().astype(np.int64)
    valid = lab >= 0
    k = int(lab.max()) + 1 if valid.any() else 0
    sums, grid = block_counts(counts, shape, b, valid)
    lab_b = block_labels(lab, shape, b, k)
    k_b = int(lab_b.max()) + 1
    tests: list[dict[str, Any]] = []
    new_b, splits = split_phases(
        coarse_channels(sums),
        lab_b,
        k_max=k_b + max(k_max - k, 0),  # never more than k_max phases at full resolution
        random_state=random_state,
        shape=grid,
        tests_out=tests,
    )
    # a phase that holds no block's majority has no block label: new phases are numbered
    # after every pixel phase, not after the block labels (they would take its number)
    fresh = new_b >= k_b
    new_b[fresh] += k - k_b
    for rec in splits:
        rec["new"] = int(rec["new"]) + k - k_b
    for rec in (*splits, *tests):
        rec["block_px"] = b  # "pixels" of these records count b x b blocks
    block, _ = _block_index(shape, b)
    # the pixels of a moved block that held the block's phase follow it; pixels of other
    # phases in the block (a scattered phase that holds no block's majority) keep theirs
    move = valid & (new_b != lab_b)[block] & (lab == lab_b[block])
    new = lab.copy()
    new[move] = new_b[block[move]]
    if splits:
        logger.info(
            "split_phases on %d x %d blocks: %d phases after %d significant split(s)",
            b,
            b,
            int(new.max()) + 1,
            len(splits),
        )
    return new, splits, tests


def split_on_blocks(
    clustering: Any,
    latent: Any,
    counts: Any,
    b: int,
    *,
    k_max: int = 16,
    random_state: int | None = 0,
) -> Any:
    """:func:`split_blocks` applied to a :func:`sigma.clustering.cluster` result.

    The probabilities and latent moments follow as in
    :func:`sigma.clustering.auto_k.split_clustering`; the ``clustering`` attr records the
    splits, the tests and ``split_blocks`` (``b``).
    """
    from sigma.clustering.auto_k import apply_moves

    label_da = clustering["label"]
    ny, nx = (int(n) for n in label_da.shape)
    label = np.asarray(label_da.values).ravel().astype(np.int64)
    new, splits, tests = split_blocks(
        counts, label, (ny, nx), b, k_max=k_max, random_state=random_state
    )
    info = json.loads(clustering.attrs.get("clustering", "{}"))
    info.update(splits=splits, split_tests=tests, split_blocks=b)
    return apply_moves(clustering, latent, label, new, info)
