// The Geometry page's map: pretrained and fine-tuned latents in one UMAP, coloured by true class,
// the class centroids (pretrained ○, fine-tuned ×) joined by the class vectors as arrows, and a
// hover that shows the image, its true class and the prediction of the encoder whose latent it is.
// Which latents are shown (fine-tuned, pretrained, both) is switched here, without a server rerun.
// decodeFloat32, esc, prepareCanvas, legendHtml, attachTooltip: map_canvas.js, prepended.

const VIEWS = ["fine-tuned", "pretrained", "both"];
const CACHE = new WeakMap();

function build(root, data) {
  root.innerHTML = "";
  const box = document.createElement("div");
  box.className = "cvs-map cvs-latent";
  box.innerHTML = `<div class="bar"><span class="title"></span><span class="views" role="radiogroup" ` +
    `aria-label="Show"></span></div><div class="map-classes"></div><canvas></canvas><div class="tip" hidden></div>` +
    `<div class="note">Arrows go from each class's pretrained centroid (○) to its fine-tuned centroid (×): the ` +
    `class vectors. Hover a point for its image, true class and prediction.</div>`;
  root.appendChild(box);
  const view = {
    box, data, show: VIEWS[0], n: data.labels.length,
    pre: decodeFloat32(data.pre_xy), ft: decodeFloat32(data.ft_xy),
  };
  box.querySelector(".map-classes").innerHTML = legendHtml(data.names, data.colors);
  const views = box.querySelector(".views");
  VIEWS.forEach((name) => {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = name; b.setAttribute("role", "radio");
    b.addEventListener("click", () => { view.show = name; draw(view); });
    views.appendChild(b);
  });
  const describe = (i) => {
    const pre = i >= view.n, k = pre ? i - view.n : i; // hover indices: fine-tuned first, then pretrained
    const pred = (pre ? data.pre_pred : data.ft_pred)[k];
    return `image #${k} · ${pre ? "pretrained" : "fine-tuned"} latent · true: ${data.names[data.labels[k]]} · ` +
      `predicted: ${data.names[pred]}`;
  };
  attachTooltip(box.querySelector("canvas"), box.querySelector(".tip"), () => view.hover, describe, data.atlas);
  if (window.ResizeObserver) new ResizeObserver(() => draw(view)).observe(box);
  return view;
}

function dots(ctx, xy, n, sx, sy, color, alpha) {
  const d = dotSize(n);
  ctx.globalAlpha = alpha;
  for (let i = 0; i < n; i++) {
    ctx.fillStyle = color(i);
    ctx.fillRect(sx(xy[2 * i]) - d / 2, sy(xy[2 * i + 1]) - d / 2, d, d);
  }
  ctx.globalAlpha = 1;
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

function draw(view) {
  const { box, data, n } = view;
  const width = Math.max(200, box.clientWidth || 600);
  const { ctx, sx, sy } = prepareCanvas(box.querySelector("canvas"), width, 560, data.extent);
  const colour = (i) => data.colors[data.labels[i] % data.colors.length];
  const showPre = view.show !== "fine-tuned", showFt = view.show !== "pretrained";
  if (view.show === "both") dots(ctx, view.pre, n, sx, sy, () => "rgb(150,150,150)", 0.35);
  else if (showPre) dots(ctx, view.pre, n, sx, sy, colour, 0.55);
  if (showFt) dots(ctx, view.ft, n, sx, sy, colour, 0.55);
  data.names.forEach((_, c) => { // class vectors: pretrained centroid -> fine-tuned centroid
    const [px, py] = data.pre_centroids[c], [fx, fy] = data.ft_centroids[c];
    const col = data.colors[c % data.colors.length];
    arrow(ctx, sx(px), sy(py), sx(fx), sy(fy), col);
    ctx.lineWidth = 2; ctx.strokeStyle = "#000";
    ctx.beginPath(); ctx.arc(sx(px), sy(py), 6, 0, 2 * Math.PI); ctx.fillStyle = "#fff"; ctx.fill(); ctx.stroke();
    ctx.beginPath(); ctx.arc(sx(px), sy(py), 4, 0, 2 * Math.PI); ctx.strokeStyle = col; ctx.stroke();
    ctx.lineWidth = 3; ctx.strokeStyle = "#000";
    ctx.beginPath(); ctx.moveTo(sx(fx) - 6, sy(fy) - 6); ctx.lineTo(sx(fx) + 6, sy(fy) + 6);
    ctx.moveTo(sx(fx) - 6, sy(fy) + 6); ctx.lineTo(sx(fx) + 6, sy(fy) - 6); ctx.stroke();
  });
  // hover candidates: the shown latents, fine-tuned rows first (index i) then pretrained (index n + i)
  const pos = new Float32Array(4 * n).fill(NaN);
  if (showFt) pos.set(view.ft, 0);
  if (showPre) pos.set(view.pre, 2 * n);
  view.hover = { pos, sx, sy, n: 2 * n, index: (i) => (i >= n ? i - n : i) };
  box.querySelector(".title").textContent = `${view.show === "both" ? "Pretrained (grey) and fine-tuned" :
    view.show === "pretrained" ? "Pretrained" : "Fine-tuned"} latents (UMAP) · ${n.toLocaleString()} test images`;
  box.querySelectorAll(".views button").forEach((b) => {
    b.setAttribute("aria-checked", String(b.textContent === view.show));
    b.classList.toggle("on", b.textContent === view.show);
  });
  box.dataset.show = view.show;
  box.dataset.drawn = String((+box.dataset.drawn || 0) + 1);
}

function render(component) {
  const { parentElement, data } = component;
  if (!data || !data.labels) return;
  const root = parentElement.querySelector(".cvs-latent-root") || parentElement;
  let view = CACHE.get(root);
  if (!view || view.data.digest !== data.digest) {
    view = build(root, data);
    CACHE.set(root, view);
  }
  draw(view);
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
