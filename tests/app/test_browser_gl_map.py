"""The WebGL map (app/components/gl_points.js, latent_map.js) in Chromium: binary packets decode to the
Python values, the point under the mouse is the one picked, WebGL really draws, and a lost context
falls back to the 2-D canvas with a note. Skipped without Debian's chromium."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.components.packet import pack, unpack
from app.components.sources import module_source

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no browser: /usr/bin/chromium is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
from tests.app.test_browser_e2e import CHROMIUM_ARGS  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

IMPORT = """async (src) => {
  const url = URL.createObjectURL(new Blob([src], {type: "text/javascript"}));
  window.M = await import(url);
  return Object.keys(window.M).length;
}"""


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 900, "height": 800})
        pg.set_content("<html><body style='margin:0'><div id='root' style='width:700px'></div></body></html>")
        assert pg.evaluate(IMPORT, module_source("latent_map")) > 0
        yield pg
        browser.close()


def _bytes(page, blob: bytes, misalign: int):
    """Hand the packet to the page as a Uint8Array (at an unaligned offset when misalign > 0, as a
    message buffer may be)."""
    page.evaluate("""([b64, off]) => {
      const bin = atob(b64), u8 = new Uint8Array(bin.length + off);
      for (let i = 0; i < bin.length; i++) u8[off + i] = bin.charCodeAt(i);
      window.PACKET = u8.subarray(off);
    }""", [__import__("base64").b64encode(blob).decode(), misalign])


@pytest.mark.parametrize("misalign", [0, 3])
def test_packets_decode_to_the_python_values(page, misalign):
    rng = np.random.default_rng(0)
    xy = (rng.normal(size=(257, 2)) * 7).astype(np.float32)
    arrays = {"xy16": xy.astype("<f2"), "xy32": xy, "cls": rng.integers(0, 1000, 257).astype("<u2"),
              "flag": rng.integers(0, 3, 257).astype("u1"), "rows": rng.integers(0, 10**7, 257).astype("<i4"),
              "extremes": np.array([0, -0.0, 65504, -65504, 6e-8, 1e-5, np.inf, 0.333], dtype="<f2")}
    blob = pack({"names": ["a", "b\u00e9"], "n": 257}, arrays)
    header, back = unpack(blob)
    assert header == {"names": ["a", "b\u00e9"], "n": 257} and all(np.array_equal(back[k], v) for k, v in arrays.items())
    _bytes(page, blob, misalign)
    got = page.evaluate("""() => {
      const {header, arrays} = M.unpackPacket(PACKET);
      return {header, xy16: Array.from(M.halfToFloat(arrays.xy16)), xy32: Array.from(arrays.xy32),
              cls: Array.from(arrays.cls), flag: Array.from(arrays.flag), rows: Array.from(arrays.rows),
              extremes: Array.from(M.halfToFloat(arrays.extremes)).map(String)};
    }""")
    assert got["header"] == {"names": ["a", "b\u00e9"], "n": 257}
    assert np.array_equal(np.array(got["xy16"], dtype=np.float32), xy.astype(np.float16).astype(np.float32).ravel())
    assert np.array_equal(np.array(got["xy32"], dtype=np.float32), xy.ravel())
    assert got["cls"] == arrays["cls"].tolist() and got["flag"] == arrays["flag"].tolist()
    assert got["rows"] == arrays["rows"].tolist()
    assert [float(v) for v in got["extremes"]] == arrays["extremes"].astype(np.float32).astype(float).tolist()


MOUNT = """async (blob) => {
  const bin = atob(blob), u8 = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
  const root = document.getElementById('root'); root.innerHTML = '<div class="cvs-latent-root"></div>';
  window.CALLS = [];
  M.default({parentElement: root, data: u8, setStateValue: (k, v) => CALLS.push([k, v])});
  await new Promise((r) => requestAnimationFrame(r));
  return root.querySelector('.cvs-latent').dataset.drawn;
}"""


def _map(n=400, c=4, seed=1, **kw):
    from app.components.latent_map import map_packet

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    centres = np.array([[2, 2], [8, 2], [2, 8], [8, 8]], dtype=np.float32)[:c]
    ft = centres[labels] + rng.normal(size=(n, 2)).astype(np.float32) * 0.6
    pre = ft + 0.5
    data = map_packet(pre, ft, labels, (labels + 1) % c, labels, centres - 0.3, centres + 0.3, (0, 10, 0, 10),
                      [f"k{i}" for i in range(c)], ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"][:c], images=True, **kw)
    return data, ft, pre, labels


def test_webgl_draws_and_picks_the_point_under_the_mouse_even_after_zooming(page):
    data, ft, pre, labels = _map()
    assert page.evaluate(MOUNT, __import__("base64").b64encode(pack(data["header"], data["arrays"])).decode())
    box = page.locator(".cvs-latent .plot")
    assert box.get_attribute("data-mode") == "webgl"
    # the pixel under a fine-tuned point is coloured (WebGL drew there), an empty corner is not
    k = 17
    probe = """([k, zoom]) => {
      const plot = document.querySelector('.cvs-latent .plot');
      const layer = plot.__layer;
      if (zoom) { // zoom 3x about the point: it stays where it was, its neighbours spread out
        const x0 = layer.sx(layer.xy[2 * k]), y0 = layer.sy(layer.xy[2 * k + 1]);
        layer.view = {k: 1, tx: 0, ty: 0};
        const bx = layer.sx(layer.xy[2 * k]), by = layer.sy(layer.xy[2 * k + 1]);
        layer.view = {k: 3, tx: x0 - 3 * bx, ty: y0 - 3 * by}; layer.draw();
      }
      const x = layer.sx(layer.xy[2 * k]), y = layer.sy(layer.xy[2 * k + 1]);
      const gl = layer.gl, px = new Uint8Array(4), corner = new Uint8Array(4), dpr = layer.dpr;
      gl.readPixels(Math.round(x * dpr), Math.round(gl.drawingBufferHeight - y * dpr), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
      gl.readPixels(1, 1, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, corner);
      const r = plot.querySelector('canvas.overlay').getBoundingClientRect();
      plot.querySelector('canvas.overlay').dispatchEvent(new MouseEvent('mousemove', {clientX: r.left + x, clientY: r.top + y, bubbles: true}));
      const tip = document.querySelector('.cvs-latent .tip');
      return {picked: layer.pick(x, y), tip: tip.hidden ? null : tip.textContent, index: tip.dataset.index,
              px: Array.from(px), corner: Array.from(corner)};
    }"""
    for zoom in (False, True):
        got = page.evaluate(probe, [k, zoom])
        assert got["picked"] == k and got["index"] == str(k)
        assert f"true: k{labels[k]}" in got["tip"] and "fine-tuned latent" in got["tip"] and f"image #{k}" in got["tip"]
        assert got["px"][3] > 0 and got["corner"][3] == 0
    # the image is asked for that one point, and shown when the server answers
    page.wait_for_timeout(300)
    calls = page.evaluate("() => CALLS")
    assert ["hover", {"row": k, "digest": data["header"]["digest"]}] in calls
    assert ["have", data["header"]["digest"]] in calls


def test_a_lost_webgl_context_falls_back_to_the_canvas_with_a_note(page):
    data, ft, pre, labels = _map(seed=2)
    page.evaluate(MOUNT, __import__("base64").b64encode(pack(data["header"], data["arrays"])).decode())
    got = page.evaluate("""async () => {
      const plot = document.querySelector('.cvs-latent .plot'), layer = plot.__layer;
      layer.gl.getExtension('WEBGL_lose_context').loseContext();
      await new Promise((r) => setTimeout(r, 200));
      const k = 5, x = layer.sx(layer.xy[2 * k]), y = layer.sy(layer.xy[2 * k + 1]);
      const ctx = plot.querySelector('canvas.overlay').getContext('2d'), dpr = layer.dpr;
      const px = ctx.getImageData(Math.round(x * dpr), Math.round(y * dpr), 1, 1).data;
      return {mode: plot.dataset.mode, note: plot.querySelector('.gl-note').hidden ? null : plot.querySelector('.gl-note').textContent,
              alpha: px[3], picked: layer.pick(x, y)};
    }""")
    assert got["mode"] == "canvas" and "WebGL context was lost" in got["note"] and "2-D canvas" in got["note"]
    assert got["alpha"] > 0 and got["picked"] == 5


def test_more_points_than_a_browser_holds_get_a_named_sample():
    data, *_ = _map(n=3000, limit=1000)
    h, a = data["header"], data["arrays"]
    assert h["n"] == 1000 and h["total"] == 3000 and a["ft_xy"].shape == (1000, 2) and a["rows"].shape == (1000,)
    assert "stratified sample of 1,000 of the 3,000 test images" in h["note"]
    assert a["ft_xy"].dtype == np.dtype("<f2") and a["labels"].dtype == np.dtype("<u2")


def test_a_slow_map_pans_by_moving_its_last_picture_and_draws_once_at_the_end(page):
    """A map whose points draw slowly (a million points in software WebGL: ~1 s a frame) follows a drag
    with the compositor (CSS transform of the last picture, the overlay redrawn) and draws its points
    once when the mouse is released; a fast map draws on every move."""
    data, *_ = _map(seed=3)
    page.evaluate(MOUNT, __import__("base64").b64encode(pack(data["header"], data["arrays"])).decode())
    drag = """async ([slow, dx, dy]) => {
      const plot = document.querySelector('.cvs-latent .plot'), layer = plot.__layer;
      const gl = plot.querySelector('canvas.gl'), o = plot.querySelector('canvas.overlay');
      const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      await frame(); await frame();                // the mount's own redraws (its ResizeObserver) are done
      layer.view = {k: 1, tx: 0, ty: 0}; layer.draw();
      layer.slowMs = slow ? -1 : Infinity;         // as if the last draw had been slow / fast to reach the screen
      layer.slowMinPoints = 0;                     // (a map this small is never slow otherwise)
      await frame();
      const r = o.getBoundingClientRect(), x = r.left + 100, y = r.top + 100;
      const f0 = layer.frames, p0 = layer.previews || 0;
      o.dispatchEvent(new MouseEvent('mousedown', {clientX: x, clientY: y, bubbles: true}));
      for (let i = 1; i <= 4; i++) {
        o.dispatchEvent(new MouseEvent('mousemove', {clientX: x + dx * i / 4, clientY: y + dy * i / 4, bubbles: true}));
        await frame();
      }
      const during = {frames: layer.frames - f0, previews: (layer.previews || 0) - p0, transform: gl.style.transform,
                      view: {...layer.view}};
      window.dispatchEvent(new MouseEvent('mouseup', {bubbles: true}));
      await frame();
      return {during, after: {frames: layer.frames - f0, transform: gl.style.transform, view: {...layer.view}}};
    }"""
    slow = page.evaluate(drag, [True, 40, -24])
    assert slow["during"]["frames"] == 0 and slow["during"]["previews"] >= 1      # no full draw while dragging
    assert slow["during"]["transform"] == "translate(40px, -24px) scale(1)"        # the last picture, moved
    assert slow["during"]["view"] == {"k": 1, "tx": 40, "ty": -24}
    assert slow["after"]["frames"] == 1 and slow["after"]["transform"] == ""       # one draw at the end
    fast = page.evaluate(drag, [False, 40, -24])
    assert fast["during"]["frames"] >= 1 and fast["during"]["previews"] == 0 and fast["during"]["transform"] == ""
    assert fast["after"]["view"] == {"k": 1, "tx": 40, "ty": -24}
    # what decides it: the time from a draw to the next frame, measured on every draw
    assert page.evaluate("() => document.querySelector('.cvs-latent .plot').__layer.frameMs") > 0


def test_highlighted_points_are_drawn_on_top_from_their_own_index_list(page):
    """The second pass draws only the highlighted points (an index buffer, not a million culled vertices):
    a highlighted point is opaque with a dark rim, an ordinary one is translucent."""
    data, *_ = _map(seed=4)
    page.evaluate(MOUNT, __import__("base64").b64encode(pack(data["header"], data["arrays"])).decode())
    got = page.evaluate("""() => {
      const layer = document.querySelector('.cvs-latent .plot').__layer, n = layer.n, k = 7;
      layer.view = {k: 1, tx: 0, ty: 0};
      const px = (i, dx) => {
        const out = new Uint8Array(4), gl = layer.gl, d = layer.dpr;
        gl.readPixels(Math.round((layer.sx(layer.xy[2 * i]) + dx) * d),
                      Math.round(gl.drawingBufferHeight - layer.sy(layer.xy[2 * i + 1]) * d), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
        return Array.from(out);
      };
      const flags = new Uint8Array(n); layer.setFlags(flags); layer.draw();
      const plain = px(k, 0);
      flags[k] = 1; layer.setFlags(flags); layer.draw();
      const rim = (layer.pointSize() + 4) / 2 - 1;
      return {plain, high: px(k, 0), rim: px(k, rim), count: layer.glState.highCount};
    }""")
    assert got["count"] == 1
    assert got["high"][3] == 255 and got["plain"][3] < 255          # on top, opaque
    assert max(got["rim"][:3]) < 60 and got["rim"][3] == 255         # the dark outline


def test_a_small_map_is_never_treated_as_slow(page):
    """Below 100,000 points the map redraws on every movement even when the frame interval is long (a busy
    machine), so the 10,000-point runs behave as before."""
    data, *_ = _map(seed=5)
    page.evaluate(MOUNT, __import__("base64").b64encode(pack(data["header"], data["arrays"])).decode())
    got = page.evaluate("""() => {
      const layer = document.querySelector('.cvs-latent .plot').__layer;
      layer.frameMs = 5000; layer.drawnView = {...layer.view};
      const small = layer.slowDraw();
      layer.slowMinPoints = 0;
      return {small, forced: layer.slowDraw()};
    }""")
    assert got == {"small": False, "forced": True}


def test_the_picture_of_unmoved_points_is_reused_and_equals_a_full_draw(page):
    """A release moves only the highlighted points: with the same base key, flags, colours and view the layer
    copies its kept picture of the other points instead of drawing them again, and the canvas is pixel for
    pixel what a direct draw of every point gives; another view, flag set or key draws them again."""
    data, *_ = _map(n=3000, seed=6)
    page.evaluate(MOUNT, __import__("base64").b64encode(pack(data["header"], data["arrays"])).decode())
    got = page.evaluate("""() => {
      const layer = document.querySelector('.cvs-latent .plot').__layer, n = layer.n, gl = layer.gl;
      layer.cacheMinPoints = 0; layer.view = {k: 1, tx: 0, ty: 0};
      const pixels = () => {
        const out = new Uint8Array(gl.drawingBufferWidth * gl.drawingBufferHeight * 4);
        gl.readPixels(0, 0, gl.drawingBufferWidth, gl.drawingBufferHeight, gl.RGBA, gl.UNSIGNED_BYTE, out);
        return out;
      };
      const base = Float32Array.from(layer.xy), cat = new Uint16Array(n).map((_, i) => i % 4);
      const flags = new Uint8Array(n); for (let i = 0; i < n; i += 5) flags[i] = 1;
      const counts = () => [layer.baseDraws, layer.baseReuses];
      layer.setPoints(base, null, "k0"); layer.setCategories(cat, "c"); layer.setFlags(flags); layer.draw();
      const first = counts();
      const moved = Float32Array.from(base); for (let i = 0; i < n; i += 5) moved[2 * i] += 0.5;
      layer.setPoints(moved, null, "k0"); layer.setCategories(cat, "c"); layer.setFlags(flags); layer.draw();
      const reused = counts(), kept = pixels();
      layer.cacheMinPoints = Infinity; layer.draw();
      const direct = pixels(), noCache = counts();
      let diff = 0; for (let i = 0; i < kept.length; i++) if (kept[i] !== direct[i]) diff++;
      let inked = 0; for (let i = 3; i < kept.length; i += 4) if (kept[i]) inked++;
      layer.cacheMinPoints = 0;
      layer.draw(); const again = counts();                       // the direct draw forgot the kept picture
      layer.draw(); const reuse2 = counts();
      layer.view = {k: 2, tx: -30, ty: 10}; layer.draw(); const zoomed = counts();
      flags[1] = 1; layer.setFlags(flags); layer.draw(); const reflagged = counts();
      layer.setPoints(moved, null, "k1"); layer.draw(); const rekeyed = counts();
      layer.setPoints(moved, null, null); layer.draw(); const unknown = counts();
      return {first, reused, noCache, diff, inked, again, reuse2, zoomed, reflagged, rekeyed, unknown};
    }""")
    assert got["first"] == [1, 0] and got["reused"] == [1, 1]
    assert got["inked"] > 1000 and got["diff"] == 0             # the kept picture + moved points = a full draw
    assert got["noCache"] == [1, 1] and got["again"] == [2, 1] and got["reuse2"] == [2, 2]
    assert got["zoomed"] == [3, 2] and got["reflagged"] == [4, 2] and got["rekeyed"] == [5, 2]
    assert got["unknown"] == [5, 2]                              # no key: drawn directly, nothing kept
