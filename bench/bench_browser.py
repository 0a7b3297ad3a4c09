"""Parts 5 (the app's share) and 6: the app in headless Chromium.

Measured (all wall-clock, on this machine, with the server and the browser sharing its CPU):

* **first screen**: ``streamlit run`` process start -> the Setup page usable in the browser (its
  Compute button visible and enabled), with the health check time on the way;
* **digits to the arithmetic screen**: press Compute on the default choice (built-in model, digits),
  wait for "Current run", open Class arithmetic, until its bars and confusion matrix are drawn.
  "cold" = a fresh server with an empty cache folder (``CVS_CACHE_DIR``); "warm" = a second fresh
  server on the cache the first one filled (the library's disk cache; nothing kept in memory);
* **slider -> updated charts** on ``synthetic-10k`` (``CVS_SYNTHETIC=1``: 10 classes, 512-d, 10,000
  test latents, the real live loop; see ``app/synthetic.py``), first without the map, then with the
  map fitted on the Geometry page. Each release is a real mouse click (pointer down, pointer up) on
  the class-3 slider of the live editor (``app/components/live_editor.js``), alternating between
  values that do and do not flip class 3's predictions, after one untimed warm-up release.

What is timed, by a script injected into the page that polls on every animation frame:
``charts_ms`` = pointer down (the browser's slider takes the new value then) -> the start of the second
animation frame after the editor re-drew its metrics, bars and confusion matrix for that value (the first
runs before the commit that makes the picture; the second cannot start until that commit is done);
``map_ms`` = pointer up (the release, which sends the value to the server) -> likewise, the second frame
after the editor re-drew the map with the server's re-projection for exactly that value (with the map
only). Before 2026-12-07 both were the first frame, which missed the commit: ~0.3 s for a million points
drawn in software WebGL, measured in a Chromium trace; ``server_caption_ms``
= pointer up -> the server's caption "Server, after the last release: ... edit: class 3 × v" shows
(the whole fragment rerun). The server's own share is read from that caption.
Target (issue 4): at most 300 ms at 10,000 points.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _common import ROOT, print_table, skip, write_results

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TARGET_MS = 300.0
QUIET_S = 0.8
CLASS = "class 3"
VALUES = (-1.0, -0.25, -1.5, -0.5, -2.0, -0.25, -1.0, -0.5, -1.5, -0.25, -2.0, -0.5)

PROBE = """
(() => {
  const s = window.__cvs = {down: 0, up: 0, chartsAt: 0, mapAt: 0, chartsSeen: false, mapSeen: false, finalAt: 0,
                            runningAt: 0, expect: null,
                            final: null, drawn: 0, mapDrawn: 0, charts: 0, lastDraw: null};
  window.addEventListener('pointerdown', () => { s.down = performance.now(); }, true);
  window.addEventListener('pointerup', () => { s.up = performance.now(); }, true);
  let wrap = null;
  const findWrap = () => {
    for (const e of document.querySelectorAll('*')) {
      const w = e.shadowRoot && e.shadowRoot.querySelector('.cvs-live');
      if (w) return w;
    }
    return document.querySelector('.cvs-live');
  };
  const tick = () => {
    const now = performance.now();
    if (!wrap || !wrap.isConnected) wrap = findWrap();
    if (wrap) {
      const drawn = +wrap.dataset.drawn || 0;
      // A redraw is seen in the first animation frame after it, which runs before that frame's commit - and the
      // commit is where the browser makes the picture (a million points in software WebGL: ~0.3 s, measured in
      // a trace). So the time recorded is the frame after that one, which cannot start before the commit ends.
      if (s.chartsSeen && !s.chartsAt) s.chartsAt = now;
      if (s.mapSeen && !s.mapAt) s.mapAt = now;
      // a redraw for the expected coefficients (the redraw itself may precede `expect`)
      if (drawn !== s.drawn) { s.drawn = drawn; s.charts += 1; s.lastDraw = {t: now, coefs: wrap.dataset.coefs}; }
      if (s.expect !== null && !s.chartsSeen && s.lastDraw && s.lastDraw.coefs === s.expect && s.lastDraw.t >= s.down) {
        s.chartsSeen = true;
      }
      const map = wrap.querySelector('.map');
      const mapDrawn = map ? (+map.dataset.drawn || 0) : 0;
      if (mapDrawn !== s.mapDrawn) {
        s.mapDrawn = mapDrawn;
        if (s.expect !== null && map.dataset.answered === '1' && wrap.dataset.coefs === s.expect) s.mapSeen = true;
      }
    }
    if (s.final !== null && !s.finalAt) {
      for (const e of document.querySelectorAll('[data-testid="stCaptionContainer"]')) {
        const text = e.textContent.trim();
        if (text.startsWith('Server, after the last release') && text.includes(s.final)) s.finalAt = now;
      }
    }
    const w = document.querySelector('[data-testid="stStatusWidget"]');
    if (w && w.textContent.includes('Running')) s.runningAt = now;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``streamlit run`` on a free localhost port; ``started`` is the process start (perf_counter)."""

    def __init__(self, cache: Path, log: Path, n: int | None = None):
        port = free_port()
        env = {**os.environ, "CVS_CACHE_DIR": str(cache), "CVS_SYNTHETIC": "1"}
        env.pop("CVS_SYNTHETIC_N", None)
        if n is not None:  # the synthetic run's size (app/synthetic.py; a feature store from 100k points)
            env["CVS_SYNTHETIC_N"] = str(n)
        self.url, self.log = f"http://localhost:{port}", open(log, "w")
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "streamlit_app.py"),
             "--server.port", str(port), "--server.address", "localhost", "--server.headless", "true",
             "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout_s: float = 90) -> float:
        """Seconds from process start until /_stcore/health answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).read() == b"ok":
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the app did not start; see {self.log.name}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own process group only
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def open_setup(browser, server: Server) -> tuple[object, dict]:
    """A new page on the Setup screen -> (page, {health_s, first_screen_s})."""
    health = server.wait_healthy()
    page = browser.new_page(viewport={"width": 1500, "height": 1300})
    page.set_default_timeout(120_000)
    page.add_init_script(PROBE)
    page.goto(server.url)
    button = page.get_by_role("button", name="Compute", exact=True)
    button.wait_for()
    while not button.is_enabled():
        page.wait_for_timeout(20)
    return page, {"health_s": health, "first_screen_s": time.perf_counter() - server.started}


def compute(page, dataset: str | None) -> float:
    """Choose ``dataset`` (None: the default), press Compute -> seconds until "Current run" shows."""
    if dataset is not None:
        if not page.get_by_role("button", name="Compute", exact=True).count():
            page.get_by_role("link", name="Setup").first.click()
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Dataset").first.click()
        page.get_by_role("option", name=dataset).click()
    button = page.get_by_role("button", name="Compute", exact=True)
    while button.count() != 1:  # the dataset choice reruns the page: its old button shows until the rerun ends
        page.wait_for_timeout(20)
    start = time.perf_counter()
    button.click()
    done = "Current run:" if dataset is None else re.compile(f"^Current run: .* on {re.escape(dataset)}$")
    page.get_by_text(done).wait_for(timeout=600_000)
    return time.perf_counter() - start


def open_arithmetic(page) -> float:
    """Open Class arithmetic -> seconds until the editor has drawn its charts and the server its caption."""
    start = time.perf_counter()
    page.evaluate("Object.assign(window.__cvs, {final: 'edit: none', finalAt: 0, drawn: 0})")
    page.get_by_role("link", name="Class arithmetic").first.click()
    page.wait_for_function("window.__cvs.finalAt > 0 && window.__cvs.drawn > 0", timeout=120_000)
    wait_quiet(page)
    return time.perf_counter() - start


def wait_quiet(page, timeout_s: float = 120, need_map: bool = False) -> dict:
    """Wait until nothing runs for QUIET_S and the expected updates arrived; return the probe's state."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        s = page.evaluate("({...window.__cvs, now: performance.now()})")
        done = s["expect"] is None or (s["chartsAt"] and s["finalAt"] and (s["mapAt"] or not need_map))
        if done and s["now"] - max(s["runningAt"], s["finalAt"], s["chartsAt"], s["mapAt"]) > 1000 * QUIET_S:
            return s
        page.wait_for_timeout(50)
    raise TimeoutError("the app was still updating")


def release_at(page, value: float, with_map: bool, redraw_all: bool = False) -> dict:
    """Click the class slider of the live editor at ``value``; wait for the updates -> one timed release.
    redraw_all: drop the map layer's kept picture of the unmoved points first, so the answer redraws every
    point (what a release that moves other points than the last one costs)."""
    slider = page.get_by_role("slider", name=CLASS, exact=True)
    box = slider.bounding_box()
    thumb = 16.0  # Chromium's range thumb: its centre travels over width - thumb
    x = box["x"] + thumb / 2 + (value + 2.0) / 4.0 * (box["width"] - thumb)
    y = box["y"] + box["height"] / 2
    before = slider.input_value()
    if redraw_all:
        page.evaluate(f"(() => {{ const l = {LAYER}; if (l) l.baseSig = null; }})()")
    kept = page.evaluate(KEPT)
    page.mouse.move(x, y)
    # the value the click lands on (a pixel may round to the neighbouring step): read it after the press
    page.evaluate("Object.assign(window.__cvs, {expect: null, final: null, chartsAt: 0, mapAt: 0, finalAt: 0, chartsSeen: false, mapSeen: false})")
    page.mouse.down()
    landed = float(slider.input_value())
    if float(before) == landed:  # the pixel rounded to the old value: one step further
        page.mouse.up()
        x += 3 if value > float(before) else -3
        page.mouse.move(x, y)
        page.evaluate("Object.assign(window.__cvs, {expect: null, final: null, chartsAt: 0, mapAt: 0, finalAt: 0, chartsSeen: false, mapSeen: false})")
        wait_quiet(page)
        page.mouse.down()
        landed = float(slider.input_value())
    coefs = ",".join("0" if k != int(CLASS.split()[-1]) else f"{landed:g}" for k in range(10))
    edit = f"{CLASS} × {landed:+.2f}" if landed else "none"
    page.evaluate(f"Object.assign(window.__cvs, {{expect: '{coefs}', final: 'edit: {edit};'}})")
    page.mouse.up()
    if float(before) == landed:
        raise RuntimeError(f"the click at {value} did not change the slider ({before})")
    s = wait_quiet(page, need_map=with_map)
    text = page.locator('[data-testid="stCaptionContainer"]').filter(has_text="Server, after the last release").first.inner_text()
    nums = dict(re.findall(r"(scores|map) in (\d+) ms", text))
    after = page.evaluate(KEPT)
    return {"value": landed, "charts_ms": s["chartsAt"] - s["down"],
            "points_redrawn": None if after is None else after[0] - kept[0] > 0,
            "map_ms": (s["mapAt"] - s["up"]) if with_map else float("nan"),
            "server_caption_ms": s["finalAt"] - s["up"],
            "server_scores_ms": float(nums.get("scores", "nan")), "server_map_ms": float(nums.get("map", "nan"))}


def releases(page, n: int, with_map: bool, redraw_all: bool = False) -> list[dict]:
    release_at(page, -0.75, with_map)  # warm-up: caches of this slider's gate, first draw of the edited map
    return [release_at(page, VALUES[i % len(VALUES)], with_map, redraw_all) for i in range(n)]


def fit_map(page, timeout_s: float = 300) -> float:
    page.get_by_role("link", name="Geometry").first.click()
    start = time.perf_counter()
    page.get_by_role("button", name="Fit the map").click()
    page.get_by_role("radio", name="both").wait_for(timeout=timeout_s * 1000)  # the map's view switch: map drawn
    return time.perf_counter() - start


def geometry_rest(page, timeout_s: float = 600) -> float:
    """Seconds until the rest of the Geometry page (findings, cosines, NC1-NC4) is shown after the map. The
    releases are timed after it: a page left while it still computes keeps computing on the server's cores."""
    start = time.perf_counter()
    page.get_by_text("nc2_equiangular", exact=True).first.wait_for(timeout=timeout_s * 1000)
    return time.perf_counter() - start


FRAMES = """
(() => {
  const f = window.__frames = {on: true, t: []};
  const tick = (t) => { if (f.on) { f.t.push(t); requestAnimationFrame(tick); } };
  requestAnimationFrame(tick);
})()
"""


LAYER = """(() => {
  for (const e of document.querySelectorAll('*')) {
    const o = e.shadowRoot && e.shadowRoot.querySelector('.cvs-live canvas.overlay');
    if (o) return o.parentElement.parentElement.__layer;
  }
  return null; })()"""

# [times the map layer drew its unmoved points, times it reused its picture of them] (gl_points.js), or null
KEPT = f"""(() => {{ const l = {LAYER.strip()}; return l ? [l.baseDraws || 0, l.baseReuses || 0] : null; }})()"""


def pan_frames(page, moves: int = 60) -> dict:
    """Drag the live editor's map by ``moves`` mouse moves of 6 px; -> frame intervals (ms) while dragging,
    recorded on every animation frame until the mouse is released (median, 95th percentile, frames); then
    ``settle_ms``: the one full draw of the points at their new place after the release, from the draw call to
    the next animation frame (on a slow map the drag itself moves the last drawn picture: ``previews`` counts
    those frames, gl_points.js)."""
    box = page.evaluate("""() => {
      for (const e of document.querySelectorAll('*')) {
        const o = e.shadowRoot && e.shadowRoot.querySelector('.cvs-live canvas.overlay');
        if (o) { const r = o.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; }
      }
      return null; }""")
    if box is None:
        raise RuntimeError("no map canvas in the live editor")
    x, y = box["x"] + box["w"] / 2, box["y"] + box["h"] / 2
    page.mouse.move(x, y)
    before = page.evaluate(f"(() => {{ const L = {LAYER}; return {{frames: L.frames, previews: L.previews || 0}}; }})()")
    page.evaluate(FRAMES)
    page.mouse.down()
    for i in range(moves):
        page.mouse.move(x + 6 * (i + 1) * (1 if i < moves // 2 else -1) / 2, y + 3 * (i % 7))
    t = page.evaluate("(() => { window.__frames.on = false; return window.__frames.t; })()")
    page.mouse.up()
    page.wait_for_function(f"(() => {{ const L = {LAYER}; return !L.box.querySelector('canvas.gl').style.transform; }})()",
                           timeout=60_000)
    page.wait_for_timeout(100)
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    after = page.evaluate(f"(() => {{ const L = {LAYER}; return {{frames: L.frames, previews: L.previews || 0, "
                          "frameMs: L.frameMs}; })()")
    gaps = [b - a for a, b in zip(t, t[1:])]
    if len(gaps) < 3:
        raise RuntimeError(f"only {len(t)} frames while panning")
    gaps.sort()
    return {"frames": len(t), "frame_ms_median": statistics.median(gaps),
            "frame_ms_p95": gaps[min(len(gaps) - 1, int(0.95 * len(gaps)))], "frame_ms_max": gaps[-1],
            "previews": after["previews"] - before["previews"], "full_draws": after["frames"] - before["frames"],
            "settle_ms": after["frameMs"]}


SCALE_TARGETS_MS = {"charts_ms": 100.0, "map_ms": 1000.0}  # issue 14 at 1M: slider -> charts, release -> map


def scale_summary(what: str, runs: list[dict], key: str) -> dict:
    """:func:`summary` against issue 14's targets at scale."""
    row = summary(what, runs, key)
    row["target_ms"] = SCALE_TARGETS_MS[key]
    row["verdict"] = "met" if row["median_ms"] <= row["target_ms"] else "missed"
    return row


def main_scale(n: int, cache: Path | None, n_releases: int = 5) -> list[dict]:
    """Issue 14 in the browser: the synthetic run with ``n`` test points (a feature store), slider -> charts
    without and with the map, release -> map (the same slider again: the layer redraws only the moved points;
    then with every point redrawn, as after a release that moves other points), the map's fit on the Geometry
    page and the frame time while panning it. Results: bench/results/browser_scale.json."""
    from playwright.sync_api import sync_playwright

    rows, detail, load = [], {}, [os.getloadavg()[0]]
    tmp = Path(tempfile.mkdtemp(prefix="cvs-bench-browser-scale-"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            server = Server(cache or tmp / "cache", tmp / "scale.log", n)
            try:
                page, first = open_setup(browser, server)
                page.set_default_timeout(900_000)
                compute_s = compute(page, "synthetic-10k")
                rows.append({"what": f"synthetic run, {n:,} points: Compute -> current run", "s": compute_s})
                rows.append({"what": f"open Class arithmetic, {n:,} points (tables to the browser)",
                             "s": open_arithmetic(page)})
                detail["no_map"] = releases(page, n_releases, False)
                rows.append(scale_summary(f"slider -> bars + confusion drawn, {n:,} points, no map",
                                          detail["no_map"], "charts_ms"))
                map_s = fit_map(page, timeout_s=1800)
                cached = page.get_by_text("Loaded from the cache").count() > 0  # the map's note (ScaleMap.describe)
                rows.append({"what": f"{'map from the disk cache' if cached else 'fit the map'} ({2 * n:,} latents, "
                                     "Geometry page)", "s": map_s})
                rows.append({"what": f"rest of the Geometry page after the map (findings, NC1-NC4), {n:,} points",
                             "s": geometry_rest(page)})
                page.get_by_role("link", name="Class arithmetic").first.click()
                page.get_by_role("slider", name=CLASS, exact=True).wait_for()
                wait_quiet(page, timeout_s=600)
                detail["with_map"] = releases(page, n_releases, True)
                rows.append(scale_summary(f"slider -> bars + confusion drawn, {n:,} points, with map",
                                          detail["with_map"], "charts_ms"))
                rows.append(scale_summary(f"release -> map re-placed and drawn, {n:,} points", detail["with_map"],
                                          "map_ms"))
                # the same releases when the answer must draw every point (the moved points differ from the last
                # release's, e.g. another class's slider): the layer's kept picture is dropped before each
                detail["with_map_redraw_all"] = releases(page, n_releases, True, redraw_all=True)
                rows.append(scale_summary(f"release -> map re-placed and every point redrawn, {n:,} points",
                                          detail["with_map_redraw_all"], "map_ms"))
                pan = pan_frames(page)
                detail["pan"] = pan
                rows.append({"what": f"frame interval while panning the map, {n:,} points (median)",
                             "median_ms": pan["frame_ms_median"], "p95_ms": pan["frame_ms_p95"],
                             "frames": pan["frames"], "previews": pan["previews"], "settle_ms": pan["settle_ms"]})
                page.screenshot(path=str(tmp / "scale.png"))
            finally:
                server.stop()
                detail["server_log_tail"] = (tmp / "scale.log").read_text()[-2000:]
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load.append(os.getloadavg()[0])
    print_table(f"browser at {n:,} points (headless Chromium, software WebGL)", rows)
    # bench/results/browser_scale.json for 1M (the issue's size), browser_scale_<N>.json for another N
    write_results("browser_scale" if n == 1_000_000 else f"browser_scale_{n}", rows, {"N": n, "releases": detail, "load_avg_1min_before_after": load,
                                          "method": main_scale.__doc__})
    return rows


def summary(what: str, runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    med = statistics.median(values)
    return {"what": what, "n_releases": len(runs), "median_ms": med, "min_ms": min(values), "max_ms": max(values),
            "server_caption_median_ms": statistics.median(r["server_caption_ms"] for r in runs),
            "server_map_median_ms": statistics.median(r["server_map_ms"] for r in runs),
            "target_ms": TARGET_MS, "verdict": "met" if med <= TARGET_MS else "missed"}


def main(digits: bool = True, n_releases: int = 7) -> list[dict]:
    if not CHROMIUM.exists():
        skip("browser", f"no browser: {CHROMIUM} is missing (apt-get install chromium)")
        return []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip("browser", "the playwright Python package is not installed")
        return []
    rows, detail, load = [], {}, [os.getloadavg()[0]]
    tmp = Path(tempfile.mkdtemp(prefix="cvs-bench-browser-"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            if digits:  # a fresh server on an empty cache: first screen, then the whole default pipeline
                server = Server(tmp / "cache", tmp / "cold.log")
                try:
                    page, first = open_setup(browser, server)
                    rows.append({"what": "first screen, empty cache (process start -> Setup usable)",
                                 "s": first["first_screen_s"], "health_s": first["health_s"]})
                    pipeline_s = compute(page, None)
                    arith_s = open_arithmetic(page)
                    rows.append({"what": "digits cold: Compute -> Class arithmetic charts drawn",
                                 "s": pipeline_s + arith_s, "pipeline_s": pipeline_s, "arithmetic_s": arith_s})
                    page.close()
                finally:
                    server.stop()
            server = Server(tmp / "cache", tmp / "warm.log")
            try:
                page, first = open_setup(browser, server)
                rows.append({"what": "first screen" + (", disk cache filled" if digits else ""),
                             "s": first["first_screen_s"], "health_s": first["health_s"]})
                if digits:
                    pipeline_s = compute(page, None)
                    arith_s = open_arithmetic(page)
                    rows.append({"what": "digits warm: process start -> Class arithmetic charts drawn",
                                 "s": time.perf_counter() - server.started, "pipeline_s": pipeline_s,
                                 "arithmetic_s": arith_s})
                compute(page, "synthetic-10k")
                open_arithmetic(page)
                detail["no_map"] = releases(page, n_releases, False)
                rows.append(summary("slider -> bars + confusion drawn, 10k points, no map", detail["no_map"], "charts_ms"))
                map_s = fit_map(page)
                page.get_by_role("link", name="Class arithmetic").first.click()
                page.get_by_role("slider", name=CLASS, exact=True).wait_for()
                wait_quiet(page)
                detail["with_map"] = releases(page, n_releases, True)
                rows.append(summary("slider -> bars + confusion drawn, 10k points, with map", detail["with_map"],
                                    "charts_ms"))
                rows.append(summary("release -> map re-projected and drawn, 10k points", detail["with_map"], "map_ms"))
                rows.append({"what": "fit the map (20k latents, Geometry page)", "s": map_s})
            finally:
                server.stop()
            browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load.append(os.getloadavg()[0])
    print_table("browser: first screen and slider release -> updated charts (headless Chromium)", rows)
    write_results("browser", rows, {"releases": detail, "load_avg_1min_before_after": load,
                                    "dataset_for_releases": "synthetic-10k (CVS_SYNTHETIC=1, N=10,000, D=512, C=10)",
                                    "method": __doc__})
    return rows


if __name__ == "__main__":
    started = time.perf_counter()
    releases_n = int(sys.argv[sys.argv.index("--releases") + 1]) if "--releases" in sys.argv else 7
    if "--n" in sys.argv:  # issue 14: the synthetic run at scale, e.g. --n 1000000 [--cache-dir DIR]
        cache_arg = Path(sys.argv[sys.argv.index("--cache-dir") + 1]) if "--cache-dir" in sys.argv else None
        main_scale(int(sys.argv[sys.argv.index("--n") + 1]), cache_arg, min(releases_n, 5))
    else:
        main(digits="--no-digits" not in sys.argv, n_releases=releases_n)
    print(f"(browser benchmark took {time.perf_counter() - started:.0f} s)")
