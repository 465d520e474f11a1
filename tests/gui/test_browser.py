"""Real-browser tests: the served app in headless Chromium (Debian's, not a Playwright download).

Run with ``pytest -m ui tests/gui/test_browser.py``; screenshots go to ``test-artifacts/gui/``.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ui

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "gui"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def ui_browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def demo_page(ui_browser, demo_server):
    """The demo page, loaded once for the module, with its console messages collected."""
    url, _ = demo_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = ui_browser.new_page(viewport={"width": 1600, "height": 1100})
    pg.console_messages = []
    watch_frames(pg)
    pg.on("console", lambda msg: pg.console_messages.append((msg.type, msg.text)))
    pg.on("pageerror", lambda err: pg.console_messages.append(("pageerror", str(err))))
    start = time.perf_counter()
    pg.goto(url, timeout=120_000)
    pg.wait_for_selector("text=Selected pixels", timeout=120_000)
    pg.wait_for_selector(".latent-plot canvas", timeout=60_000)
    pg.load_seconds = time.perf_counter() - start
    pg.wait_for_timeout(1500)  # let bokeh paint
    yield pg
    pg.close()


def watch_frames(pg) -> None:
    """Record ``(arrival time, bytes)`` of every WebSocket frame the server sends in ``pg.ws_frames``."""
    pg.ws_frames = []
    pg.on("websocket", lambda ws: ws.on(
        "framereceived", lambda p: pg.ws_frames.append((time.perf_counter(), len(p)))))  # fmt: skip


def _count(pg) -> int:
    text = pg.locator("text=/Selected pixels:/").first.inner_text()  # pierces bokeh's shadow DOM
    return int(text.split("Selected pixels:")[1].split()[0])


def _map_png(pg) -> bytes:
    return pg.locator(".selection-map").screenshot()


def test_demo_page_loads_without_console_errors(demo_page):
    page = demo_page
    page.screenshot(path=str(ARTIFACTS / "01_latent_tab.png"))
    errors = [m for m in page.console_messages if m[0] in ("error", "pageerror")]
    assert errors == []
    assert _count(page) == 0
    # `sigma demo --small --k 8`: 8 Gaussians, 7 or 8 phases (one may be left without pixels)
    assert page.get_by_text(re.compile(r"96×128 pixels, [78] clusters")).count() == 1


def test_lasso_drag_selects_pixels_and_repaints_map(demo_page):
    page = demo_page
    before_map = _map_png(page)
    # a lasso around the middle-right of the plot area (the demo's 'quartz' blob sits at (4, 0))
    n = _lasso(page)
    page.wait_for_timeout(2000)  # the map repaints after the count
    page.screenshot(path=str(ARTIFACTS / "02_after_lasso.png"))
    assert 0 < n < 192 * 256
    after_map = _map_png(page)
    assert after_map != before_map
    # a Panel button (not a Bokeh event) clears it: the map's mask source is pushed to the page too
    page.get_by_role("button", name="Clear selection", exact=True).click()
    deadline = time.monotonic() + 30
    while _count(page) != 0 and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert _count(page) == 0
    page.wait_for_timeout(1500)
    assert _map_png(page) != after_map


def test_export_writes_file(demo_page, demo_server):
    page = demo_page
    _, folder = demo_server
    page.get_by_text("Clusters", exact=True).first.click()
    page.wait_for_selector("text=Save edited results", timeout=240_000)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / "03_clusters_tab.png"))
    target = folder / "results_edited.nc"
    assert not target.exists()
    page.get_by_role("button", name="Save edited results", exact=True).click()
    deadline = time.monotonic() + 60
    while not target.exists() and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert target.exists()
    page.get_by_role("button", name="Phase map PNG", exact=True).click()
    png = next(folder.glob("*_phase_map.png"), None)  # written to a temp name, then renamed
    deadline = time.monotonic() + 30
    while png is None and time.monotonic() < deadline:
        page.wait_for_timeout(300)
        png = next(folder.glob("*_phase_map.png"), None)
    assert png is not None
    from PIL import Image

    img = np.asarray(Image.open(png))
    assert min(img.shape[:2]) >= 600  # upscaled, with a legend and a scale bar (issue 15, item 7)
    page.screenshot(path=str(ARTIFACTS / "04_after_export.png"))


def test_dataset_tab_renders(demo_page):
    page = demo_page
    page.get_by_text("Dataset", exact=True).first.click()
    page.wait_for_selector("text=Energy → X-ray lines", timeout=240_000)
    page.wait_for_timeout(2000)
    page.screenshot(path=str(ARTIFACTS / "05_dataset_tab.png"))
    errors = [m for m in page.console_messages if m[0] in ("error", "pageerror")]
    assert errors == []


TABS = ("Latent", "Dataset", "Clusters")
#: text that is on each tab once it has loaded
TAB_READY = {
    "Latent": "Selected pixels",
    "Dataset": "Energy → X-ray lines",
    "Clusters": "Save edited results",
}


def _open_every_tab(ui_browser, url: str, prefix: str) -> list[tuple[str, str]]:
    """Open ``url``, click through every tab, screenshot each; return console errors."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = ui_browser.new_page(viewport={"width": 1600, "height": 1100})
    errors: list[tuple[str, str]] = []
    pg.on(
        "console", lambda msg: errors.append((msg.type, msg.text)) if msg.type == "error" else None
    )
    pg.on("pageerror", lambda err: errors.append(("pageerror", str(err))))
    pg.goto(url, timeout=120_000)
    pg.wait_for_selector("text=Selected pixels", timeout=120_000)
    for i, tab in enumerate(TABS):
        pg.get_by_text(tab, exact=True).first.click()
        pg.wait_for_selector(f"text={TAB_READY[tab]}", timeout=240_000)
        pg.wait_for_timeout(2500)
        pg.screenshot(
            path=str(ARTIFACTS / f"{prefix}_{i + 1}_{tab.lower()}_tab.png"), full_page=True
        )
    pg.close()
    return errors


def test_every_tab_of_the_demo_loads(ui_browser, demo_server):
    url, _ = demo_server
    assert _open_every_tab(ui_browser, url, "demo") == []


def test_every_tab_loads_without_a_navigation_image(ui_browser, nonav_server):
    """Issue 15, item 3: a JEOL .pts result (no navigation image) used to hang the Dataset tab."""
    assert _open_every_tab(ui_browser, nonav_server, "no_nav_image") == []


#: a frame at least this large is part of an edit's patch (Panel's busy indicator sends ~120 bytes)
PATCH_FRAME_BYTES = 1000


#: in the page: click ``button``, then wait until the phase legend's text matches ``pattern``
#: (a MutationObserver, no polling from outside that would take the page's main thread) and
#: two animation frames passed; resolves to the milliseconds since the click
_CLICK_TO_REPAINT_JS = """
([button, legend, pattern, timeout]) => new Promise((resolve, reject) => {
  const re = new RegExp(pattern, "s");
  const root = legend.shadowRoot || legend;
  const text = () => Array.from(root.children).filter(e => e.tagName === "DIV").map(e => e.innerText).join("\\n");
  const t0 = performance.now();
  const obs = new MutationObserver(() => {
    if (!re.test(text())) return;
    obs.disconnect();
    clearTimeout(timer);
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
  });
  obs.observe(root, {subtree: true, childList: true, characterData: true});
  const timer = setTimeout(() => { obs.disconnect(); reject(new Error(`no repaint matching ${pattern}: ${text()}`)); }, timeout);
  button.click();
})
"""


#: resolves once ``frames`` animation frames in a row came less than 100 ms apart (the page is
#: not busy rendering), or after ``timeout`` ms
_SETTLED_JS = """
([frames, timeout]) => new Promise(resolve => {
  const t0 = performance.now();
  let last = t0, quiet = 0;
  const step = now => {
    quiet = now - last < 100 ? quiet + 1 : 0;
    last = now;
    if (quiet >= frames || now - t0 > timeout) resolve(now - t0); else requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
})
"""


def settle(page, frames: int = 20, timeout_s: float = 60.0) -> None:
    """Wait until the page has stopped rendering (an edit is timed from a quiet page)."""
    page.evaluate(_SETTLED_JS, [frames, timeout_s * 1000])


def time_edit(page, button: str, done: str, timeout_s: float = 60.0) -> float:
    """Seconds from a click on ``button`` until the phase legend's text matches ``done`` (a regex)
    and two animation frames passed (what Bokeh changed is on screen), timed in the page.

    With ``page.ws_frames`` (:func:`watch_frames`), ``page.last_edit`` holds the seconds from the
    click to the edit's patch (its server time and the round trip) and the bytes the server
    sent until the repaint.
    """
    settle(page)
    target = page.get_by_role("button", name=button, exact=True).first.element_handle()
    legend = page.locator(".phase-legend").first.element_handle()  # its text is in its shadow root
    sent: list[tuple[float, int]] = getattr(page, "ws_frames", [])
    n0 = len(sent)
    start = time.perf_counter()
    took = page.evaluate(_CLICK_TO_REPAINT_JS, [target, legend, done, timeout_s * 1000]) / 1000
    page.wait_for_timeout(300)  # frames after the legend (the busy indicator) belong to the edit
    frames = sent[n0:]
    patch = next((t for t, n in frames if n >= PATCH_FRAME_BYTES), float("nan"))
    page.last_edit = {"patch_s": patch - start, "bytes": sum(n for _, n in frames)}
    return took


def pick_merge(page, prefixes: tuple[str, ...]) -> None:
    """Choose the clusters whose labels start with ``prefixes`` in the merge picker (choices.js).

    Each choice is clicked in the picker's drop-down: Enter would take the first match of its
    fuzzy search, which for "3: " was "0: matrix (35,439 px)".
    """
    picker = page.locator(".merge-choice input[type=search]").first
    for prefix in prefixes:
        picker.click()
        picker.fill(prefix)
        item = page.locator(".merge-choice .choices__list--dropdown .choices__item--choice",
                            has_text=re.compile(rf"^\s*{re.escape(prefix)}")).first  # fmt: skip
        item.click()
        page.wait_for_timeout(300)
    picker.press("Escape")  # close the drop-down: it lies over the Merge button
    page.mouse.click(5, 5)
    page.wait_for_timeout(500)
    chosen = page.locator(".merge-choice .choices__list--multiple .choices__item").all_inner_texts()
    assert [c.strip()[: len(p)] for c, p in zip(chosen, prefixes, strict=False)] == list(
        prefixes
    ), chosen


def edit_timings(page) -> dict[str, float]:
    """Click-to-repaint seconds of a rename, a refit, a merge and a new cluster from a lasso, with
    the seconds until the server's patch came (``*_patch_s``) and the bytes the server sent for
    each (``*_bytes``, WebSocket frames): the Clusters tab must be open."""
    out: dict[str, float] = {}

    def timed(name: str, button: str, done: str) -> None:
        out[f"{name}_s"] = time_edit(page, button, done)
        for key, value in getattr(page, "last_edit", {}).items():
            out[f"{name}_{key}"] = value

    name_box = page.locator(".cluster-name-input input").first
    name_box.fill("matrix")
    name_box.press("Enter")
    page.wait_for_timeout(500)
    timed("rename", "Rename", r"0: matrix")
    k_box = page.locator(".refit-k input").first
    k_box.fill("5")
    k_box.press("Enter")
    page.wait_for_timeout(500)
    timed("refit", "Refit GMM", r"^(?!.*\b5: ).*\b4: ")  # five clusters 0..4: a '4:' entry and no '5:'  # fmt: skip
    pick_merge(page, ("3: ", "4: "))  # merge 3 and 4 of the five
    timed("merge", "Merge", r"^(?!.*\b4: ).*\b3: ")  # four clusters 0..3  # fmt: skip
    status = page.locator(".edit-status").first.evaluate("e => (e.shadowRoot || e).textContent")
    assert "Merged clusters [3, 4] into 3." in status, status
    # a new cluster from a lasso in the Latent tab (the lasso itself is not timed)
    page.get_by_text("Latent", exact=True).first.click()
    page.wait_for_selector(".latent-plot canvas", timeout=60_000)
    page.wait_for_timeout(1000)
    _lasso(page)
    page.get_by_text("Clusters", exact=True).first.click()
    page.wait_for_timeout(1000)
    rows = page.locator(".tabulator .tabulator-row").first
    before = rows.inner_text()
    timed("new_cluster", "New cluster from selection", r"\b4: ")  # fmt: skip
    # the particles of the new cluster follow in a patch of their own (after the maps)
    deadline = time.perf_counter() + 60
    while rows.inner_text() == before:
        assert time.perf_counter() < deadline, "the particle table kept the old cluster's particles"
        page.wait_for_timeout(200)
    return out


def _lasso(page, timeout_s: float = 60.0) -> int:
    """Drag a lasso over the middle-right of the latent plot; wait for the selection count."""
    frame = page.locator(".latent-plot canvas").first.bounding_box()
    assert frame is not None
    cx, cy, w, h = frame["x"], frame["y"], frame["width"], frame["height"]
    pts = [(0.55, 0.25), (0.95, 0.25), (0.95, 0.75), (0.55, 0.75), (0.56, 0.26)]
    page.mouse.move(cx + w * pts[0][0], cy + h * pts[0][1])
    page.mouse.down()
    for fx, fy in pts[1:]:
        page.mouse.move(cx + w * fx, cy + h * fy, steps=8)
    page.mouse.up()
    deadline = time.monotonic() + timeout_s
    while _count(page) == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    return _count(page)


def test_edits_repaint_within_a_second(demo_page):
    """Issue 15, item 5: click to repaint of a rename, refit, merge and new cluster (the server
    sends only changes)."""
    page = demo_page
    page.get_by_text("Clusters", exact=True).first.click()
    page.wait_for_selector("text=Save edited results", timeout=240_000)
    page.wait_for_selector(".phase-legend", timeout=60_000)
    page.wait_for_timeout(1500)
    times = edit_timings(page)
    page.screenshot(path=str(ARTIFACTS / "06_after_edits.png"), full_page=True)
    (ARTIFACTS / "edit_timings.json").write_text(__import__("json").dumps(times, indent=2))
    # the < 1 s target is benchmarks/gui.py's (timings on a shared CI machine are noise); here:
    # an edit reaches the screen, and a rename sends no image (only names, titles, legend)
    assert times["rename_s"] < 30.0, times
    assert 0 < times["rename_bytes"] < 50_000, times
    assert times["refit_s"] < 60.0, times
    assert times["merge_s"] < 60.0, times
    assert times["new_cluster_s"] < 60.0, times


_PHASE_IMAGE_JS = """
() => {
  for (const doc of Bokeh.documents) for (const m of doc.all_models) {
    if (m.name !== "phases" || !m.data_source) continue;
    const d = m.data_source.data, img = d.image[0];
    return {shape: Array.from(img.shape || [img.length]), x: d.x[0], dw: d.dw[0], dh: d.dh[0]};
  }
  return null;
}
"""


#: the text of every Bokeh tooltip on the page (they live in shadow roots)
_TOOLTIPS_JS = """
() => {
  const out = [];
  const walk = root => {
    for (const el of root.querySelectorAll("*")) {
      if (/tooltip/i.test(el.className || "") && el.textContent.includes("cluster")) out.push(el.textContent);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return out.join(" | ");
}
"""


def test_zooming_the_phase_map_sends_the_visible_window(demo_page):
    """The map images follow the view (gui.images.ScreenImage): a wheel zoom on the phase map
    brings the visible window (and a margin) from the server, not the whole map again."""
    page = demo_page
    page.get_by_text("Clusters", exact=True).first.click()
    page.wait_for_selector(".phase-map canvas", timeout=120_000)
    page.wait_for_timeout(1500)
    whole = page.evaluate(_PHASE_IMAGE_JS)
    assert whole is not None
    page.locator(".phase-map .bk-tool-icon-wheel-zoom").first.click()  # scroll zooms the map
    box = page.locator(".phase-map canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(6):
        page.mouse.wheel(0, -240)
        page.wait_for_timeout(150)
    deadline = time.perf_counter() + 30
    zoomed = page.evaluate(_PHASE_IMAGE_JS)
    while zoomed["dw"] >= whole["dw"] and time.perf_counter() < deadline:
        page.wait_for_timeout(300)
        zoomed = page.evaluate(_PHASE_IMAGE_JS)
    page.screenshot(path=str(ARTIFACTS / "07_zoomed_phase_map.png"))
    assert zoomed["dw"] < whole["dw"], (whole, zoomed)  # a window of the map, not all of it
    assert zoomed["shape"][0] * zoomed["shape"][1] < whole["shape"][0] * whole["shape"][1]
    # hovering the map names the cluster under the pointer (the label image holds cluster + 1)
    page.mouse.move(box["x"] + box["width"] / 2 + 3, box["y"] + box["height"] / 2 + 3)
    deadline = time.perf_counter() + 10
    while not (text := page.evaluate(_TOOLTIPS_JS)) and time.perf_counter() < deadline:
        page.wait_for_timeout(200)
    assert re.search(r"cluster\s*:?\s*(\d+: |no data)", text), text
