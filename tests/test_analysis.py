"""Tests of sigma.analysis on small synthetic scenes with known answers."""

from __future__ import annotations

import dask.array as dsa
import numpy as np
import pytest
import xarray as xr

from sigma import analysis
from sigma._schema import make_spectrum_image
from sigma.clustering import cluster
from sigma.exceptions import EmptySelectionError, SchemaError
from sigma.results import SigmaResults


def make_scene(seed: int = 0) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """12 x 16 px, 0.5 um pixels, 3 phases (Al-, Fe-, Cu-rich) with Poisson counts, and a latent."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((12, 16), int)
    truth[:, 8:] = 1
    truth[2:6, 2:6] = 2
    e = np.arange(300) * 0.04
    peaks = (1.487, 6.40, 8.04)  # Al Ka, Fe Ka, Cu Ka (keV)
    spec = np.stack([6 * np.exp(-((e - p) ** 2) / (2 * 0.06**2)) + 0.3 for p in peaks])
    counts = rng.poisson(spec[truth]).astype(np.uint16)
    si = make_spectrum_image(
        counts,
        energy_scale_kev=0.04,
        pixel_size=(0.5, 0.5),
        pixel_units="um",
        attrs={
            "xray_lines": ["Al_Ka", "Fe_Ka", "Cu_Ka"],
            "elements": ["Al", "Fe", "Cu"],
            "beam_energy_kev": 20.0,
        },
    )
    emb = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])[truth] + rng.normal(0, 0.3, (12, 16, 2))
    return si, truth, emb


@pytest.fixture
def scene() -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    return make_scene()


@pytest.fixture
def results(scene: tuple[xr.Dataset, np.ndarray, np.ndarray]) -> SigmaResults:
    si, _truth, emb = scene
    emb_da = xr.DataArray(emb, dims=("y", "x", "latent"))
    cl = cluster(emb_da, n_components=3, n_init=1)
    return SigmaResults.from_parts(
        clustering=cl, spectrum_image=si, embedding=emb, nmf_components=2
    )


def test_cluster_spectra_equal_hand_computation(
    scene: tuple[xr.Dataset, np.ndarray, np.ndarray],
) -> None:
    si, truth, _ = scene
    label = truth.copy()
    label[0, 0] = -1  # unassigned pixels are left out
    counts = si.counts.values.astype(np.float64)
    out = analysis.cluster_spectra(si, label, chunk_pixels=20)  # many small blocks
    for c in range(3):
        mask = label == c
        np.testing.assert_allclose(out.cluster_sum_spectrum.values[c], counts[mask].sum(axis=0))
        np.testing.assert_allclose(out.cluster_mean_spectrum.values[c], counts[mask].mean(axis=0))
        assert out.n_pixels.values[c] == mask.sum()
    assert out.energy.attrs["units"] == "keV"
    # dask-backed counts (computed block by block) give the same answer
    lazy = si.copy()
    lazy["counts"] = (("y", "x", "energy"), dsa.from_array(si.counts.values, chunks=(5, 16, 300)))
    out_lazy = analysis.cluster_spectra(lazy, label, chunk_pixels=64)
    xr.testing.assert_allclose(out, out_lazy)
    # labels at or above n_clusters are left out like -1
    two = analysis.cluster_spectra(si, label, n_clusters=2, chunk_pixels=20)
    xr.testing.assert_allclose(two, out.isel(cluster=slice(0, 2)))


def test_spectral_rank_counts_the_pure_spectra_not_their_mixtures() -> None:
    rng = np.random.default_rng(0)
    pure = rng.random((3, 50)) ** 4
    mixes = [0.3 * pure[0] + 0.7 * pure[1], 0.5 * pure[1] + 0.5 * pure[2]]
    assert analysis.spectral_rank(np.vstack([pure, *mixes]) * 1000) == 3
    assert analysis.spectral_rank(pure[:1]) == 1
    assert analysis.spectral_rank(np.zeros((4, 10))) == 1


def test_empty_cluster_warns_and_empty_selection_raises(
    scene: tuple[xr.Dataset, np.ndarray, np.ndarray],
) -> None:
    si, truth, _ = scene
    with pytest.warns(UserWarning, match=r"clusters \[3\] have no pixels"):
        out = analysis.cluster_spectra(si, truth, n_clusters=4)
    assert np.all(out.cluster_mean_spectrum.values[3] == 0)
    with pytest.raises(EmptySelectionError, match="no pixel has a cluster label"):
        analysis.cluster_spectra(si, -np.ones_like(truth))


def test_phase_table_areas_in_physical_units(results: SigmaResults, scene: tuple) -> None:
    _, truth, _ = scene
    table = results.phase_table()
    assert "area_um^2" in table.columns
    assert table.n_pixels.sum() == truth.size
    np.testing.assert_allclose(table["area_um^2"], table.n_pixels * 0.25)
    np.testing.assert_allclose(sorted(table.n_pixels), sorted(np.bincount(truth.ravel())))
    maps = results.binary_maps()
    assert maps.dims == ("cluster", "y", "x")
    np.testing.assert_array_equal(maps.sum(("y", "x")).values, table.n_pixels.values)


def test_top_lines_name_the_enriched_element(results: SigmaResults) -> None:
    top = results.top_lines(n=1)
    table = results.phase_table()
    sizes = dict(zip(table.cluster, table.n_pixels, strict=True))
    by_size = {sizes[c]: top[c] for c in top}
    assert by_size[80] == ["Al_Ka"]  # left half minus the Cu square
    assert by_size[96] == ["Fe_Ka"]  # right half
    assert by_size[16] == ["Cu_Ka"]
    # default names: the elements of the enriched lines, each once
    assert sorted(results.names) == ["Al", "Cu", "Fe"]


def test_top_elements_count_an_element_once() -> None:
    e = np.linspace(0.1, 10, 990)
    fe_ka, fe_kb, si = (np.exp(-((e - x) ** 2) / 0.005) for x in (6.40, 7.06, 1.74))
    ds = xr.Dataset(
        {"cluster_mean_spectrum": (("cluster", "energy"), np.stack([fe_ka + fe_kb, si]) + 0.01)},
        coords={"energy": e, "cluster": [0, 1]},
        attrs={"xray_lines": ["Fe_Ka", "Fe_Kb", "Si_Ka"]},
    )
    assert set(analysis.top_lines(ds, n=2)[0]) == {"Fe_Ka", "Fe_Kb"}
    assert analysis.top_elements(ds, n=2) == {0: ["Fe"], 1: ["Si"]}


def test_nmf_recovers_two_known_components() -> None:
    e = np.linspace(0, 10, 400)
    a = np.exp(-((e - 2.0) ** 2) / 0.02) + 0.3 * np.exp(-e / 3)
    b = np.exp(-((e - 6.4) ** 2) / 0.05) + 0.5 * np.exp(-((e - 7.1) ** 2) / 0.05)
    w = np.array([[1.0, 0.0], [0.7, 0.3], [0.4, 0.6], [0.1, 0.9], [0.0, 1.0]])
    spectra = xr.DataArray(
        (w @ np.stack([a, b])) * 100, dims=("cluster", "energy"), coords={"energy": e}
    )
    out = analysis.nmf_unmix(spectra, n_components=2, random_state=0)
    H = out.nmf_spectrum.values
    for truth in (a, b):
        cos = H @ truth / (np.linalg.norm(H, axis=1) * np.linalg.norm(truth))
        assert cos.max() > 0.95
    np.testing.assert_allclose(H.sum(axis=1), 1.0)
    recon = out.nmf_weight.values @ H
    np.testing.assert_allclose(recon, spectra.values, rtol=0.05, atol=1.0)


def test_nmf_abundance_sums_to_one(results: SigmaResults) -> None:
    ab = results.dataset.nmf_abundance
    assert ab.dims == ("component", "y", "x")
    np.testing.assert_allclose(ab.sum("component"), 1.0, atol=1e-5)


def test_particle_statistics_on_hand_drawn_labels() -> None:
    lab = np.full((20, 20), 0, np.int16)
    lab[2:6, 2:6] = 1  # 4 x 4 square: 16 px
    lab[10:12, 3:9] = 1  # 2 x 6 bar: 12 px
    lab[15, 15] = 1  # single pixel
    feats = np.zeros((20, 20, 2), np.float32)
    feats[2:6, 2:6, 0] = 3.0
    feats[10:12, 3:9, 0] = 5.0
    feats[..., 1] = 1.0
    coords = {
        "y": ("y", np.arange(20) * 0.5, {"units": "um"}),
        "x": ("x", np.arange(20) * 0.5, {"units": "um"}),
    }
    ds = xr.Dataset(
        {
            "label": (("y", "x"), lab),
            "features": (("y", "x", "feature"), feats),
        },
        coords={**coords, "cluster": [0, 1], "feature": ["Fe_Ka", "O_Ka"]},
    )
    df = analysis.particle_statistics(ds, 1)
    assert df.attrs["area_units"] == "um^2"
    assert list(df.n_pixels) == [16, 12, 1]
    np.testing.assert_allclose(df.area, [4.0, 3.0, 0.25])
    np.testing.assert_allclose(df.equivalent_diameter, np.sqrt(4 * df.area / np.pi))
    # second moments of an n-pixel run: variance (n^2 - 1) / 12; axis length = 4 sqrt(variance)
    np.testing.assert_allclose(df.major_axis_length[1], 4 * np.sqrt(35 / 12) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(df.minor_axis_length[1], 4 * np.sqrt(3 / 12) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(df.mean_Fe_Ka, [3.0, 5.0, 0.0])
    np.testing.assert_allclose(df.mean_O_Ka, 1.0)
    assert len(analysis.particle_statistics(ds, 1, min_area_px=2)) == 2
    lab2 = lab.copy()
    lab2[lab2 == 1] = 0
    with pytest.raises(EmptySelectionError, match="cluster 1 has no pixels"):
        analysis.particle_statistics(ds.assign(label=(("y", "x"), lab2)), 1)
    with pytest.raises(EmptySelectionError, match="does not exist"):
        analysis.particle_statistics(ds, 5)


def test_merge_is_consistent_and_immutable(results: SigmaResults, scene: tuple) -> None:
    si, _, _ = scene
    before = results.dataset.copy(deep=True)
    merged = results.merge_clusters([0, 2])
    xr.testing.assert_identical(results.dataset, before)  # input untouched
    ds = merged.dataset
    assert merged.n_clusters == 2
    np.testing.assert_allclose(ds.probability.sum("cluster"), 1.0, atol=1e-5)
    fresh = analysis.cluster_spectra(si, ds.label, n_clusters=2)
    np.testing.assert_allclose(ds.cluster_sum_spectrum, fresh.cluster_sum_spectrum)
    np.testing.assert_allclose(ds.cluster_mean_spectrum, fresh.cluster_mean_spectrum)
    np.testing.assert_array_equal(ds.n_pixels, fresh.n_pixels)
    assert merged.names[0] == results.names[0]
    assert merged.names[1] == results.names[1]
    np.testing.assert_allclose(ds.nmf_abundance.sum("component"), 1.0, atol=1e-5)
    assert '"edit": "merge"' in ds.attrs["clustering"]
    with pytest.raises(EmptySelectionError, match="at least 2 distinct"):
        results.merge_clusters([1, 1])
    with pytest.raises(EmptySelectionError, match="is not a cluster"):
        results.merge_clusters([0, 7])


def test_split_refits_one_cluster(results: SigmaResults, scene: tuple) -> None:
    si, truth, _ = scene
    merged = results.merge_clusters([0, 1, 2])  # one cluster holding all three blobs
    split = merged.split_cluster(0, counts=si, random_state=0)
    ds = split.dataset
    assert split.n_clusters == 2
    np.testing.assert_allclose(ds.probability.sum("cluster"), 1.0, atol=1e-5)
    fresh = analysis.cluster_spectra(si, ds.label, n_clusters=2)
    np.testing.assert_allclose(ds.cluster_sum_spectrum, fresh.cluster_sum_spectrum)
    np.testing.assert_array_equal(ds.n_pixels, np.bincount(ds.label.values.ravel(), minlength=2))
    assert split.names[1].endswith("(split)")
    assert split.colors[1] != split.colors[0]
    assert ds.gmm_mean.shape == (2, 2)
    with pytest.warns(UserWarning, match="no raw counts given"):
        nocounts = merged.split_cluster(0)
    assert np.isnan(nocounts.dataset.cluster_mean_spectrum.values).all()


def test_rename_and_recolor(results: SigmaResults) -> None:
    r = results.rename_cluster(1, "olivine").recolor_cluster(1, "tab:red")
    assert r.names[1] == "olivine"
    assert r.colors[1] == "#d62728"
    assert results.names[1] != "olivine"  # original unchanged
    with pytest.raises(ValueError, match="is not a colour"):
        results.recolor_cluster(0, "not-a-colour")
    with pytest.raises(ValueError, match="non-empty str"):
        results.rename_cluster(0, "  ")


def test_add_cluster_from_mask(results: SigmaResults, scene: tuple) -> None:
    si, truth, emb = scene
    ds = results.dataset
    before = ds.copy(deep=True)
    mask = np.zeros(truth.shape, bool)
    mask[8:12, 0:4] = True  # a corner of phase 0
    out = analysis.add_cluster_from_mask(ds, mask, name="corner", counts=si)
    xr.testing.assert_identical(ds, before)  # input untouched
    assert out.sizes["cluster"] == 4
    assert (out.label.values[mask] == 3).all()
    np.testing.assert_array_equal(out.label.values[~mask], ds.label.values[~mask])
    np.testing.assert_allclose(out.probability.sum("cluster"), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out.probability.isel(cluster=3).values, mask)
    np.testing.assert_array_equal(out.n_pixels, np.bincount(out.label.values.ravel(), minlength=4))
    fresh = analysis.cluster_spectra(si, out.label, n_clusters=4)  # exact with counts
    np.testing.assert_allclose(out.cluster_sum_spectrum, fresh.cluster_sum_spectrum)
    np.testing.assert_allclose(out.cluster_mean_spectrum, fresh.cluster_mean_spectrum)
    np.testing.assert_allclose(out.gmm_mean.values[3], emb[mask].mean(axis=0))
    np.testing.assert_allclose(out.nmf_abundance.sum("component"), 1.0, atol=1e-5)
    assert str(out.cluster_name.values[3]) == "corner"
    assert str(out.cluster_color.values[3]) not in [str(c) for c in ds.cluster_color.values]
    assert '"edit": "add_from_mask"' in out.attrs["clustering"]
    # without counts: the old clusters keep their mean spectra, the new one is their pixel-weighted mean
    est = analysis.add_cluster_from_mask(ds, mask.ravel(), color="tab:red")
    np.testing.assert_allclose(est.cluster_mean_spectrum[:3], ds.cluster_mean_spectrum)
    taken = np.bincount(ds.label.values[mask], minlength=3)
    want = taken @ ds.cluster_mean_spectrum.values / taken.sum()
    np.testing.assert_allclose(est.cluster_mean_spectrum[3], want, rtol=1e-6)
    np.testing.assert_allclose(
        est.cluster_sum_spectrum, est.cluster_mean_spectrum * est.n_pixels, rtol=1e-6
    )
    assert str(est.cluster_color.values[3]) == "#d62728"
    with pytest.raises(EmptySelectionError, match="no pixel"):
        analysis.add_cluster_from_mask(ds, np.zeros(truth.shape, bool))
    with pytest.raises(ValueError, match="one value per pixel"):
        analysis.add_cluster_from_mask(ds, np.ones(5, bool))


def test_count_summaries_nmf_and_line_names_from_a_clustering(
    scene: tuple[xr.Dataset, np.ndarray, np.ndarray],
) -> None:
    """The analysis steps SigmaResults.from_parts assembles, called on their own."""
    si, truth, emb = scene
    cl = cluster(xr.DataArray(emb, dims=("y", "x", "latent")), n_components=3, n_init=1)
    ds = cl.assign_coords(y=si.y, x=si.x).assign_attrs(xray_lines=si.attrs["xray_lines"])
    out = analysis.add_count_summaries(ds, si.counts, keep_counts=False)
    np.testing.assert_array_equal(out.total_counts.values, si.counts.values.sum(-1))
    np.testing.assert_array_equal(out.sum_spectrum.values, si.counts.values.sum((0, 1)))
    assert out.total_counts.attrs["units"] == "counts"
    assert "counts_value" not in out
    assert "cluster_mean_spectrum" in out
    assert "total_counts" not in ds  # the input is left alone
    # each phase is named by its own element (Al-, Fe- and Cu-rich phases)
    names = analysis.line_names(out, n=1)
    assert sorted(names) == ["Al", "Cu", "Fe"]
    nmf = analysis.add_nmf(out, 2)
    assert nmf.sizes["component"] == 2
    assert nmf.attrs["nmf_reconstruction_error"] >= 0
    with pytest.raises(SchemaError, match="cluster spectra"):
        analysis.add_nmf(ds, 2)


def test_edits_keep_dims_dtypes_and_units(results: SigmaResults) -> None:
    """Merge and new cluster build the result in one go: every variable keeps its dims order,
    dtype and attrs (the mean spectrum stays counts / pixel), on transposed results too."""
    ds = results.dataset.transpose("x", "y", ...)
    mask = xr.DataArray(np.zeros((ds.sizes["y"], ds.sizes["x"]), bool), dims=("y", "x"))
    mask[2:5, 1:3] = True
    for out in (analysis.merge_clusters(ds, [0, 2]), analysis.add_cluster_from_mask(ds, mask)):
        for name, var in ds.variables.items():
            assert out[name].dims == var.dims, name
            if var.dtype.kind in "biuf":
                assert out[name].dtype == var.dtype, name
        assert out.cluster_mean_spectrum.attrs["units"] == "counts / pixel"
        assert out.cluster_sum_spectrum.attrs["units"] == "counts"
        np.testing.assert_allclose(out.probability.sum("cluster"), 1.0, atol=1e-5)
    added = analysis.add_cluster_from_mask(ds, mask)
    k = ds.sizes["cluster"]
    assert (added.label.transpose("y", "x").values[mask.values] == k).all()
    assert (added.probability.isel(cluster=k).transpose("y", "x").values == mask.values).all()


def test_a_new_cluster_keeps_its_long_name_in_a_file(results: SigmaResults, tmp_path) -> None:
    """Names read from a file carry its text width in their encoding: a longer new name is
    written whole, not cut to the old width."""
    path = tmp_path / "r.nc"
    results.dataset[["label", "cluster_name"]].to_netcdf(path)
    ds = xr.load_dataset(path)
    mask = np.zeros(ds["label"].shape, bool)
    mask[0, :3] = True
    out = analysis.add_cluster_from_mask(ds, mask, name="a much longer cluster name")
    assert out.cluster_name.attrs["long_name"] == "cluster name"
    out[["cluster_name"]].to_netcdf(tmp_path / "b.nc")
    assert (
        str(xr.load_dataset(tmp_path / "b.nc").cluster_name.values[-1])
        == "a much longer cluster name"
    )
