"""Where an edit's click-to-repaint time goes in Chromium: bytes, models changed, server and browser time.

Run: ``.venv/bin/python benchmarks/gui_edit_profile.py [--pixels 1000] [--out FILE]``. Serves a
square result of ``--pixels`` side (the ``benchmarks/gui.py`` scene), opens the Clusters tab in
headless Chromium and makes the edits of ``tests/gui/test_browser.py`` (rename, refit, merge,
new cluster from a lasso). For each edit it reports, measured inside the page:

- ``click_to_first_message_s``: click until the server's first message after it (Panel's busy
  indicator: the click's round trip);
- ``click_to_patch_s``: click until the first message that changes the page (the edit's server
  time and the round trip: an edit's changes are held and sent together when it is done);
- ``messages``, ``bytes``, ``binary_bytes``: the WebSocket messages the edit brought (a Bokeh
  patch is a JSON message and one binary message per array buffer);
- ``handle_s``: main-thread time in the page's message handlers (Bokeh applying the patch);
- ``long_tasks_s``: main-thread tasks over 50 ms between click and repaint (rendering included);
- ``changes``: the patch's events, ``model type.attribute`` with their count;
- ``plots_laid_out_again``: plots whose axis, legend, colour bar or title changed size, which
  makes the browser lay out the whole page (a rename: the probability map's title; a refit: the
  NMF weights' cluster axis);
- ``click_to_repaint_s``: click until the phase legend shows the edit and two frames passed;
- ``repaint_requests``: which plot asked for a paint or a layout, and who asked (the first
  frames of the JavaScript stack; readable with ``BOKEH_MINIFIED=no``), with their count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "gui"))

#: wraps the page's WebSocket: arrival time, size and handler time of every server message
_INIT = r"""
(() => {
  window.__msgs = []; window.__long = []; window.__sent = [];
  try { new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push([e.startTime, e.duration]); })
        .observe({entryTypes: ["longtask"]}); } catch (e) {}
  const WS = window.WebSocket;
  window.WebSocket = function(url, protocols) {
    const ws = protocols === undefined ? new WS(url) : new WS(url, protocols);
    const add = ws.addEventListener.bind(ws);
    const wrap = fn => function(ev) {
      const t0 = performance.now();
      const r = fn.call(this, ev);
      const t1 = performance.now();
      const d = ev.data;
      let size = 0, text = null;
      if (typeof d === "string") { size = d.length; text = d.length < 2000000 ? d : null; }
      else if (d && d.byteLength !== undefined) size = d.byteLength;
      else if (d && d.size !== undefined) size = d.size;
      window.__msgs.push({t: t0, handle: t1 - t0, size: size, binary: typeof d !== "string", text: text});
      return r;
    };
    const send = ws.send.bind(ws);
    ws.send = d => { window.__sent.push({t: performance.now(), text: typeof d === "string" ? d.slice(0, 300) : "(binary)"}); return send(d); };
    ws.addEventListener = (type, fn, opts) => add(type, type === "message" ? wrap(fn) : fn, opts);
    Object.defineProperty(ws, "onmessage", {set(fn) { add("message", wrap(fn)); }});
    return ws;
  };
  window.WebSocket.prototype = WS.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();
"""

_SUMMARY = r"""
([t0, t1]) => {
  const doc = window.Bokeh && Bokeh.documents && Bokeh.documents[0];
  const type = id => { try { const m = doc.get_model_by_id(id); return m ? m.type : "?"; } catch (e) { return "?"; } };
  const msgs = window.__msgs.filter(m => m.t >= t0 && m.t <= t1);
  const owner = {};  // data source id -> "figure title/renderer name glyph"
  if (doc) for (const m of doc.all_models) {
    if (m.type !== "Plot" && m.type !== "Figure") continue;
    for (const r of (m.renderers || []).concat(m.center || [])) {
      const src = r.data_source || r.source;
      if (src) owner[src.id] = ((m.title && m.title.text) || "").slice(0, 30) + "/" + (r.name || (r.glyph ? r.glyph.type : r.type));
    }
  }
  const changes = {};
  for (const m of msgs) {
    if (!m.text || m.text.indexOf('"events"') < 0) continue;
    let c; try { c = JSON.parse(m.text); } catch (e) { continue; }
    for (const ev of (c.events || [])) {
      let key = ev.kind;
      if (ev.kind === "ColumnDataChanged" || ev.kind === "ColumnsPatched") {
        const id = (ev.model || ev.column_source || {}).id;
        key = ev.kind + ":" + (owner[id] || type(id)) + "[" + (ev.cols || ((ev.new && ev.new.entries) || []).map(e => e[0])).join(",") + "]";
      }
      else if (ev.model && ev.model.id) key = type(ev.model.id) + "." + (ev.attr || ev.kind);
      m.keys = (m.keys || []).concat([key]);
      changes[key] = (changes[key] || 0) + 1;
    }
  }
  const long = window.__long.filter(([s, d]) => s + d >= t0 && s <= t1).reduce((a, [s, d]) => a + d, 0);
  return {messages: msgs.length, bytes: msgs.reduce((a, m) => a + m.size, 0),
          binary_bytes: msgs.filter(m => m.binary).reduce((a, m) => a + m.size, 0),
          sent: window.__sent.filter(m => m.t >= t0 && m.t <= t1).map(m => [Math.round(m.t - t0), m.text]),
          first: msgs.length ? msgs[0].t - t0 : null, last: msgs.length ? msgs[msgs.length - 1].t - t0 : null,
          patch: (msgs.find(m => (m.keys || []).some(k => !k.endsWith(".css_classes"))) || {t: null}).t,
          handle_ms: msgs.reduce((a, m) => a + m.handle, 0), long_ms: long, changes,
          timeline: msgs.map(m => [Math.round(m.t - t0), Math.round(m.handle), m.size, (m.keys || []).join(" ")])};
}
"""


def _top_functions(profile: dict, n: int = 25) -> list[tuple[str, float]]:
    """Self time (ms) per function of a CDP CPU profile, largest first."""
    nodes = {node["id"]: node for node in profile["nodes"]}
    self_ms: dict[str, float] = {}
    deltas = profile.get("timeDeltas", [])
    for sample, dt in zip(profile.get("samples", []), deltas, strict=False):
        f = nodes[sample]["callFrame"]
        key = f"{f['functionName'] or '(anon)'} {f['url'].rsplit('/', 1)[-1]}:{f['lineNumber']}"
        self_ms[key] = self_ms.get(key, 0.0) + dt / 1000
    return [(k, round(v, 1)) for k, v in sorted(self_ms.items(), key=lambda kv: -kv[1])[:n]]


#: wraps every plot view's ``compute_layout`` (a plot whose side panel - axis, legend, colour
#: bar, title - changed size lays out the whole root): records the plot titles that did
_WATCH_LAYOUTS = r"""
() => {
  window.__layouts = window.__layouts || []; window.__paints = window.__paints || [];
  window.__requests = window.__requests || [];
  const seen = new Set();
  const walk = v => {
    if (!v || seen.has(v)) return;
    seen.add(v);
    const type = v.model ? v.model.type : "";
    if ((type === "Figure" || type === "Plot") && !v.__wrapped) {
      const orig = v.compute_layout.bind(v);
      v.__wrapped = true;
      v.compute_layout = function(...args) {
        window.__layouts.push([performance.now(), (v.model.title && v.model.title.text) || type]);
        return orig(...args);
      };
      // who asked for the repaints: the first frames of the stack of each request
      const why = kind => {
        const stack = (new Error()).stack.split("\n").slice(3, 9)
          .map(l => l.trim().replace(/^at /, "").replace(/ \(.*$/, "")).filter(l => !l.startsWith("Object."));
        window.__requests.push([performance.now(), kind, (v.model.title && v.model.title.text) || type, stack.join(" < ")]);
      };
      for (const kind of ["request_paint", "request_layout", "invalidate_layout"]) {
        const orig_request = v[kind].bind(v);
        v[kind] = function(...args) { why(kind); return orig_request(...args); };
      }
      const paint = v.paint.bind(v);
      v.paint = function(...args) {
        const t = performance.now();
        const r = paint(...args);
        window.__paints.push([t, performance.now() - t, (v.model.title && v.model.title.text) || type]);
        return r;
      };
    }
    for (const c of (v.child_views || [])) walk(c);
  };
  for (const r of Object.values(Bokeh.index || {})) walk(r);
  return seen.size;
}
"""


def profile_edit(page, button: str, done: str, timeout_s: float = 120.0) -> dict[str, object]:
    """Time one edit (a click on ``button``) until the legend matches ``done``, with the page's message log."""
    from test_browser import settle, time_edit

    settle(page)  # timed from a quiet page, as the browser test does
    cdp = getattr(page, "cdp", None)
    if cdp is not None:
        cdp.send("Profiler.start")
    page.evaluate(_WATCH_LAYOUTS)  # (again: views built since are wrapped too)
    t0 = page.evaluate("() => performance.now()")
    total = time_edit(page, button, done, timeout_s)
    page.wait_for_timeout(1500)  # late messages (after the legend) still belong to the edit
    t1 = page.evaluate("() => performance.now()")
    s = page.evaluate(_SUMMARY, [t0, t1])
    s["layouts"] = page.evaluate(
        "([t0, t1]) => window.__layouts.filter(([t]) => t >= t0 && t <= t1).map(([t, n]) => n)",
        [t0, t1],
    )
    s["paints"] = page.evaluate(
        "([t0, t1]) => window.__paints.filter(([t]) => t >= t0 && t <= t1).map(([t, d, n]) => [Math.round(t - t0), Math.round(d), n])",
        [t0, t1],
    )
    # what asked each plot to repaint: {"title: kind < caller < ...": count}
    requests = page.evaluate(
        "([t0, t1]) => window.__requests.filter(([t]) => t >= t0 && t <= t1).map(([t, k, n, st]) => n + ': ' + k + ' < ' + st)",
        [t0, t1],
    )
    s["repaint_requests"] = {r: requests.count(r) for r in dict.fromkeys(requests)}
    if cdp is not None:
        prof = cdp.send("Profiler.stop")["profile"]
        s["top_functions"] = _top_functions(prof)
        if os.environ.get("SIGMA_PROFILE_DUMP"):
            dump = Path(os.environ["SIGMA_PROFILE_DUMP"])
            dump.mkdir(parents=True, exist_ok=True)
            (dump / f"{done.count(':')}_{int(time.time())}.cpuprofile").write_text(json.dumps(prof))
    return {"click_to_repaint_s": round(total, 3),
            "click_to_first_message_s": None if s["first"] is None else round(s["first"] / 1000, 3),
            "click_to_patch_s": None if s["patch"] is None else round((s["patch"] - t0) / 1000, 3),
            "last_message_s": None if s["last"] is None else round(s["last"] / 1000, 3),
            "messages": s["messages"], "bytes": s["bytes"], "binary_bytes": s["binary_bytes"],
            "handle_s": round(s["handle_ms"] / 1000, 3), "long_tasks_s": round(s["long_ms"] / 1000, 3),
            "sent": s["sent"], "paints": s["paints"], "changes": s["changes"], "plots_laid_out_again": s["layouts"], "timeline": s["timeline"],
            "repaint_requests": s["repaint_requests"], "top_functions": s.get("top_functions")}  # fmt: skip


def _profile_page(url: str, cpu_profile: bool) -> dict[str, object]:
    """The edits of tests/gui/test_browser.py on the page at ``url``, each profiled."""
    from playwright.sync_api import sync_playwright
    from test_browser import CHROMIUM, CHROMIUM_ARGS, _lasso, pick_merge

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.add_init_script(_INIT)
        if cpu_profile:
            page.cdp = page.context.new_cdp_session(page)
            page.cdp.send("Profiler.enable")
        page.goto(url, timeout=600_000)
        page.wait_for_selector(".latent-plot canvas", timeout=600_000)
        page.get_by_text("Clusters", exact=True).first.click()
        page.wait_for_selector(".phase-legend", timeout=600_000)
        page.wait_for_timeout(3000)
        edits: dict[str, object] = {}
        box = page.locator(".cluster-name-input input").first
        box.fill("matrix")
        box.press("Enter")
        page.wait_for_timeout(500)
        edits["rename"] = profile_edit(page, "Rename", r"0: matrix")
        print(json.dumps(edits["rename"]), flush=True)
        k_box = page.locator(".refit-k input").first
        k_box.fill("5")
        k_box.press("Enter")
        page.wait_for_timeout(500)
        edits["refit"] = profile_edit(page, "Refit GMM", r"^(?!.*\b5: ).*\b4: ")  # fmt: skip
        print(json.dumps(edits["refit"]), flush=True)
        pick_merge(page, ("3: ", "4: "))
        edits["merge"] = profile_edit(page, "Merge", r"^(?!.*\b4: ).*\b3: ")  # fmt: skip
        print(json.dumps(edits["merge"]), flush=True)
        page.get_by_text("Latent", exact=True).first.click()
        page.wait_for_selector(".latent-plot canvas", timeout=60_000)
        page.wait_for_timeout(2000)
        _lasso(page, timeout_s=120)
        page.get_by_text("Clusters", exact=True).first.click()
        page.wait_for_timeout(3000)
        edits["new_cluster"] = profile_edit(page, "New cluster from selection", r"\b4: ")
        print(json.dumps(edits["new_cluster"]), flush=True)
        browser.close()
    return edits


def run(pixels: int, out: Path | None, cpu_profile: bool = False) -> dict[str, object]:
    """Serve a ``pixels`` x ``pixels`` result, make the edits in Chromium, return the profile."""
    from conftest import serve_app
    from gui.demo import scene_results, write_results

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        t = time.perf_counter()
        ds = scene_results((pixels, pixels), n_phases=8, n_channels=256, energy_scale_kev=0.04,
                           counts_per_pixel=30.0)  # fmt: skip
        path = write_results(ds, cache / "bench.nc")
        del ds
        print(f"results built in {time.perf_counter() - t:.1f} s", flush=True)
        result: dict[str, object] = {
            "pixels": pixels * pixels,
            "load_average_at_start": os.getloadavg(),
        }
        for url in serve_app([str(path)], cache, timeout=600):
            result["edits"] = _profile_page(url, cpu_profile)
        result["load_average_at_end"] = os.getloadavg()
    if out is not None:
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=int, default=1000, help="side of the square result")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument(
        "--cpu-profile", action="store_true", help="add the page's hottest functions"
    )
    args = parser.parse_args()
    print(json.dumps(run(args.pixels, args.out, args.cpu_profile), indent=2))


if __name__ == "__main__":
    main()
