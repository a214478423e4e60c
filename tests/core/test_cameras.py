"""Cameras and rays: pixel-centre rays hit known world points; NDC identities (NeRF App. C)."""

import json

import numpy as np
import jax
import jax.numpy as jnp

from conftest import requires_shared, shared_datasets
from nerfkit.core import cameras as cam


def _look_at(eye, target, up=(0.0, 0.0, 1.0)):
    """OpenGL c2w [3, 4]: the camera looks down its -z axis toward ``target``, +y roughly ``up``."""
    eye, target, up = (np.asarray(a, np.float64) for a in (eye, target, up))
    z = eye - target
    z /= np.linalg.norm(z)
    x = np.cross(up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.concatenate([np.stack([x, y, z], 1), eye[:, None]], 1)


def _project_opencv(c2w, fx, fy, cx, cy, points):
    """Independent projection: world -> OpenCV camera (x right, y down, z forward) -> pixels."""
    c2w4 = np.concatenate([c2w, [[0, 0, 0, 1]]], 0)
    w2c = np.linalg.inv(c2w4)
    p_cam = (w2c @ np.concatenate([points, np.ones((len(points), 1))], 1).T)[:3]
    p_cv = np.diag([1.0, -1.0, -1.0]) @ p_cam                          # OpenGL -> OpenCV
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    uvw = k @ p_cv
    return (uvw[:2] / uvw[2]).T, p_cv[2]                                 # pixels, depth


def _point_to_ray_distance(o, d, p):
    d = d / np.linalg.norm(d)
    v = p - o
    return np.linalg.norm(v - np.dot(v, d) * d)


def test_pixel_centre_ray_hits_known_world_points():
    eye = np.array([3.0, -2.0, 1.5])
    c2w = _look_at(eye, [0.0, 0.0, 0.0])
    width, height, f = 101, 81, 120.0
    cams = cam.make_cameras(c2w[None], f, f, width, height)     # principal point (50.5, 40.5)
    rays = cam.image_rays(cams, 0, near=0.1, far=10.0)
    assert rays.origins.shape == (height, width, 3)
    # The look-at target sits on the optical axis, i.e. at the centre of pixel (col 50, row 40).
    o, d = np.asarray(rays.origins[40, 50]), np.asarray(rays.directions[40, 50])
    assert _point_to_ray_distance(o, d, np.zeros(3)) < 1e-5
    # t is z-depth: the target is at depth |eye| along the axis.
    np.testing.assert_allclose(o + np.linalg.norm(eye) * d, np.zeros(3), atol=1e-5)
    # Points 12 px right and 7 px down of the centre, at depth 2.5: pixel (62, 47).
    x_axis, y_axis, z_axis = c2w[:, 0], c2w[:, 1], c2w[:, 2]
    depth = 2.5
    p = eye - depth * z_axis + depth * (12 / f) * x_axis - depth * (7 / f) * y_axis
    uv, z = _project_opencv(c2w, f, f, width / 2, height / 2, p[None])
    np.testing.assert_allclose(uv[0], [62.5, 47.5], atol=1e-9)      # independent projection agrees
    o, d = np.asarray(rays.origins[47, 62]), np.asarray(rays.directions[47, 62])
    np.testing.assert_allclose(o + depth * d, p, atol=1e-5)
    np.testing.assert_allclose(np.asarray(rays.viewdirs[47, 62]), d / np.linalg.norm(d), atol=1e-6)
    # Image orientation: the top-left ray points left (-x) and up (+y) in camera space.
    d_cam = c2w[:, :3].T @ np.asarray(rays.directions[0, 0])
    assert d_cam[0] < 0 and d_cam[1] > 0 and np.isclose(d_cam[2], -1.0)


def test_projection_roundtrip_random_pixels():
    c2w = _look_at([0.5, 4.0, 2.0], [0.2, -0.1, 0.3])
    fx, fy, cx, cy = 300.0, 280.0, 160.0, 110.0
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 320, 50)
    v = rng.uniform(0, 220, 50)
    rays = cam.camera_rays(jnp.asarray(c2w, jnp.float32), jnp.asarray(u), jnp.asarray(v),
                           fx, fy, cx, cy, 0.1, 10.0)
    pts = np.asarray(rays.origins) + rng.uniform(1, 5, (50, 1)) * np.asarray(rays.directions)
    uv, _ = _project_opencv(c2w, fx, fy, cx, cy, pts.astype(np.float64))
    np.testing.assert_allclose(uv, np.stack([u, v], -1), atol=2e-3)


@requires_shared
def test_blender_lego_optical_axis_passes_through_origin():
    # NeRF-Synthetic cameras look at the world origin from ~4.03 units away.
    meta = json.loads((shared_datasets() / "nerf_synthetic" / "lego" / "transforms_train.json")
                      .read_text())
    c2w = np.array([f["transform_matrix"] for f in meta["frames"][:8]])
    w = h = 800
    focal = 0.5 * w / np.tan(0.5 * meta["camera_angle_x"])
    cams = cam.make_cameras(c2w, focal, focal, w, h)
    rays = cam.camera_rays(jnp.asarray(cams.c2w), jnp.full(8, 400.0), jnp.full(8, 400.0),
                           cams.fx, cams.fy, cams.cx, cams.cy, 2.0, 6.0)
    for o, d in zip(np.asarray(rays.origins), np.asarray(rays.directions)):
        assert _point_to_ray_distance(o, d, np.zeros(3)) < 1e-4
    uv, depth = _project_opencv(c2w[0, :3].astype(np.float64), focal, focal, 400, 400,
                                np.zeros((1, 3)))
    np.testing.assert_allclose(uv[0], [400, 400], atol=1e-3)
    assert 3.9 < depth[0] < 4.2


def test_scaled_cameras_match_continuous_coordinates():
    c2w = _look_at([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])[None]
    cams = cam.make_cameras(c2w, 200.0, 210.0, 64, 48)
    half = cams.scaled(0.5)
    assert (half.width, half.height) == (32, 24)
    small = cam.image_rays(half, 0, 0.1, 5.0)
    # Pixel centre (j + 1/2) of the half-size image is continuous coordinate 2j + 1 in the original.
    v, u = np.meshgrid(2 * np.arange(24) + 1.0, 2 * np.arange(32) + 1.0, indexing="ij")
    big = cam.camera_rays(jnp.asarray(cams.c2w[0]), jnp.asarray(u), jnp.asarray(v), cams.fx[0],
                          cams.fy[0], cams.cx[0], cams.cy[0], 0.1, 5.0)
    np.testing.assert_allclose(small.directions, big.directions, atol=1e-5)


def test_camera_indexing_and_time():
    cams = cam.make_cameras(np.tile(np.eye(4), (5, 1, 1)), 100.0, 100.0, 8, 6)
    assert len(cams[2]) == 1 and len(cams[[0, 3]]) == 2 and len(cams[1:4]) == 3
    rays = cam.camera_rays(jnp.eye(4)[:3], jnp.full((2, 3), 0.5), jnp.full((2, 3), 0.5),
                           100.0, 100.0, 4.0, 3.0, 1.0, 2.0, time=0.25)
    np.testing.assert_array_equal(rays.time, np.full((2, 3, 1), 0.25))
    rays = cam.image_rays(cams, 1, 1.0, 2.0, time=0.5)
    assert rays.time.shape == (6, 8, 1) and rays.near.shape == (6, 8, 1)


def _ndc_project(p, focal, width, height, near):
    """NeRF App. C projection of world points [N, 3] (camera at the origin looking down -z)."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    return np.stack([-2 * focal / width * x / z, -2 * focal / height * y / z,
                     1 + 2 * near / z], -1)


def test_ndc_identities():
    focal, width, height, near = 400.0, 504, 378, 1.5
    rng = np.random.default_rng(0)
    n = 64
    u, v = rng.uniform(0, width, n), rng.uniform(0, height, n)
    d = np.stack([(u - width / 2) / focal, -(v - height / 2) / focal, -np.ones(n)], -1)
    o = rng.normal(scale=0.1, size=(n, 3))                      # origins near the camera centre
    o_ndc, d_ndc = (np.asarray(a, np.float64) for a in cam.ndc_rays(
        jnp.asarray(o, jnp.float32), jnp.asarray(d, jnp.float32), focal, width, height, near))
    # The ray start is moved onto the near plane, which maps to z = -1 ...
    np.testing.assert_allclose(o_ndc[:, 2], -1.0, atol=1e-6)
    t_near = (-near - o[:, 2]) / d[:, 2]
    np.testing.assert_allclose(o_ndc, _ndc_project(o + t_near[:, None] * d, focal, width, height,
                                                   near), atol=1e-5)
    # ... and points at infinity to z = +1 (NDC t = 1).
    np.testing.assert_allclose((o_ndc + d_ndc)[:, 2], 1.0, atol=1e-6)
    far_pts = _ndc_project(o + 1e7 * d, focal, width, height, near)
    np.testing.assert_allclose(o_ndc + d_ndc, far_pts, atol=1e-4)
    # Every world point of the ray beyond the near plane projects onto the NDC ray, t' in [0, 1].
    for t in (t_near + 0.01, t_near + 1.0, t_near + 30.0):
        p = _ndc_project(o + t[:, None] * d, focal, width, height, near)
        t_ndc = (p[:, 2] - o_ndc[:, 2]) / d_ndc[:, 2]
        assert np.all((t_ndc >= 0) & (t_ndc <= 1))
        np.testing.assert_allclose(o_ndc + t_ndc[:, None] * d_ndc, p, atol=1e-5)
        # NeRF App. C: t' = 1 - o_z / (o_z + t d_z) with o the ray start on the near plane.
        oz = o[:, 2] + t_near * d[:, 2]
        np.testing.assert_allclose(t_ndc, 1 - oz / (oz + (t - t_near) * d[:, 2]), atol=1e-5)
    # Rays from the camera centre through the image stay inside the NDC cube [-1, 1]^3.
    o0, d0 = (np.asarray(a) for a in cam.ndc_rays(jnp.zeros((n, 3)), jnp.asarray(d, jnp.float32),
                                                  focal, width, height, near))
    for t in (0.0, 0.5, 1.0):
        assert np.all(np.abs(o0 + t * d0) <= 1.0 + 1e-6)


def test_rays_jit():
    c2w = jnp.asarray(_look_at([0.0, -3.0, 1.0], [0.0, 0.0, 0.0]), jnp.float32)
    u = jnp.array([0.5, 10.5])
    v = jnp.array([3.5, 7.5])
    f = jax.jit(lambda c2w, u, v: cam.camera_rays(c2w, u, v, 50.0, 50.0, 8.0, 8.0, 0.5, 4.0))
    eager = cam.camera_rays(c2w, u, v, 50.0, 50.0, 8.0, 8.0, 0.5, 4.0)
    for a, b in zip(f(c2w, u, v), eager):
        if a is not None:
            np.testing.assert_allclose(a, b, atol=1e-6)
    g = jax.jit(cam.ndc_rays, static_argnums=(3, 4))
    o, d = eager.origins, eager.directions
    for a, b in zip(g(o, d, 50.0, 16, 16, 1.0), cam.ndc_rays(o, d, 50.0, 16, 16, 1.0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
