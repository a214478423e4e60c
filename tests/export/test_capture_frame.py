"""Exports in the capture's own coordinates (``--frame capture``): cameras, meshes and point
clouds of a real-capture run line up with the poses the user gave (``transforms.json`` /
COLMAP's world), not the normalised model frame."""

import json
import types

import numpy as np
import pytest

from nerfkit.data import load_scene
from nerfkit.export import geometry

from tests.data.test_nerfstudio import _capture

trimesh = pytest.importorskip("trimesh")


def _fake_run(root):
    """What the exports use of a trained run: ``scene_json`` (as save_scene_json writes its
    "transforms") and ``load_split``."""
    train = load_scene(root, "train")
    t = train.metadata.get("world_transform")
    return types.SimpleNamespace(
        scene_json={"transforms": {} if t is None else {"world_transform": np.asarray(t).tolist()}},
        load_split=lambda split: load_scene(root, split))


@pytest.mark.parametrize("applied", [False, True])
def test_cameras_in_capture_frame_are_the_files_poses(tmp_path, applied):
    root = tmp_path / "cap"
    a4 = np.eye(4)
    meta = None
    if applied:  # ns-process-data's applied transform: the file holds A @ (COLMAP world)
        a = np.eye(4)[:3][[0, 2, 1]]
        a[2] *= -1
        a4[:3] = a
        meta = {"applied_transform": a.tolist()}
    poses = _capture(root, n=10, meta=meta)          # [10, 4, 4] as written in the file
    run = _fake_run(root)
    cap = json.loads(geometry.export_cameras(run, tmp_path / "c.json").read_text())
    mod = json.loads(geometry.export_cameras(run, tmp_path / "m.json", frame="model").read_text())
    assert cap["frame"] == "capture" and mod["frame"] == "model"
    # The capture frame is the pre-applied one: COLMAP's world = inv(A) @ file.
    expected = np.linalg.inv(a4)[None] @ poses
    for split in ("train", "test"):
        for cam in cap[split]:
            i = int(cam["name"].split("_")[-1])
            np.testing.assert_allclose(cam["c2w"], expected[i, :3], atol=1e-5)
    # The model frame is what the model was trained in: the loader's normalised poses.
    scene = load_scene(root, "train")
    np.testing.assert_allclose([c["c2w"] for c in mod["train"]], scene.cameras.c2w, atol=1e-6)
    assert not np.allclose([c["c2w"] for c in mod["train"]],
                           [c["c2w"] for c in cap["train"]], atol=1e-3)


def test_points_and_meshes_move_back_to_the_capture(tmp_path):
    root = tmp_path / "cap"
    _capture(root, n=10)
    run = _fake_run(root)
    t = np.asarray(run.scene_json["transforms"]["world_transform"])
    rng = np.random.default_rng(0)
    capture_pts = rng.normal(size=(50, 3))
    model_pts = capture_pts @ t[:3, :3].T + t[:3, 3]
    pc = geometry.to_frame(run, trimesh.PointCloud(model_pts.copy()))
    np.testing.assert_allclose(pc.vertices, capture_pts, atol=1e-9)
    box = trimesh.creation.box()
    box.apply_transform(t)
    moved = geometry.to_frame(run, box)
    np.testing.assert_allclose(moved.volume, 1.0, rtol=1e-9)       # a unit cube again
    assert moved.is_winding_consistent and moved.volume > 0          # faces still face out
    # Runs without a capture transform (Blender, LLFF) stay as they are in both frames.
    plain = types.SimpleNamespace(scene_json={})
    np.testing.assert_allclose(geometry.to_frame(plain, trimesh.PointCloud(model_pts.copy()))
                               .vertices, model_pts)
    with pytest.raises(Exception, match="frame must be one of"):
        geometry.to_frame(run, box, "world")
