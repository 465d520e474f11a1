"""GUI benchmarks: lasso update and datashader re-render on 1M latent points, first page load.

Run: ``.venv/bin/python benchmarks/gui.py [--pixels 1000] [--no-browser]``; writes
``benchmarks/results/gui.json``. Targets (issue 5/6): server-side lasso update < 100 ms, warm
datashader re-render of 1M points < 100 ms, first page load of the demo < 5 s.

What is timed
-------------
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
    from gui.demo_data import make_demo_results
    from gui.views import SigmaApp

    out: dict[str, object] = {}
    t = time.perf_counter()
    ds = make_demo_results((n_side, n_side), n_energy=256)
    out["build_results_s"] = round(time.perf_counter() - t, 2)
    out["n_pixels"] = n_side * n_side
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

    out["latent_layers_warm_ms"], out["latent_layers_runs_ms"] = _median_ms(
        lambda: app.latent.layers(*app.latent._latent_figs[-1]["grid"][:2], 600, 420)
    )
    points = hv.Points(app.latent._frame, kdims=["latent 0", "latent 1"], vdims=["cluster"])
    ras = rasterize.instance(width=600, height=420, dynamic=False, aggregator=dsh.count())
    shade = datashade.instance(width=600, height=420, dynamic=False, aggregator=dsh.count_cat("cluster"),
                               color_key=app.state.colors())  # fmt: skip
    t = time.perf_counter()
    ras(points)
    out["rasterize_cold_ms"] = round(1000 * (time.perf_counter() - t), 1)
    out["rasterize_warm_ms"], out["rasterize_warm_runs_ms"] = _median_ms(lambda: ras(points))
    shade(points)
    out["datashade_clusters_warm_ms"], out["datashade_clusters_runs_ms"] = _median_ms(
        lambda: shade(points)
    )
    return out


def _page_load_once(cache: str) -> dict[str, float]:
    """Start a fresh server (with the warm-up script), then time two sessions in Chromium."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "panel", "serve", str(ROOT / "gui" / "app.py"), "--port", str(port),
           "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
           "--setup", str(ROOT / "gui" / "warm.py")]  # fmt: skip
    env = {**os.environ, "SIGMA_CACHE_DIR": cache}
    env.pop("SIGMA_RESULTS", None)
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
                t = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/app", timeout=300_000)
                page.wait_for_selector(".latent-plot canvas", timeout=300_000)
                page.wait_for_selector("text=/Selected pixels:/", timeout=300_000)
                loads.append(time.perf_counter() - t)
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
    return {"server_start_with_warmup_s": start, "page_load_s": loads[0], "page_load_second_session_s": loads[1],
            "cold_start_to_first_page_s": start + loads[0]}  # fmt: skip


def bench_page_load(repeat: int = 3) -> dict[str, object]:
    """Median (and every run) over ``repeat`` fresh servers: the machine is shared, so one run is noise."""
    with tempfile.TemporaryDirectory() as cache:
        from gui.demo_data import demo_results_path

        demo_results_path(cache)
        runs = [_page_load_once(cache) for _ in range(repeat)]
    out: dict[str, object] = {"repeats": repeat}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[key] = round(statistics.median(values), 2)
        out[f"{key.removesuffix('_s')}_runs_s"] = [round(v, 2) for v in values]
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
    args = parser.parse_args()
    result: dict[str, object] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },  # fmt: skip
        "targets": {"lasso_update_ms": 100, "rasterize_warm_ms": 100, "page_load_s": 5},
    }
    result["server"] = bench_server(args.pixels)
    if not args.no_browser:
        result["browser"] = bench_page_load(args.page_repeats)
    result["machine"]["load_average_at_end"] = os.getloadavg()  # type: ignore[index]
    path = results_dir() / "gui.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
