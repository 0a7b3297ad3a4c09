// Class arithmetic in the browser: one slider per class vector, and the per-class accuracy,
// forget/retain summary and confusion matrix re-scored on every slider movement, without a
// round trip to the server.
//
// The arithmetic is cv_core.math.factored (see its docstring): an edit only adds class vectors,
// r' = r + sum_c b_c kappa_c, so the prediction is argmax_j base[n, j] + sum_c b[n, c] kh[c, j]
// with base = r . w_j (N x C), kh = kappa_c . w_j (C x C) and the gates read from the (N x C)
// cosines to the fine-tuned centroids. The server sends those tables once per run; on release
// the coefficients go back to Python ("coefs" state) so the map and the exports follow.
// decodeFloat32, decodeInt32, esc, prepareCanvas, legendHtml, attachTooltip: map_canvas.js, prepended.

const CACHE = new WeakMap(); // parentElement -> view state (survives reruns that send new data)
// Decoded tables and map positions by content key. The server sends them until this browser reports
// (the "have" state) that it holds them, then sends only their keys: a rerun then carries a few
// hundred bytes instead of a megabyte.
const TABLES = new Map();
const MAPS = new Map();
const SENT = new WeakMap(); // root -> the holdings last reported to the server
const remember = (store, key, value) => { store.set(key, value); while (store.size > 3) store.delete(store.keys().next().value); };
// One colour convention on every page (app/charts.py: BEFORE, SAME, DROP, RISE): grey before; after in blue,
// red where the class dropped by half a point or more, green where it rose.
const BEFORE = "rgba(120,120,120,0.55)";
const SAME = "#1f77b4";
const DROP = "#d62728";
const RISE = "#2ca02c";
const afterColor = (b, a) => (a <= b - 0.5 ? DROP : a >= b + 0.5 ? RISE : SAME);
const LABELLED_UP_TO = 20; // above this many classes the confusion cells carry no numbers

// The tables of one run, decoded once: base and cos are (N*C) row-major, kh is (C*C); basePreds (N)
// are the unedited predictions (rows an edit does not touch keep them). The tables come as base64
// strings (JSON data) or as typed arrays (a binary packet, see fromPacket).
export function decodeTables(data) {
  const t = {
    n: data.labels.length, c: data.names.length,
    labels: data.labels instanceof Int32Array ? data.labels : Int32Array.from(data.labels),
    base: decodeFloat32(data.base), cos: decodeFloat32(data.cosines), kh: decodeFloat32(data.kappa_head),
    atlas: data.atlas || null, rows: data.rows || null,
  };
  if (t.base.length !== t.n * t.c || t.cos.length !== t.n * t.c || t.kh.length !== t.c * t.c) {
    throw new Error(`the run's tables do not match ${t.n} points and ${t.c} classes (a truncated payload?)`);
  }
  const basePreds = new Int32Array(t.n);
  for (let i = 0; i < t.n; i++) {
    const row = i * t.c;
    let best = 0, bestValue = -Infinity;
    for (let j = 0; j < t.c; j++) if (t.base[row + j] > bestValue) { bestValue = t.base[row + j]; best = j; }
    basePreds[i] = best;
  }
  t.basePreds = basePreds;
  return t;
}

// A binary packet (app/components/packet.py) -> the data object the component reads (tables and the
// map's arrays as typed arrays; float16 map positions widened to float32).
export function fromPacket(bytes) {
  const { header, arrays } = unpackPacket(bytes);
  const data = { ...header };
  for (const k of ["base", "cosines", "kappa_head", "rows"]) if (arrays[k]) data[k] = arrays[k];
  if (arrays.labels) data.labels = Int32Array.from(arrays.labels);
  if (header.map) {
    data.map = { ...header.map };
    if (arrays.map_xy) data.map.xy = halfToFloat(arrays.map_xy);
    data.map.index = arrays.map_index || new Int32Array(0);
    data.map.moved_xy = arrays.map_moved || new Float32Array(0);
  }
  return data;
}

// Predictions (N) after the edit, and how many points it moved. coefs: (C) numbers; gammas: (C)
// thresholds or null (no gate); moves: [[source, target, alpha], ...], each gated on its source. The gate
// of class k (cv_core.math.steering): cosine to k's centroid above gammas[k], or predicted k unedited.
// Only the rows a term touches are re-scored; the others keep their unedited prediction.
export function predict(t, coefs, gammas, moves) {
  const { n, c, base, cos, kh, basePreds } = t;
  const preds = new Int32Array(n);
  const touchedRows = new Uint8Array(n);
  const b = new Float64Array(c);
  const nzIdx = new Int32Array(c);
  const active = [];
  for (let k = 0; k < c; k++) if (coefs[k] !== 0) active.push(k);
  const liveMoves = moves.filter((m) => m[2] !== 0);
  if (!active.length && !liveMoves.length) { preds.set(basePreds); return { preds, moved: 0, touchedRows }; }
  let moved = 0;
  for (let i = 0; i < n; i++) {
    const row = i * c;
    let touched = false;
    for (const k of active) {
      if (gammas === null || cos[row + k] > gammas[k] || basePreds[i] === k) {
        if (!touched) { b.fill(0); touched = true; }
        b[k] += coefs[k];
      }
    }
    for (const [s, tgt, alpha] of liveMoves) {
      if (gammas === null || cos[row + s] > gammas[s] || basePreds[i] === s) {
        if (!touched) { b.fill(0); touched = true; }
        b[tgt] += alpha; b[s] -= alpha;
      }
    }
    if (!touched) { preds[i] = basePreds[i]; continue; }
    let nz = 0; // the classes this row's edit adds (usually one): C x nz work instead of C x C
    for (let k = 0; k < c; k++) if (b[k] !== 0) nzIdx[nz++] = k;
    let best = 0;
    let bestValue = -Infinity;
    for (let j = 0; j < c; j++) {
      let v = base[row + j];
      for (let q = 0; q < nz; q++) v += b[nzIdx[q]] * kh[nzIdx[q] * c + j];
      if (v > bestValue) { bestValue = v; best = j; }
    }
    preds[i] = best;
    moved++; touchedRows[i] = 1;
  }
  return { preds, moved, touchedRows };
}

// Per-class accuracy (C, NaN for an empty class) and the confusion matrix (C*C, rows = true class).
export function scoreOf(preds, labels, c) {
  const confusion = new Int32Array(c * c);
  for (let i = 0; i < preds.length; i++) confusion[labels[i] * c + preds[i]]++;
  const perClass = new Float64Array(c);
  for (let k = 0; k < c; k++) {
    let support = 0;
    for (let j = 0; j < c; j++) support += confusion[k * c + j];
    perClass[k] = support ? confusion[k * c + k] / support : NaN;
  }
  return { perClass, confusion };
}

// The classes an edit forgets (cv_core.editspec.forget_set): a negative coefficient, or the source of a
// move with alpha > 0. The UI never builds a move onto itself (the library rejects one).
export function forgetSet(coefs, moves) {
  const out = new Set();
  coefs.forEach((a, k) => { if (a < 0) out.add(k); });
  moves.forEach(([s, , alpha]) => { if (alpha > 0) out.add(s); });
  return out;
}

// (forget, retain) accuracy, sample-weighted (cv_core.math.metrics.forget_retain, the one rule): correct /
// count over the images of the forgotten classes, and over all other images. Nothing forgotten: forget is
// null and retain the overall accuracy. A side without images is NaN. confusion: C*C, rows = true class.
export function forgetRetain(confusion, c, forgotten) {
  let fc = 0, fn = 0, rc = 0, rn = 0;
  for (let k = 0; k < c; k++) {
    let support = 0;
    for (let j = 0; j < c; j++) support += confusion[k * c + j];
    if (forgotten.has(k)) { fc += confusion[k * c + k]; fn += support; } else { rc += confusion[k * c + k]; rn += support; }
  }
  return [forgotten.size ? (fn ? fc / fn : NaN) : null, rn ? rc / rn : NaN];
}

const pct = (v) => (Number.isFinite(v) ? Math.min(Math.max(100 * v, 0), 100) : 0);
const blue = (p) => {
  const t = Math.min(Math.max(p, 0), 100) / 100;
  const mix = (lo, hi) => Math.round(lo + t * (hi - lo));
  return `rgb(${mix(247, 8)},${mix(251, 48)},${mix(255, 107)})`;
};

function barsHtml(before, after, names, edited) {
  const groups = names.map((name, k) => {
    const label = esc(edited.has(k) ? `${name} *` : name);
    const b = pct(before[k]), a = pct(after[k]);
    return `<div class="group" title="${label}: before ${b.toFixed(1)}%, after ${a.toFixed(1)}%">` +
      `<div class="pair"><div style="height:${b.toFixed(1)}%;background:${BEFORE}"></div>` +
      `<div style="height:${a.toFixed(1)}%;background:${afterColor(b, a)}"></div></div>` +
      `<div class="tick${edited.has(k) ? " edited" : ""}">${label}</div></div>`;
  });
  const axis = `<div class="axis"><span style="top:0">100%</span><span style="top:50%">50%</span>` +
    `<span style="top:100%">0%</span></div>`;
  return `<div class="title">Per-class accuracy</div><div class="legend"><span style="color:${BEFORE}">■</span> before ` +
    `&nbsp; after: <span style="color:${SAME}">■</span> same <span style="color:${DROP}">■</span> dropped ` +
    `<span style="color:${RISE}">■</span> rose &nbsp; (* edited class)</div>` +
    `<div class="bars-wrap">${axis}<div class="bars"><div class="grid" style="top:0"></div>` +
    `<div class="grid" style="top:calc((100% - 15px) / 2)"></div>${groups.join("")}</div></div>`;
}

function confusionHtml(confusion, names) {
  const c = names.length;
  const numbers = c <= LABELLED_UP_TO;
  const head = names.map((n) => `<th>${esc(n)}</th>`).join("");
  const rows = names.map((name, i) => {
    let support = 0;
    for (let j = 0; j < c; j++) support += confusion[i * c + j];
    const cells = names.map((other, j) => {
      const p = (100 * confusion[i * c + j]) / Math.max(support, 1);
      return `<td${p >= 99.5 ? ' class="full"' : ""} style="background:${blue(p)};color:${p > 55 ? "#fff" : "#000"}" title="true ${esc(name)}, ` +
        `predicted ${esc(other)}: ${p.toFixed(1)}% (${confusion[i * c + j]})">${numbers ? p.toFixed(0) : ""}</td>`;
    }).join("");
    return `<tr><th class="row">${esc(name)}</th>${cells}</tr>`;
  }).join("");
  return `<div class="title">Confusion matrix after the edit</div><div class="legend">rows: true class, columns: ` +
    `predicted (% of the row)</div><table class="confusion"><tr><th></th>${head}</tr>${rows}</table>`;
}

// Many classes: a table of C x C cells costs the browser ~150 ms of layout per movement at C = 100,
// so the matrix is painted on a canvas instead, with the cell under the mouse named in a tooltip.
function drawConfusion(view, confusion) {
  const box = view.wrap.querySelector(".confusion-chart");
  const names = view.names, c = names.length;
  if (c <= LABELLED_UP_TO) { box.innerHTML = confusionHtml(confusion, names); return; }
  if (!box.querySelector("canvas")) {
    box.innerHTML = `<div class="title">Confusion matrix after the edit</div><div class="legend">rows: true class, ` +
      `columns: predicted (% of the row); hover a cell</div><div class="cvs-map"><canvas></canvas>` +
      `<div class="tip" hidden></div></div>`;
    const canvas = box.querySelector("canvas"), tip = box.querySelector(".tip");
    canvas.addEventListener("mousemove", (e) => {
      const r = canvas.getBoundingClientRect(), cell = r.width / c;
      const i = Math.floor((e.clientY - r.top) / cell), j = Math.floor((e.clientX - r.left) / cell);
      const m = view.confusion;
      if (!m || i < 0 || j < 0 || i >= c || j >= c) { tip.hidden = true; return; }
      let support = 0;
      for (let k = 0; k < c; k++) support += m[i * c + k];
      tip.hidden = false;
      tip.style.left = `${e.clientX - r.left + 12}px`; tip.style.top = `${e.clientY - r.top + 12}px`;
      tip.textContent = `true ${names[i]}, predicted ${names[j]}: ` +
        `${((100 * m[i * c + j]) / Math.max(support, 1)).toFixed(1)}% (${m[i * c + j]})`;
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  }
  view.confusion = confusion;
  // one pixel per cell in an image of c x c, scaled up without smoothing: ~1 ms at c = 1000 where
  // c^2 rectangles cost hundreds
  const size = Math.max(120, Math.min(box.clientWidth || 300, 420));
  const { ctx } = prepareCanvas(box.querySelector("canvas"), size, size, [0, 1, 0, 1]);
  const image = new ImageData(c, c);
  for (let i = 0; i < c; i++) {
    let support = 0;
    for (let k = 0; k < c; k++) support += confusion[i * c + k];
    for (let j = 0; j < c; j++) {
      const t = Math.min(Math.max(confusion[i * c + j] / Math.max(support, 1), 0), 1), o = 4 * (i * c + j);
      image.data[o] = Math.round(247 + t * (8 - 247)); image.data[o + 1] = Math.round(251 + t * (48 - 251));
      image.data[o + 2] = Math.round(255 + t * (107 - 255)); image.data[o + 3] = 255;
    }
  }
  if (!view.cells || view.cells.width !== c) { view.cells = document.createElement("canvas"); view.cells.width = c; view.cells.height = c; }
  view.cells.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(view.cells, 0, 0, size, size);
}

function metricHtml(label, value, delta, inverse) {
  let d = "";
  if (delta !== null && Number.isFinite(delta)) {
    const shown = Math.round(delta * 10) / 10 || 0; // what is printed decides the colour (no red "-0.0")
    const good = inverse ? shown < 0 : shown > 0;
    const cls = shown === 0 ? "flat" : good ? "good" : "bad";
    d = `<div class="delta ${cls}">${shown >= 0 ? "+" : ""}${shown.toFixed(1)} pts</div>`;
  }
  return `<div class="metric" data-metric="${esc(label)}"><div class="label">${esc(label)}</div>` +
    `<div class="value">${esc(value)}</div>${d}</div>`;
}

function build(root, data, tables) {
  root.innerHTML = "";
  const view = { root, digest: data.digest, rev: null, names: data.names, tables, thumbs: new Map() };
  const wrap = document.createElement("div");
  wrap.className = "cvs-live";
  wrap.innerHTML = `<div class="sliders" role="group" aria-label="Class coefficients"><div class="title">` +
    `Class coefficients</div></div><div class="results"><div class="metrics"></div><div class="edit"></div>` +
    `<div class="charts"><div class="chart bars-chart"></div><div class="chart confusion-chart"></div></div>` +
    `<div class="timing"></div><div class="sample-note legend"></div></div><div class="map cvs-map" hidden><div class="title map-title"></div>` +
    `<div class="legend map-status"></div><div class="legend map-classes"></div><div class="map-colour" role="radiogroup" ` +
    `aria-label="Colour by"></div><div class="plot"></div><div class="tip" hidden></div></div>`;
  root.appendChild(wrap);
  view.wrap = wrap;
  view.colors = data.colors;
  wrap.querySelector(".map-classes").innerHTML = legendHtml(data.names, data.colors);
  const list = wrap.querySelector(".sliders");
  if (data.names.length > LABELLED_UP_TO) { // many classes: a filter and a scrolling list
    list.classList.add("many");
    const filter = document.createElement("input");
    filter.type = "search"; filter.placeholder = "filter classes"; filter.className = "filter";
    filter.setAttribute("aria-label", "Filter classes");
    filter.addEventListener("input", () => {
      const q = filter.value.trim().toLowerCase();
      view.sliders.forEach((s, k) => { s.parentElement.hidden = q !== "" && !data.names[k].toLowerCase().includes(q); });
    });
    list.appendChild(filter);
  }
  view.sliders = data.names.map((name, k) => {
    const line = document.createElement("label");
    line.className = "slider";
    line.innerHTML = `<span class="name">${esc(name)}</span><input type="range" min="-3" max="3" step="0.05" ` +
      `value="0" aria-label="${esc(name)}" data-class="${k}"><output>0.00</output>`;
    wrap.querySelector(".sliders").appendChild(line);
    const input = line.querySelector("input");
    input.addEventListener("input", () => { line.querySelector("output").textContent = (+input.value).toFixed(2); draw(view); });
    input.addEventListener("change", () => view.setStateValue("coefs", { values: coefsOf(view), rev: view.rev }));
    return input;
  });
  const before = predict(view.tables, new Array(data.names.length).fill(0), null, []);
  view.before = scoreOf(before.preds, view.tables.labels, view.tables.c);
  return view;
}

const coefsOf = (view) => view.sliders.map((s) => +s.value);

function draw(view) {
  const start = performance.now();
  const { names, tables } = view;
  const coefs = coefsOf(view);
  const moves = view.moves;
  // the server's answer to a release redraws for the values the sliders already show: their predictions
  // (a pass over every row: ~40 ms at a million) are kept from the last movement
  const key = JSON.stringify([coefs, view.gammas, moves]);
  if (!view.scored || view.scored.key !== key) {
    const p = predict(tables, coefs, view.gammas, moves);
    view.scored = { key, ...p, after: scoreOf(p.preds, tables.labels, tables.c) };
  }
  const { preds, moved, touchedRows, after } = view.scored;
  const edited = new Set();
  coefs.forEach((a, k) => { if (a !== 0) edited.add(k); });
  moves.forEach(([s, , alpha]) => { if (alpha !== 0) edited.add(s); });
  const forgotten = forgetSet(coefs, moves);
  let [forget, retain] = forgetRetain(after.confusion, tables.c, forgotten);
  const [forgetBefore, retainBefore] = forgetRetain(view.before.confusion, tables.c, forgotten);
  if (forget === null) forget = NaN;  // shown as "—"
  const show = (v) => (Number.isNaN(v) ? "—" : `${(100 * v).toFixed(1)}%`);
  const editedNames = [...edited].sort((x, y) => x - y).map((k) => names[k]).join(", ") || "none";
  view.wrap.querySelector(".metrics").innerHTML =
    metricHtml("Edited classes", editedNames, null, false) +
    metricHtml("Forget accuracy", show(forget), Number.isNaN(forget) ? null : 100 * (forget - forgetBefore), true) +
    metricHtml("Retain accuracy", show(retain), Number.isNaN(retain) ? null : 100 * (retain - retainBefore), false);
  const terms = coefs.flatMap((a, k) => (a ? [`${names[k]} × ${a >= 0 ? "+" : ""}${a.toFixed(2)}`] : []))
    .concat(moves.filter((m) => m[2]).map(([s, t, a]) => `${names[s]}→${names[t]} (α=${a})`));
  view.wrap.querySelector(".edit").textContent = `Edit: ${terms.length ? terms.join("; ") : "none"}`;
  view.wrap.querySelector(".bars-chart").innerHTML = barsHtml(view.before.perClass, after.perClass, names, edited);
  drawConfusion(view, after.confusion);
  view.last = { coefs, preds, touchedRows, moved };
  const chartsMs = performance.now() - start;
  drawMap(view);
  const ms = performance.now() - start;
  const timing = view.wrap.querySelector(".timing");
  timing.textContent = `Scored and drawn in your browser in ${ms.toFixed(1)} ms` +
    `${view.map ? ` (map ${(ms - chartsMs).toFixed(1)} ms)` : ""}; ${moved.toLocaleString()} of ` +
    `${tables.n.toLocaleString()} points edited.`;
  timing.dataset.ms = ms.toFixed(2);
  view.wrap.dataset.coefs = coefs.join(",");
  view.wrap.dataset.drawn = String((+view.wrap.dataset.drawn || 0) + 1);
}


// ------------------------------------------------------------------ the map
// A WebGL point layer (gl_points.js): every point at its map position, coloured by true class or by
// the prediction after the edit; the points the edit touches are drawn on top, outlined: at their old
// position while a slider moves, at the position the server re-projected once it answers for exactly
// these coefficients (their old position then marked in grey). Positions are re-uploaded only when
// the server's answer changes them; a slider movement uploads only colours and the touched flags.

function mapState(m, xy) {
  if (!m || !xy) return null;
  return {
    key: m.key, extent: m.extent, xy,
    coefs: m.coefs, index: m.index ? decodeInt32(m.index) : new Int32Array(0),
    movedXy: m.moved_xy ? decodeFloat32(m.moved_xy) : new Float32Array(0), serverMs: m.ms,
  };
}

const sameCoefs = (a, b) => a && b && a.length === b.length && a.every((v, k) => Math.abs(v - b[k]) < 1e-9);
const MAP_COLOURS = ["true class", "prediction"];

function mapLayer(view) {
  if (view.layer) return view.layer;
  const box = view.wrap.querySelector(".map");
  view.mapColour = MAP_COLOURS[0];
  const layer = createPointLayer(box.querySelector(".plot"), {
    height: 460, extent: view.map.extent, onHover: (i, mx, my) => view.showTip(i, mx, my),
  });
  layer.setPalette(view.colors);
  const describe = (i) => `image #${view.tables.rows ? view.tables.rows[i] : i} · true: ` +
    `${view.names[view.tables.labels[i]]} · predicted: ${view.names[view.hover.preds[i]]}` +
    `${view.hover.touchedRows[i] ? " · edited" : ""}`;
  const rowOf = (i) => (view.tables.rows ? view.tables.rows[i] : i);
  view.showTip = attachGlTooltip(layer, box.querySelector(".tip"), describe,
    (i) => atlasImage(view.tables.atlas, i) || view.thumbs.get(rowOf(i)) || null,
    view.tables.atlas || !view.images ? null : (i) => view.requestImage && view.requestImage(rowOf(i)));
  MAP_COLOURS.forEach((name) => {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = name; b.setAttribute("role", "radio");
    b.addEventListener("click", () => { view.mapColour = name; drawMap(view, true); });
    box.querySelector(".map-colour").appendChild(b);
  });
  if (window.ResizeObserver) new ResizeObserver(() => layer.redraw()).observe(box);
  view.layer = layer;
  return layer;
}

// The thumbnail of image i cut from the run's sheet (a small run), as an element, or null.
function atlasImage(atlas, i) {
  if (!atlas) return null;
  const z = 2, col = i % atlas.cols, row = Math.floor(i / atlas.cols);
  const thumb = document.createElement("div");
  Object.assign(thumb.style, { width: `${atlas.cell * z}px`, height: `${atlas.cell * z}px`,
    backgroundImage: `url("${atlas.src}")`, imageRendering: "pixelated",
    backgroundSize: `${atlas.cols * atlas.cell * z}px auto`,
    backgroundPosition: `-${col * atlas.cell * z}px -${row * atlas.cell * z}px` });
  thumb.className = "thumb";
  return thumb;
}

function drawMap(view, force = false) {
  const box = view.wrap.querySelector(".map");
  const map = view.map;
  box.hidden = !map;
  if (!map || !view.last) return;
  const { tables } = view;
  const { coefs, preds, touchedRows, moved } = view.last;
  const answered = sameCoefs(map.coefs, coefs);
  const layer = mapLayer(view);
  view.hover = { preds, touchedRows };
  // A map whose drawing is slow (a million points in software WebGL take ~0.5-1 s, on the cores the server
  // places the moved points with) is not redrawn for slider values the server has not answered: the
  // release's answer redraws it once, with the moved points in place. A fast map redraws on every movement.
  if (!force && !answered && layer.slowDraw()) {
    box.querySelector(".map-status").textContent = `the map is redrawn when the server answers for these ` +
      `values (release the slider): drawing its ${tables.n.toLocaleString()} points took ` +
      `${(layer.frameMs / 1000).toFixed(1)} s in this browser · colour: ${view.mapColour}`;
    box.dataset.answered = "0";
    box.dataset.deferred = String((+box.dataset.deferred || 0) + 1);
    return;
  }
  const posKey = `${map.key}|${answered ? map.coefs.join(",") + "|" + map.serverMs : ""}`;
  if (layer.posKey !== posKey) { // positions change only when the server's answer does
    let pos = map.xy;
    // the points the server moved are the ones this edit touches (the same gate): every other point is at
    // its place on the unedited map, so the layer may keep its picture of them (gl_points.js, drawGl)
    let unmovedAtBase = true;
    if (answered && map.index.length) {
      pos = Float32Array.from(map.xy);
      map.index.forEach((i, k) => {
        pos[2 * i] = map.movedXy[2 * k]; pos[2 * i + 1] = map.movedXy[2 * k + 1];
        if (!touchedRows[i]) unmovedAtBase = false;
      });
    }
    layer.setPoints(pos, map.extent, unmovedAtBase ? map.key : null);
    layer.posKey = posKey;
  }
  // untouched points keep their class and their unedited prediction (predict): the same for every edit
  layer.setCategories(view.mapColour === "prediction" ? preds : tables.labels, `${view.mapColour}|${view.digest}`);
  layer.setFlags(touchedRows);
  layer.setOverlay(answered && map.index.length ? (ctx, sx, sy) => { // where the moved points were before the edit
    ctx.fillStyle = "rgba(90,90,90,0.35)";
    for (let k = 0; k < map.index.length; k++) {
      const i = map.index[k];
      ctx.fillRect(sx(map.xy[2 * i]) - 1.5, sy(map.xy[2 * i + 1]) - 1.5, 3, 3);
    }
  } : null);
  layer.draw();
  for (const b of box.querySelectorAll(".map-colour button")) {
    const on = b.textContent === view.mapColour;
    b.setAttribute("aria-checked", String(on)); b.classList.toggle("on", on);
  }
  box.querySelector(".map-title").textContent = `Edited fine-tuned latents (UMAP) · ${moved.toLocaleString()} of ` +
    `${tables.n.toLocaleString()} points moved by the edit`;
  box.querySelector(".map-status").textContent = (!moved ? "hover a point for its prediction; drag to pan, wheel to zoom"
    : answered ? `outlined: edited points at their re-projected positions (grey: before the edit); ` +
        `re-projected on the server in ${map.serverMs.toFixed(0)} ms`
    : "outlined: the points this edit moves, at their old positions; release the slider to re-project them") +
    ` · colour: ${view.mapColour}`;
  box.dataset.answered = answered ? "1" : "0";
  box.dataset.drawn = String((+box.dataset.drawn || 0) + 1);
}

export default function (component) {
  try {
    render(component);
  } catch (err) { // say so in the page (a bug must read as a sentence, not as an empty box)
    const root = component.parentElement.querySelector(".cvs-live-root") || component.parentElement;
    root.textContent = `The live editor failed: ${err && err.message ? err.message : err}. Reload the page; ` +
      "the server-side caption below still shows the scores of the last release.";
    throw err;
  }
}

function render(component) {
  const { parentElement, setStateValue } = component;
  let { data } = component;
  if (data instanceof Uint8Array) data = fromPacket(data);
  if (!data || !data.names) return;
  if (data.base) remember(TABLES, data.digest, decodeTables(data));
  if (data.map && data.map.xy) remember(MAPS, data.map.key, decodeFloat32(data.map.xy));
  const tables = TABLES.get(data.digest);
  const mapXy = data.map ? MAPS.get(data.map.key) : undefined;
  const have = { tables: tables ? data.digest : null, map: mapXy ? data.map.key : null };
  // build inside the component's own root: the parent (a shadow root) also holds the stylesheet
  const root = parentElement.querySelector(".cvs-live-root") || parentElement;
  const sent = SENT.get(root);
  if (!sent || sent.tables !== have.tables || sent.map !== have.map) {
    SENT.set(root, have);
    setStateValue("have", have); // the server sends what is missing, or stops resending what is here
  }
  if (!tables) { root.textContent = "Loading the run's tables…"; return; }
  let view = CACHE.get(root);
  if (!view || view.digest !== data.digest) {
    view = build(root, data, tables);
    CACHE.set(root, view);
  }
  view.setStateValue = setStateValue;
  view.gammas = data.gammas;
  view.moves = data.moves || [];
  view.map = mapState(data.map, mapXy);
  view.images = !!data.images;
  view.requestImage = (row) => setStateValue("hover", { row, digest: data.digest });
  if (data.thumb && data.thumb.digest === data.digest) { // the image of the point the mouse rests on
    view.thumbs.set(data.thumb.row, data.thumb.src);
    if (view.layer && view.layer.tooltip) view.layer.tooltip.refresh();
  }
  view.note = data.note || "";
  view.wrap.querySelector(".sample-note").textContent = view.note;
  if (view.rev !== data.rev) { // the server set the coefficients (a preset, a reset, another page)
    view.rev = data.rev;
    view.sliders.forEach((s, k) => {
      s.value = String(data.coefs[k]);
      s.parentElement.querySelector("output").textContent = (+data.coefs[k]).toFixed(2);
    });
  }
  draw(view);
}
