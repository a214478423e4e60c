"""Peak resident memory of training and of rendering one full-resolution (800x800) lego view.

Each measurement runs in its own process and reports that process's peak resident set size
(``ru_maxrss`` from ``wait4``), so the numbers do not mix:

* ``train``: ``nerfkit train <preset>`` on lego at 200x200 (downscale 4, the benchmark setting of
  ``benchmarks/ngp.py``) for ``--train-steps`` steps, no evaluation;
* ``render 800x800``: load a trained run and render one 800x800 view (a training camera of the
  run at 4x its resolution: lego's full size) twice; the second render's time is reported.
  Issue 19 asks for this to stay under 2 GiB. With ``--before TREE`` the render is measured with
  that (older) source tree as well.

Each is measured with glibc's huge pages (``nerfkit.xla_flags.use_huge_pages``, which the
``nerfkit`` command applies) and without (``NERFKIT_NO_HUGE_PAGES=1``).

    python benchmarks/memory.py --run runs/lego-ngp --out memory.json [--before /tmp/old]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import print_table, tree_env, write_json

ROOT = Path(__file__).resolve().parents[1]
LEGO = ROOT.parent / "shared" / "datasets" / "nerf_synthetic" / "lego"
LIMIT_MB = 2048.0

RENDER_CHILD = r"""
import json, sys, time
try:
    from nerfkit.xla_flags import use_huge_pages
    use_huge_pages()  # as the nerfkit command does; NERFKIT_NO_HUGE_PAGES=1: without
except ImportError:  # an older tree
    pass
from nerfkit.xla_flags import configure_cpu
configure_cpu()
import numpy as np
from nerfkit.engine.run import load_run
run = load_run(sys.argv[1])
size = int(sys.argv[2])
cams = run.scene_json["train_cameras"]
scale = size / float(cams["width"])
fx, fy, cx, cy = np.asarray(cams["intrinsics"][0], np.float64)
intr = np.array([fx * scale, fy * scale, size / 2, size / 2], np.float32)
c2w = np.asarray(cams["c2w"][0], np.float32)
bg = np.ones(3, np.float32) if run.info.white_background else np.zeros(3, np.float32)
r = run.renderer()
times = []
for _ in range(2):
    t0 = time.perf_counter()
    out = r.render_camera(c2w, intr, size, size, bg)
    times.append(time.perf_counter() - t0)
print(json.dumps({"seconds": times[-1], "first_seconds": times[0],
                  "mean_acc": float(out["acc"].mean())}))
"""


def run_child(args: list[str], tree: Path, huge_pages: bool = True) -> tuple[float, float, str]:
    """Runs ``python ARGS`` with ``tree`` on ``PYTHONPATH``: (wall s, peak RSS MiB, stdout)."""
    env = tree_env(tree, {k: v for k, v in os.environ.items() if k != "NERFKIT_NO_HUGE_PAGES"})
    if not huge_pages:
        env["NERFKIT_NO_HUGE_PAGES"] = "1"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=tree, env=env, stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024.0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a trained lego run (any family)")
    ap.add_argument("--out", default="memory.json")
    ap.add_argument("--preset", default="ngp")
    ap.add_argument("--train-steps", type=int, default=50)
    ap.add_argument("--size", type=int, default=800)
    ap.add_argument("--before", type=Path, default=None, help="an older source tree to compare")
    ap.add_argument("--work", type=Path, default=Path("/tmp/nerfkit-memory-bench"))
    args = ap.parse_args()
    rows = []
    trees = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    for huge in (True, False):
        for name, tree in trees:
            _, rss, out = run_child(["-c", RENDER_CHILD, str(args.run.resolve()), str(args.size)],
                                    tree, huge)
            res = json.loads(out.strip().splitlines()[-1])
            rows.append({"what": f"render {args.size}x{args.size}", "code": name,
                         "huge_pages": huge, "peak_rss_mb": rss, "seconds": res["seconds"],
                         "under_2gib": rss < LIMIT_MB})
        wall, rss, _ = run_child(["-m", "nerfkit.cli", "train", args.preset, "--data", str(LEGO),
                                  "--downscale", "4", "--max-steps", str(args.train_steps),
                                  "--output", str(args.work / "train"), "--overwrite",
                                  "--no-final-eval"], ROOT, huge)
        rows.append({"what": f"train {args.preset} lego 200x200 ({args.train_steps} steps)",
                     "code": "after", "huge_pages": huge, "peak_rss_mb": rss, "seconds": wall})
    print_table(rows, ["what", "code", "huge_pages", "peak_rss_mb", "seconds", "under_2gib"])
    write_json(args.out, "memory", {"run": str(args.run), "preset": args.preset,
                                    "train_steps": args.train_steps, "size": args.size},
               {"rows": rows, "limit_mb": LIMIT_MB})


if __name__ == "__main__":
    main()
