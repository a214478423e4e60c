"""What the viewer shows besides renders: the sparse point cloud of a process-data capture
(``sparse_pc.ply``, in the transforms.json frame) mapped into the run's scene coordinates."""

import numpy as np

from nerfkit.data.capture.transforms import write_ply
from nerfkit.viewer.app import (nearest_neighbour_distances, read_ply_points, scene_from_run,
                                sparse_points, thumbnails)


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


def test_nearest_neighbour_distances_match_the_full_matrix():
    """The blocked nearest-neighbour distances (frustum spacing) equal the brute-force N x N
    minimum, for a rig far from the origin, with a duplicate point and blocks that do not
    divide N."""
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(601, 3)) * 0.5 + 100.0
    pts[7] = pts[300]                                   # a duplicate: distance 0
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    got = nearest_neighbour_distances(pts, block=64)
    np.testing.assert_allclose(got, d.min(axis=1), rtol=1e-6, atol=1e-6)
    assert got[7] == got[300] == 0.0
    pair = nearest_neighbour_distances(pts[:2])
    np.testing.assert_allclose(pair, [np.linalg.norm(pts[0] - pts[1])] * 2, rtol=1e-9)
