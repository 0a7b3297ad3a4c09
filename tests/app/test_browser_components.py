"""The browser components (app/components/*.js) in Chromium: the live editor against the library.

The sliders of the Class-arithmetic screen are scored by this JavaScript; these tests run its
exported functions on the tables the server sends (``app.components.live_editor.tables_packet``) and
require the same predictions, per-class accuracies and forget/retain figures as
``cv_core.math.factored`` / ``cv_core.math.metrics``. Skipped without Debian's chromium.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.components.sources import module_source
from cv_core.math.factored import FactoredScores
from cv_core.math.metrics import forget_retain, score
from cv_core.math.steering import gamma_vector

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no browser: /usr/bin/chromium is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
from tests.app.test_browser_e2e import CHROMIUM_ARGS  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

U8 = "const u8 = (b64) => { const bin = atob(b64), a = new Uint8Array(bin.length); " \
     "for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i); return a; };"


def _b64(blob: bytes) -> str:
    import base64

    return base64.b64encode(blob).decode()


def _tables(factored, labels, names, **kw) -> dict:
    from app.components.live_editor import tables_packet

    return tables_packet(factored, labels, names, **kw)


def _packet(tables, coefs, gammas=None, moves=(), rev=0, colors=None, map_part=None, have=None) -> str:
    """What the server sends the mounted component (base64 of the packet's bytes, for page.evaluate)."""
    from app.components.live_editor import editor_packet

    c = len(tables["header"]["names"])
    return _b64(editor_packet(tables, coefs, gammas, moves, rev, colors or ["#123456"] * c, map_part, have))


RUN_IN_PAGE = """async ([src, blob, cases]) => {
  const url = URL.createObjectURL(new Blob([src], {type: "text/javascript"}));
  const m = await import(url);
  """ + U8 + """
  const t = m.decodeTables(m.fromPacket(u8(blob)));
  return cases.map(([coefs, gammas, moves, forgotten]) => {
    const {preds, moved} = m.predict(t, coefs, gammas, moves);
    const s = m.scoreOf(preds, t.labels, t.c);
    return {preds: Array.from(preds), moved, perClass: Array.from(s.perClass, (v) => Number.isNaN(v) ? null : v),
            confusion: Array.from(s.confusion), fr: m.forgetRetain(s.confusion, t.c, new Set(forgotten))};
  });
}"""


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pg = browser.new_page()
        pg.set_content("<html><body></body></html>")
        yield pg
        browser.close()


def _run(n=2000, c=8, d=40, seed=3):
    """Latents with class structure, class vectors that send each class to an unrelated pretrained centroid."""
    from cv_core.results import ClassVectors

    g = torch.Generator().manual_seed(seed)
    mu_ft = 3 * torch.randn(c, d, generator=g)
    labels = torch.randint(0, c, (n,), generator=g)
    latents = mu_ft[labels] + 1.5 * torch.randn(n, d, generator=g)
    kappa = mu_ft - 3 * torch.randn(c, d, generator=g)
    cv = ClassVectors(kappa, mu_ft - kappa, mu_ft, tuple(f"c<{i}>" for i in range(c)))
    head = torch.nn.functional.normalize(mu_ft + 0.5 * torch.randn(c, d, generator=g), dim=-1)
    return FactoredScores.from_latents(latents, head, cv), labels, cv.class_names


CASES = [  # coefs, gamma, moves
    ([0, -1, 0, 0, 0, 0, 0, 0], "per-class", []),
    ([0.55, -2, 0, 1.25, 0, 0, -0.75, 0], 0.3, []),
    ([0, 0, -1, 0, 0, 0, 0.35, 0], None, []),
    ([0] * 8, "per-class", [(2, 5, 0.6)]),
    ([0, 0, 0, -0.5, 0, 0, 0, 0], 0.2, [(c, (c + 1) % 8, 1.0) for c in range(8)]),
    ([0, -1.5, 0, 0, 0, 0, 0, 0], 0.999, [(3, 4, 0.8)]),  # cosine gate closed: the prediction term alone
]


def test_the_browser_scores_every_edit_as_the_library_does(page):
    factored, labels, names = _run()
    data = _packet(_tables(factored, labels, names), [0.0] * 8)
    per_class_gamma = torch.linspace(0.1, 0.6, 8)
    cases, expected = [], []
    for coefs, gamma, moves in CASES:
        gamma = per_class_gamma if gamma == "per-class" else gamma
        g = gamma_vector(gamma, 8)
        forgotten = sorted({c for c, a in enumerate(coefs) if a < 0} | {s for s, _, a in moves if a})
        cases.append([coefs, None if g is None else g.tolist(), [list(m) for m in moves], forgotten])
        weights = factored.edit_weights(coefs, gamma, moves)
        expected.append((factored.predict(weights), len(factored.changed_rows(weights)), forgotten))
    src = module_source("live_editor")
    got = page.evaluate(RUN_IN_PAGE, [src, data, cases])
    for (preds, moved, forgotten), js in zip(expected, got):
        assert js["preds"] == preds.tolist()
        assert js["moved"] == moved and moved > 0
        s = score(preds, labels, 8)
        assert js["confusion"] == s.confusion.flatten().tolist()
        assert js["perClass"] == pytest.approx(s.per_class.double().tolist(), abs=1e-6)
        assert js["fr"] == pytest.approx(list(forget_retain(s, forgotten)), abs=1e-6, nan_ok=True)


def test_the_browser_decodes_the_servers_float32_tables_exactly(page):
    factored, labels, names = _run(n=50)
    data = _packet(_tables(factored, labels, names), [0.0] * 8)
    src = module_source("live_editor")
    got = page.evaluate("""async ([src, blob]) => {
      const m = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
      """ + U8 + """
      const t = m.decodeTables(m.fromPacket(u8(blob)));
      return [Array.from(t.base), Array.from(t.cos), Array.from(t.kh), t.n, t.c];
    }""", [src, data])
    assert got[0] == factored.base.flatten().tolist() and got[1] == factored.cosines.flatten().tolist()
    assert got[2] == factored.kappa_head.flatten().tolist() and got[3:] == [50, 8]


MOUNT = """async ([src, calls]) => {
  const m = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
  const host = document.createElement("div");
  host.innerHTML = '<div class="cvs-live-root"></div>';
  document.body.appendChild(host);
  const sent = [];
  const out = [];
  """ + U8 + """
  for (const [blob, moveClass, value] of calls) {
    m.default({parentElement: host, data: u8(blob), setStateValue: (k, v) => sent.push([k, v])});
    if (moveClass !== null) {  // what a user's drag does: input events while moving, change on release
      const input = host.querySelector(`input[data-class="${moveClass}"]`);
      input.value = String(value);
      input.dispatchEvent(new Event("input"));
      input.dispatchEvent(new Event("change"));
    }
    const map = host.querySelector(".map");
    out.push({edit: host.querySelector(".edit").textContent,
              forget: host.querySelector('.metric[data-metric="Forget accuracy"] .value').textContent,
              sliders: Array.from(host.querySelectorAll("input"), (i) => +i.value),
              mapHidden: map.hidden, answered: map.dataset.answered || null,
              mapTitle: host.querySelector(".map-title").textContent,
              timing: host.querySelector(".timing").textContent});
  }
  return {out, sent};
}"""


def test_the_mounted_editor_follows_its_sliders_the_server_and_the_map(page):
    import numpy as np

    from app.components.live_editor import map_data

    factored, labels, names = _run(n=300)
    tables = _tables(factored, labels, names)
    digest = tables["header"]["digest"]
    weights = factored.edit_weights([0, -1, 0, 0, 0, 0, 0, 0], 0.1)
    index = factored.changed_rows(weights).numpy()
    xy = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    answered = map_data(xy, (-4, 4, -4, 4), [0, -1, 0, 0, 0, 0, 0, 0], index, xy[index] + 1, 12.0)
    zero, preset_coefs, g = [0.0] * 8, [0.5] + [0.0] * 7, [0.1] * 8
    held = {"tables": digest, "map": answered["key"]}
    slim = _packet(tables, preset_coefs, g, rev=1, map_part=answered, have=held)
    from app.components.packet import unpack

    # once the browser said it holds them, the tables and the map's positions are not sent again
    assert set(unpack(__import__("base64").b64decode(slim))[1]) == {"map_index", "map_moved"}
    calls = [
        [_packet(tables, zero, g), 1, -1],                                  # a user drags class 1 to -1
        [_packet(tables, zero, g, map_part=answered), None, None],          # the server answers the release
        [_packet(tables, preset_coefs, g, rev=1, map_part=answered), None, None],  # a preset from the server
        [slim, None, None],
    ]
    src = module_source("live_editor")
    got = page.evaluate(MOUNT, [src, calls])
    drag, server, preset, slim = got["out"]
    assert drag["edit"] == "Edit: c<1> × -1.00" and drag["mapHidden"] is True
    assert got["sent"] == [["have", {"tables": digest, "map": None}],
                           ["coefs", {"values": [0, -1, 0, 0, 0, 0, 0, 0], "rev": 0}],
                           ["have", {"tables": digest, "map": answered["key"]}]]
    s = score(factored.predict(weights), labels, 8)
    assert drag["forget"] == f"{100 * float(s.per_class[1]):.1f}%"
    assert server["sliders"][1] == -1 and server["answered"] == "1"  # a rerun keeps the user's slider
    assert f"{len(index)} of 300 points moved" in server["mapTitle"] and "(map" in server["timing"]
    assert preset["sliders"] == [0.5] + [0.0] * 7 and preset["answered"] == "0"  # moved by the server
    assert preset["edit"] == "Edit: c<0> × +0.50"
    same = lambda d: {k: v for k, v in d.items() if k != "timing"}  # noqa: E731
    assert same(slim) == same(preset)  # drawn from what the browser kept


def test_a_failure_in_the_editor_is_said_in_the_page(page):
    src = module_source("live_editor")
    text = page.evaluate("""async (src) => {
      const m = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
      const host = document.createElement("div");
      host.innerHTML = '<div class="cvs-live-root"></div>';
      try {  // tables that do not decode: a truncated payload
        m.default({parentElement: host, setStateValue: () => {},
                   data: {names: ["a", "b"], digest: "bad", labels: [0, 1], base: "AAAA", cosines: "A", kappa_head: "A"}});
      } catch (e) { /* rethrown for Streamlit's console */ }
      return host.textContent;
    }""", src)
    assert text.startswith("The live editor failed:") and "Reload the page" in text


def test_the_thumbnail_sheet_holds_every_image_where_the_hover_looks_for_it(page):
    import base64
    import io

    import numpy as np
    from PIL import Image

    from app.components.live_editor import ATLAS_MAX_IMAGES, map_data, thumbnail_atlas

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    images = [Image.new("RGB", (8, 8), c) for c in colours]
    atlas = thumbnail_atlas(images, cell=4)
    assert atlas["cols"] == 3 and atlas["src"].startswith("data:image/png;base64,")
    sheet = np.asarray(Image.open(io.BytesIO(base64.b64decode(atlas["src"].split(",", 1)[1]))))
    assert sheet.shape == (8, 12, 3)
    for i, c in enumerate(colours):  # image i sits in row i // cols, column i % cols
        assert tuple(sheet[(i // 3) * 4 + 1, (i % 3) * 4 + 1]) == c
    assert thumbnail_atlas([]) is None
    assert thumbnail_atlas([images[0]] * (ATLAS_MAX_IMAGES + 1)) is None

    factored, labels, names = _run(n=5, c=8)
    xy = np.array([[0, 0], [1, 1], [2, 2], [3, 3], [-3, 3]], dtype=np.float32)
    part = map_data(xy, (-4, 4, -4, 4), [0.0] * 8, np.zeros(0, int), np.zeros((0, 2)), 1.0)
    data = _packet(_tables(factored, labels, names, atlas=atlas), [0.0] * 8, map_part=part)
    src = module_source("live_editor")
    tip = page.evaluate("""async ([src, blob]) => {
      const m = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
      """ + U8 + """
      const host = document.createElement("div");
      host.innerHTML = '<div class="cvs-live-root"></div>';
      document.body.appendChild(host);
      m.default({parentElement: host, data: u8(blob), setStateValue: () => {}});
      const canvas = host.querySelector(".map canvas.overlay"), r = canvas.getBoundingClientRect();
      // point 4 sits at (-3, 3) of the extent (-4..4, -4..4)
      const x = r.left + (1 / 8) * r.width, y = r.top + (1 / 8) * r.height;
      canvas.dispatchEvent(new MouseEvent("mousemove", {clientX: x, clientY: y}));
      const tip = host.querySelector(".tip"), thumb = tip.querySelector(".thumb");
      return {hidden: tip.hidden, text: tip.textContent, position: thumb && thumb.style.backgroundPosition};
    }""", [src, data])
    assert not tip["hidden"] and tip["text"].startswith("image #4 · true:")
    assert tip["position"] == "-8px -8px"  # image 4: row 1, column 1 of a 3-wide sheet, cells of 4 px shown at 2x


def test_the_geometry_map_switches_views_and_names_the_latent_under_the_mouse(page):
    import base64

    import numpy as np

    from app.components.latent_map import map_packet
    from app.components.packet import pack

    labels = np.array([0, 1, 2])
    ft_xy = np.array([[-2, -2], [0, 0], [2, 2]], dtype=np.float32)
    pre_xy = np.array([[-2, 2], [0, 3], [2, -2]], dtype=np.float32)
    data = map_packet(pre_xy, ft_xy, labels, np.array([0, 0, 0]), np.array([0, 1, 2]),
                      pre_xy, ft_xy, (-4, 4, -4, 4), ["a", "b", "c"], ["#f00", "#0f0", "#00f"], images=True)
    blob = base64.b64encode(pack(data["header"], data["arrays"])).decode()
    src = module_source("latent_map")
    got = page.evaluate("""async ([src, blob]) => {
      const m = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
      const bin = atob(blob), u8 = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
      const host = document.createElement("div");
      host.style.width = "640px";
      host.innerHTML = '<div class="cvs-latent-root"></div>';
      document.body.appendChild(host);
      const calls = [];
      const mount = (extra) => m.default({parentElement: host, data: u8, setStateValue: (k, v) => calls.push([k, v]), ...extra});
      mount();
      const box = host.querySelector(".cvs-latent"), canvas = host.querySelector("canvas.overlay");
      const hover = (x, y) => {  // map coordinates in the extent -4..4
        const r = canvas.getBoundingClientRect();
        canvas.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + (x + 4) / 8 * r.width,
                                                          clientY: r.top + (4 - y) / 8 * r.height}));
        const tip = host.querySelector(".tip");
        return tip.hidden ? null : tip.textContent;
      };
      const out = {first: box.dataset.show, title: box.querySelector(".title").textContent,
                   ftHover: hover(2, 2), preHidden: hover(-2, 2)};
      box.querySelectorAll(".views button")[2].click();  // both
      out.both = box.dataset.show;
      out.preHover = hover(-2, 2);
      await new Promise((r) => setTimeout(r, 250));  // the image is asked for once the mouse rests
      out.calls = calls;
      return out;
    }""", [src, blob])
    assert got["first"] == "fine-tuned"
    assert got["title"] == "Fine-tuned latents (UMAP) · 3 test images · colour: true class"
    assert got["ftHover"].endswith("image #2 · fine-tuned latent · true: c · predicted: c")
    assert got["preHidden"] is None  # pretrained latents are not drawn, so not hovered, in this view
    assert got["both"] == "both"
    assert got["preHover"].endswith("image #0 · pretrained latent · true: a · predicted: a")
    assert ["hover", {"row": 0, "digest": data["header"]["digest"]}] in got["calls"]


def test_many_classes_get_a_painted_confusion_matrix_that_names_the_cell_under_the_mouse(page):
    from app.components.sources import style_source

    factored, labels, names = _run(n=400, c=25, d=40)
    page.add_style_tag(content=style_source("live_editor"))  # hiding a filtered slider is the stylesheet's job
    data = _packet(_tables(factored, labels, names), [0.0] * 25)
    s = score(factored.predict(), labels, 25)
    got = page.evaluate("""async ([src, blob]) => {
      const m = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
      """ + U8 + """
      const host = document.createElement("div");
      host.innerHTML = '<div class="cvs-live-root"></div>';
      document.body.appendChild(host);
      m.default({parentElement: host, data: u8(blob), setStateValue: () => {}});
      const box = host.querySelector(".confusion-chart"), canvas = box.querySelector("canvas");
      const r = canvas.getBoundingClientRect(), cell = r.width / 25;
      canvas.dispatchEvent(new MouseEvent("mousemove", {clientX: r.left + 2.5 * cell, clientY: r.top + 2.5 * cell}));
      const filter = host.querySelector("input.filter");
      filter.value = "c<1"; filter.dispatchEvent(new Event("input"));  // c<1>, c<10>..c<19>
      const shown = Array.from(host.querySelectorAll("label.slider")).filter((l) => l.offsetHeight > 0).length;
      return {cells: box.querySelectorAll("td").length, tip: box.querySelector(".tip").textContent, shown};
    }""", [module_source("live_editor"), data])
    row = s.confusion[2]
    assert got["cells"] == 0  # no table of 625 cells
    assert got["shown"] == 11  # the class filter of long slider lists
    assert got["tip"] == f"true c<2>, predicted c<2>: {100 * row[2] / row.sum():.1f}% ({int(row[2])})"


SLOW_MAP = """async ([src, first, answer]) => {
  const m = await import(URL.createObjectURL(new Blob([src], {type: "text/javascript"})));
  const host = document.createElement("div");
  host.innerHTML = '<div class="cvs-live-root"></div>';
  document.body.appendChild(host);
  """ + U8 + """
  const mount = (blob) => m.default({parentElement: host, data: u8(blob), setStateValue: () => {}});
  mount(first);                                             // the map, drawn for the unedited sliders
  const box = host.querySelector(".map"), layer = host.querySelector(".map .plot").__layer;
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const state = () => ({drawn: +box.dataset.drawn, deferred: +(box.dataset.deferred || 0), frames: layer.frames,
                        answered: box.dataset.answered, status: box.querySelector(".map-status").textContent});
  layer.slowMs = -1; layer.slowMinPoints = 0;              // as if its last draw had been slow
  const input = host.querySelector('input[data-class="1"]');
  input.value = "-1"; input.dispatchEvent(new Event("input"));
  const moving = state();
  host.querySelector(".map-colour button:last-child").click();  // a colour switch is drawn at once
  const colour = state();
  mount(answer);                                            // the server answers the release
  return {moving, colour, answered: state()};
}"""


def test_a_slow_map_waits_for_the_servers_answer_instead_of_redrawing_on_every_movement(page):
    """Software WebGL draws a million points in ~0.5-1 s on the cores the server places with: a slow map is
    redrawn once, with the server's positions, not for every slider value on the way."""
    import numpy as np

    from app.components.live_editor import map_data

    factored, labels, names = _run(n=300)
    tables = _tables(factored, labels, names)
    coefs = [0, -1, 0, 0, 0, 0, 0, 0]
    index = factored.changed_rows(factored.edit_weights(coefs, 0.1)).numpy()
    xy = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    g = [0.1] * 8
    first = _packet(tables, [0.0] * 8, g, map_part=map_data(xy, (-4, 4, -4, 4), [0.0] * 8, index[:0], xy[:0], 1.0))
    answer = _packet(tables, [0.0] * 8, g, map_part=map_data(xy, (-4, 4, -4, 4), coefs, index, xy[index] + 1, 9.0))
    got = page.evaluate(SLOW_MAP, [module_source("live_editor"), first, answer])
    before = got["moving"]
    assert before["deferred"] == 1 and before["answered"] == "0"
    assert "redrawn when the server answers" in before["status"] and "300 points" in before["status"]
    colour = got["colour"]
    assert colour["drawn"] == before["drawn"] + 1 and colour["deferred"] == 1   # forced: drawn at once
    done = got["answered"]
    assert done["answered"] == "1" and done["drawn"] == colour["drawn"] + 1 and done["deferred"] == 1
