"""Light fields against radiance fields, side by side: FLOPs per ray, render speed, test PSNR.

For each family (``nerf``, ``ngp`` when registered, ``r2l``, ``nerdf``):

* ``flops_per_ray``: counted from the architecture (``ModelConfig.flops_per_ray``: 2 x the
  multiply-adds of the dense layers per ray, the count of the R2L paper, 303.8 M for NeRF and
  11.8 M for R2L), and ``xla_flops_per_ray``: XLA's cost analysis of the compiled render function
  (everything in the graph: encodings, sampling, compositing) divided by the rays it renders.
  XLA counts the body of a loop once, so the XLA figure of R2L (whose 43 residual blocks run in
  one ``lax.scan``) counts a single block; the architecture count is the one to compare;
* ``render_rays_per_s``: rays rendered per second through the product path
  (:class:`nerfkit.engine.renderer.Renderer`, one compiled chunk), warm-up (compile) excluded, the
  median of ``--repeats`` runs; ``speedup_vs_nerf`` and ``flops_reduction_vs_nerf`` against the
  ``nerf`` row measured in the same process;
* ``psnr`` on the test split, for trained runs given with ``--runs`` (their ``eval/test.json``
  when it covers the whole split, else an evaluation on ``--eval-views`` evenly spaced views),
  and ``minutes`` of training or distillation (from the run's ``metrics.jsonl``); students also
  report their teacher's PSNR, the gap, and their PSNR at each periodic evaluation
  (``psnr_curve``, ``[minutes, psnr]``, with ``--eval-every`` during distillation) with the gap
  to the teacher on the same views (``psnr_gap_curve``, ``teacher_psnr_curve_views``).

Families without a run are measured with untrained weights at their preset sizes (FLOPs and speed
do not depend on the weights). ``--quick`` measures only those (no runs, no PSNR): cheap.

    python benchmarks/light_fields.py --quick --out light_fields.json
    python benchmarks/light_fields.py --out light_fields.json   # uses runs/lego-* when present
    python benchmarks/light_fields.py --runs runs/lego-nerf runs/lego-ngp runs/lego-r2l \\
        runs/lego-nerdf --out light_fields.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Optional

from common import peak_rss_mb, print_table, time_fn, write_json  # sets XLA flags first

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.data.raysource import RayGeometry, camera_image_rays
from nerfkit.engine.renderer import Renderer
from nerfkit.engine.evaluate import evaluate, evenly_spaced_views
from nerfkit.engine.trainer import periodic_eval_views
from nerfkit.engine.run import build_model, load_run
from nerfkit.models import MODELS, SceneInfo

FAMILIES = ("nerf", "ngp", "r2l", "nerdf")
#: lego at 200 x 200: NeRF-Synthetic's field of view, cameras at radius 4.03, near 2, far 6.
LEGO_INFO = SceneInfo(((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)), 2.0, 6.0)
LEGO_GEOM = RayGeometry(2.0, 6.0)
CAMERA_ANGLE_X = 0.6911112070083618
RADIUS = 4.0311284


def preset_model(family: str):
    from nerfkit.engine.config import presets
    PRESETS = presets()
    if family in PRESETS:
        return PRESETS[family][1].model
    return MODELS[family]()


def lego_view_rays(width: int, elevation_deg: float = 30.0):
    """Rays of a ``width x width`` view of the lego setup (camera on the training sphere)."""
    el = math.radians(elevation_deg)
    c = np.array([math.cos(el), 0.3 * math.cos(el), math.sin(el)])
    c = RADIUS * c / np.linalg.norm(c)
    z = c / np.linalg.norm(c)
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    c2w = np.stack([x, np.cross(z, x), z, c], -1).astype(np.float32)
    focal = 0.5 * width / math.tan(0.5 * CAMERA_ANGLE_X)
    intr = np.array([focal, focal, width / 2, width / 2], np.float32)
    return camera_image_rays(LEGO_GEOM, c2w, intr, width, width).reshape(-1)


def count_params(params) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def xla_flops_per_ray(renderer: Renderer, rays, chunk: int) -> Optional[float]:
    """XLA's flop count of one compiled render chunk, per ray (``None`` if unavailable)."""
    piece = jax.tree_util.tree_map(lambda x: x[:chunk], rays)
    bg = jnp.ones((chunk, 3), jnp.float32)
    try:
        cost = renderer._fn.lower(renderer.params, renderer.buffers, piece, bg).compile() \
            .cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        return float(cost["flops"]) / chunk
    except Exception:  # cost analysis is best-effort on some backends
        return None


def measure(family: str, model_cfg, graphdef, params, buffers, geom, rays, n_rays: int,
            repeats: int) -> dict[str, Any]:
    chunk = min(n_rays, rays.origins.shape[0])
    renderer = Renderer(graphdef, params, buffers, geom, chunk)
    sub = jax.tree_util.tree_map(lambda x: x[:chunk], rays)
    bg = np.ones(3, np.float32)
    seconds, compile_s = time_fn(lambda: renderer.render_rays(sub, bg)["rgb"], repeats=repeats)
    fpr = getattr(model_cfg, "flops_per_ray", None)
    return {
        "params": count_params(params),
        "flops_per_ray": float(fpr()) if callable(fpr) else None,
        "xla_flops_per_ray": xla_flops_per_ray(renderer, rays, chunk),
        "render_rays_per_s": chunk / seconds,
        "render_compile_s": compile_s,
        "speed_rays": chunk,
    }


def run_minutes(run_dir: Path) -> Optional[float]:
    path = run_dir / "metrics.jsonl"
    t = None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "time" in rec:
                t = max(t or 0.0, float(rec["time"]))
    return None if t is None else t / 60.0


def psnr_curve(run_dir: Path) -> list[list[float]]:
    """``[[minutes, psnr], ...]`` of the run's periodic evaluations (``--eval-every``)."""
    out = []
    path = run_dir / "metrics.jsonl"
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if "eval_psnr" in rec:
                out.append([float(rec["time"]) / 60.0, float(rec["eval_psnr"])])
    return out


def run_test_psnr(run, eval_views: int) -> tuple[Optional[float], int]:
    """The run's test PSNR: its ``eval/test.json`` if it covers the whole split, else an
    evaluation on ``eval_views`` evenly spaced test views."""
    path = run.run_dir / "eval" / "test.json"
    test = run.load_split("test")
    if path.exists():
        ev = json.loads(path.read_text())
        if ev.get("num_views") == len(test) and ev.get("step") in (None, run.step):
            return float(ev["psnr"]), len(test)
    if eval_views <= 0:
        return None, 0
    views = evenly_spaced_views(len(test), eval_views)
    ev = evaluate(run.renderer(), test, views)
    return float(ev["psnr"]), len(views)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="light_fields.json")
    ap.add_argument("--runs", nargs="*", default=None,
                    help="trained run directories (teacher and students; one per family); "
                         "default: those of runs/lego-{nerf,ngp,r2l,nerdf} that exist (the "
                         "README's acceptance commands make them)")
    ap.add_argument("--quick", action="store_true",
                    help="untrained preset models only: FLOPs and render speed")
    ap.add_argument("--families", nargs="*", default=list(FAMILIES))
    ap.add_argument("--speed-rays", type=int, default=4096,
                    help="rays per timed render call (one chunk)")
    ap.add_argument("--slow-speed-rays", type=int, default=1024,
                    help="rays per timed call for families above 50 MFLOPs per ray (NeRF)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-views", type=int, default=200,
                    help="test views for runs without a full eval/test.json (0: skip)")
    args = ap.parse_args()

    runs: dict[str, Path] = {}
    if args.runs is None:
        args.runs = [str(p) for f in FAMILIES
                     if (p := Path("runs") / f"lego-{f}").joinpath("config.json").is_file()]
        if args.runs and not args.quick:
            print("trained runs found: " + " ".join(args.runs), flush=True)
    if not args.quick:
        for r in args.runs:
            run_dir = Path(r)
            family = json.loads((run_dir / "config.json").read_text())["train"]["model"]["family"]
            runs[family] = run_dir
    families = [f for f in args.families if f in MODELS]
    rays = lego_view_rays(200)

    results: dict[str, dict[str, Any]] = {}
    for family in families:
        row: dict[str, Any]
        if family in runs:
            run = load_run(runs[family])
            cfg = run.cfg.model
            graphdef, params, buffers, geom = run.graphdef, run.params, run.buffers, run.geom
            view = run.load_split("test")
            cams = view.cameras
            view_rays = camera_image_rays(
                geom, cams.c2w[0], np.array([cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0]]),
                cams.width, cams.height).reshape(-1)
        else:
            cfg = preset_model(family)
            graphdef, params, buffers = build_model(cfg, LEGO_INFO, 0)
            geom, view_rays = LEGO_GEOM, rays
        fpr = getattr(cfg, "flops_per_ray", None)
        slow = callable(fpr) and fpr() > 50e6
        n = args.slow_speed_rays if slow else args.speed_rays
        print(f"[{family}] measuring render speed on {n} rays"
              + (f" ({runs[family]})" if family in runs else " (untrained preset)"), flush=True)
        row = measure(family, cfg, graphdef, params, buffers, geom, view_rays, n, args.repeats)
        row.update({"psnr": None, "minutes": None, "trained": family in runs})
        if family in runs:
            run_dir = runs[family]
            row["run"] = str(run_dir)
            row["minutes"] = run_minutes(run_dir)
            row["psnr"], row["psnr_views"] = run_test_psnr(run, args.eval_views)
            curve = psnr_curve(run_dir)
            if curve:
                row["psnr_curve"] = curve
            teacher = getattr(cfg, "teacher", None)
            if teacher:
                row["teacher"] = teacher
                t_path = Path(teacher) / "eval" / "test.json"
                if t_path.exists():
                    t_ev = json.loads(t_path.read_text())
                    row["teacher_psnr"] = float(t_ev["psnr"])
                    if row["psnr"] is not None:
                        row["psnr_gap_vs_teacher"] = row["psnr"] - row["teacher_psnr"]
                    # The teacher's PSNR on the periodic evaluations' own views gives the gap
                    # curve.
                    per_view = t_ev.get("views") or []
                    n_eval = run.cfg.eval_views
                    if curve and n_eval > 0 and len(per_view) == len(view):
                        idx = periodic_eval_views(len(view), n_eval)
                        t_sub = float(np.mean([per_view[i]["psnr"] for i in idx]))
                        row["teacher_psnr_curve_views"] = t_sub
                        row["psnr_gap_curve"] = [[m, p - t_sub] for m, p in curve]
        results[family] = row

    base = results.get("nerf")
    for row in results.values():
        if base:
            row["speedup_vs_nerf"] = row["render_rays_per_s"] / base["render_rays_per_s"]
            if row["flops_per_ray"] and base["flops_per_ray"]:
                row["flops_reduction_vs_nerf"] = base["flops_per_ray"] / row["flops_per_ray"]

    table = [{"family": f, "params": r["params"],
              "MFLOPs/ray": None if r["flops_per_ray"] is None else r["flops_per_ray"] / 1e6,
              "XLA MFLOPs/ray": (None if r["xla_flops_per_ray"] is None
                                 else r["xla_flops_per_ray"] / 1e6),
              "rays/s": r["render_rays_per_s"], "x nerf": r.get("speedup_vs_nerf"),
              "PSNR": r["psnr"], "min": r["minutes"]} for f, r in results.items()]
    print_table(table, ["family", "params", "MFLOPs/ray", "XLA MFLOPs/ray", "rays/s", "x nerf",
                        "PSNR", "min"])
    config = {"quick": args.quick, "runs": {k: str(v) for k, v in runs.items()},
              "speed_rays": args.speed_rays, "slow_speed_rays": args.slow_speed_rays,
              "repeats": args.repeats, "eval_views": args.eval_views,
              "untrained_scene": "lego 200x200 geometry (near 2, far 6, radius 4.03)",
              "peak_rss_mb": peak_rss_mb()}
    write_json(args.out, "light_fields", config, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
