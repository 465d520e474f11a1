"""The one-call pipeline (sigma.run), `sigma run` and `sigma demo` end to end on small scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from synthetic import FAST

import sigma
from sigma.exceptions import ConfigurationError
from sigma.pipeline import PipelineConfig, default_steps


@pytest.fixture(scope="module")
def ran(scene_run):  # noqa: ANN201
    """conftest ``scene_run``: (results, the file written, a copy of the input before the run)."""
    return scene_run


def test_run_finds_the_phases(ran, scene) -> None:
    res = ran[0]
    rd = res.dataset
    truth = scene[1]
    # the 3 phases, plus at most one small cluster of mixed boundary pixels
    assert res.n_clusters in (3, 4)
    assert np.sort(rd.n_pixels.values)[::-1][:3].sum() > 0.95 * rd.sizes["y"] * rd.sizes["x"]
    assert adjusted_rand_score(truth.label.values.ravel(), rd.label.values.ravel()) > 0.9


def test_run_results_hold_every_layer_with_units(ran) -> None:
    rd = ran[0].dataset
    for var in (
        "embedding",
        "features",
        "probability",
        "cluster_mean_spectrum",
        "nmf_spectrum",
        "total_counts",
    ):
        assert var in rd
    assert rd.embedding.dims == ("y", "x", "latent")
    assert rd.energy.attrs["units"] == "keV"


def test_run_records_stage_timings_and_peak_memory(ran) -> None:
    res = ran[0]
    rd = res.dataset
    timings = json.loads(rd.attrs["timings"])
    assert set(timings) >= {"preprocess", "train", "encode", "cluster", "analyse"}
    rss = json.loads(rd.attrs["peak_rss_mb"])
    assert set(rss) == set(timings)
    assert 50 < rss["train"] <= rss["analyse"]  # MB; the peak never falls
    assert "peak memory:" in sigma.pipeline.summary(res)


def test_run_records_its_config_and_preprocessing_chain(ran) -> None:
    rd = ran[0].dataset
    assert json.loads(rd.attrs["pipeline_config"])["max_epochs"] == 3
    assert "refinement" in json.loads(rd.attrs["clustering"])  # refine="pca" by default
    assert "line_features" in rd.attrs["preprocessing"]
    assert "neighbor_average" not in rd.attrs["preprocessing"]  # 200 counts/px is not sparse


def test_run_cluster_spectra_are_raw_counts(ran, scene) -> None:
    """The cluster sum spectra add up to the cube's sum spectrum."""
    rd = ran[0].dataset
    np.testing.assert_allclose(
        rd.cluster_sum_spectrum.sum("cluster"), scene[0].counts.sum(("y", "x")), rtol=1e-9
    )


def test_run_writes_a_results_file_that_reopens(ran) -> None:
    res, out, _ = ran
    reopened = sigma.SigmaResults.load(out)
    assert reopened.n_clusters == res.n_clusters
    sigma.io.open_dataset(out)  # plain sigma dataset too


def test_run_leaves_its_input_untouched(ran, scene) -> None:
    assert ran[2].identical(scene[0])


def test_run_does_not_overwrite_without_asking(ran, scene) -> None:
    with pytest.raises(FileExistsError, match="overwrite"):
        sigma.run(scene[0], config=FAST, out=ran[1], show_progress=False)


def test_binning_gives_binned_results_with_raw_count_spectra(scene) -> None:
    ds, _ = scene
    res = sigma.run(
        ds, config={**FAST, "bin_factor": 2, "clustering": {"n_components": 3}}, show_progress=False
    )
    rd = res.dataset
    assert (rd.sizes["y"], rd.sizes["x"]) == (ds.sizes["y"] // 2, ds.sizes["x"] // 2)
    chain = sigma.preprocessing.Preprocessor.from_json(rd.attrs["preprocessing"])
    assert [s["name"] for s in chain.steps][:2] == ["bin_spatial", "line_features"]
    assert chain(ds).features.shape == rd.features.shape  # the recorded chain re-applies
    assert float(rd.total_counts.sum()) == pytest.approx(float(ds.counts.sum()))


def test_unknown_config_key_is_named() -> None:
    with pytest.raises(ConfigurationError, match="max_epoch"):
        PipelineConfig.from_dict({"max_epoch": 3})


def test_bad_config_value_is_named() -> None:
    with pytest.raises(ConfigurationError, match="neighbor_average"):
        PipelineConfig(neighbor_average="sometimes").preprocessor()


# ------------------------------------------------------- refinement features (clustering.refine)
@pytest.fixture(scope="module")
def feats(scene):
    return PipelineConfig().preprocessor(400.0)(scene[0])


@pytest.fixture(scope="module")
def pcs(scene, feats):
    from sigma.clustering.refine import refinement_features

    return refinement_features("pca", scene[0], feats)


def test_refinement_none_gives_nothing(scene, feats) -> None:
    from sigma.clustering.refine import refinement_features

    assert refinement_features("none", scene[0], feats) is None


def test_refinement_in_the_features_is_the_features(scene, feats) -> None:
    from sigma.clustering.refine import refinement_features

    same = refinement_features("features", scene[0], feats)
    assert same is not None
    assert same.identical(feats["features"])


def test_refinement_pca_gives_8_finite_components_per_pixel(scene, pcs) -> None:
    assert pcs is not None
    assert pcs.shape == (*scene[0].counts.shape[:2], 8)
    assert np.isfinite(pcs.values).all()
    assert pcs.values.std() > 0


def test_refinement_pca_is_averaged_like_the_autoencoders_input(scene, feats, pcs) -> None:
    """The same 3x3 mean as the autoencoder's input when the chain averages."""
    from sigma.clustering.refine import refinement_features
    from sigma.preprocessing import neighbor_average

    smoothed = refinement_features("pca", scene[0], feats, smoothing={"kind": "mean3x3"})
    assert smoothed is not None
    expected = neighbor_average(pcs.to_dataset(name="features"), kind="mean3x3")["features"]
    np.testing.assert_allclose(smoothed.values, expected.values, rtol=1e-5, atol=1e-6)


def test_refinement_with_an_unknown_detector_resolution_uses_a_typical_one(
    scene, feats, pcs
) -> None:
    from sigma.clustering.refine import refinement_features

    unknown = scene[0].assign_attrs(energy_resolution_mnka_ev=float("nan"))
    assert refinement_features("pca", unknown, feats).shape == pcs.shape


def test_hdbscan_clusters_are_not_refined(scene, feats) -> None:
    """HDBSCAN's density clusters (noise labels) are not refined."""
    from sigma.clustering.refine import refinement_features

    assert refinement_features("pca", scene[0], feats, method="hdbscan") is None


def test_a_lazy_cube_is_refined_in_the_features(scene, feats) -> None:
    """A cube too big to hold stays lazy: refine in the features instead."""
    from sigma.clustering.refine import refinement_features

    lazy = scene[0].chunk({"y": 16})
    assert refinement_features("pca", lazy, feats).identical(feats["features"])


def test_neighbour_averaging_only_for_sparse_pixels() -> None:
    names = lambda pre: [s["name"] for s in pre.steps]  # noqa: E731
    cfg = PipelineConfig()
    assert "neighbor_average" in names(cfg.preprocessor(mean_counts=40.0))
    assert "neighbor_average" not in names(cfg.preprocessor(mean_counts=400.0))
    assert "neighbor_average" in names(PipelineConfig(neighbor_average=True).preprocessor(400.0))


def test_default_steps_bin_first_and_scale_last() -> None:
    steps = default_steps(lines=["Fe_Ka"], bin_factor=2)
    assert [s["name"] for s in steps] == [
        "bin_spatial",
        "line_features",
        "neighbor_average",
        "zscore",
    ]


def test_yaml_config_round_trip(tmp_path: Path) -> None:
    cfg = PipelineConfig.from_yaml(
        Path(__file__).resolve().parents[1] / "configs" / "run_demo.yaml"
    )
    assert cfg.bin_factor == 2
    assert cfg.model.output_activation == "identity"
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


def test_yaml_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        PipelineConfig.from_yaml(tmp_path / "missing.yaml")


def test_sigma_run_command_on_a_netcdf_file(
    scene_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sigma.cli import main

    out = tmp_path / "cube_sigma.nc"
    rc = main(["run", str(scene_file), "--out", str(out), "--epochs", "2", "--k", "3", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "3 phases found" in text
    assert f"sigma gui {out}" in text
    assert out.exists()


def test_sigma_run_command_refuses_to_overwrite(
    scene_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sigma.cli import main

    out = tmp_path / "cube_sigma.nc"
    out.write_bytes(b"earlier results")
    rc = main(["run", str(scene_file), "--out", str(out), "--epochs", "2", "--quiet"])
    assert rc == 2  # a usage error (docs/errors.md), with a one-line message
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier results"


def test_sigma_run_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sigma.cli import main

    rc = main(["run", str(tmp_path / "nope.bcf"), "--quiet"])
    assert rc == 1
    assert "nope.bcf" in capsys.readouterr().err


def test_demo_free_name(tmp_path: Path) -> None:
    from sigma.commands.demo import free_name

    p = tmp_path / "sigma_demo.nc"
    assert free_name(p) == p
    p.write_bytes(b"")
    assert free_name(p).name == "sigma_demo_2.nc"


@pytest.mark.slow  # 20-60 s: starts a 2-worker LocalCluster (CI runs it in the slow step)
def test_lazy_zarr_on_a_local_dask_cluster_matches_the_in_memory_run(scene, tmp_path: Path) -> None:
    """Out-of-core path: chunked Zarr read lazily, preprocessing on a 2-worker LocalCluster."""
    import dask.array as da

    from sigma.commands.run import _dask_client

    ds, _ = scene
    src = tmp_path / "cube.zarr"
    sigma.save(ds.chunk({"y": 16, "x": 24}), src)
    lazy = sigma.io.open_dataset(src, lazy=True)
    assert isinstance(lazy.counts.data, da.Array)
    cfg = {**FAST, "bin_factor": 2, "clustering": {"n_components": 3}}
    local = sigma.run(ds, config=cfg, show_progress=False)
    with _dask_client("local") as client:
        assert len(client.scheduler_info()["workers"]) == 2
        remote = sigma.run(lazy, config=cfg, show_progress=False)
    np.testing.assert_array_equal(remote.dataset.features.values, local.dataset.features.values)
    np.testing.assert_allclose(
        remote.dataset.embedding.values, local.dataset.embedding.values, atol=1e-5
    )
    assert "Dask cluster (2 workers)" in remote.dataset.attrs["history"][-1]
    np.testing.assert_array_equal(remote.dataset.label.values, local.dataset.label.values)


def test_summary_shows_match_confidence_only_for_named_phases() -> None:
    from types import SimpleNamespace

    import xarray as xr

    from sigma.pipeline import summary

    ds = xr.Dataset(
        {
            "cluster_name": ("cluster", ["quartz", "unmatched: Fe, Ti, O"]),
            "n_pixels": ("cluster", [30, 6]),
            "match_kind": ("cluster", ["single", "unmatched"]),
            "match_confidence": ("cluster", [0.97, 1.0]),
            "label": (("y", "x"), np.zeros((6, 6), int)),
        }
    )
    lines = summary(SimpleNamespace(dataset=ds), {}).splitlines()
    assert lines[1].rstrip().endswith("match 0.97")
    assert "match" not in lines[2].replace("unmatched", "")


def test_summary_suggests_binning_a_sparse_map() -> None:
    from types import SimpleNamespace

    import xarray as xr

    from sigma.pipeline import summary

    label = np.zeros((6, 6), int)
    label[0] = -1  # no-data pixels do not count towards the mean
    ds = xr.Dataset(
        {
            "cluster_name": ("cluster", ["matrix"]),
            "n_pixels": ("cluster", [30]),
            "label": (("y", "x"), label),
            "total_counts": (("y", "x"), np.where(label < 0, 0.0, 1.25)),
        }
    )
    text = summary(SimpleNamespace(dataset=ds))
    assert "1.2 counts per data pixel" in text
    assert "Try --bin 4 (about 20 counts per pixel)" in text
    dense = ds.assign(total_counts=ds["total_counts"] * 10)
    assert "--bin" not in summary(SimpleNamespace(dataset=dense))
    # a run that binned 2 x 2 already: the option is the total factor
    binned = ds.assign_attrs(pipeline_config='{"bin_factor": 2}')
    assert "Try --bin 8 (about 20 counts per pixel)" in summary(SimpleNamespace(dataset=binned))
