"""Tests of sigma.results: building, save/load round trips, plots, exports, no torch."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sigma.exceptions import SchemaError, UnsupportedFormatError
from sigma.results import RESULTS_VERSION, SigmaResults


@pytest.fixture(scope="module")
def built(
    scene_results: SigmaResults, scene: tuple[xr.Dataset, xr.Dataset]
) -> tuple[SigmaResults, xr.Dataset]:
    """The shared scene's results (conftest ``scene_results``, by ``from_parts``) and its cube."""
    return scene_results, scene[0]


SCHEMA_DIMS = {
    "nav_image": ("y", "x"),
    "total_counts": ("y", "x"),
    "sum_spectrum": ("energy",),
    "features": ("y", "x", "feature"),
    "embedding": ("y", "x", "latent"),
    "label": ("y", "x"),
    "probability": ("y", "x", "cluster"),
    "cluster_name": ("cluster",),
    "cluster_color": ("cluster",),
    "gmm_mean": ("cluster", "latent"),
    "gmm_covariance": ("cluster", "latent", "latent_b"),
    "n_pixels": ("cluster",),
    "cluster_mean_spectrum": ("cluster", "energy"),
    "cluster_sum_spectrum": ("cluster", "energy"),
    "model_selection_score": ("n_components_tried",),
    "nmf_spectrum": ("component", "energy"),
    "nmf_weight": ("cluster", "component"),
    "nmf_abundance": ("component", "y", "x"),
}


@pytest.mark.parametrize(("name", "dims"), SCHEMA_DIMS.items())
def test_from_parts_variables_have_the_schema_dims(
    built: tuple[SigmaResults, xr.Dataset], name: str, dims: tuple[str, ...]
) -> None:
    assert built[0].dataset[name].dims == dims


def test_from_parts_dtypes_are_compact(built: tuple[SigmaResults, xr.Dataset]) -> None:
    ds = built[0].dataset
    assert ds.label.dtype == np.int16
    assert ds.probability.dtype == np.float32
    assert ds.total_counts.dtype == np.float32


def test_from_parts_keeps_the_navigation_image_kind(
    built: tuple[SigmaResults, xr.Dataset],
) -> None:
    assert built[0].dataset.nav_image.attrs["kind"] == "bse"


def test_from_parts_finds_the_scenes_three_phases(
    built: tuple[SigmaResults, xr.Dataset], scene: tuple[xr.Dataset, xr.Dataset]
) -> None:
    from sklearn.metrics import adjusted_rand_score

    res, _ = built
    assert res.n_clusters == 3  # found automatically (auto-k)
    truth = scene[1].label.values.ravel()
    assert adjusted_rand_score(truth, res.label.values.ravel()) == 1.0


def test_from_parts_totals_are_the_cubes_sums(built: tuple[SigmaResults, xr.Dataset]) -> None:
    res, si = built
    np.testing.assert_allclose(res.dataset.total_counts, si.counts.sum("energy"))
    np.testing.assert_allclose(res.dataset.sum_spectrum, si.counts.sum(("y", "x")))


def test_from_parts_keeps_physical_units(built: tuple[SigmaResults, xr.Dataset]) -> None:
    ds = built[0].dataset
    assert ds.x.attrs["units"] == "um"
    assert ds.energy.attrs["units"] == "keV"


@pytest.mark.parametrize(
    "key",
    [
        "source",
        "beam_energy_kev",
        "elements",
        "xray_lines",
        "energy_resolution_mnka_ev",
        "history",
        "preprocessing",
        "model_hparams",
        "clustering",
        "versions",
    ],
)
def test_from_parts_records_provenance(built: tuple[SigmaResults, xr.Dataset], key: str) -> None:
    assert key in built[0].dataset.attrs


def test_from_parts_stamps_the_version_and_hex_colours(
    built: tuple[SigmaResults, xr.Dataset],
) -> None:
    res, _ = built
    assert res.dataset.attrs["sigma_results_version"] == RESULTS_VERSION
    assert all(c.startswith("#") and len(c) == 7 for c in res.colors)


def test_results_are_frozen(built: tuple[SigmaResults, xr.Dataset]) -> None:
    res, _ = built
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.dataset = xr.Dataset()  # type: ignore[misc]


def test_results_without_the_required_variables_are_refused() -> None:
    with pytest.raises(SchemaError, match="lacks"):
        SigmaResults(xr.Dataset({"label": (("y", "x"), np.zeros((2, 2), np.int16))}))


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_save_load_round_trip(
    built: tuple[SigmaResults, xr.Dataset], tmp_path: Path, suffix: str
) -> None:
    res, _ = built
    path = res.save(tmp_path / f"results{suffix}")
    back = SigmaResults.load(path)
    xr.testing.assert_identical(res.dataset, back.dataset)
    assert back.names == res.names
    assert isinstance(back.dataset.attrs["history"], list)


def test_save_refuses_to_overwrite_unless_asked(
    built: tuple[SigmaResults, xr.Dataset], tmp_path: Path
) -> None:
    res, _ = built
    path = res.save(tmp_path / "results.nc")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        res.save(path)
    edited = res.rename_cluster(0, "matrix")
    edited.save(path, overwrite=True)
    assert SigmaResults.load(path).names[0] == "matrix"


def test_load_of_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SigmaResults.load(tmp_path / "missing.nc")


def test_load_of_an_unknown_format_names_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "r.pkl").write_bytes(b"x")
    with pytest.raises(UnsupportedFormatError, match="'.nc'"):
        SigmaResults.load(tmp_path / "r.pkl")


def test_plots_return_figures(built: tuple[SigmaResults, xr.Dataset]) -> None:
    from matplotlib.figure import Figure

    res, _ = built
    for fig in (
        res.plot_phase_map(),
        res.plot_cluster_spectra(),
        res.plot_latent(),
        res.plot_model_selection(),
    ):
        assert isinstance(fig, Figure)
    assert len(res.plot_cluster_spectra().axes[0].lines) >= 2


def test_export_writes_readable_files(
    built: tuple[SigmaResults, xr.Dataset], tmp_path: Path
) -> None:
    import matplotlib.image as mpimg
    import tifffile

    res, _ = built
    written = res.export(tmp_path / "out")
    names = {p.name for p in written}
    assert {
        "phase_map.png",
        "phase_map.tif",
        "probability.tif",
        "cluster_spectra.csv",
        "phase_table.csv",
    } <= names
    assert mpimg.imread(tmp_path / "out" / "phase_map.png").ndim == 3
    assert mpimg.imread(tmp_path / "out" / "probability_0.png").shape[0] > 10
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "out" / "phase_map.tif"), res.label.values
    )
    prob = tifffile.imread(tmp_path / "out" / "probability.tif")
    np.testing.assert_allclose(prob, res.probability.transpose("cluster", "y", "x").values)
    spectra = pd.read_csv(tmp_path / "out" / "cluster_spectra.csv")
    np.testing.assert_allclose(spectra["mean_1"], res.dataset.cluster_mean_spectrum.values[1])
    np.testing.assert_allclose(spectra["energy_keV"], res.dataset.energy.values)
    table = pd.read_csv(tmp_path / "out" / "phase_table.csv")
    assert table.n_pixels.sum() == res.label.size
    assert list(table.name) == res.names


def test_export_refuses_to_overwrite_unless_asked(
    built: tuple[SigmaResults, xr.Dataset], tmp_path: Path
) -> None:
    res, _ = built
    out = tmp_path / "out"
    out.mkdir()
    (out / "phase_map.png").write_bytes(b"mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        res.export(out)
    assert [p.name for p in out.iterdir()] == ["phase_map.png"]  # nothing written
    assert res.export(out, overwrite=True)
    assert (out / "phase_map.png").read_bytes() != b"mine"


@pytest.mark.slow  # a fresh interpreter imports the plotting stack (CI runs it in the slow step)
def test_reopening_and_plotting_needs_no_torch(
    built: tuple[SigmaResults, xr.Dataset], tmp_path: Path
) -> None:
    res, _ = built
    path = res.save(tmp_path / "r.nc")
    code = (
        "import sys, matplotlib; matplotlib.use('Agg')\n"
        "from sigma.results import SigmaResults\n"
        f"r = SigmaResults.load({str(path)!r})\n"
        "r.plot_phase_map(); r.plot_cluster_spectra(); r.plot_latent(); r.plot_model_selection()\n"
        "r.phase_table(); r.merge_clusters([0, 1])\n"
        "bad = [m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_phase_map_shows_no_data_pixels_grey_with_a_legend_entry(
    built: tuple[SigmaResults, xr.Dataset],
) -> None:
    from matplotlib.colors import to_hex

    from sigma.results import NO_DATA_COLOR

    res, _ = built
    ds = res.dataset.copy()
    label = ds.label.values.copy()
    label[0, :5] = -1
    nodata = SigmaResults(ds.assign(label=(ds.label.dims, label)))
    fig = nodata.plot_phase_map()
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts[-1] == "no data (5 px)"
    assert to_hex(fig.axes[0].images[0].get_cmap().get_bad()) == NO_DATA_COLOR
    full = [t.get_text() for t in res.plot_phase_map().axes[0].get_legend().get_texts()]
    assert not any("no data" in t for t in full)
