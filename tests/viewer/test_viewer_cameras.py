"""nerfkit's OpenGL cameras <-> viser's OpenCV camera (wxyz + position + vertical fov):
closed-form cases, viser's own SO3 as the quaternion reference, OpenCV's projection as the
reference for the whole camera (pose + intrinsics)."""

import math

import numpy as np
import pytest

from nerfkit.viewer.cameras import (c2w_from_viser, matrix_to_quat, quat_to_matrix,
                                    view_intrinsics, view_size, viser_from_c2w)


def test_closed_form_cases():
    # OpenGL identity at (0, 0, 5) looks down -z at the origin; OpenCV's rotation is a half turn
    # about x: diag(1, -1, -1) = quaternion (0, 1, 0, 0).
    c2w = np.concatenate([np.eye(3), [[0.0], [0.0], [5.0]]], 1)
    wxyz, pos = viser_from_c2w(c2w)
    assert np.allclose(np.abs(wxyz), [0, 1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(pos, [0, 0, 5])
    # A camera at (5, 0, 0) looking at the origin with +z up: OpenCV forward (+z col) = -x,
    # down (+y col) = -z, right (+x col) = forward x up... = +y (by hand).
    gl = np.array([[0.0, 0.0, 1.0, 5.0],     # right = +y, up = +z, back = +x
                   [1.0, 0.0, 0.0, 0.0],
                   [0.0, 1.0, 0.0, 0.0]])
    r_cv = quat_to_matrix(viser_from_c2w(gl)[0])
    np.testing.assert_allclose(r_cv[:, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(r_cv[:, 1], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(r_cv[:, 2], [-1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(c2w_from_viser(*viser_from_c2w(gl)), gl, atol=1e-12)


def test_quaternions_match_viser_so3():
    tf = pytest.importorskip("viser.transforms")
    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        np.testing.assert_allclose(quat_to_matrix(q), tf.SO3(q).as_matrix(), atol=1e-12)
        q2 = matrix_to_quat(tf.SO3(q).as_matrix())
        assert np.allclose(q2, q, atol=1e-9) or np.allclose(q2, -q, atol=1e-9)
    # the branches of Shepperd's method: half turns about each axis
    for axis in range(3):
        r = -np.eye(3)
        r[axis, axis] = 1.0
        np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(r)), r, atol=1e-12)


def test_viser_camera_projects_like_opencv():
    """A world point that OpenCV projects to pixel (u, v) with viser's pose (R_world_camera =
    wxyz, camera at position) and K(fov) lies on nerfkit's ray through (u, v) of
    ``c2w_from_viser`` with ``view_intrinsics``."""
    cv2 = pytest.importorskip("cv2")
    from nerfkit.core.cameras import camera_rays
    rng = np.random.default_rng(1)
    w, h, fov = 320, 200, math.radians(50.0)
    f = 0.5 * h / math.tan(0.5 * fov)  # three.js / nerfstudio focal length, by hand
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    np.testing.assert_allclose(view_intrinsics(fov, w, h), [f, f, w / 2, h / 2], rtol=1e-6)
    for _ in range(5):
        q = rng.normal(size=4)
        pos = rng.normal(size=3)
        r_wc = quat_to_matrix(q)
        pts_cam = np.column_stack([rng.uniform(-1, 1, 8), rng.uniform(-0.6, 0.6, 8),
                                   rng.uniform(2, 5, 8)])           # in front (OpenCV +z)
        pts = pts_cam @ r_wc.T + pos
        rvec, _ = cv2.Rodrigues(r_wc.T)
        uv, _ = cv2.projectPoints(pts, rvec, -r_wc.T @ pos, k, None)
        uv = uv.reshape(-1, 2)
        c2w = c2w_from_viser(q, pos)
        rays = camera_rays(np.asarray(c2w, np.float32), uv[:, 0].astype(np.float32),
                           uv[:, 1].astype(np.float32), f, f, w / 2, h / 2, 0.1, 10.0)
        o, d = np.asarray(rays.origins, np.float64), np.asarray(rays.directions, np.float64)
        t = np.sum((pts - o) * d, -1) / np.sum(d * d, -1)
        np.testing.assert_allclose(o + t[:, None] * d, pts, atol=1e-4)
        assert np.all(t > 0)


def test_view_size():
    assert view_size(1280 / 937, 256) == (256, 187)
    assert view_size(0.5, 100) == (50, 100)
