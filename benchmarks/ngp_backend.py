"""End-to-end NGP training throughput with and without the cuda_ext hash-grid kernel.

One process, the same data and the same jit'd train step (``nerfkit.engine.trainer.
make_train_step``: ray batch, occupancy-sampled field evaluation, backward, Adam) built twice,
``--model.backend jax`` (optimised pure JAX) and ``ffi`` (the XLA FFI kernel for this backend);
after a warm-up step (compile and the first occupancy-grid update) each, ``--steps`` steps run
per backend, interleaved step by step, and the median step time gives training rays/s. Timed
steps are 1 .. steps (no occupancy update falls in them with the default ``occupancy_every`` 16).

    python benchmarks/ngp_backend.py --out ngp_backend.json [--data LEGO] [--downscale 4]
        [--steps 6] [--batch-size 4096] [--levels 16] [--log2-table-size 19] [--eval-views 0]

``--eval-views N`` (a short training run rather than a throughput probe, with a few hundred
``--steps``) renders N evenly spaced test views with each backend's trained model afterwards and
reports their PSNR (``test_psnr``), so that both runs can be compared on quality as well as speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

from common import environment  # sets XLA flags first

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.data import load_scene
from nerfkit.data.raysource import PixelSource, ray_geometry
from nerfkit.engine.renderer import Renderer
from nerfkit.engine.evaluate import evaluate, evenly_spaced_views
from nerfkit.engine.trainer import make_train_step
from nerfkit.engine.run import init_state
from nerfkit.models.ngp import NGPConfig
from nerfkit.nn import ffi_backend

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nerf_synthetic" / "lego"


def measure_training(data: str = str(LEGO), downscale: int = 4, steps: int = 6,
                     batch_size: int = 4096, levels: int = 16, log2_table_size: int = 19,
                     eval_views: int = 0) -> dict:
    """NGP training rays/s with ``backend="jax"`` and ``"ffi"``, interleaved step by step in this
    process. Returns ``{"config", "results": {"jax": ..., "ffi": ...}, "speedup_ffi_over_jax"}``;
    each result has ``train_rays_per_s`` (median step), ``step_ms``, ``step_ms_all``,
    ``warmup_s`` (compile + first step) and ``losses``; with ``eval_views`` > 0 also
    ``test_psnr`` over that many evenly spaced test views (and ``test_views``)."""
    if not ffi_backend.available():
        raise RuntimeError(f"the cuda_ext kernel is not built: {ffi_backend.BUILD_HINT}")
    scene = load_scene(data, "train", downscale)
    base = NGPConfig(batch_size=batch_size, levels=levels, log2_table_size=log2_table_size)
    runs = {}
    for backend in ("jax", "ffi"):
        cfg = dataclasses.replace(base, backend=backend)
        graphdef, state, tx = init_state(cfg, scene, 0)
        source = PixelSource(scene, cfg.background)
        step = make_train_step(graphdef, tx, source, cfg.batch_size, False)
        t0 = time.perf_counter()
        state, aux = step(state, source.data, jax.random.key(0), jnp.float32(cfg.lr_init))
        float(aux["loss"])
        runs[backend] = dict(step=step, state=state, data=source.data, lr=cfg.lr_init,
                             warmup_s=time.perf_counter() - t0, times=[], losses=[],
                             graphdef=graphdef)

    for i in range(1, steps + 1):
        for backend, r in runs.items():
            key = jax.random.fold_in(jax.random.key(0), i)
            t0 = time.perf_counter()
            r["state"], aux = r["step"](r["state"], r["data"], key, jnp.float32(r["lr"]))
            r["losses"].append(float(aux["loss"]))  # blocks
            r["times"].append(time.perf_counter() - t0)

    results = {}
    test = load_scene(data, "test", downscale) if eval_views > 0 else None
    views = evenly_spaced_views(len(test), eval_views) if test is not None else []
    for backend, r in runs.items():
        med = float(np.median(r["times"]))
        results[backend] = {
            "train_rays_per_s": batch_size / med,
            "step_ms": med * 1e3,
            "step_ms_all": [t * 1e3 for t in r["times"]],
            "warmup_s": r["warmup_s"],
            "losses": r["losses"],
        }
        if test is not None:
            renderer = Renderer(r["graphdef"], r["state"].params, r["state"].buffers,
                                ray_geometry(scene))
            ev = evaluate(renderer, test, views)
            results[backend].update(test_psnr=ev["psnr"], test_views=len(views))
    return {
        "config": {"data": data, "downscale": downscale, "steps": steps,
                   "batch_size": batch_size, "levels": levels, "log2_table_size": log2_table_size,
                   "num_samples": base.num_samples, "image_hw": [scene.height, scene.width],
                   "eval_views": eval_views, "lr": "constant lr_init (no schedule)",
                   "ffi_platform": "cuda" if jax.default_backend() == "gpu" else "cpu"},
        "results": results,
        "speedup_ffi_over_jax": results["ffi"]["train_rays_per_s"] / results["jax"]["train_rays_per_s"],
    }


def print_training(m: dict) -> None:
    c = m["config"]
    print(f"NGP train step, {c['batch_size']} rays x {c['num_samples']} samples, "
          f"{c['image_hw'][1]}x{c['image_hw'][0]} images, {jax.devices()[0]}:")
    for backend, r in m["results"].items():
        print(f"  {backend:4s} {r['train_rays_per_s']:9.0f} rays/s  step {r['step_ms']:7.1f} ms  "
              f"(warm-up {r['warmup_s']:.1f} s)  loss {r['losses'][0]:.4f} -> {r['losses'][-1]:.4f}"
              + (f"  test PSNR {r['test_psnr']:.2f} dB ({r['test_views']} views)"
                 if "test_psnr" in r else ""))
    print(f"  ffi / jax: {m['speedup_ffi_over_jax']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="ngp_backend.json")
    ap.add_argument("--data", default=str(LEGO))
    ap.add_argument("--downscale", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--levels", type=int, default=16)
    ap.add_argument("--log2-table-size", type=int, default=19)
    ap.add_argument("--eval-views", type=int, default=0,
                    help="render this many test views after training and report their PSNR")
    args = ap.parse_args()
    if not ffi_backend.available():
        raise SystemExit(f"the cuda_ext kernel is not built: {ffi_backend.BUILD_HINT}")
    m = measure_training(args.data, args.downscale, args.steps, args.batch_size, args.levels,
                         args.log2_table_size, args.eval_views)
    out = {"benchmark": "ngp_backend", "config": m["config"], "results": m["results"],
           "speedup_ffi_over_jax": m["speedup_ffi_over_jax"],
           "load_average_1min": os.getloadavg()[0], "environment": environment()}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print_training(m)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
