"""Data-parallel NGP training throughput on 1, 2 and 4 devices (and 2 processes).

Each configuration runs in a fresh child process (the device count is fixed when JAX starts):
``--xla_force_host_platform_device_count=D`` for D host (CPU) devices, or two processes joined by
``jax.distributed`` (gloo collectives) with one device each. The child builds the ``ngp`` preset
on ``--data`` and the train step of ``nerfkit train`` on a ``('data',)`` mesh over all its devices
(the same global batch whatever the device count), runs warm-up steps (compile, the first
occupancy-grid updates), then ``--steps`` timed steps; the median gives training rays/s. The
compiled program's per-device FLOP count (XLA's cost analysis) shows how the work is split.

The 1-device child also times the step built *without* a mesh (plain ``jax.jit``, as before
multi-device support), interleaved step by step with the 1-device-mesh step: the cost of the
mesh on a single device.

On a 2-core CPU, forced host devices share the same two cores, so more devices cannot train
faster: these figures measure what partitioning and the collectives cost, not a speed-up.

    python benchmarks/scaling.py --out benchmarks/results/scaling.json [--data LEGO]
        [--downscale 8] [--steps 8] [--devices 1 2 4] [--processes 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import environment, print_table, write_json  # sets XLA flags first

LEGO = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "nerf_synthetic" / "lego"


def child(args) -> None:
    """Measures one configuration; process 0 prints one JSON line prefixed ``RESULT``."""
    import jax
    if args.num_processes > 1:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax.numpy as jnp
    import numpy as np

    from nerfkit.engine.config import presets

    PRESETS = presets()
    from nerfkit.data import load_scene
    from nerfkit.data.raysource import PixelSource
    from nerfkit.engine import distributed
    from nerfkit.engine.trainer import make_train_step
    from nerfkit.engine.run import init_state

    cfg = PRESETS["ngp"][1].model
    scene = load_scene(args.data, "train", args.downscale)
    mesh = distributed.data_mesh()
    rep = distributed.replicated(mesh)
    tx = cfg.optimizer()
    source = PixelSource(scene, cfg.background)
    variants = {"mesh": mesh}
    if len(jax.devices()) == 1 and args.num_processes == 1:
        variants["no_mesh"] = None
    runs = {}
    for name, m in variants.items():
        # A fresh model per variant: steps donate (delete) their input state.
        graphdef, state, tx = init_state(cfg, scene, 0)
        data = source.data
        if m is not None:
            state, data = distributed.put((state, data), rep)
        else:
            state = jax.device_put(state, jax.devices()[0])
        step = make_train_step(graphdef, tx, source, cfg.batch_size, False, m)
        # Per-step inputs placed as the compiled step takes them (outside the timed region).
        inputs = [(jax.random.fold_in(jax.random.key(0), i), jnp.float32(cfg.lr_init))
                  for i in range(args.warmup + args.steps)]
        if m is not None:
            inputs = [distributed.put(a, rep) for a in inputs]
        t0 = time.perf_counter()
        compiled = step.lower(state, data, *inputs[0]).compile()
        compile_s = time.perf_counter() - t0
        flops = (compiled.cost_analysis() or {}).get("flops")
        t0 = time.perf_counter()
        for i in range(args.warmup):
            state, aux = compiled(state, data, *inputs[i])
            float(aux["loss"])
        runs[name] = dict(step=compiled, state=state, data=data, inputs=inputs, times=[],
                          compile_s=compile_s, warmup_s=time.perf_counter() - t0, flops=flops)
    for i in range(args.warmup, args.warmup + args.steps):
        for r in runs.values():
            t0 = time.perf_counter()
            r["state"], aux = r["step"](r["state"], r["data"], *r["inputs"][i])
            float(aux["loss"])  # blocks
            r["times"].append(time.perf_counter() - t0)
    out = {}
    for name, r in runs.items():
        med = float(np.median(r["times"]))
        out[name] = {"train_rays_per_s": cfg.batch_size / med, "step_ms": 1e3 * med,
                     "step_ms_all": [1e3 * t for t in r["times"]], "compile_s": r["compile_s"],
                     "warmup_s": r["warmup_s"], "flops_per_device": r["flops"]}
    if jax.process_index() == 0:
        print("RESULT " + json.dumps({"devices": len(jax.devices()),
                                      "processes": jax.process_count(),
                                      "batch_size": cfg.batch_size, "runs": out,
                                      "load_average_1min": os.getloadavg()[0]}), flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(args, devices: int, processes: int) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    base = [sys.executable, __file__, "--child", "--data", args.data, "--downscale",
            str(args.downscale), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--num-processes", str(processes), "--coordinator", f"127.0.0.1:{_free_port()}"]
    procs = [subprocess.Popen(base + ["--process-id", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(processes)]
    outs = [p.communicate() for p in procs]
    for p, (so, se) in zip(procs, outs):
        if p.returncode:
            raise SystemExit(f"child ({devices} devices, {processes} processes) failed:\n"
                             f"{so[-2000:]}\n{se[-4000:]}")
    line = next(l for l in outs[0][0].splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", default="scaling.json")
    ap.add_argument("--data", default=str(LEGO))
    ap.add_argument("--downscale", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4],
                    help="host devices per single-process configuration")
    ap.add_argument("--processes", type=int, nargs="*", default=[2],
                    help="process counts (one device each) of the multi-process configurations")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--num-processes", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    configs = [(d, 1) for d in args.devices] + [(1, p) for p in args.processes]
    results, rows = [], []
    for devices, processes in configs:
        r = run_config(args, devices, processes)
        results.append(r)
        for name, m in r["runs"].items():
            rows.append({"devices": r["devices"], "processes": r["processes"],
                         "step": "plain jit (no mesh)" if name == "no_mesh" else "mesh",
                         "rays/s": m["train_rays_per_s"], "step ms": m["step_ms"],
                         "GFLOP/device": (m["flops_per_device"] or 0) / 1e9,
                         "compile s": m["compile_s"], "load": r["load_average_1min"]})
        print(f"done: {devices} device(s) x {processes} process(es)", file=sys.stderr, flush=True)
    print(f"NGP preset training, {results[0]['batch_size']}-ray global batch, "
          f"{Path(args.data).name} downscale {args.downscale}, median of {args.steps} steps:")
    print_table(rows, ["devices", "processes", "step", "rays/s", "step ms", "GFLOP/device",
                       "compile s", "load"])
    write_json(args.out, "scaling",
               {"data": args.data, "downscale": args.downscale, "steps": args.steps,
                "warmup": args.warmup, "configs": configs,
                "note": "host devices forced with --xla_force_host_platform_device_count share "
                        "the machine's cores; on a 2-core CPU this measures the overhead of "
                        "partitioning and collectives, not a speed-up"},
               {"configs": results, "environment_parent": environment()})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
