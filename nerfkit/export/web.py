"""``nerfkit export web``: a self-contained browser viewer of a trained run.

Single-query light-field families (R2L, NeRDF) render live in the browser with WebGL2; every other
family gets a pre-rendered orbit (frames and an MP4) in a page that says so.

Live bundle (``OUT/``): ``index.html``, ``viewer.js``, ``model.json`` and ``weights.bin``.

``weights.bin`` holds each dense layer ``y = x W + b`` (``W [in, out]``) as an RGBA float16
texture of ``4 * ceil(out / 4)`` rows by ``G + 1`` texels: texel ``(g, o)`` holds
``W[4g:4g+4, o]`` and texel ``(G, o)`` holds ``(b[o], 0, 0, 0)``. The inputs are grouped by fours,
each part of a concatenated input (hidden state, ray encoding) padded to a multiple of 4 with
zero weights, and so are the outputs (zero columns). Layers follow one another, 4-byte aligned;
``model.json`` gives each one's byte offset and size.

``model.json`` describes the network as a list of passes over named per-pixel buffers of
``groups`` x 4 channels (``network.ops``), which :file:`web_assets/viewer.js` runs as fragment
shaders: ``dense`` (``act(x W + b [+ r]) [+ r]`` with ``x`` a buffer, optionally plus a second
buffer, and/or the ray encoding of :func:`nerfkit.core.encodings.ray_encoding`) and NeRDF's
``distribution`` (:func:`nerfkit.models.nerdf.render_distribution`). The programs below spell
out R2L's and NeRDF's networks in these terms.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from nerfkit.errors import NerfkitError
from nerfkit.models.nerdf import NeRDFConfig
from nerfkit.models.r2l import R2LConfig
from nerfkit.fileio import write_bytes_atomic

#: Config class -> builder of its WebGL2 program ``(cfg, params) -> (program, output)``: the
#: families rendered live in the browser. A family adds itself with :func:`web_program`.
WEB_PROGRAMS: dict[type, Callable[[Any, dict], tuple[Any, str]]] = {}
ASSETS = Path(__file__).with_name("web_assets")


def _groups(n: int) -> int:
    return (n + 3) // 4


def dense_texture(kernel: np.ndarray, bias: np.ndarray, parts: list[int]) -> np.ndarray:
    """Packs ``kernel [in, out]``, ``bias [out]`` into the ``[rows, G + 1, 4]`` float16 texture
    described in the module docstring; ``parts`` are the channel counts of the concatenated
    input's parts (sum ``in``), each padded to a multiple of 4."""
    kernel = np.asarray(kernel, np.float32)
    bias = np.asarray(bias, np.float32)
    n_in, n_out = kernel.shape
    if sum(parts) != n_in:
        raise ValueError(f"parts {parts} do not add up to {n_in} inputs")
    padded = []
    start = 0
    for p in parts:
        block = kernel[start:start + p]
        padded.append(np.pad(block, ((0, 4 * _groups(p) - p), (0, 0))))
        start += p
    w = np.concatenate(padded, 0)                                # [4G, out]
    rows = 4 * _groups(n_out)
    w = np.pad(w, ((0, 0), (0, rows - n_out)))                  # [4G, rows]
    g = w.shape[0] // 4
    tex = np.zeros((rows, g + 1, 4), np.float32)
    tex[:, :g, :] = w.T.reshape(rows, g, 4)
    tex[:n_out, g, 0] = bias
    return tex.astype(np.float16)


class _Program:
    """Collects layers and passes."""

    def __init__(self, points: int, pos_freqs: int, width: int):
        self.enc_dim = 3 * points * (2 * pos_freqs + 1)
        self.width = width
        self.layers: list[np.ndarray] = []
        self.ops: list[dict[str, Any]] = []
        self.buffers: dict[str, int] = {}

    def dense(self, kernel, bias, *, inp: Optional[str], enc: bool, out: str, act: str,
              add: Optional[str] = None, resid: Optional[str] = None,
              resid_mode: str = "post") -> None:
        parts = ([self.width] if inp else []) + ([self.enc_dim] if enc else [])
        self.layers.append(dense_texture(kernel, bias, parts))
        n_out = np.asarray(kernel).shape[1]
        self.buffers[out] = max(self.buffers.get(out, 0), _groups(n_out))
        assert out not in (inp, add, resid), "a pass cannot read the buffer it writes"
        self.ops.append({"op": "dense", "weights": len(self.layers) - 1, "in": inp,
                         "in_groups": _groups(self.width) if inp else 0, "enc": enc,
                         "enc_groups": _groups(self.enc_dim) if enc else 0, "add": add,
                         "resid": resid, "resid_mode": resid_mode, "act": act, "out": out})


def _np(x) -> np.ndarray:
    return np.asarray(x, np.float32)


def web_program(config_cls: type):
    """Decorator: registers a builder of the live browser program for runs whose model config is
    a ``config_cls`` (families without one get a pre-rendered orbit)."""
    def register(fn):
        WEB_PROGRAMS[config_cls] = fn
        return fn
    return register


def live_program(model_cfg) -> Optional[Callable[[Any, dict], tuple[Any, str]]]:
    """The registered program builder for ``model_cfg``'s family, or ``None``."""
    for cls, fn in WEB_PROGRAMS.items():
        if isinstance(model_cfg, cls):
            return fn
    return None


@web_program(R2LConfig)
def r2l_program(cfg, params: dict) -> tuple[_Program, str]:
    """R2L (:class:`nerfkit.nn.residual.ResidualMLP`): ``h0 = relu(enc W_in)``; per block
    ``t = relu(h W1 + b1)``, ``h = h + t W2 + b2``; ``rgb = sigmoid((h + h0) W_out)``."""
    net = params["net"]
    prog = _Program(cfg.points, cfg.pos_freqs, cfg.width)
    prog.dense(net["head"]["kernel"], net["head"]["bias"], inp=None, enc=True, out="h0",
               act="relu")
    h, free = "h0", ["a", "b"]
    w1, b1, w2, b2 = (_np(net[k]) for k in ("w1", "b1", "w2", "b2"))
    for i in range(cfg.num_blocks):
        nxt = free[i % 2]
        prog.dense(w1[i], b1[i], inp=h, enc=False, out="t", act="relu")
        prog.dense(w2[i], b2[i], inp="t", enc=False, out=nxt, act="none", resid=h,
                   resid_mode="post")
        h = nxt
    prog.dense(net["tail"]["kernel"], net["tail"]["bias"], inp=h, enc=False, add="h0",
               out="rgb", act="sigmoid")
    return prog, "rgb"


@web_program(NeRDFConfig)
def nerdf_program(cfg, params: dict) -> tuple[_Program, str]:
    """NeRDF (:class:`nerfkit.models.nerdf.NeRDFNet`): ``h = relu(enc W_0)``; layer ``skip``
    ``h = relu([h, enc] W)``, the others ``h = relu(h W + b + h)``; a linear head to the
    ``[4, K]`` coefficients, then the volume-rendered distribution."""
    net = params["net"]
    layers = net["layers"]
    prog = _Program(cfg.points, cfg.pos_freqs, cfg.width)
    names = ["a", "b"]
    prog.dense(layers[0]["kernel"], layers[0]["bias"], inp=None, enc=True, out="a", act="relu")
    h = "a"
    for i in range(1, cfg.depth):
        nxt = names[i % 2]
        if i == cfg.skip:
            prog.dense(layers[i]["kernel"], layers[i]["bias"], inp=h, enc=True, out=nxt,
                       act="relu")
        else:
            prog.dense(layers[i]["kernel"], layers[i]["bias"], inp=h, enc=False, out=nxt,
                       act="relu", resid=h, resid_mode="pre")
        h = nxt
    prog.dense(net["head"]["kernel"], net["head"]["bias"], inp=h, enc=False, out="coef",
               act="none")
    prog.ops.append({"op": "distribution", "in": "coef", "num_basis": cfg.num_basis,
                     "samples": cfg.samples, "out": "rgb"})
    prog.buffers["rgb"] = 1
    return prog, "rgb"


def _pure(params) -> dict:
    from flax import nnx
    return nnx.to_pure_dict(params)


def first_camera(run) -> dict[str, Any]:
    """The first training camera: ``c2w`` (3x4 rows), ``fx, fy, cx, cy``, ``width``, ``height``."""
    cams = run.scene_json["train_cameras"]
    fx, fy, cx, cy = (float(v) for v in cams["intrinsics"][0])
    c2w = np.asarray(cams["c2w"][0], np.float64)[:3, :4]
    return {"c2w": c2w.tolist(), "fx": fx, "fy": fy, "cx": cx, "cy": cy,
            "width": int(cams["width"]), "height": int(cams["height"])}


def _orbit_frame(run) -> tuple[list[float], list[float]]:
    """Orbit target (the point nearest all training cameras' optical axes) and up direction."""
    from nerfkit.export.camera_paths import _focus_point
    c2w = np.asarray(run.scene_json["train_cameras"]["c2w"], np.float64)[:, :3, :4]
    up = c2w[:, :3, 1].mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    return _focus_point(c2w).tolist(), up.tolist()


def _viewer_widths(train_width: int) -> tuple[list[int], int]:
    """Choices of the resolution control (image widths) and the initial one."""
    widths = sorted({w for w in (64, 100, 128, 200, 256, 400, 512, 800) if w <= 2 * train_width}
                    | {train_width})
    return widths, min(200, train_width)


def export_live(run, out: Path) -> dict[str, Any]:
    family = run.cfg.model.family
    cfg = run.cfg.model
    params = _pure(run.params)
    prog, output = live_program(cfg)(cfg, params)
    out.mkdir(parents=True, exist_ok=True)
    layers, offset, blobs = [], 0, []
    for tex in prog.layers:
        raw = tex.tobytes()
        layers.append({"offset": offset, "width": tex.shape[1], "height": tex.shape[0]})
        pad = (-len(raw)) % 4
        blobs.append(raw + b"\0" * pad)
        offset += len(raw) + pad
    target, up = _orbit_frame(run)
    cam = first_camera(run)
    widths, default = _viewer_widths(cam["width"])
    meta = {
        "format": "nerfkit-web/v1",
        "family": family,
        "run_name": Path(run.run_dir).name,
        "step": int(run.step),
        "scene": {"near": float(run.geom.near), "far": float(run.geom.far),
                  "ndc": None if run.geom.ndc is None else [float(v) for v in run.geom.ndc],
                  "background": [1.0, 1.0, 1.0] if run.info.white_background else [0.0] * 3,
                  "camera": cam, "target": target, "up": up},
        "network": {"points": cfg.points, "pos_freqs": cfg.pos_freqs,
                    "encoding_dim": prog.enc_dim, "buffers": prog.buffers, "ops": prog.ops,
                    "output": output},
        "weights": {"file": "weights.bin", "dtype": "float16", "bytes": offset,
                    "layers": layers},
        "viewer": {"widths": widths, "default_width": default},
    }
    write_bytes_atomic(out / "weights.bin", b"".join(blobs))
    write_bytes_atomic(out / "model.json", json.dumps(meta, indent=1).encode())
    for name in ("index.html", "viewer.js"):
        shutil.copyfile(ASSETS / name, out / name)
    return {"live": True, "family": family, "bytes": _folder_bytes(out), "out": out}


_PRERENDERED_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>nerfkit viewer (pre-rendered)</title>
<style>
  body {{ font: 14px system-ui, sans-serif; margin: 12px; background: #222; color: #ddd; }}
  img, video {{ display: block; width: 512px; max-width: 100%; image-rendering: pixelated; }}
  .note {{ color: #fc6; }}
</style>
</head>
<body>
<p class="note"><strong>Pre-rendered, not live.</strong> This run's family ({family}) needs many
network queries per ray and cannot render live in a browser, so this page shows a pre-rendered
orbit of {frames} frames (drag the slider, or play <a href="video.mp4">video.mp4</a>). Only the
light-field families (r2l, nerdf) export a live viewer.</p>
<label>frame <input type="range" id="frame" min="0" max="{last}" value="0" style="width:400px"></label>
<img id="view" src="frames/0000.png" alt="orbit frame">
<video src="video.mp4" controls loop muted playsinline></video>
<script>
  const img = document.getElementById('view');
  document.getElementById('frame').addEventListener('input', e =>
    {{ img.src = 'frames/' + String(e.target.value).padStart(4, '0') + '.png'; }});
</script>
</body>
</html>
"""


def export_prerendered(run, out: Path, frames: int = 60, fps: int = 30) -> dict[str, Any]:
    from nerfkit.export.frames import render_camera_path
    render_camera_path(run, "orbit", out, frames=frames, fps=fps)
    html = _PRERENDERED_HTML.format(family=run.cfg.model.family, frames=frames, last=frames - 1)
    write_bytes_atomic(out / "index.html", html.encode())
    return {"live": False, "family": run.cfg.model.family, "bytes": _folder_bytes(out),
            "out": out}


def export_web(run, out: os.PathLike, frames: int = 60, fps: int = 30) -> dict[str, Any]:
    """Writes the viewer bundle of ``run`` into folder ``out``. Returns ``{"live", "family",
    "bytes", "out"}``: ``live`` is False for families exported as a pre-rendered orbit."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NerfkitError(f"{out}: exists and is not a folder")
    if run.info.has_time:
        raise NerfkitError(f"{run.run_dir}: dynamic (time-dependent) runs have no web viewer yet")
    if frames < 1:
        raise NerfkitError(f"export web: --frames must be >= 1, got {frames}")
    if live_program(run.cfg.model) is not None:
        return export_live(run, out)
    return export_prerendered(run, out, frames, fps)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


