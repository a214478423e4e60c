"""Hash-grid NeRF (the default model): quality against training time, throughput, memory.

Trains the ``ngp`` preset with the real CLI, each command in its own process (so each one's peak
resident memory is its own):

* lego at 200x200 (downscale 4) for ``--minutes`` (10) of training, once per ``--backends``
  (default ``auto``; ``auto jax`` compares with and without the kernel), evaluated on all 200 test
  views after 2, 4, 5 and 10 minutes (PSNR, SSIM); training rays/s; then ``nerfkit eval`` alone for
  ``eval_seconds`` (200 views; issue 19's target: <= 60 s), rendering rays/s and rendering memory
  (``peak_rss_mb_eval``; ``peak_rss_mb``: the larger of training's and evaluation's);
* fern (``images_8``, every 8th view held out, NDC) for ``--minutes``: test PSNR.

    python benchmarks/ngp.py --out ngp.json [--minutes 10] [--backends auto jax] [--skip-fern | --skip-lego]
        [--keep-runs DIR]
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
SHARED = ROOT.parent / "shared" / "datasets"


def run_cli(args: list[str]) -> tuple[float, float]:
    """Runs ``python -m nerfkit.cli ARGS``; returns (wall seconds, peak RSS MiB of that process)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nerfkit.cli", *args], cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"nerfkit {' '.join(args)} failed with {proc.returncode}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024.0


def training_rays_per_s(run: Path) -> tuple[int, float]:
    """(steps, training rays/s): rays of the run's own batches (its config.json)."""
    batch = json.loads((run / "config.json").read_text())["train"]["model"]["batch_size"]
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    last = max((l for l in lines if "loss" in l), key=lambda l: l["step"])
    return int(last["step"]), last["step"] * batch / last["time"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="ngp.json")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--marks", type=float, nargs="*", default=[2.0, 4.0, 5.0, 10.0])
    ap.add_argument("--backends", nargs="+", default=["auto"],
                    help="hash-grid backends to train lego with, one after the other "
                         "(e.g. `auto jax`: with and without the kernel); the first is "
                         "results.lego, "
                         "the others results.lego_<backend>")
    ap.add_argument("--skip-fern", action="store_true")
    ap.add_argument("--skip-lego", action="store_true", help="fern only")
    ap.add_argument("--keep-runs", default=None, help="keep the runs in this folder")
    ap.add_argument("--no-lpips", action="store_true",
                    help="skip LPIPS in the evaluations (PSNR and SSIM only)")
    ap.add_argument("extra", nargs="*", help="extra flags for `nerfkit train ngp`")
    args = ap.parse_args()
    lpips_flag = [] if args.no_lpips else ["--eval-lpips"]

    tmp = Path(args.keep_runs or tempfile.mkdtemp(prefix="nerfkit-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    marks = [m for m in args.marks if m <= args.minutes]
    results: dict = {}

    def lego_run(backend: str) -> tuple[dict, list]:
        lego = tmp / f"lego-ngp-{backend}"
        _, train_rss = run_cli(["train", "ngp", "--data", str(SHARED / "nerf_synthetic" / "lego"),
                                "--downscale", "4", "--max-minutes", str(args.minutes),
                                "--eval-minutes", *map(str, marks), "--output", str(lego),
                                "--overwrite", *lpips_flag, "--model.backend", backend,
                                *args.extra])
        steps, rays_s = training_rays_per_s(lego)
        # The final evaluation (all 200 test views) ran in the training process: its timing gives
        # the rendering rays/s, and the process's peak memory covers training and rendering.
        ev = json.loads((lego / "eval" / "test.json").read_text())
        lego_rows = []
        res = {"backend": backend, "steps": steps, "train_rays_per_s": rays_s,
               "peak_rss_mb_train_and_render": train_rss,
               "render_rays_per_s": ev["num_views"] * 200 * 200
                                    / (ev["seconds"] - ev.get("lpips_seconds", 0.0)),
               "psnr": ev["psnr"], "ssim": ev["ssim"], "lpips": ev.get("lpips"),
               "lpips_seconds": ev.get("lpips_seconds"), "minutes": args.minutes}
        for m in marks:
            f = lego / "eval" / f"test_{m:g}min.json"
            if f.exists():
                e = json.loads(f.read_text())
                res[f"psnr_{m:g}min"], res[f"ssim_{m:g}min"] = e["psnr"], e["ssim"]
                res[f"lpips_{m:g}min"] = e.get("lpips")
                lego_rows.append({"scene": f"lego 200x200 ({backend})", "minutes": m,
                                  "psnr": e["psnr"], "ssim": e["ssim"], "lpips": e.get("lpips"),
                                  "views": e["num_views"]})
        # `nerfkit eval` alone (its own process): all 200 test views, its time and peak memory.
        eval_wall, eval_rss = run_cli(["eval", str(lego)])
        ev_alone = json.loads((lego / "eval" / "test.json").read_text())
        res.update(eval_seconds=ev_alone["seconds"], eval_wall_seconds=eval_wall,
                   peak_rss_mb_eval=eval_rss, peak_rss_mb=max(train_rss, eval_rss),
                   eval_rays_per_s=ev_alone["num_views"] * 200 * 200 / ev_alone["seconds"])
        return res, lego_rows

    rows = []
    for i, backend in enumerate([] if args.skip_lego else args.backends):
        res, lego_rows = lego_run(backend)
        results["lego" if i == 0 else f"lego_{backend}"] = res
        rows += lego_rows
        if res.get("psnr_4min") is not None:
            res["psnr_30db_by_4min"] = res["psnr_4min"] >= 30.0

    if not args.skip_fern:
        fern = tmp / "fern-ngp"
        _, fern_rss = run_cli(["train", "ngp", "--data", str(SHARED / "nerf_llff_data" / "fern"),
                               "--max-minutes", str(args.minutes), "--output", str(fern),
                               "--overwrite", *lpips_flag, *args.extra])
        e = json.loads((fern / "eval" / "test.json").read_text())
        fsteps, frays = training_rays_per_s(fern)
        results["fern"] = {"psnr": e["psnr"], "ssim": e["ssim"], "lpips": e.get("lpips"),
                           "minutes": args.minutes,
                           "steps": fsteps, "train_rays_per_s": frays,
                           "peak_rss_mb_train": fern_rss}
        rows.append({"scene": "fern 504x378", "minutes": args.minutes, "psnr": e["psnr"],
                     "ssim": e["ssim"], "lpips": e.get("lpips"), "views": e["num_views"]})

    print_table(rows, ["scene", "minutes", "psnr", "ssim", "lpips", "views"])
    if "lego" in results:
        print_table([{"what": k, "value": v} for k, v in results["lego"].items()
                     if not k.startswith(("psnr_", "ssim_", "lpips_"))], ["what", "value"])
    out = {"benchmark": "ngp", "config": {"preset": "ngp", "extra_flags": args.extra,
                                          "backends": args.backends,
                                          "minutes": args.minutes, "marks": marks},
           "results": results, "environment": environment()}
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
