"""Evaluation speed, before and after: ``nerfkit eval`` of one trained run with two source trees.

Each tree's ``nerfkit eval RUN`` runs in its own process (``PYTHONPATH`` set to the tree), one
after the other, so both see the same machine; reports wall seconds (process start included),
the evaluation's own ``seconds`` (rendering and metrics of every view), the process's CPU
seconds (user + system: less sensitive than wall time to other work on a shared machine), its
PSNR and the process's peak resident memory.

    python benchmarks/eval_speed.py --run runs/lego-ngp --before /tmp/nerfkit-old \\
        --out eval_speed.json

Both trees use this checkout's compiled kernel (``NERFKIT_FFI_LIB_DIR``, unless already set).
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


def eval_with(tree: Path, run: Path, split: str) -> dict:
    """``nerfkit eval`` of ``run`` with the ``nerfkit`` package of ``tree``."""
    env = tree_env(tree)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nerfkit.cli", "eval", str(run), "--split",
                             split], cwd=tree, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"nerfkit eval with {tree} failed")
    ev = json.loads((run / "eval" / f"{split}.json").read_text())
    return {"tree": str(tree), "wall_seconds": wall, "eval_seconds": ev["seconds"],
            "psnr": ev["psnr"], "ssim": ev["ssim"], "views": ev["num_views"],
            "peak_rss_mb": usage.ru_maxrss / 1024.0,
            "cpu_seconds": usage.ru_utime + usage.ru_stime}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--before", type=Path, required=True, help="the older source tree")
    ap.add_argument("--after", type=Path, default=ROOT, help="default: this tree")
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default="eval_speed.json")
    args = ap.parse_args()
    rows = [{"code": name, **eval_with(tree.resolve(), args.run.resolve(), args.split)}
            for name, tree in (("before", args.before), ("after", args.after))]
    print_table(rows, ["code", "views", "eval_seconds", "wall_seconds", "cpu_seconds", "psnr",
                      "peak_rss_mb"])
    write_json(args.out, "eval_speed", {"run": str(args.run), "split": args.split},
               {"rows": rows, "load_average_after": os.getloadavg()})


if __name__ == "__main__":
    main()
