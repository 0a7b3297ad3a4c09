// Shared by the app's browser components (prepended to their own module source, see
// app/components/sources.py): decoding the server's float32 tables, a canvas sized to its box,
// the map's coordinate transform, and the hover tooltip with the image from the thumbnail sheet.

export function decodeFloat32(b64) {
  if (typeof b64 !== "string") return b64; // already a typed array (a binary packet's)
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

export function decodeInt32(b64) {
  if (typeof b64 !== "string") return b64;
  return new Int32Array(decodeFloat32(b64).buffer);
}

export const esc = (s) => String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch]));

// Size the canvas to its box (device pixels) and return {ctx, width, height, sx, sy}: map coordinates
// (extent = [x0, x1, y0, y1]) to CSS pixels, y up.
export function prepareCanvas(canvas, width, height, extent) {
  const dpr = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(width * dpr) || canvas.height !== Math.round(height * dpr)) {
    canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
    canvas.style.width = `${width}px`; canvas.style.height = `${height}px`;
  }
  const [x0, x1, y0, y1] = extent;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  return { ctx, width, height, sx: (x) => ((x - x0) / (x1 - x0)) * width, sy: (y) => height - ((y - y0) / (y1 - y0)) * height };
}

// Side of a point's square in CSS pixels: larger when there are few points.
export const dotSize = (n) => (n <= 1000 ? 5 : n <= 5000 ? 4 : 3);

// A class legend: one colour swatch per class name.
export function legendHtml(names, colors) {
  return names.map((name, k) =>
    `<span class="swatch" style="background:${esc(colors[k % colors.length])}"></span>${esc(name)}`).join(" ");
}

// Show `tip` next to the point under the mouse. pick() -> {pos (2N), sx, sy, n} or null (nothing drawn);
// describe(i) -> text of point i; atlas: {src, cell, cols} or null (then no image).
export function attachTooltip(canvas, tip, pick, describe, atlas) {
  canvas.addEventListener("mousemove", (e) => {
    const h = pick();
    if (!h) return;
    const r = canvas.getBoundingClientRect();
    const mx = e.clientX - r.left, my = e.clientY - r.top;
    let best = -1, bestD = 36; // within 6 px
    for (let i = 0; i < h.n; i++) {
      const dx = h.sx(h.pos[2 * i]) - mx, dy = h.sy(h.pos[2 * i + 1]) - my;
      const d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = i; }
    }
    if (best < 0) { tip.hidden = true; return; }
    tip.hidden = false;
    tip.style.left = `${mx + 12}px`; tip.style.top = `${my + 12}px`;
    tip.replaceChildren();
    const image = typeof atlas === "function" ? atlas() : atlas;
    if (image) { // the image itself, cut from the run's thumbnail sheet and shown at twice its size
      const index = h.index ? h.index(best) : best;
      const thumb = document.createElement("div");
      const z = 2, col = index % image.cols, row = Math.floor(index / image.cols);
      Object.assign(thumb.style, { width: `${image.cell * z}px`, height: `${image.cell * z}px`,
        backgroundImage: `url("${image.src}")`, imageRendering: "pixelated",
        backgroundSize: `${image.cols * image.cell * z}px auto`,
        backgroundPosition: `-${col * image.cell * z}px -${row * image.cell * z}px` });
      thumb.className = "thumb";
      tip.appendChild(thumb);
    }
    tip.appendChild(document.createTextNode(describe(best)));
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
}
