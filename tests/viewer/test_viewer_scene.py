"""What the viewer shows besides renders: the sparse point cloud of a process-data capture
(``sparse_pc.ply``, in the transforms.json frame) mapped into the run's scene coordinates."""

import numpy as np

from nerfkit.data.capture.transforms import write_ply
from nerfkit.viewer.app import read_ply_points, scene_from_run, sparse_points, thumbnails


def test_sparse_points_in_scene_coordinates(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    ply = write_ply(tmp_path / "sparse_pc.ply", xyz, rgb)
    got, got_rgb = read_ply_points(ply)
    np.testing.assert_array_equal(got, xyz)
    np.testing.assert_array_equal(got_rgb, rgb)
    # file -> model: scale 0.5, then a quarter turn about z, then a shift (by hand)
    t = np.array([[0, -0.5, 0, 1.0], [0.5, 0, 0, 2.0], [0, 0, 0.5, 3.0], [0, 0, 0, 1]])
    sj = {"metadata": {"ply_file_path": str(ply)}, "transforms": {"file_transform": t.tolist()},
          "train_cameras": {"c2w": np.tile(np.eye(4)[:3], (2, 1, 1)).tolist(),
                            "intrinsics": [[10, 10, 8, 6]] * 2, "width": 16, "height": 12,
                            "times": None}, "info": {}}
    pts, cols = sparse_points(sj)
    want = np.stack([1.0 - 0.5 * xyz[:, 1], 2.0 + 0.5 * xyz[:, 0], 3.0 + 0.5 * xyz[:, 2]], -1)
    np.testing.assert_allclose(pts, want, atol=1e-6)
    scene = scene_from_run(sj, np.zeros((2, 12, 16, 3), np.float32))
    assert scene.points.shape == (50, 3) and not scene.signal and scene.times is None
    assert [t.shape for t in scene.thumbnails] == [(12, 16, 3)] * 2
    assert sparse_points({"metadata": {}}) == (None, None)


def test_thumbnails_are_small_uint8():
    ims = np.linspace(0, 1, 2 * 200 * 300 * 3).reshape(2, 200, 300, 3)
    th = thumbnails(ims, max_side=96)
    assert th[0].dtype == np.uint8 and max(th[0].shape[:2]) <= 96
    assert th[0][0, 0, 0] == 0 and th[1][-1, -1, -1] >= 250
