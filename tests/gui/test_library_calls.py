"""The GUI on the library: refit, BIC sweep and particles are sigma's, and edits reuse what they can."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from gui import data as gd


def test_refit_is_the_library_gmm(small_results):
    from sigma.clustering import fit_gmm

    new = gd.refit_clusters(small_results, 4, random_state=0)
    latent = small_results["embedding"].transpose("y", "x", "latent")
    want = fit_gmm(latent, n_components=4, n_init=1, random_state=0, n_fit=20_000)
    # same partition (the GUI renumbers nothing; names are carried over separately)
    np.testing.assert_array_equal(new["label"].values, want["label"].values)
    np.testing.assert_allclose(new["gmm_mean"].values, want["gmm_mean"].values)
    np.testing.assert_allclose(new["gmm_weight"].values, want["gmm_weight"].values)


def test_refit_keeps_no_data_pixels_out(small_results):
    label = small_results["label"].values.copy()
    label[:2] = -1  # two scan rows without data
    ds = small_results.assign(label=(("y", "x"), label))
    new = gd.refit_clusters(ds, 3)
    assert (new["label"].values[:2] == -1).all()
    assert (new["label"].values[2:] >= 0).all()
    assert int(new["n_pixels"].sum()) == int((label >= 0).sum())


def test_bic_sweep_is_the_library_sweep(small_results):
    from sigma.clustering import AutoGaussianMixture

    bic = gd.bic_sweep(small_results, [2, 3, 4], max_samples=2_000)
    est = AutoGaussianMixture(k_max=4, n_init=1, n_fit=2_000, random_state=0,
                              criterion="bic_overlap").fit(gd.latent_xy(small_results))  # fmt: skip
    assert list(bic.index) == [2, 3, 4]
    np.testing.assert_allclose(bic.values, est.bic_[1:])
    with pytest.raises(ValueError, match="n_components"):
        gd.bic_sweep(small_results, [0, 2])


def test_particle_table_is_the_library_table(small_results):
    """Issue 17 item 2: the GUI's particles are sigma.analysis.particle_statistics' (same
    connectivity), so the Clusters tab and a script agree."""
    from sigma import analysis

    for cluster in range(int(small_results.sizes["cluster"])):
        gui = gd.particle_table(small_results, cluster)
        lib = analysis.particle_statistics(small_results, cluster)
        assert len(gui) == len(lib)
        np.testing.assert_array_equal(gui["n_pixels"].values, lib["n_pixels"].values)
        np.testing.assert_allclose(gui["area (um^2)"].values, lib["area"].values)
        np.testing.assert_allclose(gui["centroid_x"].values, lib["centroid_x"].values)
        means = [c for c in lib.columns if c.startswith("mean_")]
        assert means
        assert all(c in gui.columns for c in means)
        np.testing.assert_allclose(gui[means].values, lib[means].values, rtol=1e-5, atol=1e-6)


def test_particle_statistics_matches_regionprops():
    """The vectorised moments give skimage's regionprops_table numbers (with pixel spacing)."""
    from skimage.measure import label as sk_label
    from skimage.measure import regionprops_table

    from sigma import analysis

    rng = np.random.default_rng(1)
    lab = (rng.random((30, 40)) < 0.5).astype(np.int16)
    feats = rng.normal(size=(30, 40, 2))
    ds = xr.Dataset({"label": (("y", "x"), lab), "features": (("y", "x", "feature"), feats)},
                    coords={"y": np.arange(30) * 0.2, "x": np.arange(40) * 0.3, "feature": ["a", "b"],
                            "cluster": [0, 1]})  # fmt: skip
    for conn in (1, 2):
        got = analysis.particle_statistics(ds, 1, connectivity=conn)
        want = regionprops_table(sk_label(lab == 1, connectivity=conn), intensity_image=feats,
                                 properties=["num_pixels", "area", "axis_major_length", "axis_minor_length",
                                             "centroid", "intensity_mean"], spacing=(0.2, 0.3))  # fmt: skip
        np.testing.assert_array_equal(got["n_pixels"], want["num_pixels"])
        for col, key in [("area", "area"), ("major_axis_length", "axis_major_length"),
                         ("minor_axis_length", "axis_minor_length"), ("centroid_y", "centroid-0"),
                         ("centroid_x", "centroid-1"), ("mean_b", "intensity_mean-1")]:  # fmt: skip
            np.testing.assert_allclose(got[col], want[key], rtol=1e-7, atol=1e-6, err_msg=col)


def test_feature_maps_are_reused_across_edits(small_results):
    """An edit changes clusters, not the per-pixel line maps: no new sparse product."""
    maps, units = gd.feature_maps(small_results)
    assert units.startswith("counts")
    for edited in (gd.merge_clusters(small_results, [1, 2]), gd.rename_cluster(small_results, 0, "m"),
                   gd.refit_clusters(small_results, 3)):  # fmt: skip
        assert gd.feature_maps(edited)[0] is maps
    changed = small_results.assign(counts_value=small_results["counts_value"].copy(deep=True))
    assert gd.feature_maps(changed)[0] is not maps


def test_shade_categories_is_datashaders_picture():
    from datashader import transfer_functions as tf

    from gui.latent import shade_categories

    rng = np.random.default_rng(0)
    agg = rng.poisson(0.4, size=(30, 40, 4)).astype(np.uint32)
    agg[:5] = 0  # empty cells
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]
    da = xr.DataArray(agg, dims=("y", "x", "cat"), coords={"cat": ["0", "1", "2", "3"]})
    for how in ("eq_hist", "linear", "log"):
        mine = shade_categories(agg, colors, how=how)
        ref = tf.shade(
            da, color_key=dict(zip("0123", colors, strict=True)), how=how, min_alpha=60
        ).data
        occupied = agg.sum(axis=2) > 0
        assert (mine[~occupied] == 0).all()
        for shift in (0, 8, 16, 24):  # r, g, b, alpha within one level
            a = (mine[occupied] >> shift) & 255
            b = (ref[occupied].astype(np.uint32) >> shift) & 255
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, (how, shift)
