"""Seconds per 4096-ray training step of the ``ngp`` preset, bounded vs. unbounded marching.

Measures the jit'd train step (occupancy update every 16 steps included, as in training) on a
small random scene, alternating the configurations so that a busy shared CPU slows them alike:
the bounded preset (Blender-style box) and the unbounded preset with several cone-stepping
settings (``cone_angle``, ``dt_min``; the candidate count follows from near 0.05 / far 1000).

    python benchmarks/ngp_unbounded_step.py [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from common import environment  # noqa: F401  (XLA flags)
from nerfkit.core.cameras import Cameras
from nerfkit.core.occupancy import cone_step_count
from nerfkit.data.raysource import PixelSource
from nerfkit.data.scene import Scene
from nerfkit.engine.config import presets
from nerfkit.engine.run import init_state
from nerfkit.engine.trainer import make_train_step


def scene(unbounded: bool) -> Scene:
    rng = np.random.default_rng(0)
    n, h, w = 8, 64, 64
    c2w = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    c2w[:, :3, 3] = rng.uniform(-0.5, 0.5, (n, 3)) + (0 if unbounded else np.array([0, 0, 4.0]))
    f = np.full(n, 60.0, np.float32)
    cams = Cameras(c2w, f, f, np.full(n, w / 2, np.float32), np.full(n, h / 2, np.float32), w, h)
    imgs = rng.uniform(0, 1, (n, h, w, 3)).astype(np.float32)
    if unbounded:
        return Scene(imgs, cams, [str(i) for i in range(n)], 0.05, 1000.0,
                     aabb=np.array([[-1, -1, -1], [1, 1, 1]], np.float32), white_background=False,
                     unbounded=True)
    return Scene(imgs, cams, [str(i) for i in range(n)], 2.0, 6.0)


def timer(cfg, sc, steps: int):
    graphdef, state, tx = init_state(cfg, sc)
    src = PixelSource(sc, cfg.background)
    step = make_train_step(graphdef, tx, src, cfg.batch_size, False)
    key = jax.random.key(0)
    lr = np.float32(1e-2)
    state, m = step(state, src.data, key, lr)  # compile
    jax.block_until_ready(m)
    box = [state]

    def run():
        s = box[0]
        t0 = time.perf_counter()
        for i in range(steps):
            s, m = step(s, src.data, jax.random.fold_in(key, i), lr)
        jax.block_until_ready(m)
        box[0] = s
        return (time.perf_counter() - t0) / steps
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--settings", default="64:0.02,32:0.02,32:0.02:32,16:0.02",
                    help="comma-separated 1/cone_angle:dt_min[:num_samples]")
    args = ap.parse_args()
    base = presets()["ngp"][1].model
    runs = {"bounded": timer(base, scene(False), args.steps)}
    for item in args.settings.split(","):
        inv, dt, *ns = item.split(":")
        cfg = dataclasses.replace(base, cone_angle=1.0 / float(inv), dt_min=float(dt))
        if ns:
            cfg = dataclasses.replace(cfg, num_samples=int(ns[0]))
        k = cone_step_count(0.05, 1000.0, cfg.cone_angle, cfg.dt_min, 1e10)
        name = f"unbounded cone 1/{inv} dt_min {dt} S={cfg.num_samples} (K={k})"
        runs[name] = timer(cfg, scene(True), args.steps)
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(run())
    b = min(times["bounded"])
    for name, ts in times.items():
        print(f"{name:45s} {min(ts):.3f} s/step (x{min(ts) / b:.2f})  all: "
              + " ".join(f"{t:.3f}" for t in ts))


if __name__ == "__main__":
    main()
