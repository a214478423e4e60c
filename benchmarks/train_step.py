"""Seconds per training step on a trained run, before and after a change: two source trees.

A step on a freshly initialised model marches an all-occupied grid; on a trained run the
occupancy grid, the active rays and the samples are those of real training. This script loads
``--run``'s latest checkpoint (parameters and occupancy grid; a fresh optimiser state) and times
the jit'd train step of its config with each tree's ``nerfkit`` (``PYTHONPATH``), each round in
its own process, the trees alternating round by round so that a shared CPU slows them alike
(both load this checkout's compiled kernel, ``nerfkit/_ext``).
Reports the best and median seconds per step of each tree and their ratio.

    python benchmarks/train_step.py --run runs/lego-ngp --before /tmp/nerfkit-old \\
        [--after .] [--steps 30] [--rounds 3] --out train_step.json

With ``--variants`` instead of ``--before``, one tree (this one) and several model settings of the
run's config, each ``NAME='{"field": value, ...}'`` (e.g. two batch / packing presets on the
same trained state); the loss of the last step is reported too (same loss: same rays trained):

    python benchmarks/train_step.py --run runs/fern-ngp --variants \\
        'old={"batch_size": 4096, "train_active_fraction": 0.5}' \\
        'new={"batch_size": 6144, "train_active_fraction": 0.3333333333333333}'

With ``--env NAME=VAR=VALUE ...`` instead, one tree and one setting, with and without environment
variables (``default``: the environment as it is; each NAME adds its variable), e.g. glibc's huge
pages (``nerfkit.xla_flags.use_huge_pages``, which the ``nerfkit`` command applies itself):

    python benchmarks/train_step.py --run runs/lego-ngp --rounds 3 \\
        --env huge_pages=GLIBC_TUNABLES=glibc.malloc.hugetlb=1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from common import print_table, tree_env, write_json

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import dataclasses, json, sys, time
import nerfkit.xla_flags as xla_flags
xla_flags.configure_cpu()
import jax, jax.numpy as jnp, numpy as np
from nerfkit.data.raysource import PixelSource
from nerfkit.engine.run import TrainState, init_state, load_run
from nerfkit.engine.trainer import make_train_step
run = load_run(sys.argv[1])
steps = int(sys.argv[2])
cfg = dataclasses.replace(run.cfg.model, **json.loads(sys.argv[3]))
graphdef = init_state(cfg, run.info, 0)[0]
scene = run.load_split("train")
tx = cfg.optimizer()
state = TrainState(run.params, run.buffers, tx.init(run.params), jnp.asarray(run.step, jnp.int32))
src = PixelSource(scene, cfg.background)
step = make_train_step(graphdef, tx, src, cfg.batch_size, False)
key, lr = jax.random.key(0), np.float32(1e-3)
state, m = step(state, src.data, key, lr)
jax.block_until_ready(m)
t0 = time.perf_counter()
for i in range(steps):
    state, m = step(state, src.data, jax.random.fold_in(key, i + 1), lr)
jax.block_until_ready(m)
print(json.dumps({"seconds_per_step": (time.perf_counter() - t0) / steps,
                  "loss": float(m["loss"])}))
"""


def one_round(tree: Path, run: str, steps: int, overrides: str = "{}",
              extra_env: dict | None = None) -> dict:
    env = tree_env(tree, {**os.environ, **(extra_env or {})})
    out = subprocess.run([sys.executable, "-c", CHILD, run, str(steps), overrides], env=env,
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run (nerfkit train output)")
    ap.add_argument("--before", help="source tree of the code before the change")
    ap.add_argument("--after", default=str(ROOT), help="source tree after (default: this one)")
    ap.add_argument("--variants", nargs="+", metavar="NAME=JSON",
                    help="model settings to compare instead of two trees (see the docstring)")
    ap.add_argument("--env", nargs="+", metavar="NAME=VAR=VALUE",
                    help="environment variables to compare instead (see the docstring)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default="train_step.json")
    args = ap.parse_args()
    if sum(x is not None for x in (args.before, args.variants, args.env)) != 1:
        ap.error("give one of --before TREE, --variants NAME=JSON ..., --env NAME=VAR=VALUE ...")
    envs: dict[str, dict] = {}
    if args.env:
        cases = {"default": (Path(args.after).resolve(), "{}")}
        envs["default"] = {}
        for v in args.env:
            name, _, assign = v.partition("=")
            var, eq, value = assign.partition("=")
            if not (name and var and eq):
                ap.error(f"--env {v!r}: not NAME=VAR=VALUE")
            cases[name] = (Path(args.after).resolve(), "{}")
            envs[name] = {var: value}
    elif args.variants:
        cases = {}
        for v in args.variants:
            name, _, js = v.partition("=")
            try:
                json.loads(js)
            except json.JSONDecodeError as e:
                ap.error(f"--variants {v!r}: not NAME=JSON ({e})")
            cases[name] = (Path(args.after).resolve(), js)
    else:
        cases = {"before": (Path(args.before).resolve(), "{}"),
                 "after": (Path(args.after).resolve(), "{}")}
    times: dict[str, list[float]] = {k: [] for k in cases}
    losses: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, (tree, js) in cases.items():
            r = one_round(tree, args.run, args.steps, js, envs.get(name))
            times[name].append(r["seconds_per_step"])
            losses[name] = r["loss"]
    rows = [{"code": name, "tree": str(cases[name][0]), "settings": json.loads(cases[name][1]),
             "env": envs.get(name, {}),
             "best_s": min(ts), "median_s": statistics.median(ts), "rounds": ts,
             "last_loss": losses[name]} for name, ts in times.items()]
    for r in rows:
        r["ratio_to_before"] = r["best_s"] / rows[0]["best_s"]
    print_table(rows, ["code", "best_s", "median_s", "ratio_to_before", "last_loss"])
    write_json(args.out, "train_step",
               {"run": args.run, "steps": args.steps, "rounds": args.rounds,
                "variants": args.variants, "env": args.env}, {"rows": rows})


if __name__ == "__main__":
    main()
