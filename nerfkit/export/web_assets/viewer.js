// nerfkit live viewer: renders an exported R2L or NeRDF run with WebGL2.
//
// model.json describes the network as a small program of passes over float textures (written by
// nerfkit/export/web.py, which documents the layouts); weights.bin holds every dense layer as an
// RGBA16F texture: texel (x = input group g, y = output channel o) holds the weights of inputs
// 4g..4g+3 to output o, and the last column holds the bias in its red channel. Activations live
// in RGBA32F 2D-array textures, one layer per group of 4 channels, one texel per pixel; each
// fragment-shader pass computes up to 8 output groups at once (multiple render targets). The
// image is rendered in tiles so that activation memory stays bounded at any resolution.
// Nothing is requested from anywhere but the folder this page was served from.
'use strict';

const TILE = 256;

function fail(msg) {
  const el = document.getElementById('status');
  if (el) { el.textContent = 'error: ' + msg; el.className = 'error'; }
  window.nerfkitViewerError = msg;
  throw new Error(msg);
}

function halfToFloat(h) {
  const out = new Float32Array(h.length);
  for (let i = 0; i < h.length; ++i) {
    const x = h[i], e = (x >> 10) & 31, m = x & 1023, sign = x & 32768 ? -1 : 1;
    out[i] = sign * (e === 0 ? m * 2 ** -24 : e === 31 ? (m ? NaN : Infinity)
                                               : (1 + m / 1024) * 2 ** (e - 15));
  }
  return out;
}

const VERT = `#version 300 es
void main() {
  vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));
  gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}`;

function header(meta) {
  const s = meta.scene, n = meta.network;
  let h = `#version 300 es
precision highp float;
precision highp int;
precision highp sampler2D;
precision highp sampler2DArray;
uniform mat3 uRot;
uniform vec3 uOrigin;
uniform vec4 uIntr;       // fx, fy, cx, cy in pixels of the rendered image
uniform vec2 uSize;       // rendered image width, height
uniform vec2 uTile;       // this tile's lower-left corner in GL window coordinates
#define NEAR ${s.near.toFixed(9)}
#define FAR ${s.far.toFixed(9)}
#define KPTS ${n.points}
#define NFREQ ${n.pos_freqs}
#define ENC_DIM ${n.encoding_dim}
`;
  if (s.ndc) {
    h += `#define NDC 1
const vec4 NDC_P = vec4(${s.ndc.map(v => Number(v).toFixed(9)).join(', ')});
`;
  }
  h += `
// The pixel-centre ray of this fragment (nerfkit.core.cameras.camera_rays, then NDC if any).
void makeRay(out vec3 o, out vec3 d) {
  vec2 frag = uTile + gl_FragCoord.xy;
  float u = frag.x;
  float v = uSize.y - frag.y;
  vec3 dc = vec3((u - uIntr.z) / uIntr.x, -(v - uIntr.w) / uIntr.y, -1.0);
  d = uRot * dc;
  o = uOrigin;
#ifdef NDC
  float t = -(NDC_P.w + o.z) / d.z;
  o = o + t * d;
  float ax = -2.0 * NDC_P.x / NDC_P.y, ay = -2.0 * NDC_P.x / NDC_P.z;
  vec3 on = vec3(ax * o.x / o.z, ay * o.y / o.z, 1.0 + 2.0 * NDC_P.w / o.z);
  vec3 dn = vec3(ax * (d.x / d.z - o.x / o.z), ay * (d.y / d.z - o.y / o.z), -2.0 * NDC_P.w / o.z);
  o = on; d = dn;
#endif
}
`;
  return h;
}

// R2L's ray encoding (nerfkit.models.r2l.ray_encoding): K points evenly spaced from near to far,
// flattened point-major to p (3K values); channels [p, sin(p), cos(p), sin(2p), cos(2p), ...].
const ENC = `
float P[3 * KPTS];
void makePoints() {
  vec3 o, d;
  makeRay(o, d);
  for (int k = 0; k < KPTS; ++k) {
    float s = float(k) / float(KPTS - 1);
    float t = NEAR * (1.0 - s) + FAR * s;
    vec3 x = o + t * d;
    P[3 * k] = x.x; P[3 * k + 1] = x.y; P[3 * k + 2] = x.z;
  }
}
float enc(int c) {
  if (c >= ENC_DIM) return 0.0;
  int b = c / (3 * KPTS);
  float x = P[c - b * 3 * KPTS];
  if (b == 0) return x;
  int f = (b - 1) / 2;
  x *= float(1 << f);
  return ((b - 1) & 1) == 0 ? sin(x) : cos(x);
}
vec4 encGroup(int e) { return vec4(enc(4 * e), enc(4 * e + 1), enc(4 * e + 2), enc(4 * e + 3)); }
`;

function denseSource(meta, op, ntex, nenc, m) {
  let src = header(meta);
  if (nenc > 0) src += ENC;
  src += `
uniform sampler2D uW;
uniform int uOut0;
${ntex > 0 ? 'uniform sampler2DArray uIn;' : ''}
${op.add ? 'uniform sampler2DArray uAdd;' : ''}
${op.resid ? 'uniform sampler2DArray uRes;' : ''}
#define NTEX ${ntex}
#define NENC ${nenc}
#define M ${m}
`;
  for (let j = 0; j < m; ++j) src += `layout(location = ${j}) out vec4 o${j};\n`;
  src += `
vec4 wrow(int g, int r) { return texelFetch(uW, ivec2(g, r), 0); }
void main() {
  ivec2 px = ivec2(gl_FragCoord.xy);
  vec4 acc[M];
  for (int j = 0; j < M; ++j) {
    int r = 4 * (uOut0 + j);
    acc[j] = vec4(wrow(NTEX + NENC, r).x, wrow(NTEX + NENC, r + 1).x,
                  wrow(NTEX + NENC, r + 2).x, wrow(NTEX + NENC, r + 3).x);
  }
#if NTEX > 0
  for (int g = 0; g < NTEX; ++g) {
    vec4 x = texelFetch(uIn, ivec3(px, g), 0);
    ${op.add ? 'x += texelFetch(uAdd, ivec3(px, g), 0);' : ''}
    for (int j = 0; j < M; ++j) {
      int r = 4 * (uOut0 + j);
      acc[j] += vec4(dot(x, wrow(g, r)), dot(x, wrow(g, r + 1)), dot(x, wrow(g, r + 2)),
                     dot(x, wrow(g, r + 3)));
    }
  }
#endif
#if NENC > 0
  makePoints();
  for (int e = 0; e < NENC; ++e) {
    vec4 x = encGroup(e);
    for (int j = 0; j < M; ++j) {
      int r = 4 * (uOut0 + j);
      acc[j] += vec4(dot(x, wrow(NTEX + e, r)), dot(x, wrow(NTEX + e, r + 1)),
                     dot(x, wrow(NTEX + e, r + 2)), dot(x, wrow(NTEX + e, r + 3)));
    }
  }
#endif
`;
  for (let j = 0; j < m; ++j) {
    let y = `acc[${j}]`;
    const res = `texelFetch(uRes, ivec3(px, uOut0 + ${j}), 0)`;
    if (op.resid && op.resid_mode === 'pre') y = `(${y} + ${res})`;
    if (op.act === 'relu') y = `max(${y}, vec4(0.0))`;
    else if (op.act === 'sigmoid') y = `(1.0 / (1.0 + exp(-${y})))`;
    if (op.resid && op.resid_mode === 'post') y = `(${y} + ${res})`;
    src += `  o${j} = ${y};\n`;
  }
  src += '}\n';
  return src;
}

// NeRDF (nerfkit.models.nerdf.render_distribution): the frequency series of density and colour
// at S evenly spaced normalised depths, volume-rendered onto the background.
function distributionSource(meta, op) {
  const nb = op.num_basis, S = op.samples;
  return header(meta) + `
uniform sampler2DArray uIn;
uniform vec3 uBg;
#define NB ${nb}
#define S ${S}
#define PI 3.14159265358979
out vec4 o0;
float coef[4 * NB];
float series(int c, float s) {
  float v = 0.0;
  for (int i = 0; i < NB; ++i) {
    float b = (i & 1) == 0 ? cos(float(i) * PI * s) : sin(float(i + 1) * PI * s);
    v += coef[c * NB + i] * b;
  }
  return v;
}
void main() {
  ivec2 px = ivec2(gl_FragCoord.xy);
  for (int g = 0; g < NB; ++g) {
    vec4 v = texelFetch(uIn, ivec3(px, g), 0);
    coef[4 * g] = v.x; coef[4 * g + 1] = v.y; coef[4 * g + 2] = v.z; coef[4 * g + 3] = v.w;
  }
  vec3 o, d;
  makeRay(o, d);
  float delta = (FAR - NEAR) / float(S) * length(d);
  float tau = 0.0, accw = 0.0;
  vec3 col = vec3(0.0);
  for (int i = 0; i < S; ++i) {
    float s = (float(i) + 0.5) / float(S);
    float sigma = max(series(0, s), 0.0);
    vec3 c = 1.0 / (1.0 + exp(-vec3(series(1, s), series(2, s), series(3, s))));
    float ti = sigma * delta;
    float w = exp(-tau) * (1.0 - exp(-ti));
    tau += ti;
    col += w * c;
    accw += w;
  }
  o0 = vec4(col + (1.0 - accw) * uBg, accw);
}
`;
}

const DISPLAY = `#version 300 es
precision highp float;
precision highp sampler2DArray;
uniform sampler2DArray uIn;
uniform vec2 uTile;
out vec4 o0;
void main() {
  vec4 v = texelFetch(uIn, ivec3(ivec2(gl_FragCoord.xy - uTile), 0), 0);
  o0 = vec4(clamp(v.rgb, 0.0, 1.0), 1.0);
}`;

class Renderer {
  constructor(gl, meta, weights) {
    this.gl = gl;
    this.meta = meta;
    this.programs = new Map();
    this.maxDraw = Math.min(8, gl.getParameter(gl.MAX_DRAW_BUFFERS),
                            gl.getParameter(gl.MAX_COLOR_ATTACHMENTS));
    this.maxLayers = gl.getParameter(gl.MAX_ARRAY_TEXTURE_LAYERS);
    this.vao = gl.createVertexArray();
    this.fbo = gl.createFramebuffer();
    // Weights: one RGBA16F texture per dense layer, uploaded straight from the float16 file.
    this.weights = meta.weights.layers.map(l => {
      const tex = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, tex);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
      // Widened to float32 once here: SwiftShader converts half floats on every fetch.
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA32F, l.width, l.height, 0, gl.RGBA, gl.FLOAT,
                    halfToFloat(new Uint16Array(weights, l.offset, l.width * l.height * 4)));
      return tex;
    });
    for (const [name, groups] of Object.entries(meta.network.buffers)) {
      if (groups > this.maxLayers) fail(`buffer ${name} needs ${groups} texture layers`);
    }
    this.tileW = 0; this.tileH = 0; this.buffers = {};
    this.compileAll();
  }

  program(key, fragSrc) {
    if (this.programs.has(key)) return this.programs.get(key);
    const gl = this.gl;
    const compile = (type, src) => {
      const sh = gl.createShader(type);
      gl.shaderSource(sh, src);
      gl.compileShader(sh);
      if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) fail('shader: ' + gl.getShaderInfoLog(sh));
      return sh;
    };
    const p = gl.createProgram();
    gl.attachShader(p, compile(gl.VERTEX_SHADER, VERT));
    gl.attachShader(p, compile(gl.FRAGMENT_SHADER, fragSrc));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) fail('link: ' + gl.getProgramInfoLog(p));
    const loc = {};
    const n = gl.getProgramParameter(p, gl.ACTIVE_UNIFORMS);
    for (let i = 0; i < n; ++i) {
      const name = gl.getActiveUniform(p, i).name;
      loc[name] = gl.getUniformLocation(p, name);
    }
    const entry = {p, loc};
    this.programs.set(key, entry);
    return entry;
  }

  // The draws of every op: [{op, prog, out0, m}], compiled once.
  compileAll() {
    const meta = this.meta;
    this.draws = [];
    for (const op of meta.network.ops) {
      if (op.op === 'dense') {
        const l = meta.weights.layers[op.weights];
        const ntex = op.in ? op.in_groups : 0;
        const nenc = op.enc ? op.enc_groups : 0;
        const outGroups = l.height / 4;
        for (let o = 0; o < outGroups; o += this.maxDraw) {
          const m = Math.min(this.maxDraw, outGroups - o);
          const key = ['dense', ntex, nenc, m, !!op.add, op.resid ? op.resid_mode : '', op.act].join(':');
          this.draws.push({op, out0: o, m, prog: this.program(key, denseSource(meta, op, ntex, nenc, m))});
        }
      } else if (op.op === 'distribution') {
        this.draws.push({op, out0: 0, m: 1, prog: this.program('dist', distributionSource(meta, op))});
      } else {
        fail('unknown op ' + op.op);
      }
    }
    this.display = this.program('display', DISPLAY);
  }

  ensureBuffers(w, h) {
    if (w <= this.tileW && h <= this.tileH) return;
    const gl = this.gl;
    for (const t of Object.values(this.buffers)) gl.deleteTexture(t);
    this.tileW = Math.max(w, this.tileW); this.tileH = Math.max(h, this.tileH);
    this.buffers = {};
    for (const [name, groups] of Object.entries(this.meta.network.buffers)) {
      const tex = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D_ARRAY, tex);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D_ARRAY, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texStorage3D(gl.TEXTURE_2D_ARRAY, 1, gl.RGBA32F, this.tileW, this.tileH, groups);
      this.buffers[name] = tex;
    }
  }

  bindArray(unit, loc, name) {
    const gl = this.gl;
    gl.activeTexture(gl.TEXTURE0 + unit);
    gl.bindTexture(gl.TEXTURE_2D_ARRAY, this.buffers[name]);
    gl.uniform1i(loc, unit);
  }

  setCamera(loc, cam, x0, y0) {
    const gl = this.gl, R = cam.c2w;
    if (loc.uRot) gl.uniformMatrix3fv(loc.uRot, false, [R[0][0], R[1][0], R[2][0], R[0][1], R[1][1],
                                                        R[2][1], R[0][2], R[1][2], R[2][2]]);
    if (loc.uOrigin) gl.uniform3f(loc.uOrigin, R[0][3], R[1][3], R[2][3]);
    if (loc.uIntr) gl.uniform4f(loc.uIntr, cam.fx, cam.fy, cam.cx, cam.cy);
    if (loc.uSize) gl.uniform2f(loc.uSize, cam.width, cam.height);
    if (loc.uTile) gl.uniform2f(loc.uTile, x0, y0);
  }

  // Renders camera {c2w: 3x4 rows, fx, fy, cx, cy, width, height} into the canvas (sized to it).
  render(cam) {
    const gl = this.gl;
    const W = cam.width, H = cam.height;
    const tw = Math.min(W, TILE), th = Math.min(H, TILE);
    this.ensureBuffers(tw, th);
    gl.bindVertexArray(this.vao);
    gl.disable(gl.BLEND); gl.disable(gl.DEPTH_TEST);
    for (let y0 = 0; y0 < H; y0 += th) {
      for (let x0 = 0; x0 < W; x0 += tw) {
        const w = Math.min(tw, W - x0), h = Math.min(th, H - y0);
        gl.bindFramebuffer(gl.DRAW_FRAMEBUFFER, this.fbo);
        gl.viewport(0, 0, w, h);
        for (const dr of this.draws) this.draw(dr, cam, x0, y0);
        gl.bindFramebuffer(gl.DRAW_FRAMEBUFFER, null);
        gl.viewport(x0, y0, w, h);
        const d = this.display;
        gl.useProgram(d.p);
        gl.uniform2f(d.loc.uTile, x0, y0);
        this.bindArray(0, d.loc.uIn, this.meta.network.output);
        gl.drawArrays(gl.TRIANGLES, 0, 3);
      }
    }
  }

  draw(dr, cam, x0, y0) {
    const gl = this.gl, op = dr.op, {p, loc} = dr.prog;
    gl.useProgram(p);
    this.setCamera(loc, cam, x0, y0);
    const bufs = [];
    for (let j = 0; j < dr.m; ++j) {
      gl.framebufferTextureLayer(gl.DRAW_FRAMEBUFFER, gl.COLOR_ATTACHMENT0 + j,
                                 this.buffers[op.out], 0, dr.out0 + j);
      bufs.push(gl.COLOR_ATTACHMENT0 + j);
    }
    for (let j = dr.m; j < this.maxDraw; ++j) {
      gl.framebufferTextureLayer(gl.DRAW_FRAMEBUFFER, gl.COLOR_ATTACHMENT0 + j, null, 0, 0);
    }
    gl.drawBuffers(bufs);
    if (op.op === 'dense') {
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, this.weights[op.weights]);
      gl.uniform1i(loc.uW, 0);
      gl.uniform1i(loc.uOut0, dr.out0);
      if (loc.uIn) this.bindArray(1, loc.uIn, op.in);
      if (loc.uAdd) this.bindArray(2, loc.uAdd, op.add);
      if (loc.uRes) this.bindArray(3, loc.uRes, op.resid);
    } else {
      this.bindArray(1, loc.uIn, op.in);
      const bg = this.meta.scene.background;
      gl.uniform3f(loc.uBg, bg[0], bg[1], bg[2]);
    }
    gl.drawArrays(gl.TRIANGLES, 0, 3);
  }

  finish() {
    const px = new Uint8Array(4);
    this.gl.readPixels(0, 0, 1, 1, this.gl.RGBA, this.gl.UNSIGNED_BYTE, px);
  }
}

// ---- camera controls --------------------------------------------------------------------------
function rotate(v, axis, ang) {  // Rodrigues
  const [x, y, z] = axis, c = Math.cos(ang), s = Math.sin(ang);
  const dot = x * v[0] + y * v[1] + z * v[2];
  const cr = [y * v[2] - z * v[1], z * v[0] - x * v[2], x * v[1] - y * v[0]];
  return [0, 1, 2].map(i => v[i] * c + cr[i] * s + axis[i] * dot * (1 - c));
}
const col = (R, j) => [R[0][j], R[1][j], R[2][j]];
const add = (a, b, s = 1) => a.map((v, i) => v + s * b[i]);
const norm = a => Math.hypot(a[0], a[1], a[2]);

class OrbitCamera {
  constructor(meta) {
    const c = meta.scene.camera;
    this.base = c;
    this.target = meta.scene.target;
    this.up = meta.scene.up;
    this.reset();
  }
  reset() { this.c2w = this.base.c2w.map(r => r.slice()); }
  axes() { return [0, 1, 2].map(j => col(this.c2w, j)); }
  setAxes(ax, eye) { this.c2w = [0, 1, 2].map(i => [ax[0][i], ax[1][i], ax[2][i], eye[i]]); }
  orbit(dx, dy) {
    let ax = this.axes();
    let rel = add(col(this.c2w, 3), this.target, -1);
    ax = ax.map(a => rotate(a, this.up, -dx)); rel = rotate(rel, this.up, -dx);
    const right = ax[0];
    ax = ax.map(a => rotate(a, right, -dy)); rel = rotate(rel, right, -dy);
    this.setAxes(ax, add(this.target, rel));
  }
  pan(dx, dy) {
    const ax = this.axes();
    const dist = norm(add(col(this.c2w, 3), this.target, -1));
    const shift = add(ax[0].map(v => -dx * dist * v), ax[1].map(v => dy * dist * v));
    this.target = add(this.target, shift);
    this.setAxes(ax, add(col(this.c2w, 3), shift));
  }
  zoom(f) {
    const rel = add(col(this.c2w, 3), this.target, -1);
    this.setAxes(this.axes(), add(this.target, rel.map(v => v * f)));
  }
  camera(width) {
    const b = this.base, s = width / b.width;
    const height = Math.max(1, Math.round(b.height * s));
    return {c2w: this.c2w, fx: b.fx * s, fy: b.fy * s, cx: b.cx * s, cy: b.cy * s, width, height};
  }
}

// ---- page -------------------------------------------------------------------------------------
async function main() {
  const status = document.getElementById('status');
  const canvas = document.getElementById('view');
  const meta = await (await fetch('model.json')).json();
  document.getElementById('title').textContent =
    `${meta.family.toUpperCase()} (${meta.run_name}, step ${meta.step})`;
  status.textContent = `loading ${(meta.weights.bytes / 1e6).toFixed(1)} MB of weights...`;
  const weights = await (await fetch(meta.weights.file)).arrayBuffer();
  if (weights.byteLength !== meta.weights.bytes) fail(`${meta.weights.file}: truncated`);
  const gl = canvas.getContext('webgl2', {antialias: false, alpha: false, depth: false,
                                          preserveDrawingBuffer: true, premultipliedAlpha: false});
  if (!gl) fail('this browser has no WebGL2');
  if (!gl.getExtension('EXT_color_buffer_float')) fail('this browser cannot render to float textures');
  const renderer = new Renderer(gl, meta, weights);
  const cam = new OrbitCamera(meta);
  const resSel = document.getElementById('res');
  const fpsEl = document.getElementById('fps');
  for (const w of meta.viewer.widths) {
    const o = document.createElement('option');
    o.value = w; o.textContent = `${w} x ${Math.round(meta.scene.camera.height * w / meta.scene.camera.width)}`;
    resSel.appendChild(o);
  }
  resSel.value = meta.viewer.default_width;
  let dirty = true, frames = [], paused = false;

  function draw(c) {
    if (canvas.width !== c.width || canvas.height !== c.height) {
      canvas.width = c.width; canvas.height = c.height;
    }
    renderer.render(c);
  }
  function loop(now) {
    const cont = document.getElementById('continuous').checked;
    if (!paused && (dirty || cont)) {
      draw(cam.camera(Number(resSel.value)));
      renderer.finish();
      dirty = false;
      frames.push(performance.now());
      while (frames.length > 1 && frames[frames.length - 1] - frames[0] > 2000) frames.shift();
      if (frames.length > 1) {
        const fps = (frames.length - 1) * 1000 / (frames[frames.length - 1] - frames[0]);
        fpsEl.textContent = `${fps.toFixed(fps < 10 ? 2 : 1)} fps`;
      }
    }
    requestAnimationFrame(loop);
  }

  let drag = null;
  canvas.addEventListener('contextmenu', e => e.preventDefault());
  canvas.addEventListener('pointerdown', e => {
    drag = {x: e.clientX, y: e.clientY, pan: e.button !== 0 || e.shiftKey};
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener('pointerup', () => { drag = null; });
  canvas.addEventListener('pointermove', e => {
    if (!drag) return;
    const s = 1 / canvas.clientWidth, dx = (e.clientX - drag.x) * s, dy = (e.clientY - drag.y) * s;
    drag.x = e.clientX; drag.y = e.clientY;
    if (drag.pan) cam.pan(dx, dy); else cam.orbit(dx * Math.PI, dy * Math.PI);
    dirty = true;
  });
  canvas.addEventListener('wheel', e => {
    e.preventDefault(); cam.zoom(Math.exp(0.001 * e.deltaY)); dirty = true;
  }, {passive: false});
  resSel.addEventListener('change', () => { dirty = true; });
  document.getElementById('reset').addEventListener('click', () => { cam.reset(); dirty = true; });
  status.textContent = 'drag: orbit; right-drag or shift-drag: pan; wheel: zoom';

  // Hooks for scripted use (tests, benchmarks): an exact camera, and timed frames.
  window.nerfkitViewer = {
    meta,
    // Renders one exact camera; resolves once the frame is complete.
    renderCamera(c) {
      paused = true;
      draw(c);
      canvas.style.width = c.width + 'px'; canvas.style.height = c.height + 'px';
      renderer.finish();
      document.body.dataset.frame = String((Number(document.body.dataset.frame) || 0) + 1);
      return Promise.resolve({width: c.width, height: c.height});
    },
    // Milliseconds per frame over n frames at a given width, after a 16-pixel-wide warm-up
    // frame (which compiles the shaders).
    benchmark(width, n) {
      paused = true;
      draw(cam.camera(Math.min(16, width))); renderer.finish();
      const c = cam.camera(width);
      const t0 = performance.now();
      for (let i = 0; i < n; ++i) { draw(c); renderer.finish(); }
      return Promise.resolve({width: c.width, height: c.height,
                              ms_per_frame: (performance.now() - t0) / n});
    },
    firstCamera: () => cam.camera(meta.scene.camera.width),
    glRenderer() {
      const ext = gl.getExtension('WEBGL_debug_renderer_info');
      return ext ? gl.getParameter(ext.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
    },
  };
  document.body.dataset.ready = '1';
  requestAnimationFrame(loop);
}

main().catch(e => { if (!window.nerfkitViewerError) fail(String(e && e.message || e)); });
