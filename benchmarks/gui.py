"""GUI benchmarks: lasso update and datashader re-render on 1M latent points, first page load.

Run: ``.venv/bin/python benchmarks/gui.py [--pixels 1000] [--no-browser] [--browser-pixels 1000]``; writes
``benchmarks/results/gui.json``. Targets (issue 5/6): server-side lasso update < 100 ms, warm
datashader re-render of 1M points < 100 ms, first page load of the demo < 5 s.

What is timed
-------------
- ``exact_spectrum_lasso_ms``: the exact summed counts of a lasso over 90 % of the pixels, from
  the counts the results keep (sparse matrix-vector product, :mod:`sigma.sparse_counts`).
- ``edit_*_server_ms``: server time of a rename, recolour, merge, new cluster and refit with every
  tab rendered into a Bokeh document (figures are updated in place, see gui/cluster_figures.py).
- ``edit_hide_server_ms``: hiding a phase from the spectra and ellipses; ``select_for_new_cluster_ms``
  the selection a new cluster is made from (not part of the edit);
  ``latent_tab_recolour_after_edits_ms``: edits made in the Clusters tab re-colour the latent
  layers when the Latent tab is shown again, this is that cost.
- ``click_to_repaint_{rename,refit,merge,new_cluster}_s`` (browser): from the click in
  Chromium until the phase legend shows the edit and two animation frames passed, with the
  bytes the server sent (``*_bytes``) and ``click_to_patch_*_s``, the click until the edit's
  patch arrived (server time and round trip; the rest is the browser); a new cluster is made
  from a lasso in the Latent tab. Median of ``--page-repeats`` fresh servers.
- ``lasso_select_ms``: the vectorised point-in-polygon (bbox prefilter, grid of cells, shapely
  ``contains_xy`` only for the points in cells an edge touches).
- ``lasso_update_ms``: the whole server-side update after a lasso event, with the Latent tab
  rendered into a Bokeh document: selection, count text, selected-points layer (bincount on the
  plot's grid), linked map mask, selection spectrum and feature bars, down to the Bokeh model
  changes (data sources updated in place).
- ``latent_layers_warm_ms``: what a pan/zoom costs the app: one datashader aggregation per
  cluster of all pixels' latent points at 600 x 420, giving the density and the cluster colours.
- ``rasterize_warm_ms`` / ``datashade_clusters_warm_ms``: the same through HoloViews' rasterize /
  datashade operations (after a first, compiling call), for comparison with earlier numbers.
- ``page_load_s``: the served demo in headless Chromium, from navigation until the latent plot's
  canvas and the selection count are on the page (server started with the warm-up script, which
  builds one page before the first visitor); ``server_start_with_warmup_s`` is the cold start
  before it, so a visitor of a just-started server waits about their sum
  (``cold_start_to_first_page_s``). Each is the median over ``--page-repeats`` fresh servers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _paths import results_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_ms(fn, repeat: int = 5) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times), [round(v, 1) for v in times]


def bench_server(n_side: int) -> dict[str, object]:
    import datashader as dsh
    import holoviews as hv
    import numpy as np
    from holoviews.operation.datashader import datashade, rasterize

    from gui import data as gd
    from gui.views import SigmaApp

    out: dict[str, object] = {}
    t = time.perf_counter()
    ds = bench_results(n_side)
    out["build_results_s"] = round(time.perf_counter() - t, 2)
    out["n_pixels"] = n_side * n_side
    out["kept_counts_nnz"] = int(ds.sizes.get("counts_nnz", 0))
    app = SigmaApp(results=ds)
    xy = app.state.xy
    poly = np.array([[3.0, -1.5], [5.5, -1.5], [5.6, 1.5], [3.2, 1.8], [2.8, 0.0]])
    out["lasso_select_ms"], out["lasso_select_runs_ms"] = _median_ms(
        lambda: gd.select_polygon(xy, poly)
    )

    t = time.perf_counter()
    root = app.latent.__panel__().get_root()  # attach plots so stream events update Bokeh models
    out["latent_tab_render_cold_s"] = round(time.perf_counter() - t, 2)
    assert root is not None
    polys = [poly, poly * 0.9, poly * 1.1, poly + 0.1, poly - 0.1, poly * 0.95]
    app.latent.lasso.event(geometry=polys[0])  # first update compiles nothing new but warms caches
    times = []
    for p in polys[1:]:
        t = time.perf_counter()
        app.latent.lasso.event(geometry=p)
        times.append(1000 * (time.perf_counter() - t))
    out["lasso_update_ms"] = round(statistics.median(times), 1)
    out["lasso_update_runs_ms"] = [round(v, 1) for v in times]
    out["lasso_selected_pixels"] = app.state.n_selected

    # exact summed spectrum of a lasso over the kept counts (issue 15: < 0.5 s on 1M pixels)
    means = gd.SelectionMeans(ds)
    big = np.zeros(n_side * n_side, bool)
    big[: (n_side * n_side * 9) // 10] = True  # a lasso over 90 % of the pixels: the worst case
    t = time.perf_counter()
    means.sum_spectrum(big)  # builds the transposed matrix once per results version
    out["exact_spectrum_first_ms"] = round(1000 * (time.perf_counter() - t), 1)
    out["exact_spectrum_lasso_ms"], out["exact_spectrum_lasso_runs_ms"] = _median_ms(
        lambda: means.sum_spectrum(big)
    )
    out["exact_spectrum_lasso_pixels"] = int(big.sum())
    print(json.dumps(out), flush=True)
    out.update(bench_edits(app))
    print(json.dumps(out), flush=True)

    out["latent_layers_warm_ms"], out["latent_layers_runs_ms"] = _median_ms(
        lambda: app.latent.layers(*app.latent._latent_figs[-1]["grid"][:2], 600, 420)
    )
    points = hv.Points(app.latent._frame, kdims=["latent 0", "latent 1"], vdims=["cluster"])
    ras = rasterize.instance(width=600, height=420, dynamic=False, aggregator=dsh.count())
    shade = datashade.instance(width=600, height=420, dynamic=False, aggregator=dsh.count_cat("cluster"),
                               color_key=app.latent._color_map())  # fmt: skip
    t = time.perf_counter()
    ras(points)
    out["rasterize_cold_ms"] = round(1000 * (time.perf_counter() - t), 1)
    out["rasterize_warm_ms"], out["rasterize_warm_runs_ms"] = _median_ms(lambda: ras(points))
    shade(points)
    out["datashade_clusters_warm_ms"], out["datashade_clusters_runs_ms"] = _median_ms(
        lambda: shade(points)
    )
    return out


def bench_results(n_side: int):
    """Results of the demo scene (true phases) at ``n_side`` x ``n_side`` pixels, 256 channels."""
    from gui.demo import scene_results

    return scene_results((n_side, n_side), n_phases=8, n_channels=256, energy_scale_kev=0.04,
                         counts_per_pixel=30.0)  # fmt: skip


def bench_edits(app) -> dict[str, object]:
    """Server time of each edit with the Latent and Clusters tabs rendered into a Bokeh document."""
    import numpy as np
    import panel as pn
    from bokeh.document import Document

    from sigma.clustering import fit_gmm  # noqa: F401  (as the served app's warm-up: gui.views.warm_up)

    pn.panel(app).get_root(Document())
    for i in (0, 1, 2):
        app.tabs.active = i  # build every tab; edits are made in the Clusters tab, shown last
    c = app.clusters
    n = app.state.xy.shape[0]
    edits = {
        "rename": lambda: (c.param.update(cluster=0, new_name="matrix"), c.rename()),
        "recolour": lambda: (c.param.update(cluster=1, new_color="#00ff00"), c.recolor()),
        "hide": lambda: c.param.update(shown=[i for i in c.shown if i != 1]),
        "merge": lambda: (c.param.update(merge=[3, 4]), c.merge_selected()),
        "new_cluster": c.new_cluster_from_selection,  # of a selection made before (not timed)
        "refit": lambda: (c.param.update(n_components=6), c.refit()),
    }  # fmt: skip
    out: dict[str, object] = {}
    for name, fn in edits.items():
        if name == "new_cluster":  # a scattered seventh of the pixels: 1000s of specks
            t = time.perf_counter()
            app.state.select(np.arange(n) % 7 == 0, "map")
            out["select_for_new_cluster_ms"] = round(1000 * (time.perf_counter() - t), 1)
        t = time.perf_counter()
        fn()
        out[f"edit_{name}_server_ms"] = round(1000 * (time.perf_counter() - t), 1)
    t = time.perf_counter()
    app.tabs.active = 0  # back to the Latent tab: the edits' new cluster colours are drawn now
    out["latent_tab_recolour_after_edits_ms"] = round(1000 * (time.perf_counter() - t), 1)
    return out


def _edit_in_browser(page) -> dict[str, float]:
    """Click-to-repaint of a rename and a refit in the Clusters tab (see tests/gui/test_browser.py)."""
    sys.path.insert(0, str(ROOT / "tests" / "gui"))
    from test_browser import edit_timings

    page.get_by_text("Clusters", exact=True).first.click()
    page.wait_for_selector(".phase-legend", timeout=600_000)
    page.wait_for_timeout(2000)
    return edit_timings(page)


def _page_load_once(
    cache: str, results: str | None = None, edits: bool = False
) -> dict[str, float]:
    """Start a fresh server (with the warm-up script), then time two sessions in Chromium."""
    from playwright.sync_api import sync_playwright

    sys.path.insert(0, str(ROOT / "tests" / "gui"))
    from test_browser import watch_frames

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "panel", "serve", str(ROOT / "gui" / "app.py"), "--port", str(port),
           "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
           "--setup", str(ROOT / "gui" / "warm.py")]  # fmt: skip
    env = {**os.environ, "SIGMA_CACHE_DIR": cache}
    env.pop("SIGMA_RESULTS", None)
    if results:
        cmd += ["--args", results]
        env["SIGMA_RESULTS"] = results
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.perf_counter() - t0 > 300 or proc.poll() is not None:
                raise RuntimeError("panel serve did not start")
            time.sleep(0.2)
        start = time.perf_counter() - t0
        args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=args)
            loads = []
            for _ in range(2):
                page = browser.new_page(viewport={"width": 1600, "height": 1100})
                watch_frames(page)  # the server's WebSocket frames (edit_timings reads them)
                t = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/app", timeout=300_000)
                page.wait_for_selector(".latent-plot canvas", timeout=300_000)
                page.wait_for_selector("text=/Selected pixels:/", timeout=300_000)
                loads.append(time.perf_counter() - t)
                if edits and len(loads) == 2:
                    edit_times = _edit_in_browser(page)
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    out = {"server_start_with_warmup_s": start, "page_load_s": loads[0], "page_load_second_session_s": loads[1],
           "cold_start_to_first_page_s": start + loads[0]}  # fmt: skip
    if edits:
        for k, v in edit_times.items():
            name, _, what = k.partition("_patch") if "_patch" in k else k.rpartition("_")
            if k.endswith("_patch_s"):  # click until the server's patch came: its server time
                out[f"click_to_patch_{name}_s"] = v
            elif k.endswith("_bytes"):
                out[k] = v
            else:
                out[f"click_to_repaint_{k}"] = v
    return out


def bench_page_load(repeat: int = 3, browser_pixels: int = 0) -> dict[str, object]:
    """Median (and every run) over ``repeat`` fresh servers: the machine is shared, so one run is noise.

    The demo (``sigma demo --small``), or with ``browser_pixels`` a square result of that side;
    every run also times edits from click to repaint (and to the server's patch).
    """
    with tempfile.TemporaryDirectory() as cache:
        from gui.demo import demo_results_path, write_results

        if browser_pixels:
            results = str(write_results(bench_results(browser_pixels), Path(cache) / "bench.nc"))
        else:
            results = str(demo_results_path(cache))
        runs = [_page_load_once(cache, results, edits=True) for i in range(repeat)]
    out: dict[str, object] = {"repeats": repeat}
    for key in runs[-1]:
        values = [r[key] for r in runs if key in r]
        out[key] = round(statistics.median(values), 2)
        runs_key = f"{key.removesuffix('_s')}_runs_s" if key.endswith("_s") else f"{key}_runs"
        out[runs_key] = [round(v, 2) for v in values]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pixels", type=int, default=1000, help="side of the square scan (1000: 1M pixels)"
    )
    parser.add_argument("--no-browser", action="store_true", help="skip the page-load measurement")
    parser.add_argument(
        "--page-repeats", type=int, default=3, help="fresh servers whose page loads are timed"
    )
    parser.add_argument("--browser-pixels", type=int, default=0,
                        help="serve a square result of this side in the browser (0: the demo)")  # fmt: skip
    args = parser.parse_args()
    result: dict[str, object] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },  # fmt: skip
        "targets": {
            "lasso_update_ms": 100,
            "rasterize_warm_ms": 100,
            "page_load_s": 5,
            "exact_spectrum_lasso_ms": 500,
            "edit_server_ms": 1000,
            "click_to_repaint_rename_s": 1,
            "click_to_repaint_refit_s": 1,
            "click_to_repaint_merge_s": 1,
            "click_to_repaint_new_cluster_s": 1,
        },
    }
    result["server"] = bench_server(args.pixels)
    if not args.no_browser:
        result["browser"] = bench_page_load(args.page_repeats, args.browser_pixels)
    result["machine"]["load_average_at_end"] = os.getloadavg()  # type: ignore[index]
    path = results_dir() / "gui.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
