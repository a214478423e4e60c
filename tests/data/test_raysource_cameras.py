"""Ray batches of distorted cameras: the distortion and the image index reach the rays.

Each training pixel's colour encodes (image, row, column), so a sampled target tells which pixel
the ray must go through; OpenCV's projectPoints is the independent check that it does."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

cv2 = pytest.importorskip("cv2")

from nerfkit.core import cameras as cam
from nerfkit.core import distortion as dist
from nerfkit.core.rays import make_rays
from nerfkit.data.raysource import (PixelSource, build_rays, camera_image_rays, pixel_data,
                                    ray_geometry, sample_batch)
from nerfkit.data.scene import Scene
from nerfkit.export.camera_paths import look_at

N, H, W = 3, 12, 16


def _look_at(eye, target, up=(0.0, 0.0, 1.0)):
    return look_at(eye, target, up)


def _scene(distortion=None, model=None):
    c2w = np.stack([_look_at([3.0 * np.cos(a), 3.0 * np.sin(a), 1.0], [0, 0, 0])
                    for a in np.linspace(0, 2, N)])
    img, row, col = np.meshgrid(np.arange(N), np.arange(H), np.arange(W), indexing="ij")
    rgb = np.stack([img / N, row / H, col / W], -1).astype(np.float32)
    cams = cam.make_cameras(c2w, [14.0, 15.0, 16.0], [14.5, 15.5, 16.5], W, H,
                            [8.2, 7.9, 8.0], [6.1, 5.8, 6.0], distortion, model)
    return Scene(images=rgb, cameras=cams, names=[f"r_{i}" for i in range(N)], near=0.5, far=6.0)


def _cv_pose(c2w):
    w2c = np.linalg.inv(np.concatenate([c2w, [[0, 0, 0, 1.0]]]))
    w2c_cv = np.diag([1.0, -1.0, -1.0, 1.0]) @ w2c
    return cv2.Rodrigues(w2c_cv[:3, :3])[0], w2c_cv[:3, 3]


def test_pinhole_scene_has_no_distortion():
    scene = _scene()
    data, geom = pixel_data(scene), ray_geometry(scene)
    assert data.distortion is None and geom.camera_model == dist.PINHOLE
    batch = jax.jit(lambda d, k: sample_batch(d, geom, k, 64))(data, jax.random.key(0))
    # camera_index is the image the target was drawn from (colour channel 0 encodes it).
    np.testing.assert_array_equal(batch.rays.camera_index[:, 0],
                                  np.rint(np.asarray(batch.rgb[:, 0]) * N).astype(int))
    assert batch.rays.camera_index.dtype == jnp.int32


@pytest.mark.parametrize("model,params", [
    (dist.OPENCV, [[-0.25, 0.08, 0.01, 0.0, 1e-3, -1e-3], [0.1, 0.0, 0.0, 0.0, 0.0, 0.0],
                   [0.2, -0.05, 0.0, 0.0, -2e-3, 1e-3]]),
    (dist.OPENCV_FISHEYE, [[0.04, 0.01, -0.005, 0.001, 0, 0], [0.0, 0.0, 0.0, 0.0, 0, 0],
                           [0.08, -0.02, 0.01, 0.0, 0, 0]]),
])
def test_sampled_rays_go_through_their_pixel(model, params):
    params = np.asarray(params)
    scene = _scene(params, model)
    source = PixelSource(scene, background="black")
    assert source.geom.camera_model == model and source.data.distortion.shape == (N, 6)
    batch = jax.jit(source.sample, static_argnums=2)(source.data, jax.random.key(1), 256)
    rays = batch.rays
    img = np.asarray(rays.camera_index[:, 0])
    rgb = np.asarray(batch.rgb)
    np.testing.assert_array_equal(img, np.rint(rgb[:, 0] * N).astype(int))
    row, col = np.rint(rgb[:, 1] * H).astype(int), np.rint(rgb[:, 2] * W).astype(int)
    cams = scene.cameras
    for i in range(N):
        sel = img == i
        assert sel.any()
        pts = (np.asarray(rays.origins)[sel] + 2.0 * np.asarray(rays.directions)[sel])
        k = np.array([[cams.fx[i], 0, cams.cx[i]], [0, cams.fy[i], cams.cy[i]], [0, 0, 1.0]])
        rvec, tvec = _cv_pose(cams.c2w[i].astype(np.float64))
        if model == dist.OPENCV:
            p = params[i]
            uv, _ = cv2.projectPoints(pts.astype(np.float64), rvec, tvec, k,
                                      np.array([p[0], p[1], p[4], p[5], p[2]]))
        else:
            uv, _ = cv2.fisheye.projectPoints(pts[None].astype(np.float64), rvec, tvec, k,
                                              params[i, :4])
        np.testing.assert_allclose(uv.reshape(-1, 2), np.stack([col[sel], row[sel]], -1) + 0.5,
                                   atol=1e-3)


def test_camera_image_rays_pass_distortion_and_index():
    params = np.array([[-0.2, 0.05, 0.0, 0.0, 1e-3, 0.0]] * N)
    scene = _scene(params, dist.OPENCV)
    geom, cams = ray_geometry(scene), scene.cameras
    intr = np.array([cams.fx[1], cams.fy[1], cams.cx[1], cams.cy[1]])
    rays = camera_image_rays(geom, cams.c2w[1], intr, W, H, camera_index=1,
                             distortion=cams.distortion[1])
    ref = cam.image_rays(cams, 1, scene.near, scene.far)
    np.testing.assert_allclose(rays.directions, ref.directions, atol=1e-6)
    assert rays.camera_index.shape == (H, W, 1) and np.all(np.asarray(rays.camera_index) == 1)
    assert rays.reshape(-1).camera_index.shape == (H * W, 1)
    plain = camera_image_rays(geom, cams.c2w[1], intr, W, H)
    assert plain.camera_index is None
    assert np.abs(np.asarray(plain.directions) - np.asarray(ref.directions)).max() > 1e-3
    # A pinhole geometry refuses distortion rather than ignoring it.
    with pytest.raises(ValueError, match="PINHOLE"):
        camera_image_rays(geom._replace(camera_model=dist.PINHOLE), cams.c2w[1], intr, W, H,
                          distortion=cams.distortion[1])


def test_ndc_and_make_rays_keep_camera_index():
    scene = _scene()
    geom = ray_geometry(scene)._replace(ndc=(15.0, W, H, 1.0), near=0.0, far=1.0)
    c2w = jnp.asarray(np.tile(np.eye(4)[:3], (5, 1, 1)), jnp.float32)
    u = jnp.linspace(1.0, 15.0, 5)
    rays = build_rays(geom, c2w, u, u * 0.5, jnp.tile(jnp.asarray([15.0, 15.0, 8.0, 6.0]), (5, 1)),
                      camera_index=jnp.arange(5))
    np.testing.assert_array_equal(rays.camera_index[:, 0], np.arange(5))
    r = make_rays(jnp.zeros((2, 3, 3)), jnp.ones((2, 3, 3)), 0.0, 1.0, camera_index=7)
    assert r.camera_index.shape == (2, 3, 1) and np.all(np.asarray(r.camera_index) == 7)
    assert make_rays(jnp.zeros((4, 3)), jnp.ones((4, 3)), 0.0, 1.0).camera_index is None
