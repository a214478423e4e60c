"""Data-parallel training on several devices and several processes (CPU).

Multi-device runs need ``--xla_force_host_platform_device_count`` before JAX starts, and
multi-process runs need processes of their own, so both run in subprocesses. The reference for a
sharded run is the same run on one device: with the same global batch and seed, the parameters
must agree up to float32 summation order.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from nerfkit.engine import distributed
from nerfkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

#: A tiny NGP (fast to compile and run) for the generated scene.
TINY_NGP = dict(levels=4, log2_table_size=10, max_resolution=64, hidden=16,
                occupancy_resolution=8, march_steps=32, num_samples=8, eval_samples=8,
                batch_size=256, occupancy_every=2, occupancy_warmup=2)
TINY_FLAGS = [a for k, v in TINY_NGP.items() for a in (f"--model.{k.replace('_', '-')}", str(v))]


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    env.update(extra)
    return env


def _scene(tmp_path: Path) -> Path:
    from nerfkit.data.synthetic import generate_default_scene
    return generate_default_scene(tmp_path / "scene", num_train=4, num_test=1, resolution=24)


def test_four_devices_match_one_device(tmp_path):
    """A few NGP steps (occupancy updates, packed active rays) on a 4-device mesh give the
    parameters, losses and renders of the same steps on one device; the 4-device program does a
    quarter of the work per device and sums gradients across devices. The custom hash-grid
    kernel, when built, runs per device under shard_map and agrees too."""
    scene = _scene(tmp_path)
    code = textwrap.dedent(f"""
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax, jax.numpy as jnp, numpy as np
        from nerfkit.data import load_scene
        from nerfkit.data.raysource import PixelSource
        from nerfkit.engine import distributed
        from nerfkit.engine.renderer import Renderer
        from nerfkit.engine.trainer import make_train_step
        from nerfkit.engine.run import TrainState, build_model, init_state, scene_info
        from nerfkit.models.ngp import NGPConfig
        from nerfkit.nn.ffi_backend import available
        assert len(jax.devices()) == 4
        scene = load_scene({str(scene)!r}, "train")

        def run(n_devices, backend):
            cfg = NGPConfig(**{TINY_NGP!r}, backend=backend)
            mesh = distributed.data_mesh(jax.devices()[:n_devices])
            rep = distributed.replicated(mesh)
            graphdef, state, tx = init_state(cfg, scene, seed=0)
            state = distributed.put(state, rep)
            source = PixelSource(scene, cfg.background)
            data = distributed.put(source.data, rep)
            args = lambda i: (jax.random.fold_in(jax.random.key(0), i), jnp.float32(cfg.lr_init))
            step = make_train_step(graphdef, tx, source, cfg.batch_size, False, mesh)
            step = step.lower(state, data, *args(0)).compile()
            flops = step.cost_analysis()["flops"]
            losses = []
            for i in range(4):
                state, aux = step(state, data, *args(i))
                losses.append(float(aux["loss"]))
            assert all(len(x.sharding.device_set) == n_devices
                       for x in jax.tree_util.tree_leaves(state.params))
            rgb = Renderer(graphdef, state.params, state.buffers, source.geom, chunk=150,
                           mesh=mesh).render_view(scene, 0)["rgb"]
            return jax.tree_util.tree_map(np.asarray, state), np.array(losses), rgb, flops

        ref = run(1, "jax")
        backends = ["jax"] + (["ffi"] if available("cpu") else [])
        for backend in backends:
            state, losses, rgb, flops = run(4, backend)
            np.testing.assert_allclose(losses, ref[1], rtol=1e-5, atol=1e-7)
            for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(ref[0])):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
            np.testing.assert_allclose(rgb, ref[2], rtol=1e-4, atol=1e-5)
            # Work is split, not replicated: well under half the single-device flops per device.
            assert flops < 0.4 * ref[3], (flops, ref[3])
        assert ref[1][-1] < ref[1][0]  # it learns
        print("OK", backends)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(),
                       timeout=600)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_write_one_checkpoint_that_one_process_resumes(tmp_path):
    """`--num-processes 2` starts two local processes (gloo collectives on the CPU) that train
    together: one metrics log (process 0's), one set of checkpoints; a single process then
    resumes the run from the last checkpoint (restored onto its one device, checksum checked)."""
    from nerfkit.cli import main
    from nerfkit.engine.run import load_run
    scene = _scene(tmp_path)
    run = tmp_path / "run"
    args = ["train", "ngp", "--data", str(scene), "--output", str(run), "--checkpoint-every", "2",
            "--log-every", "1", "--no-final-eval", *TINY_FLAGS]
    r = subprocess.run([sys.executable, "-m", "nerfkit.cli", *args, "--max-steps", "4",
                        "--num-processes", "2"],
                       capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("trained 4 steps") == 1, r.stdout  # only process 0 reports
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [2, 4]
    lines = _metrics(run)
    assert [m["step"] for m in lines if not m.get("final")] == [1, 2, 3, 4]
    assert all(np.isfinite(m["loss"]) for m in lines)
    saved = json.loads((run / "config.json").read_text())["train"]
    assert saved["num_processes"] == 2

    two = load_run(run)  # restores onto this process's single device; CRC checked
    assert two.step == 4

    assert main([*args, "--max-steps", "6", "--resume"]) == 0
    lines = _metrics(run)
    assert [m["step"] for m in lines if not m.get("final")] == [1, 2, 3, 4, 5, 6]
    one = load_run(run)
    assert one.step == 6
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir())[-1] == 6
    moved = [np.abs(np.asarray(a) - np.asarray(b)).max() for a, b in
             zip(jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(two.params))]
    assert max(moved) > 0  # the resumed steps trained on from the 2-process state


def test_launcher_reports_a_user_error_once(tmp_path):
    """A user error ends every process alike: exit status 2, the message printed once."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "something").write_text("x")
    r = subprocess.run([sys.executable, "-m", "nerfkit.cli", "train", "ngp", "--output", str(run),
                        "--max-steps", "1", "--num-processes", "2"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.count("already exists") == 1, r.stderr


@pytest.mark.parametrize("flags, env, expected", [
    ((None, None, None), {}, ("single", 1)),
    ((1, None, None), {}, ("single", 1)),
    ((2, None, None), {}, ("launch", 2)),
    ((2, 1, "host:1234"), {}, ("join", 2)),
    ((None, None, None), {"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}, ("join", 4)),
    ((None, None, None), {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
                          "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, ("join", None)),
    ((2, None, None), {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
                       "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, ("join", 2)),
    ((None, None, None), {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
                          "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, ("single", 1)),
])
def test_plan(monkeypatch, flags, env, expected):
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID",
                "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID",
                "OMPI_MCA_orte_hnp_uri"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.plan(*flags) == expected


@pytest.mark.parametrize("flags, message", [
    ((0, None, None), "--num-processes must be >= 1"),
    ((2, 2, None), "--process-id must be in"),
    ((None, 1, None), "--process-id needs --num-processes"),
    ((2, None, "host:1"), "--coordinator-address without --process-id"),
])
def test_plan_rejects_inconsistent_flags(monkeypatch, flags, message):
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match=message):
        distributed.plan(*flags)
