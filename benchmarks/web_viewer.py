"""The browser viewer's speed and size: frames per second of ``nerfkit export web`` bundles in
headless Chromium, and the size of each export.

For each light-field family (R2L, NeRDF) the bundle is served from a local HTTP server and
rendered by the viewer's own code path (``nerfkitViewer.benchmark``: ``--frames`` frames from the
first training camera, each completed with a pixel read-back, after a 16-pixel-wide warm-up
frame that compiles the shaders). On this machine headless Chromium has no GPU: WebGL2 runs on SwiftShader,
a software rasteriser on the CPU, so these figures are a floor, not what a GPU browser shows.

Runs given with ``--runs`` are exported as they are; without them, each family is trained for
one step at its preset size on the generated default scene (speed and size do not depend on the
weights).

    python benchmarks/web_viewer.py --out benchmarks/results/web_viewer.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import print_table, write_json  # sets XLA flags first

from nerfkit.cli import main as cli
from nerfkit.engine.run import load_run
from nerfkit.export.browser import VIEWER_READY, Chromium, find_chromium, serve_folder
from nerfkit.export.web import export_web


def default_runs(root: Path) -> list[Path]:
    from nerfkit.data.synthetic import generate_default_scene
    data = generate_default_scene(root / "scene", num_train=4, num_test=1, resolution=64)
    runs = []
    for family in ("r2l", "nerdf"):
        out = root / family
        assert cli(["train", family, "--data", str(data), "--max-steps", "1", "--output",
                    str(out), "--no-final-eval"]) == 0
        runs.append(out)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="*", type=Path, default=None)
    ap.add_argument("--widths", nargs="*", type=int, default=[200, 400])
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("web_viewer.json"))
    args = ap.parse_args()
    if find_chromium() is None:
        raise SystemExit("no chromium executable found (apt-get install chromium)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = args.runs or default_runs(tmp)
        for run_dir in runs:
            run = load_run(run_dir)
            family = run.cfg.model.family
            out = tmp / f"web-{run_dir.name}"
            res = export_web(run, out)
            weights_mb = (out / "weights.bin").stat().st_size / 1e6
            with serve_folder(out) as url, Chromium(timeout=1800) as browser:
                browser.goto(url + "index.html", VIEWER_READY)
                gl = browser.evaluate("nerfkitViewer.glRenderer()")
                for width in args.widths:
                    t0 = time.perf_counter()
                    r = browser.evaluate(f"nerfkitViewer.benchmark({width}, {args.frames})",
                                         timeout=3600)
                    rows.append({
                        "family": family, "run": str(run_dir) if args.runs else "preset size",
                        "params": run.cfg.model.num_params(),
                        "resolution": f"{r['width']}x{r['height']}",
                        "ms_per_frame": r["ms_per_frame"], "fps": 1000.0 / r["ms_per_frame"],
                        "frames": args.frames, "wall_s": time.perf_counter() - t0,
                        "export_mb": res["bytes"] / 1e6, "weights_mb": weights_mb,
                        "gl_renderer": gl})
                    print(json.dumps(rows[-1]), flush=True)
    print_table(rows, ["family", "params", "resolution", "fps", "ms_per_frame", "export_mb",
                       "weights_mb"])
    print(f"WebGL renderer: {rows[0]['gl_renderer'] if rows else '?'} (headless Chromium)")
    write_json(args.out, "web_viewer", {"widths": args.widths, "frames": args.frames,
                                        "runs": [str(r) for r in args.runs or []],
                                        "browser": "headless chromium (software WebGL2)"},
               {"rows": rows})


if __name__ == "__main__":
    main()
