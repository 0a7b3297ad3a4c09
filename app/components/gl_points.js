// Shared by the maps (prepended, see app/components/sources.py): the server's binary packets
// (app/components/packet.py) and a WebGL2 point layer for up to a million points, with pan and zoom,
// colour by a category per point (class or prediction) from a palette, density shading (alpha
// compositing: where points pile up the colour saturates), a highlighted subset drawn on top, a
// 2-D overlay for arrows and markers, and picking of the point under the mouse from a grid index.
// Plain WebGL2, no library. A lost WebGL context (or none at all) switches to a 2-D canvas with a
// note saying so.

// ------------------------------------------------------------------ binary packets
const ARRAY_TYPES = { f4: Float32Array, f2: Uint16Array, u1: Uint8Array, u2: Uint16Array, i4: Int32Array, u4: Uint32Array };

// bytes (Uint8Array) -> {header, arrays}: float16 arrays come as their raw Uint16Array (see halfToFloat).
export function unpackPacket(bytes) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const magic = String.fromCharCode(u8[0], u8[1], u8[2], u8[3]);
  if (magic !== "CVSP") throw new Error("the server's data is not a map packet");
  const len = new DataView(u8.buffer, u8.byteOffset, 8).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(u8.subarray(8, 8 + len)));
  let start = 8 + len;
  start += (8 - (start % 8)) % 8;
  // typed arrays need aligned offsets: copy the array part once if the message's buffer is not aligned
  let buffer = u8.buffer, base = u8.byteOffset + start;
  if (base % 8 !== 0) { buffer = u8.slice(start).buffer; base = 0; }
  const arrays = {};
  for (const s of header.arrays) {
    const T = ARRAY_TYPES[s.dtype];
    if (!T) throw new Error(`unknown array type ${s.dtype}`);
    arrays[s.name] = new T(buffer, base + s.offset, s.nbytes / T.BYTES_PER_ELEMENT);
  }
  delete header.arrays;
  return { header, arrays };
}

let HALF = null; // float16 bit pattern -> float32 value, all 65,536 of them
export function halfToFloat(u16) {
  if (!HALF) {
    HALF = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      HALF[h] = e === 0 ? s * 2 ** -14 * (f / 1024) : e === 31 ? (f ? NaN : s * Infinity) : s * 2 ** (e - 15) * (1 + f / 1024);
    }
  }
  const out = new Float32Array(u16.length);
  for (let i = 0; i < u16.length; i++) out[i] = HALF[u16[i]];
  return out;
}

// "#rrggbb" or "rgb(r,g,b)" -> [r, g, b] 0..255
export function parseColor(css) {
  const s = String(css).trim();
  if (s[0] === "#") {
    const v = s.length === 4 ? s.slice(1).split("").map((ch) => ch + ch).join("") : s.slice(1, 7);
    return [0, 2, 4].map((k) => parseInt(v.slice(k, k + 2), 16));
  }
  const m = s.match(/[\d.]+/g);
  return m ? m.slice(0, 3).map(Number) : [100, 100, 100];
}

// ------------------------------------------------------------------ the point layer
const VERT = `#version 300 es
layout(location = 0) in vec2 a_pos;
layout(location = 1) in uint a_cat;
layout(location = 2) in uint a_flag;
uniform vec4 u_extent; uniform vec2 u_size; uniform vec3 u_view; uniform float u_point; uniform int u_pass;
uniform sampler2D u_palette;
out vec4 v_color; flat out int v_pass;
void main() {
  bool high = (a_flag & 1u) != 0u, hidden = (a_flag & 2u) != 0u;
  if (hidden || (u_pass == 0 && high) || (u_pass == 1 && !high)) { gl_Position = vec4(2.0, 2.0, 2.0, 1.0); gl_PointSize = 0.0; return; }
  float bx = (a_pos.x - u_extent.x) / (u_extent.y - u_extent.x) * u_size.x;
  float by = u_size.y - (a_pos.y - u_extent.z) / (u_extent.w - u_extent.z) * u_size.y;
  vec2 s = vec2(bx, by) * u_view.x + u_view.yz;
  gl_Position = vec4(s.x / u_size.x * 2.0 - 1.0, 1.0 - s.y / u_size.y * 2.0, 0.0, 1.0);
  gl_PointSize = u_pass == 1 ? u_point + 4.0 : u_point;
  v_color = texelFetch(u_palette, ivec2(int(a_cat), 0), 0);
  v_pass = u_pass;
}`;
const FRAG = `#version 300 es
precision mediump float;
in vec4 v_color; flat in int v_pass; uniform float u_alpha; out vec4 o;
void main() {
  vec2 c = gl_PointCoord * 2.0 - 1.0; float r = dot(c, c);
  if (r > 1.0) discard;
  if (v_pass == 1) { o = r > 0.45 ? vec4(0.0, 0.0, 0.0, 1.0) : vec4(v_color.rgb, 1.0); return; }
  o = vec4(v_color.rgb, u_alpha);
}`;

function compile(gl, type, src) {
  const sh = gl.createShader(type);
  gl.shaderSource(sh, src); gl.compileShader(sh);
  if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(sh));
  return sh;
}

// Points per grid cell of the picking index (about).
const PER_CELL = 8;
// A map whose last draw took longer than this to reach the screen (L.frameMs; three display frames)
// pans and zooms with the compositor (L.preview).
const SLOW_DRAW_MS = 50;
// ... and only from this many points: a smaller map is never slow to draw, whatever a busy machine's frame
// interval says (a 10,000-point map redraws on every movement, as tested end to end).
const SLOW_MIN_POINTS = 100000;
// From this many points the picture of the points that are not highlighted is kept between draws (drawGl).
const CACHE_MIN_POINTS = 100000;
// After the last wheel event of a zoom on such a map, its points are drawn again after this pause.
const SETTLE_MS = 180;

export function createPointLayer(box, opts) {
  const height = opts.height || 480;
  box.classList.add("cvs-gl");
  box.insertAdjacentHTML("beforeend", `<div class="gl-stack"><canvas class="gl"></canvas><canvas class="overlay">` +
    `</canvas></div><div class="gl-note" hidden></div>`);
  const stack = box.querySelector(".gl-stack"), glCanvas = stack.querySelector("canvas.gl");
  const overlay = stack.querySelector("canvas.overlay"), note = box.querySelector(".gl-note");
  const L = {
    box, note, mode: "webgl", gl: null, n: 0, xy: null, cat: null, flags: null, extent: opts.extent || [0, 1, 0, 1],
    palette: [[120, 120, 120]], view: { k: 1, tx: 0, ty: 0 }, width: 0, height, overlayFn: null, drawMs: NaN,
    frames: 0, posBase: null, catBase: null, flagHash: 0, paletteVersion: 0, baseSig: null, baseDraws: 0,
    baseReuses: 0,
  };
  box.__layer = L; // for tests and benchmarks
  const say = (text) => { note.hidden = !text; note.textContent = text || ""; };
  L.say = say;

  function initGl() {
    const gl = glCanvas.getContext("webgl2", { antialias: false, premultipliedAlpha: false, preserveDrawingBuffer: true });
    if (!gl) return null;
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(prog));
    const u = (name) => gl.getUniformLocation(prog, name);
    L.glState = {
      prog, vao: gl.createVertexArray(), pos: gl.createBuffer(), cat: gl.createBuffer(), flag: gl.createBuffer(),
      high: gl.createBuffer(), highCount: 0, palette: gl.createTexture(), fbo: null, rb: null, fboSize: "",
      u: { extent: u("u_extent"), size: u("u_size"), view: u("u_view"), point: u("u_point"), pass: u("u_pass"),
        alpha: u("u_alpha"), palette: u("u_palette") },
    };
    return gl;
  }

  function fallBack(reason) {
    L.mode = "canvas";
    glCanvas.hidden = true;
    say(`${reason}: the map is drawn on a 2-D canvas instead (slower with many points; pan, zoom and hover ` +
      "still work).");
    L.draw();
  }

  try { L.gl = initGl(); } catch (err) { L.gl = null; L.glError = String(err && err.message ? err.message : err); }
  if (!L.gl) { L.mode = "canvas"; glCanvas.hidden = true; say("WebGL2 is not available in this browser: the map is drawn on a 2-D canvas (slower with many points)."); }
  glCanvas.addEventListener("webglcontextlost", (e) => { e.preventDefault(); L.gl = null; fallBack("The browser's WebGL context was lost"); });

  function size() {
    const width = Math.max(200, box.clientWidth || 600);
    const dpr = window.devicePixelRatio || 1;
    for (const c of [glCanvas, overlay]) {
      if (c.width !== Math.round(width * dpr) || c.height !== Math.round(height * dpr)) {
        c.width = Math.round(width * dpr); c.height = Math.round(height * dpr);
        c.style.width = `${width}px`; c.style.height = `${height}px`;
      }
    }
    stack.style.height = `${height}px`;
    L.width = width; L.dpr = dpr;
  }

  // map coordinates -> CSS pixels of the canvas (with the current pan and zoom), and back
  L.sx = (x) => ((x - L.extent[0]) / (L.extent[1] - L.extent[0])) * L.width * L.view.k + L.view.tx;
  L.sy = (y) => (L.height - ((y - L.extent[2]) / (L.extent[3] - L.extent[2])) * L.height) * L.view.k + L.view.ty;
  L.dataX = (px) => L.extent[0] + ((px - L.view.tx) / L.view.k / L.width) * (L.extent[1] - L.extent[0]);
  L.dataY = (py) => L.extent[2] + ((L.height - (py - L.view.ty) / L.view.k) / L.height) * (L.extent[3] - L.extent[2]);

  L.setPalette = (colors) => {
    L.palette = colors.map(parseColor);
    L.paletteVersion++;
    const gl = L.gl;
    if (!gl) return;
    const data = new Uint8Array(4 * L.palette.length);
    L.palette.forEach((c, k) => data.set([c[0], c[1], c[2], 255], 4 * k));
    gl.bindTexture(gl.TEXTURE_2D, L.glState.palette);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA8, L.palette.length, 1, 0, gl.RGBA, gl.UNSIGNED_BYTE, data);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
  };

  // xy: Float32Array (2n) map positions. The picking grid is built at the next hover.
  // baseKey (optional): names the positions of the points that are not highlighted (flag 1) - the caller
  // vouches that they are the same whenever it passes the same key - so the picture of those points can be
  // reused (see drawGl); null: unknown, always drawn again.
  L.setPoints = (xy, extent, baseKey = null) => {
    L.xy = xy; L.n = xy.length / 2;
    if (extent) L.extent = extent;
    if (!L.flags || L.flags.length !== L.n) L.flags = new Uint8Array(L.n);
    if (!L.cat || L.cat.length !== L.n) L.cat = new Uint16Array(L.n);
    L.grid = null;
    L.posBase = baseKey === null ? null : `${baseKey}|${L.extent.join(",")}`;
    const gl = L.gl;
    if (gl) {
      gl.bindBuffer(gl.ARRAY_BUFFER, L.glState.pos);
      gl.bufferData(gl.ARRAY_BUFFER, xy, gl.STATIC_DRAW);
      uploadCat(); uploadFlags();
    }
  };
  // cat: one palette index per point (Uint16Array / Uint8Array / Int32Array of length n); baseKey: as for
  // setPoints, names the categories of the points that are not highlighted
  L.setCategories = (cat, baseKey = null) => {
    L.cat = cat instanceof Uint16Array ? cat : Uint16Array.from(cat); L.catBase = baseKey; uploadCat();
  };
  // flags per point: 1 = highlighted (drawn on top, outlined), 2 = hidden
  L.setFlags = (flags) => { L.flags = flags; uploadFlags(); };
  function uploadCat() {
    const gl = L.gl; if (!gl || !L.cat) return;
    gl.bindBuffer(gl.ARRAY_BUFFER, L.glState.cat); gl.bufferData(gl.ARRAY_BUFFER, L.cat, gl.DYNAMIC_DRAW);
  }
  function uploadFlags() {
    const gl = L.gl; if (!gl || !L.flags) return;
    gl.bindBuffer(gl.ARRAY_BUFFER, L.glState.flag); gl.bufferData(gl.ARRAY_BUFFER, L.flags, gl.DYNAMIC_DRAW);
    // The second pass (highlighted points, on top) draws only their indices: culling a million vertices in
    // the vertex shader cost as much as drawing them in software WebGL.
    let m = 0, h = 0x811c9dc5;
    for (let i = 0; i < L.flags.length; i++) {
      const f = L.flags[i];
      if (f) { h = Math.imul(h ^ (i * 4 + f), 16777619); if ((f & 3) === 1) m++; }
    }
    L.flagHash = (h >>> 0).toString(36) + ":" + m;
    const high = new Uint32Array(m);
    for (let i = 0, k = 0; i < L.flags.length; i++) if ((L.flags[i] & 3) === 1) high[k++] = i;
    gl.bindVertexArray(L.glState.vao);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, L.glState.high);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, high, gl.DYNAMIC_DRAW);
    gl.bindVertexArray(null);
    L.glState.highCount = m;
  }
  L.setOverlay = (fn) => { L.overlayFn = fn; };

  // Density shading: each point is drawn with this opacity, so a pixel's colour saturates where many
  // points overlap; fewer points on screen -> more opaque points.
  L.alpha = () => Math.min(0.85, Math.max(0.06, 40 / Math.sqrt(Math.max(L.n, 1)) * Math.sqrt(L.view.k)));
  L.pointSize = () => (L.n <= 1000 ? 6 : L.n <= 20000 ? 4 : L.n <= 200000 ? 3 : 2) * Math.min(3, Math.sqrt(L.view.k));

  L.draw = () => {
    const t0 = performance.now();
    size();
    if (L.mode === "webgl" && L.gl) drawGl(); else drawCanvas();
    L.drawnView = { ...L.view };
    glCanvas.style.transform = "";
    drawOverlay();
    L.drawMs = performance.now() - t0;
    // WebGL draws asynchronously: the next animation frame comes once the picture is made, so the time to
    // it is what a draw costs (a million points in software WebGL: 0.4-1.5 s; a GPU: one frame)
    requestAnimationFrame(() => { L.frameMs = performance.now() - t0; });
    L.frames++;
    box.dataset.mode = L.mode;
    box.dataset.frames = String(L.frames);
  };
  function drawOverlay() {
    const ctx = overlay.getContext("2d");
    ctx.setTransform(L.dpr, 0, 0, L.dpr, 0, 0);
    ctx.clearRect(0, 0, L.width, L.height);
    if (L.overlayFn) L.overlayFn(ctx, L.sx, L.sy);
  }
  // While a pan or zoom is under way on a map whose last full draw was slow (a million points drawn by
  // a software WebGL take 0.4-1.1 s a frame on a 2-core VM), the last drawn picture is moved and scaled
  // by the browser's compositor (a CSS transform: the same affine map as the view change) and only the
  // overlay is drawn; the points are drawn again, once, when the gesture ends. Fast maps redraw on every
  // frame as before.
  L.slowMs = SLOW_DRAW_MS; L.slowMinPoints = SLOW_MIN_POINTS; L.cacheMinPoints = CACHE_MIN_POINTS;
  L.slowDraw = () => L.mode === "webgl" && L.n >= L.slowMinPoints && L.frameMs > L.slowMs && !!L.drawnView;
  L.preview = () => {
    const a = L.drawnView, b = L.view, f = b.k / a.k;
    glCanvas.style.transform = `translate(${b.tx - f * a.tx}px, ${b.ty - f * a.ty}px) scale(${f})`;
    drawOverlay();
    L.previews = (L.previews || 0) + 1;
    box.dataset.previews = String(L.previews);
  };

  function drawGl() {
    const gl = L.gl, s = L.glState;
    gl.viewport(0, 0, glCanvas.width, glCanvas.height);
    gl.clearColor(0, 0, 0, 0); gl.clear(gl.COLOR_BUFFER_BIT);
    if (!L.n) return;
    gl.useProgram(s.prog);
    gl.bindVertexArray(s.vao);
    gl.bindBuffer(gl.ARRAY_BUFFER, s.pos); gl.enableVertexAttribArray(0); gl.vertexAttribPointer(0, 2, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, s.cat); gl.enableVertexAttribArray(1); gl.vertexAttribIPointer(1, 1, gl.UNSIGNED_SHORT, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, s.flag); gl.enableVertexAttribArray(2); gl.vertexAttribIPointer(2, 1, gl.UNSIGNED_BYTE, 0, 0);
    gl.activeTexture(gl.TEXTURE0); gl.bindTexture(gl.TEXTURE_2D, s.palette); gl.uniform1i(s.u.palette, 0);
    gl.uniform4f(s.u.extent, ...L.extent);
    gl.uniform2f(s.u.size, L.width, L.height);
    gl.uniform3f(s.u.view, L.view.k, L.view.tx, L.view.ty);
    gl.uniform1f(s.u.point, L.pointSize() * L.dpr);
    gl.uniform1f(s.u.alpha, L.alpha());
    gl.enable(gl.BLEND); gl.blendFuncSeparate(gl.SRC_ALPHA, gl.ONE_MINUS_SRC_ALPHA, gl.ONE, gl.ONE_MINUS_SRC_ALPHA);
    // The first pass (every point not highlighted) is drawn into a framebuffer kept between draws and copied
    // to the canvas: when the same points sit at the same places in the same colours under the same view
    // (a release that moves only the highlighted points: a million-point map in software WebGL redraws
    // its 100,000 moved points instead of all), the copy is all it costs. The copy is exact, so the picture
    // is the one a direct draw makes.
    const sig = L.posBase !== null && L.catBase !== null && L.n >= L.cacheMinPoints ? [L.posBase, L.catBase,
      L.flagHash, L.view.k, L.view.tx, L.view.ty, glCanvas.width, glCanvas.height, L.alpha(), L.pointSize(),
      L.paletteVersion, L.n].join("|") : null;
    if (sig !== null && baseFramebuffer(gl, s)) {
      if (sig !== L.baseSig) {
        gl.bindFramebuffer(gl.FRAMEBUFFER, s.fbo);
        gl.clearColor(0, 0, 0, 0); gl.clear(gl.COLOR_BUFFER_BIT);
        gl.uniform1i(s.u.pass, 0); gl.drawArrays(gl.POINTS, 0, L.n);
        L.baseSig = sig; L.baseDraws++;
      } else {
        L.baseReuses++;
      }
      gl.bindFramebuffer(gl.READ_FRAMEBUFFER, s.fbo); gl.bindFramebuffer(gl.DRAW_FRAMEBUFFER, null);
      gl.blitFramebuffer(0, 0, glCanvas.width, glCanvas.height, 0, 0, glCanvas.width, glCanvas.height,
        gl.COLOR_BUFFER_BIT, gl.NEAREST);
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    } else {
      L.baseSig = null;
      gl.uniform1i(s.u.pass, 0); gl.drawArrays(gl.POINTS, 0, L.n);
    }
    if (s.highCount) { gl.uniform1i(s.u.pass, 1); gl.drawElements(gl.POINTS, s.highCount, gl.UNSIGNED_INT, 0); }
    box.dataset.baseDraws = String(L.baseDraws); box.dataset.baseReuses = String(L.baseReuses);
  }

  // The framebuffer of the first pass, the canvas's size (re-made when it changes); false if unavailable.
  function baseFramebuffer(gl, s) {
    const size = `${glCanvas.width}x${glCanvas.height}`;
    if (s.fbo && s.fboSize === size) return true;
    if (s.fbo) { gl.deleteFramebuffer(s.fbo); gl.deleteRenderbuffer(s.rb); }
    s.fbo = gl.createFramebuffer(); s.rb = gl.createRenderbuffer();
    gl.bindRenderbuffer(gl.RENDERBUFFER, s.rb);
    gl.renderbufferStorage(gl.RENDERBUFFER, gl.RGBA8, glCanvas.width, glCanvas.height);
    gl.bindFramebuffer(gl.FRAMEBUFFER, s.fbo);
    gl.framebufferRenderbuffer(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.RENDERBUFFER, s.rb);
    const ok = gl.checkFramebufferStatus(gl.FRAMEBUFFER) === gl.FRAMEBUFFER_COMPLETE;
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    s.fboSize = ok ? size : "";
    if (!ok) { gl.deleteFramebuffer(s.fbo); gl.deleteRenderbuffer(s.rb); s.fbo = null; }
    L.baseSig = null;
    return ok;
  }

  function drawCanvas() {
    const ctx = glCanvas.hidden ? overlay.getContext("2d") : null;
    if (!ctx || !L.n) return;
    // drawn under the overlay's own drawing (the overlay is cleared first, see draw)
    ctx.setTransform(L.dpr, 0, 0, L.dpr, 0, 0);
    ctx.clearRect(0, 0, L.width, L.height);
    const d = L.pointSize(), a = L.alpha();
    const css = L.palette.map((c) => `rgb(${c[0]},${c[1]},${c[2]})`);
    ctx.globalAlpha = a;
    for (let i = 0; i < L.n; i++) {
      if (L.flags[i]) continue;
      ctx.fillStyle = css[L.cat[i] % css.length];
      ctx.fillRect(L.sx(L.xy[2 * i]) - d / 2, L.sy(L.xy[2 * i + 1]) - d / 2, d, d);
    }
    ctx.globalAlpha = 1; ctx.strokeStyle = "#000";
    for (let i = 0; i < L.n; i++) {
      if (L.flags[i] !== 1) continue;
      ctx.beginPath(); ctx.arc(L.sx(L.xy[2 * i]), L.sy(L.xy[2 * i + 1]), d / 2 + 2, 0, 2 * Math.PI);
      ctx.fillStyle = css[L.cat[i] % css.length]; ctx.fill(); ctx.stroke();
    }
    L.canvasBase = ctx.getImageData(0, 0, overlay.width, overlay.height);
  }
  // In canvas mode the points live on the overlay canvas: keep them under the overlay drawing.
  const clearOverlay = overlay.getContext("2d").clearRect.bind(overlay.getContext("2d"));
  overlay.getContext("2d").clearRect = (...args) => {
    clearOverlay(...args);
    if (L.mode === "canvas" && L.canvasBase) overlay.getContext("2d").putImageData(L.canvasBase, 0, 0);
  };

  // ---- picking: a uniform grid over the extent, points sorted by cell (counting sort)
  function buildGrid() {
    const n = L.n, [x0, x1, y0, y1] = L.extent;
    const g = Math.max(1, Math.min(2048, Math.floor(Math.sqrt(n / PER_CELL))));
    const cellOf = new Int32Array(n), start = new Int32Array(g * g + 1);
    for (let i = 0; i < n; i++) {
      const cx = Math.min(g - 1, Math.max(0, Math.floor(((L.xy[2 * i] - x0) / (x1 - x0)) * g)));
      const cy = Math.min(g - 1, Math.max(0, Math.floor(((L.xy[2 * i + 1] - y0) / (y1 - y0)) * g)));
      const c = cy * g + cx;
      cellOf[i] = c; start[c + 1]++;
    }
    for (let c = 0; c < g * g; c++) start[c + 1] += start[c];
    const fill = start.slice(0, g * g), order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[fill[cellOf[i]]++] = i;
    L.grid = { g, start, order };
  }

  // The visible point nearest to (mx, my) CSS px within `radius` px, or -1.
  L.pick = (mx, my, radius = 6) => {
    if (!L.n) return -1;
    if (!L.grid) buildGrid();
    const { g, start, order } = L.grid, [x0, x1, y0, y1] = L.extent;
    const ax = L.dataX(mx - radius), bx = L.dataX(mx + radius), ay = L.dataY(my + radius), by = L.dataY(my - radius);
    const cell = (v, lo, hi) => Math.min(g - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * g)));
    let best = -1, bestD = radius * radius;
    for (let cy = cell(ay, y0, y1); cy <= cell(by, y0, y1); cy++) {
      for (let cx = cell(ax, x0, x1); cx <= cell(bx, x0, x1); cx++) {
        const c = cy * g + cx;
        for (let p = start[c]; p < start[c + 1]; p++) {
          const i = order[p];
          if (L.flags[i] & 2) continue;
          const dx = L.sx(L.xy[2 * i]) - mx, dy = L.sy(L.xy[2 * i + 1]) - my, d = dx * dx + dy * dy;
          if (d < bestD || (d === bestD && (L.flags[i] & 1))) { bestD = d; best = i; }
        }
      }
    }
    return best;
  };

  // ---- pan (drag), zoom (wheel, around the mouse), reset (double click), hover
  let drag = null, pending = false, pendingPreview = false, settle = null;
  const redraw = () => { if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; L.draw(); }); } };
  L.redraw = redraw;
  // a view change during a gesture: the compositor's preview on a slow map, a full draw otherwise
  const moved = () => {
    if (!L.slowDraw()) { redraw(); return; }
    if (!pendingPreview) {
      pendingPreview = true;
      requestAnimationFrame(() => { pendingPreview = false; if (!pending) L.preview(); });
    }
  };
  overlay.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = overlay.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
    const f = Math.exp(-e.deltaY * 0.0015), k = Math.min(512, Math.max(0.5, L.view.k * f)), ff = k / L.view.k;
    L.view = { k, tx: mx - (mx - L.view.tx) * ff, ty: my - (my - L.view.ty) * ff };
    moved();
    clearTimeout(settle);
    if (L.slowDraw()) settle = setTimeout(redraw, SETTLE_MS); // the wheel has no "end": draw once it rests
  }, { passive: false });
  overlay.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, tx: L.view.tx, ty: L.view.ty }; });
  window.addEventListener("mouseup", () => {
    if (drag && glCanvas.style.transform) redraw(); // the gesture ended: draw the points where they now are
    drag = null;
  });
  overlay.addEventListener("dblclick", () => { L.view = { k: 1, tx: 0, ty: 0 }; redraw(); });
  overlay.addEventListener("mousemove", (e) => {
    const r = overlay.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
    if (drag) {
      L.view = { ...L.view, tx: drag.tx + e.clientX - drag.x, ty: drag.ty + e.clientY - drag.y };
      moved();
      return;
    }
    if (opts.onHover) opts.onHover(L.pick(mx, my), mx, my);
  });
  overlay.addEventListener("mouseleave", () => { if (opts.onHover) opts.onHover(-1, 0, 0); });
  size();
  return L;
}

// A hover tooltip for a point layer: text from describe(i); the image comes from image(i) -> src or
// null (then requested from the server by request(i), once per point, and shown when it arrives).
export function attachGlTooltip(layer, tip, describe, image, request) {
  let shown = -1, timer = null;
  const show = (i, mx, my) => {
    if (i < 0) { tip.hidden = true; shown = -1; return; }
    tip.hidden = false;
    tip.style.left = `${mx + 14}px`; tip.style.top = `${my + 14}px`;
    if (i === shown) return;
    shown = i;
    tip.replaceChildren();
    const src = image ? image(i) : null;
    if (src instanceof Element) {
      tip.appendChild(src);
    } else if (src) {
      const img = document.createElement("img");
      img.className = "thumb"; img.src = src; img.width = 64; img.height = 64;
      tip.appendChild(img);
    } else if (request) {
      const wait = document.createElement("div");
      wait.className = "thumb pending"; wait.textContent = "image…";
      tip.appendChild(wait);
      clearTimeout(timer);
      timer = setTimeout(() => { if (shown === i) request(i); }, 120); // only the point the mouse rests on
    }
    tip.appendChild(document.createTextNode(describe(i)));
    tip.dataset.index = String(i);
  };
  layer.tooltip = { show, refresh: () => { const i = shown; shown = -1; if (i >= 0) show(i, parseFloat(tip.style.left) - 14, parseFloat(tip.style.top) - 14); } };
  return show;
}
