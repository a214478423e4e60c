"""Crash safety, divergence and determinism of ``nerfkit train`` (issue 9), run as real processes
(``python -m nerfkit.cli train nerf ...``) on lego at 1/16 resolution with a tiny NeRF.

Faults come from the engine's test hook ``NERFKIT_TEST_FAULTS`` (:mod:`nerfkit.engine.faults`):
SIGKILL while a step runs, SIGKILL after a checkpoint's files are written but before orbax commits
them, a NaN batch, a NaN learning rate. The processes share a persistent XLA compilation cache, so
only the first run and the ``--on-nonfinite skip`` run compile the train step.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import requires_shared, shared_datasets

pytestmark = [requires_shared, pytest.mark.slow]

STEPS = 8


def _args(out: Path, *extra: str) -> list[str]:
    lego = shared_datasets() / "nerf_synthetic" / "lego"
    return [sys.executable, "-m", "nerfkit.cli", "train", "nerf", "--data", str(lego),
            "--downscale", "16", "--max-steps", str(STEPS), "--output", str(out),
            "--checkpoint-every", "2", "--log-every", "1", "--no-final-eval",
            "--model.depth", "2", "--model.width", "32", "--model.coarse-samples", "8",
            "--model.fine-samples", "8", "--model.batch-size", "256", *extra]


class Runs:
    """Starts the training processes; each result is ``(returncode, stderr, run_dir)``."""

    def __init__(self, root: Path):
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if k != "NERFKIT_TEST_FAULTS"}
        self.env.update(JAX_PLATFORMS="cpu", COLUMNS="400",  # no wrapped log lines
                        JAX_COMPILATION_CACHE_DIR=str(root / "xla-cache"),
                        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

    def start(self, name: str, *extra: str, faults: str | None = None) -> subprocess.Popen:
        env = dict(self.env, **({"NERFKIT_TEST_FAULTS": faults} if faults else {}))
        return subprocess.Popen(_args(self.root / name, *extra), env=env, cwd=self.root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait(self, name: str, proc: subprocess.Popen) -> tuple[int, str, Path]:
        _, err = proc.communicate(timeout=600)
        return proc.returncode, err, self.root / name

    def run(self, name: str, *extra: str, faults: str | None = None):
        return self.wait(name, self.start(name, *extra, faults=faults))


def _complete_steps(run: Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


def _partial(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.isdigit())


def _metrics(run: Path) -> list[dict]:
    return [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]


def _per_step(run: Path) -> dict[int, tuple[float, float, float]]:
    """step -> (loss, psnr, lr) of the per-step lines; asserts one line per step."""
    lines = [m for m in _metrics(run) if not m.get("final")]
    steps = [m["step"] for m in lines]
    assert steps == sorted(set(steps)), steps
    return {m["step"]: (m["loss"], m["psnr"], m["lr"]) for m in lines}


def _params(run: Path):
    from nerfkit.engine.run import load_run
    r = load_run(run)
    return r.step, [np.asarray(x) for x in jax.tree_util.tree_leaves(r.params)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """All the runs, started as soon as what they need is there (2 cores: a few at a time)."""
    r = Runs(tmp_path_factory.mktemp("crash"))
    # The two distinct train steps compile side by side: the reference's (which every other run
    # then loads from the cache) and the one that skips non-finite updates.
    background = {"skip": r.start("skip", "--on-nonfinite", "skip",
                                  faults="nan-batch:3,nan-lr:5")}
    out = {"reference": r.run("reference")}
    assert out["reference"][0] == 0, out["reference"][1]
    background.update(repeat=r.start("repeat"), stop=r.start("stop", faults="nan-lr:3"))
    # SIGKILL inside step 5, then inside the write of checkpoint 6, then resume to the end.
    out["killed_mid_step"] = r.run("chain", faults="kill-step:5")
    out["after_kill_1"] = (_complete_steps(r.root / "chain"), _partial(r.root / "chain"),
                           _per_step(r.root / "chain"))
    out["killed_mid_checkpoint"] = r.run("chain", "--resume", faults="kill-checkpoint:6")
    out["after_kill_2"] = (_complete_steps(r.root / "chain"), _partial(r.root / "chain"),
                           _per_step(r.root / "chain"))
    out["resumed"] = r.run("chain", "--resume")
    for name, proc in background.items():
        out[name] = r.wait(name, proc)
    return out


def test_sigkill_mid_step_and_mid_checkpoint_then_resume_matches_uninterrupted(runs):
    code, err, _ = runs["killed_mid_step"]
    assert code == -signal.SIGKILL, err
    steps, partial, logged = runs["after_kill_1"]
    assert steps == [2, 4] and partial == [] and sorted(logged) == [1, 2, 3, 4]

    code, err, _ = runs["killed_mid_checkpoint"]
    assert code == -signal.SIGKILL, err
    assert "resuming from checkpoint 4" in err
    steps, partial, logged = runs["after_kill_2"]
    # Checkpoint 6's files are on disk but uncommitted: never listed, never resumed from.
    assert steps == [2, 4] and len(partial) == 1 and partial[0].startswith("6.orbax-checkpoint-tmp")
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]

    code, err, run = runs["resumed"]
    assert code == 0, err
    assert "resuming from checkpoint 4" in err       # the last complete one, not the partial 6
    assert _complete_steps(run) == [4, 6, 8] and _partial(run) == []
    ref = runs["reference"][2]
    # The log was rewound to step 4 and continued: one line per step, equal to the reference.
    got, want = _per_step(run), _per_step(ref)
    assert sorted(got) == list(range(1, STEPS + 1))
    for s in want:
        np.testing.assert_allclose(got[s], want[s], rtol=1e-6, err_msg=f"step {s}")
    (sa, pa), (sb, pb) = _params(ref), _params(run)
    assert sa == sb == STEPS
    for x, y in zip(pa, pb):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_same_seed_and_config_give_identical_metrics(runs):
    code, err, run = runs["repeat"]
    assert code == 0, err
    ref = runs["reference"][2]
    assert _per_step(run) == _per_step(ref)           # bit-identical on CPU
    for x, y in zip(_params(ref)[1], _params(run)[1]):
        np.testing.assert_array_equal(x, y)


def test_nonfinite_parameters_stop_the_run_keeping_the_last_good_checkpoint(runs):
    code, err, run = runs["stop"]
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: non-finite parameters after the update at step 3"), last
    assert f"the last good checkpoint (step 2) is kept in {run / 'checkpoints'}" in last
    assert "--on-nonfinite skip" in last
    assert _complete_steps(run) == [2] and _partial(run) == []
    assert sorted(_per_step(run)) == [1, 2]
    step, params = _params(run)
    assert step == 2 and all(np.all(np.isfinite(p)) for p in params)


def test_on_nonfinite_skip_skips_the_poisoned_steps(runs):
    code, err, run = runs["skip"]
    assert code == 0, err
    assert "non-finite loss at step 3" in err and "non-finite parameters after the update at " \
        "step 5" in err and err.count("update skipped") == 2, err
    logged = _per_step(run)
    assert sorted(logged) == list(range(1, STEPS + 1)) and math.isnan(logged[3][0])
    step, params = _params(run)
    assert step == STEPS and all(np.all(np.isfinite(p)) for p in params)
