// The Geometry page's map: pretrained and fine-tuned latents in one UMAP, drawn with WebGL (up to a
// million points per encoder; gl_points.js), coloured by true class or by prediction, the class
// centroids (pretrained ○, fine-tuned ×) joined by the class vectors as arrows, pan and zoom, and a
// hover that names the point and shows its image, fetched from the server for that one point.
// The data is one binary packet (app/components/packet.py): positions as float16, classes as uint16.
// unpackPacket, halfToFloat, createPointLayer, attachGlTooltip: gl_points.js; esc, legendHtml:
// map_canvas.js (both prepended).

const VIEWS = ["fine-tuned", "pretrained", "both"];
const COLOURS = ["true class", "prediction"];
const CACHE = new WeakMap(); // root -> view
const HELD = new Map(); // digest -> decoded arrays (kept across reruns; the server stops resending them)
const SENT = new WeakMap(); // root -> the digest last reported as held
const GREY = "rgb(160,160,160)";

// The packet's arrays as the map uses them: positions float32 (2n), classes uint16 (n).
export function decodeMap(arrays) {
  return {
    pre: halfToFloat(arrays.pre_xy), ft: halfToFloat(arrays.ft_xy), labels: arrays.labels,
    prePred: arrays.pre_pred, ftPred: arrays.ft_pred, rows: arrays.rows || null,
  };
}

function build(root, header, d) {
  root.innerHTML = "";
  const box = document.createElement("div");
  box.className = "cvs-map cvs-latent";
  box.innerHTML = `<div class="bar"><span class="title"></span><span class="controls"><span class="views" ` +
    `role="radiogroup" aria-label="Show"></span><span class="colours" role="radiogroup" aria-label="Colour by">` +
    `</span></span></div><div class="sample-note"></div><div class="map-classes"></div><div class="plot"></div>` +
    `<div class="tip" hidden></div><div class="note">Arrows go from each class's pretrained centroid (○) to its ` +
    `fine-tuned centroid (×): the class vectors. Drag to pan, wheel to zoom, double-click to reset; hover a point ` +
    `for its image, true class and prediction. Where points overlap the colour is denser.</div>`;
  root.appendChild(box);
  const n = header.n;
  const view = { box, header, d, n, show: VIEWS[0], colour: COLOURS[0], thumbs: new Map() };
  box.querySelector(".map-classes").innerHTML = legendHtml(header.names, header.colors);
  const tip = box.querySelector(".tip");
  // hover indices: fine-tuned points 0..n-1, pretrained n..2n-1 (both sets live in one layer)
  const rowOf = (i) => { const k = i >= n ? i - n : i; return d.rows ? d.rows[k] : k; };
  const describe = (i) => {
    const pre = i >= n, k = pre ? i - n : i;
    const pred = (pre ? d.prePred : d.ftPred)[k];
    return `image #${rowOf(i)} · ${pre ? "pretrained" : "fine-tuned"} latent · true: ${header.names[d.labels[k]]} · ` +
      `predicted: ${header.names[pred]}`;
  };
  view.layer = createPointLayer(box.querySelector(".plot"), {
    height: 560, extent: header.extent,
    onHover: (i, mx, my) => view.showTip(i, mx, my),
  });
  view.layer.setPalette([...header.colors, GREY]);
  const xy = new Float32Array(4 * n);
  xy.set(d.ft, 0); xy.set(d.pre, 2 * n);
  view.layer.setPoints(xy, header.extent);
  view.showTip = attachGlTooltip(view.layer, tip, describe, (i) => view.thumbs.get(rowOf(i)) || null,
    header.images ? (i) => view.request(rowOf(i)) : null);
  view.layer.setOverlay((ctx, sx, sy) => arrows(ctx, sx, sy, view.header));
  const group = (cls, names, key) => names.forEach((name) => {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = name; b.setAttribute("role", "radio");
    b.addEventListener("click", () => { view[key] = name; draw(view); });
    box.querySelector(cls).appendChild(b);
  });
  group(".views", VIEWS, "show");
  group(".colours", COLOURS, "colour");
  if (window.ResizeObserver) new ResizeObserver(() => view.layer.redraw()).observe(box);
  return view;
}

function arrow(ctx, x0, y0, x1, y1, color) {
  const a = Math.atan2(y1 - y0, x1 - x0), head = 9;
  ctx.strokeStyle = color; ctx.lineWidth = 2.5;
  ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
  ctx.beginPath(); ctx.moveTo(x1, y1);
  ctx.lineTo(x1 - head * Math.cos(a - 0.4), y1 - head * Math.sin(a - 0.4));
  ctx.lineTo(x1 - head * Math.cos(a + 0.4), y1 - head * Math.sin(a + 0.4));
  ctx.closePath(); ctx.fillStyle = color; ctx.fill();
}

// class vectors: pretrained centroid (○) -> fine-tuned centroid (×)
function arrows(ctx, sx, sy, header) {
  header.names.forEach((_, c) => {
    const [px, py] = header.pre_centroids[c], [fx, fy] = header.ft_centroids[c];
    const col = header.colors[c % header.colors.length];
    arrow(ctx, sx(px), sy(py), sx(fx), sy(fy), col);
    ctx.lineWidth = 2; ctx.strokeStyle = "#000";
    ctx.beginPath(); ctx.arc(sx(px), sy(py), 6, 0, 2 * Math.PI); ctx.fillStyle = "#fff"; ctx.fill(); ctx.stroke();
    ctx.beginPath(); ctx.arc(sx(px), sy(py), 4, 0, 2 * Math.PI); ctx.strokeStyle = col; ctx.stroke();
    ctx.lineWidth = 3; ctx.strokeStyle = "#000";
    ctx.beginPath(); ctx.moveTo(sx(fx) - 6, sy(fy) - 6); ctx.lineTo(sx(fx) + 6, sy(fy) + 6);
    ctx.moveTo(sx(fx) - 6, sy(fy) + 6); ctx.lineTo(sx(fx) + 6, sy(fy) - 6); ctx.stroke();
  });
}

function draw(view) {
  const { box, header, d, n, layer } = view;
  const showPre = view.show !== "fine-tuned", showFt = view.show !== "pretrained";
  const byPred = view.colour === "prediction", grey = header.colors.length;
  const cat = new Uint16Array(2 * n), flags = new Uint8Array(2 * n);
  for (let k = 0; k < n; k++) {
    cat[k] = byPred ? d.ftPred[k] : d.labels[k];
    cat[n + k] = view.show === "both" ? grey : byPred ? d.prePred[k] : d.labels[k];
    if (!showFt) flags[k] = 2;
    if (!showPre) flags[n + k] = 2;
  }
  layer.setCategories(cat);
  layer.setFlags(flags);
  layer.draw();
  box.querySelector(".title").textContent = `${view.show === "both" ? "Pretrained (grey) and fine-tuned" :
    view.show === "pretrained" ? "Pretrained" : "Fine-tuned"} latents (UMAP) · ${n.toLocaleString()} test images` +
    ` · colour: ${view.colour}`;
  for (const b of box.querySelectorAll(".controls button")) {
    const on = b.textContent === view.show || b.textContent === view.colour;
    b.setAttribute("aria-checked", String(on)); b.classList.toggle("on", on);
  }
  box.dataset.show = view.show;
  box.dataset.colour = view.colour;
  box.dataset.drawn = String((+box.dataset.drawn || 0) + 1);
  box.dataset.drawMs = layer.drawMs.toFixed(1);
}

function render(component) {
  const { parentElement, data, setStateValue } = component;
  if (!data) return;
  const { header, arrays } = unpackPacket(data);
  const root = parentElement.querySelector(".cvs-latent-root") || parentElement;
  if (arrays.ft_xy) { HELD.set(header.digest, decodeMap(arrays)); while (HELD.size > 2) HELD.delete(HELD.keys().next().value); }
  const d = HELD.get(header.digest);
  const have = d ? header.digest : null;
  if (setStateValue && SENT.get(root) !== have) { // the server stops resending what is here
    SENT.set(root, have);
    setStateValue("have", have);
  }
  if (!d) { root.textContent = "Loading the map…"; return; }
  let view = CACHE.get(root);
  if (!view || view.header.digest !== header.digest) {
    view = build(root, header, d);
    CACHE.set(root, view);
    draw(view);
  }
  view.header = header;
  view.request = (row) => { if (setStateValue) setStateValue("hover", { row, digest: header.digest }); };
  if (header.thumb && header.thumb.digest === header.digest) {
    view.thumbs.set(header.thumb.row, header.thumb.src);
    view.layer.tooltip.refresh();
  }
  view.box.querySelector(".sample-note").textContent = header.note || "";
}

export default function (component) {
  try {
    render(component);
  } catch (err) { // say so in the page (a bug must read as a sentence, not as an empty box)
    const root = component.parentElement.querySelector(".cvs-latent-root") || component.parentElement;
    root.textContent = `The map failed: ${err && err.message ? err.message : err}. Reload the page.`;
    throw err;
  }
}
