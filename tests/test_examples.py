"""The scripts in ``examples/`` run as a user would run them (subprocesses, a tiny scene).

``custom_family.py`` defines a family in one file and trains it; then ``nerfkit render``,
``eval`` and ``export`` work on its run with no other file changed. ``optax_loop.py`` fits a
field with nerfkit's core alone. ``render_custom_camera.py`` renders a look-at camera, checked
against the CLI's render of the dataset camera at the same pose.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SIZE = 24  # pixels; 8 training and 2 test views


def run(args: list[str], cwd: Path, timeout: int = 300) -> str:
    """Runs ``python ARGS`` with this checkout's nerfkit; returns stdout, fails with its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (f"python {' '.join(args)} exited {proc.returncode}\n"
                                  f"{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def nerfkit_cli(*args: str, cwd: Path) -> str:
    return run(["-m", "nerfkit.cli", *args], cwd)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from nerfkit.data.synthetic import generate_default_scene
    root = tmp_path_factory.mktemp("examples")
    generate_default_scene(root / "scene", num_train=8, num_test=2, resolution=SIZE)
    return root


@pytest.fixture(scope="module")
def custom_run(work) -> Path:
    """The custom family trained for 20 steps, then the CLI's render, eval and exports of it."""
    out = run([str(EXAMPLES / "custom_family.py"), "--data", "scene", "--max-steps", "20",
               "--batch-size", "256", "--output", "run"], work)
    assert "trained 20 steps" in out
    run_dir = work / "run"
    nerfkit_cli("render", "run", "--split", "test", cwd=work)
    nerfkit_cli("eval", "run", cwd=work)
    nerfkit_cli("export", "cameras", "run", "cameras.json", cwd=work)
    # A threshold inside the field's range (a 20-step field has no "surface" density yet).
    level = float(run(["-c", "import numpy as np; from nerfkit import load_run; from "
                       "nerfkit.export.geometry import density_grid; "
                       "print(np.median(density_grid(load_run('run'), 16)))"], work).split()[-1])
    nerfkit_cli("export", "mesh", "run", "mesh.ply", "--resolution", "16", "--threshold",
                str(level), cwd=work)
    return run_dir


def test_custom_family_trains_and_the_cli_renders_evaluates_exports_it(work, custom_run):
    cfg = json.loads((custom_run / "config.json").read_text())["train"]["model"]
    assert cfg["family"] == "tiny-nerf"
    assert Path(cfg["family_source"]) == EXAMPLES / "custom_family.py"
    renders = sorted((custom_run / "renders" / "test").glob("*.png"))
    assert [p.name for p in renders] == ["r_0.png", "r_1.png"]
    assert iio.imread(renders[0]).shape == (SIZE, SIZE, 3)
    ev = json.loads((custom_run / "eval" / "test.json").read_text())
    assert ev["num_views"] == 2 and ev["step"] == 20 and 3.0 < ev["psnr"] < 40.0
    # The exported cameras are the dataset's (read here from its own JSON files).
    cams = json.loads((work / "cameras.json").read_text())
    for split, n in (("train", 8), ("test", 2)):
        frames = json.loads((work / "scene" / f"transforms_{split}.json").read_text())["frames"]
        assert len(cams[split]) == n
        for cam, frame in zip(cams[split], frames):
            np.testing.assert_allclose(cam["c2w"], np.asarray(frame["transform_matrix"])[:3],
                                       atol=1e-6)
    import trimesh
    mesh = trimesh.load(work / "mesh.ply")
    assert len(mesh.vertices) > 0 and len(mesh.faces) > 0
    assert np.all(np.abs(mesh.vertices) <= 1.0 + 1e-5)  # inside the scene box [-1, 1]^3


def test_optax_loop_beats_the_best_constant_image(work):
    out = run([str(EXAMPLES / "optax_loop.py"), "--data", "scene", "--downscale", "1",
               "--steps", "100", "--batch-size", "512"], work)
    psnr = float(re.search(r"test view r_0: PSNR ([\d.]+) dB", out).group(1))
    # Reference: the best constant colour for that view (its mean), from the PNG itself.
    rgba = iio.imread(work / "scene" / "test" / "r_0.png").astype(np.float64) / 255.0
    gt = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])  # onto white
    const = 10.0 * math.log10(1.0 / np.mean((gt - gt.mean(axis=(0, 1))) ** 2))
    assert psnr > const + 0.5, (psnr, const)


def test_render_custom_camera_matches_the_dataset_camera_at_the_same_pose(work, custom_run):
    meta = json.loads((work / "scene" / "transforms_test.json").read_text())
    c2w = np.asarray(meta["frames"][0]["transform_matrix"])
    fov = math.degrees(meta["camera_angle_x"])  # square images: vertical = horizontal
    out = run([str(EXAMPLES / "render_custom_camera.py"), "run", "--eye",
               *map(str, c2w[:3, 3]), "--target", "0", "0", "0", "--up", "0", "0", "1",
               "--fov", str(fov), "--size", str(SIZE), str(SIZE), "--out", "custom.png"], work)
    assert "wrote custom.png" in out
    mine = iio.imread(work / "custom.png").astype(int)
    cli = iio.imread(custom_run / "renders" / "test" / "r_0.png").astype(int)
    assert mine.shape == cli.shape == (SIZE, SIZE, 3)
    assert np.abs(mine - cli).max() <= 2
