"""A real capture end to end: photos without poses -> structure from motion -> unbounded ngp.

Runs the real CLI, each command in its own process:

* ``nerfkit process-data images`` on the 252 bonsai photos (800x533, no poses) in
  ``../shared/datasets/real/bonsai/images``: registered/total images, mean reprojection error,
  seconds per stage (results.process);
* ``nerfkit train ngp --downscale 4`` (200x133) for ``--minutes`` (20) of training on that
  dataset, evaluated on the held-out views (every 8th photo, never seen in training) after 5, 10
  and 20 minutes: PSNR, SSIM and training rays/s up to each mark (results.ngp.<minutes>).

    python benchmarks/real_capture.py --out real_capture.json [--data data/bonsai] [--reuse]
        [--minutes 20] [--marks 5 10 20] [--keep-runs DIR] [-- extra train flags]

``--reuse`` keeps an existing ``--data`` folder (and its ``process_data.json``) instead of running
structure from motion again (~9 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import environment, print_table  # noqa: F401  (sets XLA flags for children too)

ROOT = Path(__file__).resolve().parents[1]
BONSAI = ROOT.parent / "shared" / "datasets" / "real" / "bonsai" / "images"


def run_cli(args: list[str]) -> tuple[float, float]:
    """Runs ``python -m nerfkit.cli ARGS``; returns (wall seconds, peak RSS MiB of that process)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nerfkit.cli", *args], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"nerfkit {' '.join(args)} failed with {code}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024.0


def rays_per_s_until(run: Path, seconds: float, batch: int) -> tuple[int, float]:
    """(step, mean training rays/s) at the last metrics line at or before ``seconds``."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lines = [rec for rec in lines if "loss" in rec and rec["time"] <= seconds + 1e-6]
    last = max(lines, key=lambda rec: rec["step"])
    return int(last["step"]), last["step"] * batch / last["time"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="real_capture.json")
    ap.add_argument("--images", default=str(BONSAI), help="folder of photos (no poses)")
    ap.add_argument("--data", default=None, help="process-data output (default: a temp folder)")
    ap.add_argument("--reuse", action="store_true", help="reuse an existing --data folder")
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--marks", type=float, nargs="*", default=[5.0, 10.0, 20.0])
    ap.add_argument("--downscale", type=int, default=4)
    ap.add_argument("--keep-runs", default=None, help="keep the run in this folder")
    ap.add_argument("--no-lpips", action="store_true",
                    help="skip LPIPS in the evaluations (PSNR and SSIM only)")
    ap.add_argument("extra", nargs="*", help="extra flags for `nerfkit train ngp`")
    args = ap.parse_args()

    tmp = Path(args.keep_runs or tempfile.mkdtemp(prefix="nerfkit-real-"))
    tmp.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else tmp / "bonsai"
    results: dict = {}

    if not (args.reuse and (data / "transforms.json").exists()):
        wall, rss = run_cli(["process-data", "images", args.images, "--output", str(data)])
    else:
        wall, rss = None, None
    proc = json.loads((data / "process_data.json").read_text())
    results["process"] = {k: proc.get(k) for k in ("registered", "total", "reprojection_px",
                                                   "num_points", "seconds", "matching",
                                                   "camera_model")}
    results["process"].update(wall_seconds=wall, peak_rss_mb=rss, reused=wall is None)

    from nerfkit.engine.config import presets
    preset = presets()["ngp"][1].model
    batch = preset.batch_size
    # In an unbounded scene every ray crosses occupied space, so the packing keeps the first
    # train_active_fraction of each batch in the loss: rays_per_s counts the batch, and
    # loss_rays_per_s the rays that were trained on.
    fraction = preset.train_active_fraction
    marks = [m for m in args.marks if m <= args.minutes]
    run = tmp / "bonsai-ngp"
    _, train_rss = run_cli(["train", "ngp", "--data", str(data), "--downscale",
                            str(args.downscale), "--max-minutes", str(args.minutes),
                            "--eval-minutes", *map(str, marks), "--output", str(run),
                            "--overwrite", *([] if args.no_lpips else ["--eval-lpips"]),
                            *args.extra])
    results["ngp"] = {"peak_rss_mb": train_rss}
    rows = []
    for m in marks:
        f = run / "eval" / f"test_{m:g}min.json"
        if not f.exists():
            continue
        e = json.loads(f.read_text())
        steps, rays_s = rays_per_s_until(run, e["train_seconds"], batch)
        results["ngp"][f"{m:g}"] = {"psnr": e["psnr"], "ssim": e["ssim"],
                                    "lpips": e.get("lpips"), "rays_per_s": rays_s,
                                    "loss_rays_per_s": rays_s * fraction,
                                    "steps": steps, "views": e["num_views"]}
        rows.append({"minutes": m, "psnr": e["psnr"], "ssim": e["ssim"], "lpips": e.get("lpips"),
                     "rays_per_s": rays_s, "steps": steps, "views": e["num_views"]})

    p = results["process"]
    print_table([{"registered": f"{p['registered']}/{p['total']}",
                  "reprojection_px": p["reprojection_px"], "points": p["num_points"],
                  **{f"{k}_s": v for k, v in (p["seconds"] or {}).items()}}],
                ["registered", "reprojection_px", "points",
                 *[f"{k}_s" for k in (p["seconds"] or {})]])
    print_table(rows, ["minutes", "psnr", "ssim", "lpips", "rays_per_s", "steps", "views"])
    out = {"benchmark": "real_capture",
           "config": {"images": args.images, "downscale": args.downscale, "preset": "ngp",
                      "minutes": args.minutes, "marks": marks, "extra_flags": args.extra,
                      "config_file": "configs/bonsai-ngp.json"},
           "results": results, "environment": environment()}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
