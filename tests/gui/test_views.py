"""GUI logic without a browser: loading, selection, linked views, edits, export, no torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import holoviews as hv
import numpy as np
import panel as pn
import pytest
import xarray as xr
from scipy import ndimage

from gui import data as gd
from gui.demo import scene_results, write_results
from sigma.exceptions import CorruptFileError, EmptySelectionError, SchemaError
from sigma.sparse_counts import COUNTS_VARIABLES, counts_matrix
from sigma.xray import get_line

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(small_results):
    from gui.views import SigmaApp

    return SigmaApp(results=small_results)


# ------------------------------------------------------------------------------ demo and loading
def test_demo_results_follow_the_schema(small_results):
    ds = small_results
    assert ds["embedding"].dims == ("y", "x", "latent")
    assert ds["probability"].dims == ("y", "x", "cluster")
    assert ds["energy"].attrs["units"] == "keV"
    assert ds.sizes["cluster"] == 5
    assert list(ds["cluster_name"].values) == ["epoxy", "quartz", "albite", "orthoclase", "calcite"]
    # the posterior agrees with the true labels on almost every pixel of this well-separated scene
    assert (ds["probability"].argmax("cluster") == ds["label"]).mean() > 0.99
    np.testing.assert_allclose(ds["probability"].sum("cluster"), 1, atol=1e-5)
    assert int(ds["n_pixels"].sum()) == 48 * 64
    # calcite (phase 4) has its strongest peak above 1 keV at Ca Ka (smoothed over 3 channels,
    # less than the peak's width: the top channel of a few hundred Ca Ka counts is noisy)
    spec = ds["cluster_mean_spectrum"].sel(cluster=4).sel(energy=slice(1.0, 10.0))
    smooth = ndimage.gaussian_filter1d(spec.values.astype(np.float64), 3.0)
    e_peak = float(spec["energy"][int(np.argmax(smooth))])
    assert abs(e_peak - get_line("Ca_Ka").energy_kev) <= 0.015


def test_sigma_gui_demo_is_the_sigma_demo_scene():
    """One demo (issue 15, item 9): no second simulator; the demo file is `sigma demo --small`'s."""
    import gui
    from gui import demo

    assert not (Path(gui.__file__).parent / "demo_data.py").exists()
    assert demo.DEMO_FILE == "sigma_demo_small.nc"
    src = Path(demo.__file__).read_text()
    assert '"demo", "--small"' in src


def test_load_round_trip(small_results, small_results_path):
    ds = gd.load_results(small_results_path)
    np.testing.assert_array_equal(ds["label"].values, small_results["label"].values)
    assert list(ds["cluster_name"].values) == list(small_results["cluster_name"].values)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nc"):
        gd.load_results(tmp_path / "nope.nc")
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"this is not netcdf")
    with pytest.raises(CorruptFileError, match="bad.nc"):
        gd.load_results(bad)
    raw = xr.Dataset({"counts": (("y", "x", "energy"), np.zeros((2, 2, 3)))})
    raw.to_netcdf(tmp_path / "raw.nc", engine="h5netcdf")
    with pytest.raises(SchemaError, match="label|embedding"):
        gd.load_results(tmp_path / "raw.nc")


@pytest.mark.slow  # a fresh interpreter imports the GUI stack, ~10 s (CI runs it in the slow step)
def test_gui_imports_no_torch(small_results_path):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import gui.app, gui.views
        app = gui.views.SigmaApp({str(small_results_path)!r})
        app.latent.select_box((-10, -10, 10, 10))
        assert app.state.n_selected == 48 * 64, app.state.n_selected
        heavy = [m for m in ("torch", "lightning", "pytorch_lightning") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


# ------------------------------------------------------------------------------------ selection
def test_select_polygon_matches_hand_computation(rng):
    pts = rng.uniform(-1, 1, size=(20_000, 2))
    square = [[-0.5, -0.25], [0.5, -0.25], [0.5, 0.75], [-0.5, 0.75]]
    mask = gd.select_polygon(pts, square)
    hand = (np.abs(pts[:, 0]) < 0.5) & (pts[:, 1] > -0.25) & (pts[:, 1] < 0.75)
    np.testing.assert_array_equal(mask, hand)
    triangle = [[0, 0], [1, 0], [0, 1]]
    np.testing.assert_array_equal(
        gd.select_polygon(pts, triangle), (pts[:, 0] > 0) & (pts[:, 1] > 0) & (pts.sum(1) < 1)
    )
    assert not gd.select_polygon(pts, [[0, 0], [1, 1]]).any()  # a line selects nothing
    bowtie = [[-1, -1], [1, 1], [1, -1], [-1, 1]]  # self-crossing lasso is repaired, not an error
    assert gd.select_polygon(pts, bowtie).any()


def test_lasso_stream_selects_pixels_and_updates_linked_views(app, small_results):
    xy = gd.latent_xy(small_results)
    poly = np.array([[3.0, -1.5], [5.5, -1.5], [5.5, 1.5], [3.0, 1.5]])
    hand = int(((xy[:, 0] > 3) & (xy[:, 0] < 5.5) & (np.abs(xy[:, 1]) < 1.5)).sum())
    app.latent.lasso.event(geometry=poly)  # what a lasso drag in the browser sends
    assert app.state.n_selected == hand > 0
    assert app.state.selection_source == "latent"
    assert f"Selected pixels: {hand}</b>" in app.latent.summary.object
    # the selection's summed spectrum is exact: the sum of its pixels' kept counts
    spec, exact = gd.selection_sum_spectrum(small_results, app.state.selection)
    assert exact
    assert spec.attrs["units"] == "counts"
    want = counts_matrix(small_results)[app.state.selection].sum(axis=0)
    np.testing.assert_array_equal(spec.values, want)
    feats = gd.feature_means(small_results, app.state.selection)
    want = (
        gd.feature_maps(small_results)[0]
        .values.reshape(-1, small_results.sizes["feature"])[app.state.selection]
        .mean(0)
    )
    np.testing.assert_allclose(feats["selection"], want, rtol=1e-5)  # float32 sums
    # the linked map tints exactly the selected pixels
    app.latent.map_plot()
    np.testing.assert_array_equal(
        app.latent._map_sources[-1].source.data["image"][0].ravel(), app.state.selection
    )


def _bokeh_parts(app):
    """Render the Latent tab into a Bokeh document; return its figures' data sources."""
    app.latent.__panel__().get_root()
    latent = app.latent._latent_figs[-1]
    return (
        latent,
        app.latent._map_sources[-1].source,
        app.latent._spectrum_parts[-1],
        app.latent._bar_sources[-1],
    )


def test_lasso_updates_the_rendered_bokeh_sources_in_place(app, small_results):
    latent, map_src, spectrum, bars = _bokeh_parts(app)
    assert not latent["selected"].data_source.data["image"][0].any()
    assert len(spectrum["selection"].data["counts"]) == 0
    poly = np.array([[3.0, -1.5], [5.5, -1.5], [5.5, 1.5], [3.0, 1.5]])
    app.latent.lasso.event(geometry=poly)
    sel = app.state.selection
    assert sel.sum() > 0
    # map: a 0/1 image of exactly the selected pixels
    np.testing.assert_array_equal(map_src.data["image"][0].astype(bool).ravel(), sel)
    # latent layer: the grid cells holding a selected point, computed by hand
    (x0, x1), (y0, y1), w, h = latent["grid"]
    xy = gd.latent_xy(small_results)[sel]
    hist, _, _ = np.histogram2d(xy[:, 1], xy[:, 0], bins=(h, w), range=((y0, y1), (x0, x1)))
    np.testing.assert_array_equal(
        latent["selected"].data_source.data["image"][0].astype(bool), hist > 0
    )
    # spectrum: the selection's summed counts against the all-pixel mean times its pixel count
    spec, _ = gd.selection_sum_spectrum(small_results, sel)
    floor = 0.5  # log axis: half a count
    keep = gd.display_channels(small_results)  # no zero peak, nothing past the last line
    np.testing.assert_allclose(
        spectrum["selection"].data["counts"], np.maximum(spec.values[keep], floor), rtol=1e-6
    )
    np.testing.assert_allclose(
        spectrum["all"].data["counts"],
        np.maximum(gd.mean_spectrum(small_results).values[keep] * sel.sum(), floor),
    )
    assert spectrum["fig"].yaxis.axis_label == "counts"
    assert "exact counts" in spectrum["fig"].title.text
    np.testing.assert_allclose(
        bars.data["selection"], gd.feature_means(small_results, sel)["selection"], rtol=1e-6
    )
    np.testing.assert_allclose(bars.data["all"], gd.feature_means(small_results)["all"], rtol=1e-6)
    # a map box re-selects, and every view follows; clearing empties them
    x, y = small_results["x"].values, small_results["y"].values
    app.latent.map_bounds.event(bounds=(x[0], y[0], x[9], y[9]))
    assert map_src.data["image"][0].sum() == 100
    app.latent.clear_selection()
    assert not map_src.data["image"][0].any()
    assert not latent["selected"].data_source.data["image"][0].any()
    assert len(spectrum["selection"].data["counts"]) == 0
    assert not np.any(bars.data["selection"])
    assert "Selected pixels: 0</b>" in app.latent.summary.object


def test_bokeh_selection_events_drive_the_streams(app):
    from bokeh.events import SelectionGeometry

    latent, *_ = _bokeh_parts(app)
    fig = latent["fig"]
    lasso = {"type": "poly", "x": [3.0, 5.5, 5.5, 3.0], "y": [-1.5, -1.5, 1.5, 1.5]}
    fig._trigger_event(SelectionGeometry(fig, geometry=lasso, final=False))
    assert app.state.n_selected == 0  # only the final geometry of a drag selects
    fig._trigger_event(SelectionGeometry(fig, geometry=lasso, final=True))
    by_lasso = app.state.n_selected
    assert by_lasso > 0
    box = {"type": "rect", "x0": 3.0, "x1": 5.5, "y0": -1.5, "y1": 1.5}
    fig._trigger_event(SelectionGeometry(fig, geometry=box, final=True))
    assert app.state.n_selected == by_lasso  # the same rectangle, as a box


def test_view_changes_re_render_the_latent_layers(app):
    from bokeh.events import RangesUpdate

    latent, *_ = _bokeh_parts(app)
    app.latent.lasso.event(geometry=np.array([[3.0, -1.5], [5.5, -1.5], [5.5, 1.5], [3.0, 1.5]]))
    before = np.nansum(latent["density"].data_source.data["image"][0])
    assert before == 48 * 64  # every pixel's point is in the initial view
    latent["fig"]._trigger_event(RangesUpdate(latent["fig"], x0=3.0, x1=5.5, y0=-1.5, y1=1.5))
    assert latent["grid"][:2] == ((3.0, 5.5), (-1.5, 1.5))
    zoomed = latent["density"].data_source.data
    assert zoomed["x"] == [3.0]
    assert zoomed["dw"] == [2.5]
    assert 0 < np.nansum(zoomed["image"][0]) < before
    # the zoomed view is (nearly) all selection
    assert latent["selected"].data_source.data["image"][0].sum() > 0
    app.latent.shading = "linear"
    assert type(latent["density"].glyph.color_mapper).__name__ == "LinearColorMapper"
    app.latent.color_by = "density"
    assert latent["clusters"].glyph.global_alpha == 0.0
    app.latent.show_ellipses = False
    assert latent["ellipses"].data_source.data["xs"] == []
    # an edit (the selection becomes a cluster) re-colours the layers and relabels the ellipses
    app.latent.show_ellipses = True
    app.clusters.new_name = "grain"
    assert app.clusters.new_cluster_from_selection() == 5
    assert latent["labels"].source.data["name"][-1] == "5: grain"
    assert len(app.latent.color_key) == 6
    assert np.nansum(latent["density"].data_source.data["image"][0]) > 0


def test_box_and_map_selections(app, small_results):
    app.latent.bounds.event(bounds=(3.0, -1.5, 5.5, 1.5))
    xy = gd.latent_xy(small_results)
    assert app.state.n_selected == int(
        ((xy[:, 0] >= 3) & (xy[:, 0] <= 5.5) & (np.abs(xy[:, 1]) <= 1.5)).sum()
    )
    app.latent.map_plot()
    x, y = small_results["x"].values, small_results["y"].values
    app.latent.map_bounds.event(bounds=(x[2], y[5], x[11], y[9]))  # 10 columns x 5 rows
    assert app.state.n_selected == 50
    assert app.state.selection_source == "map"
    sel = app.state.selection.reshape(48, 64)
    assert sel[5:10, 2:12].all()
    assert sel.sum() == 50


def test_empty_selection_is_a_message_not_an_exception(app):
    n = app.latent.select_polygon([[100, 100], [101, 100], [101, 101]])
    assert n == 0
    assert "empty" in app.state.message
    assert app.clusters.new_cluster_from_selection() is None  # nothing selected: error notified
    assert "EmptySelectionError" in app.state.message
    with pytest.raises(EmptySelectionError):
        gd.selection_mean_spectrum(app.state.results, np.zeros(48 * 64, bool))


# -------------------------------------------------------------------------------------- editing
def test_lasso_to_new_cluster_then_merge_rename_recolour(app, small_results):
    mask = small_results["label"].values.ravel() == 2
    app.state.select(mask, "latent")
    app.clusters.new_name = "grain"
    k = app.clusters.new_cluster_from_selection()
    ds = app.state.results
    assert k == 5
    assert ds.sizes["cluster"] == 6
    assert app.state.edited
    assert int(ds["n_pixels"][5]) == mask.sum()
    assert int(ds["n_pixels"][2]) == 0
    assert list(ds["cluster_name"].values)[-1] == "grain"
    np.testing.assert_allclose(ds["probability"].sum("cluster"), 1, atol=1e-5)
    np.testing.assert_allclose(
        ds["cluster_mean_spectrum"][5], small_results["cluster_mean_spectrum"][2]
    )
    assert small_results.sizes["cluster"] == 5  # the input is never modified
    app.clusters.merge = [0, 5]
    app.clusters.new_name = ""
    app.clusters.merge_selected()
    ds = app.state.results
    assert ds.sizes["cluster"] == 5
    assert int(ds["n_pixels"][0]) == int(small_results["n_pixels"][0]) + mask.sum()
    app.clusters.cluster = 1
    app.clusters.new_name = "haematite"
    app.clusters.rename()
    app.clusters.new_color = "#00ff00"
    app.clusters.recolor()
    assert app.state.names()[1] == "haematite"
    assert app.state.colors()[1] == "#00ff00"
    edits = [e["edit"] for e in json.loads(app.state.results.attrs["clustering"])["edits"]]
    assert edits == ["add_from_mask", "merge", "rename", "recolor"]  # sigma.analysis's edit log
    assert gd.recolor_cluster(app.state.results, 1, "green")["cluster_color"].values[1] == "#008000"
    with pytest.raises(ValueError, match="#rrggbb"):
        gd.recolor_cluster(app.state.results, 1, "not-a-colour")
    app.clusters.merge = [1, 2]
    app.clusters.merge_name = "feldspars"
    app.clusters.merge_selected()
    assert app.state.names()[1] == "feldspars"
    assert app.clusters.merge_name == ""


def test_rename_then_merge_keeps_names_apart(app, tmp_path):
    """Issue 15, item 4: rename 0 -> matrix, merge 3 and 4: no second 'matrix'; the k box follows."""
    names0 = app.state.names()
    app.clusters.cluster = 0
    app.clusters.new_name = "matrix"
    app.clusters.rename()
    assert app.state.names()[0] == "matrix"
    assert app.clusters.new_name == ""  # used once
    app.clusters.merge = [3, 4]
    app.clusters.merge_selected()
    names = app.state.names()
    assert names == ["matrix", names0[1], names0[2], names0[3]]
    assert len(set(names)) == len(names)
    assert app.clusters.n_components == 4  # the k box shows the new number of clusters
    edits = json.loads(app.state.results.attrs["clustering"])["edits"]
    assert [e["edit"] for e in edits] == ["rename", "merge"]
    # a name another cluster holds is refused with one clear message, the results unchanged
    before = app.state.results
    app.clusters.cluster = 1
    app.clusters.new_name = "matrix"
    app.clusters.rename()
    assert app.state.results is before
    assert "already called 'matrix'" in app.state.message
    app.clusters.output_dir = str(tmp_path)
    app.clusters.save()
    saved = gd.load_results(Path(app.clusters.output_dir) / app.clusters.output_name)
    assert list(saved["cluster_name"].values) == names


def test_refit_keeps_the_names_of_matching_clusters(small_results):
    ds = gd.rename_cluster(small_results, 0, "matrix")
    new = gd.refit_clusters(ds, 5)
    names = [str(n) for n in new["cluster_name"].values]
    # the refit finds the same 5 blobs: every cluster keeps its name and colour
    assert sorted(names) == sorted(str(n) for n in ds["cluster_name"].values)
    big = int(np.argmax(new["n_pixels"].values))
    assert names[big] == "matrix"
    assert str(new["cluster_color"].values[big]) == str(ds["cluster_color"].values[0])
    more = gd.refit_clusters(ds, 6)
    more_names = [str(n) for n in more["cluster_name"].values]
    assert len(set(more_names)) == 6
    assert "matrix" in more_names
    assert sum(n.startswith("phase ") for n in more_names) == 1


def test_refit_and_bic_sweep_find_the_true_k():
    ds = scene_results((40, 40), n_phases=4, n_channels=256, energy_scale_kev=0.04, seed=3)
    bic = gd.bic_sweep(ds, range(2, 7))
    assert int(bic.idxmin()) == 4
    new = gd.refit_clusters(ds, 3)
    assert new.sizes["cluster"] == 3
    assert set(np.unique(new["label"])) == {0, 1, 2}
    np.testing.assert_allclose(new["probability"].sum("cluster"), 1, atol=1e-5)


def test_particle_table_counts_known_grains():
    ds = scene_results((20, 20), n_phases=3, n_channels=256, energy_scale_kev=0.04, seed=1)
    label = np.zeros((20, 20), np.int16)
    label[2:5, 2:5] = 1  # 9 px
    label[10:12, 10:12] = 1  # 4 px
    ds = ds.assign(label=(("y", "x"), label))
    table = gd.particle_table(ds, 1)
    assert sorted(table["n_pixels"]) == [4, 9]
    assert np.isclose(table["area (um^2)"].sum(), 13 * 0.1**2)  # the scene's 0.1 um pixels


def test_phase_rgba_opacity(small_results):
    full = gd.phase_rgba(small_results, opacity=1.0)
    label = small_results["label"].values
    assert tuple(full[label == 1][0, :3]) == (0xFF, 0x7F, 0x0E)  # hematite's '#ff7f0e'
    none = gd.phase_rgba(small_results, opacity=0.0)
    assert (none[..., 0] == none[..., 1]).all()  # grey only


# ----------------------------------------------------------------------------------------- export
def test_exports_and_save_refuses_to_overwrite(app, small_results_path, tmp_path):
    app.state.path = str(small_results_path)
    app.clusters.output_dir = str(tmp_path)
    png = app.clusters.export_phase_map()
    tif = app.clusters.export_phase_map(suffix=".tif")
    csv = app.clusters.export_spectra()
    parts = app.clusters.export_particles()
    prob = app.clusters.export_cluster_map()
    assert all(p is not None and p.exists() for p in (png, tif, csv, parts, prob))
    import tifffile

    assert tifffile.imread(prob).dtype == np.float32
    # issue 15, item 7: pictures with context, TIFFs with their pixel size in micrometres
    from PIL import Image

    picture = np.asarray(Image.open(png))
    assert min(picture.shape[:2]) >= 600  # upscaled from 48 x 64 scan pixels
    assert picture.shape[1] > 800  # the map plus a legend beside it
    for path in (tif, prob):
        with tifffile.TiffFile(path) as f:
            page = f.pages[0]
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            num, den = page.tags["XResolution"].value
            np.testing.assert_allclose(den / num * 1e4, 0.1)  # 0.1 um per pixel
            assert json.loads(page.description)["pixel_size_um"] == [0.1, 0.1]
    assert tifffile.imread(tif).shape == (48, 64, 3)
    maps = app.clusters.export_maps()
    names = sorted(p.name for p in maps)
    assert "small_results_element_Ca.tif" in names
    assert "small_results_nmf_abundance_0.tif" in names
    ca = tifffile.imread(tmp_path / "small_results_element_Ca.tif")
    want = gd.feature_maps(app.state.results)[0].sel(feature="Ca").values
    np.testing.assert_allclose(ca, want)  # net Ca counts per pixel
    assert app.clusters.export_maps() is None  # exists: refused with a message
    assert "already exists" in app.state.message
    assert app.clusters.export_phase_map() is None
    assert "already exists" in app.state.message
    saved = app.clusters.save()
    assert saved == tmp_path / "results_edited.nc"
    np.testing.assert_array_equal(gd.load_results(saved)["label"], app.state.results["label"])
    assert app.clusters.save() is None
    assert "already exists" in app.state.message
    app.clusters.output_dir = str(small_results_path.parent)
    app.clusters.output_name = small_results_path.name
    assert app.clusters.save() is None
    assert "input file" in app.state.message


# -------------------------------------------------------------------------------------- rendering
def test_views_render_to_bokeh(app):
    from bokeh.models import BoxSelectTool, LassoSelectTool

    fig = app.latent.latent_plot()
    tools = {type(t) for t in fig.tools}
    assert LassoSelectTool in tools
    assert BoxSelectTool in tools
    app.spectra.elements = ["Ca"]
    overlay = app.spectra.plot({"x": (gd.mean_spectrum(app.state.results).values, "#000000")})
    vlines = [el for el in overlay.values() if isinstance(el, hv.VLines)]
    assert any(np.isclose(v, get_line("Ca_Ka").energy_kev) for v in vlines[0].data.iloc[:, 0])
    hv.render(overlay)
    root = app.clusters.__panel__().get_root()
    assert root is not None
    app.dataset.lookup_energy = 6.40
    assert app.dataset.candidates()["line"].iloc[0] == "Fe_Ka"


def test_sigma_gui_command(small_results_path, capsys):
    from sigma.commands import gui as cmd

    assert cmd.main([str(small_results_path), "--dry-run", "--port", "5999", "--no-show"]) == 0
    out = capsys.readouterr().out
    assert "panel serve" in out
    assert str(cmd.app_path()) in out
    assert str(small_results_path) in out
    assert "--show" not in out
    assert "5999" in out
    assert cmd.main(["/does/not/exist.nc", "--dry-run"]) == 2
    assert "exist.nc" in capsys.readouterr().err


def test_write_image_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=".jpg"):
        gd.write_image(np.zeros((2, 2)), tmp_path / "a.jpg")
    write_results(
        scene_results((8, 8), n_phases=2, n_channels=256, energy_scale_kev=0.04), tmp_path / "r.nc"
    )
    with pytest.raises(FileExistsError):
        gd.save_results(xr.Dataset(), tmp_path / "r.nc")


def test_bad_file_gives_an_error_page_not_a_dead_one(tmp_path):
    import panel as pn

    from gui.app import create_app

    bad = tmp_path / "broken.nc"
    bad.write_bytes(b"garbage")
    page = create_app(str(bad))
    alerts = [obj for obj in page.main.objects if isinstance(obj, pn.pane.Alert)]
    assert len(alerts) == 1
    assert "CorruptFileError" in alerts[0].object
    assert "broken.nc" in alerts[0].object


def test_selection_means_match_hand_computation(small_results, rng):
    means = gd.SelectionMeans(small_results)
    mask = rng.random(48 * 64) < 0.3
    feats, units = gd.feature_maps(small_results)
    assert units == "counts per pixel"  # net line counts, not z-scores (issue 15, item 2)
    feats = feats.values.reshape(48 * 64, -1)
    np.testing.assert_allclose(means.features(mask), feats[mask].mean(0), rtol=1e-5)
    spec, exact = means.spectrum(mask)
    assert exact
    np.testing.assert_allclose(spec, counts_matrix(small_results)[mask].sum(0) / mask.sum())
    # without kept counts: the selection's mean probability times the cluster spectra
    estimate = gd.SelectionMeans(small_results.drop_vars(list(COUNTS_VARIABLES)))
    prob = small_results["probability"].values.reshape(48 * 64, -1)
    cms = small_results["cluster_mean_spectrum"].values
    spec, exact = estimate.spectrum(mask)
    assert not exact
    np.testing.assert_allclose(spec, prob[mask].mean(0) @ cms, rtol=1e-5)
    mask[:] = False  # the same array, changed in place: no stale result
    mask[:10] = True
    np.testing.assert_allclose(means.features(mask), feats[:10].mean(0), rtol=1e-5)
    with pytest.raises(EmptySelectionError):
        means.spectrum(np.zeros(48 * 64, bool))
    # with per-pixel counts the spectrum is exact
    counts = np.random.default_rng(1).poisson(2.0, size=(48, 64, small_results.sizes["energy"]))
    exact_ds = small_results.assign(counts=(("y", "x", "energy"), counts))
    spec, exact = gd.SelectionMeans(exact_ds).spectrum(mask)
    assert exact
    np.testing.assert_allclose(spec, counts.reshape(48 * 64, -1)[:10].mean(0))


@pytest.mark.parametrize("drop", [["nav_image"], ["nav_image", "probability", "features"]])
def test_every_tab_renders_without_a_navigation_image(small_results, drop):
    """A JEOL .pts result has no navigation image: every tab must still build (issue 15, item 3)."""
    from bokeh.document import Document

    from gui.views import SigmaApp

    ds = small_results.drop_vars(drop)
    label = ds["label"].values.copy()
    label[:2] = -1  # two scan rows of no-data pixels
    ds = ds.assign(label=(("y", "x"), label, ds["label"].attrs))
    app = SigmaApp(results=ds)
    for view in (app.latent, app.dataset, app.clusters):
        root = pn.panel(view).get_root(Document())
        assert root is not None
    text = pn.panel(app.dataset).get_root(Document())
    assert text is not None


def test_a_sub_phase_inside_a_cluster_shows_its_own_peaks(small_results):
    """Issue 15, item 1: with kept counts a lasso's spectrum is the real sum, not an estimate."""
    true_label = small_results["label"].values.ravel()
    merged = gd.merge_clusters(small_results, [1, 4])  # quartz and calcite as one cluster
    calcite = true_label == 4
    exact, is_exact = gd.selection_sum_spectrum(merged, calcite)
    assert is_exact
    np.testing.assert_array_equal(
        exact.values, small_results["cluster_sum_spectrum"].sel(cluster=4).values
    )
    ca = get_line("Ca_Ka").energy_kev
    si = get_line("Si_Ka").energy_kev
    near = lambda e: np.abs(exact["energy"].values - e) < 0.03  # noqa: E731
    assert exact.values[near(ca)].sum() > 5 * exact.values[near(si)].sum()  # calcite's own peak
    # without kept counts the same lasso can only give the merged cluster's mean: Si swamps Ca
    estimate, is_exact = gd.selection_sum_spectrum(
        merged.drop_vars(list(COUNTS_VARIABLES)), calcite
    )
    assert not is_exact
    assert estimate.values[near(si)].sum() > estimate.values[near(ca)].sum()


def test_new_cluster_and_refit_have_exact_spectra(small_results):
    mask = np.zeros(small_results["label"].size, bool)
    mask[: small_results.sizes["x"] * 3] = True  # three scan rows, across phases
    new = gd.add_cluster_from_mask(small_results, mask, name="rows")
    want = counts_matrix(small_results)[mask].sum(axis=0)
    np.testing.assert_array_equal(new["cluster_sum_spectrum"].values[-1], want)
    np.testing.assert_allclose(new["cluster_mean_spectrum"].values[-1], want / mask.sum())
    refit = gd.refit_clusters(small_results, 3)
    lab = refit["label"].values.ravel()
    np.testing.assert_array_equal(
        refit["cluster_sum_spectrum"].values[1], counts_matrix(small_results)[lab == 1].sum(axis=0)
    )


def test_tiny_phases_start_hidden_and_spectra_skip_the_zero_peak(small_results):
    """Issue 15, item 6: tiny phases do not swamp the plots; axes show the data that matters."""
    from gui.views import SigmaApp

    label = small_results["label"].values.copy()
    label[0, :2] = 3  # cluster 3 keeps 2 of its pixels only ...
    label[label == 3] = 0
    label[0, :2] = 3
    ds = small_results.assign(label=(("y", "x"), label))
    ds = ds.assign(n_pixels=("cluster", np.bincount(label.ravel(), minlength=5)))
    assert gd.small_clusters(ds) == [3]
    app = SigmaApp(results=ds)
    assert app.state.hidden == [3]
    assert 3 not in app.clusters.shown
    assert "3: orthoclase (2 px)" in app.clusters.param.shown.names  # listed with its pixel count
    app.latent.latent_plot()
    parts = app.latent._latent_figs[-1]
    assert len(parts["ellipses"].data_source.data["xs"]) == 4  # no ellipse for the tiny phase
    app.clusters.shown = [0, 1, 2, 3, 4]  # the user shows it again
    assert app.state.hidden == []
    assert len(parts["ellipses"].data_source.data["xs"]) == 5
    keep = gd.display_channels(ds)
    e = ds["energy"].values[keep]
    assert e[0] >= 0.1  # above the zero peak
    assert e[-1] <= get_line("Ca_Kb").energy_kev + 2.0 + 1e-9  # up to 2 keV past the last line
    overlay = app.spectra.plot({"x": (ds["cluster_mean_spectrum"].values[0], "#000000")})
    curve = [el for el in overlay.values() if isinstance(el, hv.Curve)][0]
    assert curve.data.iloc[:, 0].min() >= 0.1


def test_a_hidden_latent_tab_is_redrawn_when_shown_again(app):
    """Edits and selections made in another tab reach the Latent tab's plots when it is shown
    (a hidden plot repaints for nothing when its data changes)."""
    from bokeh.document import Document

    pn.panel(app).get_root(Document())
    parts = app.latent._latent_figs[-1]
    map_src = app.latent._map_sources[-1].source
    n_ellipses = len(parts["ellipses"].data_source.data["xs"])
    app.tabs.active = 2  # the Clusters tab
    assert not app.latent.tab_visible
    app.clusters.merge = [3, 4]
    app.clusters.merge_selected()
    mask = np.zeros(app.state.xy.shape[0], bool)
    mask[:50] = True
    app.state.select(mask, "map")
    assert len(parts["ellipses"].data_source.data["xs"]) == n_ellipses  # not yet
    assert not map_src.data["image"][0].any()
    app.tabs.active = 0
    assert len(parts["ellipses"].data_source.data["xs"]) == n_ellipses - 1
    assert parts["labels"].source.data["name"][-1].startswith("3: ")
    np.testing.assert_array_equal(map_src.data["image"][0].ravel().astype(bool), mask)
    assert "Selected pixels: 50" in app.latent.summary.object


def test_a_selection_changed_in_place_and_repeated_or_failed_edits_show(app):
    """The state keeps its own copy of a selection (the maps show a view of it); the status
    line shows every success, also a repeated one, and no old success next to an error."""
    from bokeh.document import Document

    pn.panel(app).get_root(Document())
    map_img = app.latent._map_sources[-1]
    mask = np.zeros(app.state.xy.shape[0], bool)
    mask[:10] = True
    app.state.select(mask, "map")
    mask[10:500] = True  # the caller's array changes, then is selected again
    app.state.select(mask, "map")
    assert int(map_img.source.data["image"][0].sum()) == 500
    app.clusters.cluster = 0
    app.clusters.new_name = "matrix"
    app.clusters.rename()
    first = app.state.status.object
    assert first.endswith("Cluster 0 is now 'matrix'.")
    app.state.notify("Cluster 0 is now 'matrix'.", "success")  # the same text: still shown anew
    assert app.state.status.object.endswith("Cluster 0 is now 'matrix'.")
    app.clusters.new_name = "matrix"
    app.clusters.cluster = 1
    app.clusters.rename()  # refused: the name is taken
    assert "already called 'matrix'" in app.state.message
    assert app.state.status.object == ""


def test_edits_update_the_clusters_tab_in_place(app):
    """Issue 15, item 5: an edit changes data sources, it does not rebuild the tab's figures."""
    from bokeh.document import Document

    doc = Document()
    pn.panel(app).get_root(doc)
    app.tabs.active = 2  # build the Clusters tab
    figs = app.clusters._figs
    phase_fig, label_src = app.clusters._phase_fig, figs._labels.source
    image_before = label_src.data["image"][0]
    n_models = len(doc.models)
    app.clusters.cluster = 0
    app.clusters.new_name = "matrix"
    app.clusters.rename()
    assert app.state.last_change == {"names"}
    assert label_src.data["image"][0] is image_before  # no image sent for a rename
    assert "0: matrix" in figs.legend.object
    assert figs._hover_names.args["labels"][0].startswith("0: matrix")  # the map's tooltip names
    assert app.clusters._spectra_parts["src"].data["label"][0].startswith("0: matrix")  # patched
    assert len(doc.models) == n_models  # no new Bokeh models
    app.clusters.cluster = 1
    app.clusters.new_color = "#00ff00"
    app.clusters.recolor()
    assert app.state.last_change == {"colors"}
    assert figs._label_mapper.palette[2] == "#00ff00"  # palette[0] is 'no data'
    assert label_src.data["image"][0] is image_before
    app.clusters.merge = [3, 4]
    app.clusters.merge_selected()
    assert "labels" in app.state.last_change
    new_image = label_src.data["image"][0]
    assert new_image.dtype == np.uint8
    np.testing.assert_array_equal(new_image, app.state.results["label"].values + 1)
    assert app.clusters._phase_fig is phase_fig
    assert len(doc.models) <= n_models + 5  # legend items may change, figures stay
    # the binary map shows the merged labels too (its own screen-resolution copy)
    binary = app.clusters._figs._prob["binary_image"].source.data["image"][0]
    np.testing.assert_array_equal(binary, app.state.results["label"].values + 1)
    # success goes to the status line next to the controls, not a new notification model
    assert app.state.status.object.startswith("✓ ")
    assert app.state.status.object.endswith(" Merged clusters [3, 4] into 3.")
    assert app.state.message == "Merged clusters [3, 4] into 3."


def test_phase_map_png_has_a_legend_and_a_scale_bar(small_results):
    from io import BytesIO

    from PIL import Image

    from gui import exports

    assert exports.pixel_size_um(small_results) == (0.1, 0.1)
    assert exports.scale_bar_length(6.4) == 1.0
    tiny = small_results.isel(y=slice(0, 30), x=slice(0, 30))
    img = np.asarray(Image.open(BytesIO(exports.phase_map_png(tiny))).convert("RGB"))
    assert img.shape[0] >= 800  # a 30 x 30 map is upscaled (nearest neighbour)
    # the legend sits right of the map: it holds dark text pixels where the map is not
    legend = img[:, int(img.shape[1] * 0.75) :]
    assert (legend.sum(axis=2) < 200).any()
    # the scale bar: a black horizontal run near the bottom left of the map
    bottom = img[int(img.shape[0] * 0.85) :, : int(img.shape[1] * 0.3)]
    assert ((bottom.sum(axis=2) < 30).sum(axis=1) > 20).any()


def test_small_things(app, small_results):
    """Issue 15, item 8: colour picker follows the cluster, axes carry units, line labels apart."""
    from gui.cluster_figures import _spread_labels
    from gui.images import _image
    from sigma.xray import lines_in_range

    app.clusters.cluster = 2
    assert app.clusters.new_color == app.state.colors()[2]  # not always magenta
    img = _image(small_results["total_counts"].values, small_results, "counts")
    opts = hv.Store.lookup_options("bokeh", img, "plot").kwargs
    assert opts["xlabel"] == "x (um)"
    assert opts["ylabel"] == "y (um)"
    fig = app.latent.latent_plot()
    assert "arbitrary units" in fig.xaxis[0].axis_label
    lines = lines_in_range(
        ["C", "N", "O", "Na", "Mg", "Al"], (0.1, 2.0), beam_energy_kev=15.0, min_weight=0.3
    )
    kept = _spread_labels(lines)
    gaps = np.diff([ln.energy_kev for ln in kept])
    assert len(kept) >= 5
    assert (gaps >= 0.06).all()
    app.clusters.__panel__()
    assert app.clusters._figs is not None  # built by the tab
    spectra = app.clusters._figs.spectra_figure(True, "t", "counts per pixel")[0]
    assert spectra.right  # the legend sits beside the plot, not over the lines


def test_merge_leaves_its_input_alone_and_shares_the_counts(small_results):
    before = {
        v: small_results[v].values.copy() for v in ("label", "probability", "n_pixels", "gmm_mean")
    }
    merged = gd.merge_clusters(small_results, [1, 2])
    for v, arr in before.items():
        np.testing.assert_array_equal(small_results[v].values, arr)
    # the kept counts are not copied by an edit (a deep copy cost seconds on 1M pixels)
    assert merged["counts_value"].values is small_results["counts_value"].values


def test_phases_tab_patches_cells_instead_of_rebuilding(small_results):
    """Issue 15 note: the Phases tab rebuilt its tables and plot on every edit once opened."""
    from bokeh.document import Document

    from gui.phases import PhasesView
    from gui.state import ResultsState

    k = small_results.sizes["cluster"]
    at = np.tile(np.array([0.5, 0.3, 0.2]), (k, 1))
    ds = small_results.assign_coords(element=["O", "Si", "Fe"]).assign(
        composition_at=(("cluster", "element"), at),
        composition_at_error=(("cluster", "element"), at * 0.01),
    )
    state = ResultsState(ds)
    view = PhasesView(state)
    doc = Document()
    root = pn.panel(view).get_root(doc)
    doc.add_root(root)
    tables = [m for m in root.select({"type": pn.models.tabulator.DataTabulator})]
    assert len(tables) == 2
    points = view._parts["points"]
    assert list(points.data["name"]) == state.names()
    sent: list[object] = []
    doc.on_change(lambda event: sent.append(event))
    state.update_results(gd.rename_cluster(state.results, 1, "olivine"))
    # the same models, one patched name cell per table and the ternary points' names
    assert [m for m in root.select({"type": pn.models.tabulator.DataTabulator})] == tables
    assert view._parts["composition"].value["name"].tolist()[1] == "olivine"
    assert list(points.data["name"])[1] == "olivine"
    kinds = {type(e).__name__ for e in sent}
    assert "ColumnsPatchedEvent" in kinds, kinds
    assert not any(type(e).__name__ == "ModelChangedEvent" and e.attr == "children" for e in sent)


def test_an_edit_sends_each_spectra_figure_once_at_most(app):
    """Issue 15, item 5: a merge refills the cluster spectra once (three watchers each used to
    resend them: the figure repainted 3-4 times) and leaves the NMF components alone."""
    from bokeh.document import Document
    from bokeh.document.events import ColumnDataChangedEvent, ColumnsPatchedEvent

    doc = Document()
    doc.add_root(pn.panel(app).get_root(doc))
    app.tabs.active = 2
    c = app.clusters
    assert c._spectra_parts is not None
    assert c._nmf_parts is not None
    sent: list = []
    doc.on_change(lambda event: sent.append(event))

    def changed(source) -> int:
        kinds = (ColumnDataChangedEvent, ColumnsPatchedEvent)
        return sum(isinstance(e, kinds) and e.model is source for e in sent)

    c.merge = [3, 4]
    c.merge_selected()
    assert changed(c._spectra_parts["src"]) == 1
    assert changed(c._spectra_parts["markers"]) == 0  # same elements, same top: not resent
    assert changed(c._nmf_parts["src"]) == 0  # the components do not change with the labels
    assert len(c._spectra_parts["src"].data["label"]) == len(c.shown)
    # the label images' mappers and the NMF weights' colour bar keep their range: a changed
    # range recolours every image drawn with the mapper, or lays the heat map out again
    figs = c._figs
    fixed = {figs._label_mapper, figs._prob["bmapper"], figs._nmf["mapper"]}
    assert not [e for e in sent if getattr(e, "model", None) in fixed and e.attr != "palette"]
    assert figs._label_mapper.palette[1 + 3] == app.state.colors()[3]  # the merged cluster's colour
    shares = np.asarray(figs._nmf["src"].data["share"]).reshape(
        app.state.results.sizes["cluster"], -1
    )
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)  # each cluster's shares of its weight
    sent.clear()
    c.shown = c.shown[:-1]  # hiding a phase: one refill of the cluster spectra only
    assert changed(c._spectra_parts["src"]) == 1
    assert changed(c._nmf_parts["src"]) == 0
    sent.clear()
    c.new_name = "matrix"
    c.cluster = 0
    c.rename()
    assert changed(c._spectra_parts["src"]) == 1  # a patch of the labels
    assert c._spectra_parts["src"].data["label"][0].startswith("0: matrix")
    # the cluster spectra's legend is HTML above the figure (a legend inside it resized with its
    # entries and re-laid the figure out): it follows the rename
    assert "0: matrix" in c._spectra_parts["legend"].object
    assert not c._spectra_parts["fig"].legend
