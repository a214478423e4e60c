"""Mesh and point-cloud export of a briefly trained hash-grid NeRF on the real lego scene.

The reference is independent of the model: lego's visual hull carved from the training alpha
masks (voxels that project inside the object in every training view)."""

import numpy as np
import pytest

trimesh = pytest.importorskip("trimesh")

from conftest import requires_shared, shared_datasets
from nerfkit.cli import main

TINY_NGP = ["--model.log2-table-size", "14", "--model.max-resolution", "256",
            "--model.occupancy-resolution", "32", "--model.march-steps", "96",
            "--model.num-samples", "24", "--model.eval-samples", "32",
            "--model.batch-size", "2048", "--model.occupancy-warmup", "32"]


def _project(points, c2w, fx, fy, cx, cy):
    """Pixel coordinates ``u, v`` (OpenGL camera, rows downward) of ``points [N, 3]``."""
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
    return fx * cam[:, 0] / -cam[:, 2] + cx, -fy * cam[:, 1] / -cam[:, 2] + cy


def _inside(alpha, u, v):
    """alpha > 0.5 at the pixel of (u, v) or one of its 8 neighbours (a pixel of slack)."""
    h, w = alpha.shape
    iu, iv = np.floor(u).astype(int), np.floor(v).astype(int)
    ok = np.zeros(len(u), bool)
    for du in (-1, 0, 1):
        for dv in (-1, 0, 1):
            uu, vv = np.clip(iu + du, 0, w - 1), np.clip(iv + dv, 0, h - 1)
            ok |= alpha[vv, uu] > 0.5
    return ok & (iu >= 0) & (iu < w) & (iv >= 0) & (iv < h)


def visual_hull_bounds(scene, aabb, res=64):
    lo, hi = np.asarray(aabb[0]), np.asarray(aabb[1])
    axes = [np.linspace(lo[i], hi[i], res) for i in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    keep = np.ones(len(pts), bool)
    c = scene.cameras
    for i in range(len(scene)):
        u, v = _project(pts, np.asarray(c.c2w[i]), c.fx[i], c.fy[i], c.cx[i], c.cy[i])
        keep &= _inside(scene.alphas[i, ..., 0], u, v)
    hull = pts[keep]
    return hull.min(0), hull.max(0), (hi - lo) / (res - 1)


@requires_shared
@pytest.mark.slow
def test_lego_mesh_and_pointcloud(tmp_path):
    from nerfkit.engine.run import load_run
    lego = shared_datasets() / "nerf_synthetic" / "lego"
    run_dir = tmp_path / "lego-ngp"
    assert main(["train", "ngp", "--data", str(lego), "--downscale", "8", "--max-steps", "150",
                 "--output", str(run_dir), "--no-final-eval", *TINY_NGP]) == 0
    assert main(["export", "mesh", str(run_dir), str(tmp_path / "lego.ply"),
                 "--resolution", "96"]) == 0
    assert main(["export", "pointcloud", str(run_dir), str(tmp_path / "points.ply"),
                 "--views", "4", "--stride", "2"]) == 0
    run = load_run(run_dir)
    scene = run.load_split("train")

    mesh = trimesh.load(tmp_path / "lego.ply")
    assert len(mesh.vertices) > 1000 and len(mesh.faces) > 1000
    lo, hi, voxel = visual_hull_bounds(scene, run.info.aabb)
    # The mesh spans the object: its box matches the visual hull's within a few voxels of the
    # marching-cubes grid (a briefly trained field leaves some fuzz around the surface).
    tol = 0.12 * (hi - lo).max()
    np.testing.assert_allclose(mesh.bounds[0], lo, atol=tol)
    np.testing.assert_allclose(mesh.bounds[1], hi, atol=tol)

    points = np.asarray(trimesh.load(tmp_path / "points.ply").vertices)
    assert len(points) > 500
    c = scene.cameras
    for i in range(0, len(scene), 10):
        alpha = scene.alphas[i, ..., 0]
        u, v = _project(points, np.asarray(c.c2w[i]), c.fx[i], c.fy[i], c.cx[i], c.cy[i])
        assert np.mean(_inside(alpha, u, v)) > 0.95, f"view {i}"
