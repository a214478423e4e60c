"""What ``nerfkit train --viewer`` costs in training throughput, with a browser connected.

Trains the ``ngp`` preset on the generated default scene for ``--steps`` steps, alternately
without the viewer and with it (:class:`nerfkit.viewer.training.ViewerCallback`) while a real
headless Chromium is connected and its camera moves every ``--move-every`` seconds along an
orbit (set through viser's server API, as a user dragging the view would). Throughput is steps
per second of wall time over the steps after ``--warmup`` (compilation excluded), renders
included: the callback renders between steps. Each mode runs ``--repeats`` times, interleaved,
as the machine is shared.

    python benchmarks/viewer_overhead.py --out benchmarks/results/viewer_overhead.json
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import threading
import time
from pathlib import Path

from common import print_table, write_json  # sets XLA flags first

import numpy as np

from nerfkit.engine.config import presets
from nerfkit.engine.trainer import Callback, train
from nerfkit.export.browser import Chromium, find_chromium
from nerfkit.export.camera_paths import orbit_path


class StepTimer(Callback):
    def __init__(self):
        self.times: list[float] = []

    def after_step(self, step, state, metrics):
        self.times.append(time.perf_counter())


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its descendants so far (Linux /proc)."""
    import os
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
    keep = {pid}
    for _ in range(8):  # descendants, level by level
        keep |= {p for p, (ppid, _) in stats.items() if ppid in keep}
    return sum(stats[p][1] for p in keep if p in stats)


class BrowserClient(Callback):
    """Opens the viewer in Chromium once it serves, then moves the camera periodically."""

    def __init__(self, viewer_cb, move_every: float, size=(800, 600)):
        self.viewer_cb, self.move_every, self.size = viewer_cb, move_every, size
        self.browser = None
        self.cpu_seconds = 0.0
        self._stop = threading.Event()

    def on_train_start(self, run_dir, state, start_step):
        v = self.viewer_cb.viewer
        self.browser = Chromium()
        # A laptop-sized page: SwiftShader draws it on the CPU cores that train.
        self.browser.call("Emulation.setDeviceMetricsOverride", {
            "width": self.size[0], "height": self.size[1], "deviceScaleFactor": 1,
            "mobile": False})
        self.browser.call("Page.navigate", {"url": v.url})
        deadline = time.monotonic() + 60
        while not v.server.get_clients() and time.monotonic() < deadline:
            time.sleep(0.1)
        client = next(iter(v.server.get_clients().values()))
        path = orbit_path(np.asarray(v.scene.c2w), 36)

        def move():
            i = 0
            while not self._stop.wait(self.move_every):
                v.set_camera(client, path.c2w[i % len(path.c2w)])
                i += 1
        threading.Thread(target=move, daemon=True).start()

    def on_train_end(self, summary):
        self._stop.set()
        if self.browser is not None:
            self.cpu_seconds = tree_cpu_seconds(self.browser.proc.pid)
            self.browser.close()


def run_once(cfg, viewer: bool, warmup: int, move_every: float, resolution: int) -> dict:
    from nerfkit.viewer.training import ViewerCallback
    timer = StepTimer()
    cbs: list[Callback] = [timer]
    vcb = client = None
    if viewer:
        vcb = ViewerCallback(port=0, resolution=resolution)
        client = BrowserClient(vcb, move_every)
        cbs += [vcb, client]
    t0 = time.perf_counter()
    train(cfg, callbacks=cbs)
    wall = time.perf_counter() - t0
    t = timer.times[warmup:]
    res = {"viewer": viewer, "steps_timed": len(t) - 1,
           "steps_per_s": (len(t) - 1) / (t[-1] - t[0])}
    if vcb is not None:
        # render_seconds counts every render (the first ones compile); the browser's CPU time
        # is headless Chromium drawing the page with SwiftShader on the same cores.
        res.update(renders=vcb.renders, render_seconds=vcb.render_seconds,
                   render_fraction=vcb.render_seconds / wall,
                   browser_cpu_s=client.cpu_seconds, wall_s=wall)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--move-every", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("viewer_overhead.json"))
    args = ap.parse_args()
    if find_chromium() is None:
        raise SystemExit("no chromium executable found (apt-get install chromium)")
    from nerfkit.data.synthetic import generate_default_scene
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_default_scene(Path(tmp) / "scene", num_train=8, num_test=1, resolution=64)
        base = dataclasses.replace(presets()["ngp"][1], data=str(data), max_steps=args.steps,
                                   final_eval=False, overwrite=True, output=Path(tmp) / "run",
                                   checkpoint_every=10 ** 9)
        for r in range(args.repeats):
            for viewer in (False, True):
                row = run_once(base, viewer, args.warmup, args.move_every, args.resolution)
                row["repeat"] = r
                rows.append(row)
    off = np.mean([r["steps_per_s"] for r in rows if not r["viewer"]])
    on = np.mean([r["steps_per_s"] for r in rows if r["viewer"]])
    for r in rows:
        r["relative"] = r["steps_per_s"] / off
    print_table(rows, ["repeat", "viewer", "steps_timed", "steps_per_s", "relative", "renders",
                       "render_seconds", "render_fraction", "browser_cpu_s", "wall_s"])
    summary = {"steps_per_s_without": float(off), "steps_per_s_with": float(on),
               "throughput_cost": float(1 - on / off)}
    print(f"throughput cost of --viewer with a moving client: {100 * (1 - on / off):.1f}%")
    write_json(args.out, "viewer_overhead",
               {**vars(args), "out": str(args.out), "model": "ngp preset",
                "scene": "generated default, 8 train views, 64 px"},
               {"rows": rows, **summary})


if __name__ == "__main__":
    main()
