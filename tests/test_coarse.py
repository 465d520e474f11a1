"""Count-based tests on maps too large for dense counts (sigma.clustering.coarse)."""

from __future__ import annotations

import numpy as np
import pytest

from sigma.clustering.coarse import (
    block_counts,
    block_factor,
    block_labels,
    sparse_cluster_channels,
    split_blocks,
)
from sigma.clustering.spatial import cluster_channels


def test_sparse_channels_equal_the_dense_ones() -> None:
    rng = np.random.default_rng(0)
    cube = rng.poisson(0.02, (7, 45, 300)).astype(np.uint16)  # 7 rows: blocks of 32 and less
    energy = np.arange(300) * 0.01 - 0.05
    dense, centres = cluster_channels(cube, energy, 130.0)
    csr, centres_s = sparse_cluster_channels(cube, energy, 130.0)
    np.testing.assert_array_equal(csr.toarray(), dense)
    np.testing.assert_allclose(centres_s, centres)
    assert csr.nnz <= np.count_nonzero(cube)


def test_sparse_channels_read_a_dask_cube_by_rows() -> None:
    import dask.array as da

    rng = np.random.default_rng(1)
    cube = rng.poisson(0.05, (70, 10, 64)).astype(np.uint16)
    energy = np.arange(64) * 0.02
    lazy = da.from_array(cube, chunks=(16, 10, 64))
    a, _ = sparse_cluster_channels(lazy, energy, 130.0)
    b, _ = cluster_channels(cube, energy, 130.0)
    np.testing.assert_array_equal(a.toarray(), b)


def test_block_sums_leave_out_invalid_pixels() -> None:
    counts = np.ones((16, 2), dtype=np.int64)
    valid = np.ones(16, dtype=bool)
    valid[0] = False
    sums, grid = block_counts(counts, (4, 4), 2, valid)
    assert grid == (2, 2)
    assert sums[:, 0].tolist() == [3, 4, 4, 4]


def test_block_factor_fits_the_budget() -> None:
    b = block_factor(1000 * 900, 700, 40_000_000)
    assert np.ceil(1000 * 900 / b**2) * 700 <= 40_000_000
    assert np.ceil(1000 * 900 / (b - 1) ** 2) * 700 > 40_000_000


def test_blocks_find_a_second_phase_at_two_counts_per_pixel() -> None:
    """Two phases (left/right halves) that one label holds: the block test splits them."""
    rng = np.random.default_rng(2)
    ny, nx, n_ch = 60, 80, 40
    a = np.zeros(n_ch)
    a[[5, 20]] = [0.7, 0.3]
    b = np.zeros(n_ch)
    b[[5, 30]] = [0.3, 0.7]
    truth = (np.arange(nx)[None, :] >= nx // 2).repeat(ny, axis=0)
    rate = np.where(truth[..., None], b, a) * 2.0  # 2 counts per pixel
    counts = rng.poisson(rate).reshape(ny * nx, n_ch)
    from scipy import sparse

    label = np.zeros(ny * nx, dtype=np.int64)
    new, splits, tests = split_blocks(
        sparse.csr_matrix(counts.astype(np.float64)), label, (ny, nx), 2
    )
    assert len(splits) == 1
    assert tests[0]["split"]
    # the split follows the truth: each half is (almost) one label
    left, right = new.reshape(ny, nx)[:, : nx // 2], new.reshape(ny, nx)[:, nx // 2 :]
    assert np.mean(left == np.bincount(left.ravel()).argmax()) > 0.95
    assert np.mean(right == np.bincount(right.ravel()).argmax()) > 0.95
    assert np.bincount(left.ravel()).argmax() != np.bincount(right.ravel()).argmax()


def test_one_phase_is_not_split_on_blocks() -> None:
    rng = np.random.default_rng(3)
    spec = np.full(40, 1.0 / 40)
    counts = rng.poisson(spec * 2.0, (60 * 80, 40))
    new, splits, _ = split_blocks(counts.astype(np.float64), np.zeros(4800, np.int64), (60, 80), 2)
    assert splits == []
    assert (new == 0).all()


def test_block_labels_ignore_no_data() -> None:
    lab = np.full(16, -1)
    lab[5] = 1
    assert block_labels(lab, (4, 4), 2, 2).tolist() == [1, -1, -1, -1]


def test_run_on_a_map_too_large_for_dense_counts(scene, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    """A budget too small for dense counts: sparse counts and the split test on blocks."""
    from sklearn.metrics import adjusted_rand_score
    from synthetic import FAST

    import sigma
    import sigma.pipeline

    ds, truth = scene
    monkeypatch.setattr(sigma.pipeline, "_SPLIT_MAX_VALUES", 300_000)  # 1536 px x 253 ch = 389k
    res = sigma.run(ds, config=FAST, show_progress=False)
    info = res.dataset.attrs["clustering"]
    assert '"split_blocks": 2' in info
    assert '"block_px": 2' in info  # the split test ran, on blocks
    assert '"skipped": "blocks"' in info  # no pixel-wise reassignment
    assert res.n_clusters == 3
    assert adjusted_rand_score(truth.label.values.ravel(), res.label.values.ravel()) > 0.9


def test_a_new_phase_never_takes_the_number_of_a_scattered_one() -> None:
    """Phase 2 holds one pixel per block (no block's majority): a split-off phase is 3."""
    from scipy import sparse

    rng = np.random.default_rng(4)
    ny, nx, n_ch = 60, 80, 40
    spec = {c: np.zeros(n_ch) for c in range(4)}
    spec[0][[5, 20]] = [0.7, 0.3]
    spec[1][[5, 30]] = [0.3, 0.7]
    spec[2][[10]] = [1.0]
    spec[3][[5, 35]] = [0.3, 0.7]  # a hidden sub-phase inside phase 0's half
    truth = np.where(np.arange(nx)[None, :] >= nx // 2, 1, 0).repeat(ny, axis=0)
    truth[:30, :20] = 3
    label = np.where(truth == 3, 0, truth)
    scattered = np.zeros((ny, nx), bool)
    scattered[::2, ::2] = True  # one pixel in each 2 x 2 block
    truth[scattered] = 2
    label[scattered] = 2
    rate = np.stack([spec[int(c)] for c in truth.ravel()]) * 3.0
    counts = sparse.csr_matrix(rng.poisson(rate).astype(np.float64))
    new, splits, _ = split_blocks(counts, label.ravel(), (ny, nx), 2)
    assert [s["new"] for s in splits] == [3]
    assert splits[0]["block_px"] == 2
    assert (new[label.ravel() == 2] == 2).all()  # the scattered phase keeps its pixels
    hidden = (truth == 3).ravel()
    assert np.mean(new[hidden] == 3) > 0.9
