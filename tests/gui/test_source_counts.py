"""Counts over the budget: `sigma run --keep-counts-mb`, the checked reference to the input file,
and exact GUI selection spectra read back from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import sigma
from sigma import sparse_counts
from sigma.exceptions import SchemaError


@pytest.fixture(scope="module")
def cube_file(scene_file: Path) -> Path:
    """The shared scene's NetCDF file (conftest: 32 x 48 px, quartz, calcite, hematite)."""
    return scene_file


@pytest.fixture(scope="module")
def run_without_counts(cube_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sigma.cli import main

    out = tmp_path_factory.mktemp("res") / "res.nc"
    rc = main(["run", str(cube_file), "--out", str(out), "--epochs", "1", "--k", "3", "--bin", "2",
               "--keep-counts-mb", "0", "--quiet"])  # fmt: skip
    assert rc == 0
    return out


def test_keep_counts_mb_option_reaches_the_config() -> None:
    from sigma.commands.run import build_parser, config_from_args

    parser = build_parser()
    parser.add_argument("file")
    assert config_from_args(parser.parse_args(["x.nc"])).keep_counts_mb == 128.0
    assert (
        config_from_args(parser.parse_args(["x.nc", "--keep-counts-mb", "0"])).keep_counts_mb == 0
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["x.nc", "--keep-counts-mb", "-1"])


def test_results_over_the_budget_refer_to_the_checked_input(run_without_counts, cube_file) -> None:
    from gui import data as gd

    ds = gd.load_results(run_without_counts)
    assert not sparse_counts.has_counts(ds)  # --keep-counts-mb 0: never kept
    ref = json.loads(ds.attrs[sparse_counts.SOURCE_ATTR])
    assert ref["path"] == str(cube_file.resolve())
    assert ref["size"] == cube_file.stat().st_size
    assert ref["shape_steps"] == [{"name": "bin_spatial", "factor": 2}]
    # read back: the run's 2 x 2 binning of the file's counts
    raw = sigma.load(cube_file)["counts"].values.astype(np.int64)
    binned = raw.reshape(16, 2, 24, 2, -1).sum(axis=(1, 3)).reshape(16 * 24, -1)
    mat = sparse_counts.counts_matrix(sparse_counts.source_counts(ds))
    np.testing.assert_array_equal(mat.toarray(), binned)
    # the GUI's selection spectrum is exact
    means = gd.SelectionMeans(ds)
    mask = np.zeros(16 * 24, bool)
    mask[::5] = True
    spec, exact = means.sum_spectrum(mask)
    assert exact
    np.testing.assert_array_equal(spec, binned[mask].sum(axis=0))


def test_a_changed_input_file_is_refused(run_without_counts, cube_file, tmp_path) -> None:
    from gui import data as gd

    ds = gd.load_results(run_without_counts)
    moved = ds.copy()
    ref = json.loads(ds.attrs[sparse_counts.SOURCE_ATTR])
    changed = tmp_path / "changed.nc"
    data = bytearray(cube_file.read_bytes())
    data[-100] ^= 0xFF  # same size, other content
    changed.write_bytes(bytes(data))
    moved.attrs[sparse_counts.SOURCE_ATTR] = json.dumps({**ref, "path": str(changed)})
    with pytest.raises(SchemaError, match="changed since"):
        sparse_counts.check_source(moved)
    missing = ds.copy()
    missing.attrs[sparse_counts.SOURCE_ATTR] = json.dumps({**ref, "path": str(tmp_path / "no.nc")})
    with pytest.raises(SchemaError, match="no longer exists"):
        sparse_counts.check_source(missing)
    # the GUI falls back to the estimate and says why
    means = gd.SelectionMeans(moved)
    _, exact = means.sum_spectrum(np.ones(16 * 24, bool))
    assert not exact
    assert "changed since" in means.source_error


def test_new_cluster_and_refit_spectra_are_exact_from_the_referenced_file(
    run_without_counts, cube_file
) -> None:
    """No kept counts, only the file reference: edited clusters get their summed counts."""
    from gui import data as gd

    ds = gd.load_results(run_without_counts)
    raw = sigma.load(cube_file)["counts"].values.astype(np.float64)
    binned = raw.reshape(16, 2, 24, 2, -1).sum(axis=(1, 3)).reshape(16 * 24, -1)
    mask = np.zeros(16 * 24, bool)
    mask[:40] = True
    new = gd.add_cluster_from_mask(ds, mask, name="grain")
    np.testing.assert_allclose(new["cluster_sum_spectrum"].values[-1], binned[mask].sum(axis=0))
    refit = gd.refit_clusters(ds, 2)
    label = refit["label"].values.ravel()
    for c in range(2):
        np.testing.assert_allclose(
            refit["cluster_sum_spectrum"].values[c], binned[label == c].sum(axis=0)
        )


def test_new_cluster_sums_only_the_moved_pixels_and_stays_exact() -> None:
    """A new cluster moves its pixels' counts between exact sums (no pass over the whole map);
    results whose sums are estimates are summed again from the counts instead."""
    from gui import data as gd
    from gui.demo import scene_results

    ds = scene_results((30, 40), n_phases=4, n_channels=128, energy_scale_kev=0.08)
    assert sparse_counts.has_counts(ds)
    assert gd._sums_are_counts(ds, ds)
    label = ds["label"].values.copy()
    label[:2, :3] = -1  # some pixels in no cluster, one of them selected below
    ds = gd.exact_cluster_spectra(ds.assign(label=(("y", "x"), label)))
    mask = (np.arange(30 * 40) % 7 == 0).reshape(30, 40)
    dense = sparse_counts.counts_matrix(ds).toarray().astype(np.float64)
    for start in (ds, ds.assign(cluster_sum_spectrum=ds["cluster_sum_spectrum"] * 1.01)):
        new = gd.add_cluster_from_mask(start, mask)
        lab = new["label"].values.ravel()
        for c in range(new.sizes["cluster"]):
            np.testing.assert_array_equal(
                new["cluster_sum_spectrum"].values[c], dense[lab == c].sum(axis=0)
            )
        assert new["cluster_mean_spectrum"].attrs["units"] == "counts / pixel"
    assert not gd._sums_are_counts(start, start)  # the estimate was seen and summed again
