"""Mesh and point-cloud export on an analytic field whose surface is known exactly."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

trimesh = pytest.importorskip("trimesh")

from nerfkit.core.cameras import make_cameras
from nerfkit.data.raysource import RayGeometry
from nerfkit.data.scene import Scene
from nerfkit.engine.renderer import Renderer
from nerfkit.export import geometry
from nerfkit.export.camera_paths import look_at
from nerfkit.models.base import Model, SceneInfo

RADIUS = 0.5
RED = jnp.array([0.9, 0.1, 0.1])


class Sphere(Model):
    """A smooth ball of radius 0.5 (density 200 inside, 0 outside), red everywhere."""

    def density(self, x, time=None):
        return 200.0 * jax.nn.sigmoid(80.0 * (RADIUS - jnp.linalg.norm(x, axis=-1)))

    def radiance(self, x, d, time=None):
        return self.density(x), jnp.broadcast_to(RED, x.shape)

    def render_rays(self, rays, key, *, train, background):
        from nerfkit.core import render, samplers
        t = samplers.stratified_samples(None, rays.near, rays.far, 256, randomized=False)
        mid = render.interval_midpoints(t)
        x = rays.origins[..., None, :] + mid[..., None] * rays.directions[..., None, :]
        return render.volume_render(self.density(x), jnp.broadcast_to(RED, x.shape), t,
                                    rays.directions, background)


def fake_run(tmp_path=None):
    m = Sphere()
    graphdef, params, buffers = nnx.split(m, nnx.Param, ...)
    info = SceneInfo(aabb=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)), near=1.0, far=5.0)
    geom = RayGeometry(1.0, 5.0)
    eyes = [[3.0, 0.0, 0.5], [0.0, 3.0, -0.5], [-2.0, -2.0, 1.0]]
    c2w = np.stack([look_at(e, [0, 0, 0], [0, 0, 1]) for e in eyes]).astype(np.float32)
    cams = make_cameras(c2w, 40.0, 40.0, 32, 32)
    scene = Scene(images=np.zeros((3, 32, 32, 3), np.float32), cameras=cams,
                  names=["a", "b", "c"], near=1.0, far=5.0)
    return SimpleNamespace(graphdef=graphdef, params=params, buffers=buffers, info=info,
                           geom=geom, load_split=lambda split: scene,
                           renderer=lambda chunk=None: Renderer(graphdef, params, buffers, geom,
                                                                1024)), scene


def test_mesh_of_a_ball(tmp_path):
    run, _ = fake_run()
    mesh = geometry.extract_mesh(run, resolution=64, threshold=100.0)
    r = np.linalg.norm(mesh.vertices, axis=-1)
    spacing = 2.0 / 63
    assert len(mesh.faces) > 1000
    assert np.all(np.abs(r - RADIUS) < spacing)
    np.testing.assert_allclose(mesh.bounds, [[-RADIUS] * 3, [RADIUS] * 3], atol=spacing)
    np.testing.assert_allclose(mesh.visual.vertex_colors[:, :3].mean(0) / 255, RED, atol=0.01)
    # Faces wind outwards: the volume is positive and close to the ball's.
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * RADIUS ** 3, rel=0.05)
    out = geometry.save_geometry(mesh, tmp_path / "ball.ply")
    back = trimesh.load(out)
    assert len(back.vertices) == len(mesh.vertices)


def test_pointcloud_lies_on_the_surface_and_projects_inside_silhouettes(tmp_path):
    run, scene = fake_run()
    pc = geometry.extract_pointcloud(run, "train", max_views=3, min_acc=0.5)
    p = np.asarray(pc.vertices)
    assert len(p) > 100
    # The soft shell (density from 16 to 184 between r = 0.53 and 0.47) bounds the expected depth.
    assert np.all(np.abs(np.linalg.norm(p, axis=-1) - RADIUS) < 0.05)
    # Every point projects inside each camera's silhouette of the ball, where it is visible.
    cams = scene.cameras
    for i in range(len(cams)):
        c2w = np.asarray(cams.c2w[i])
        cam = (p - c2w[:, 3]) @ c2w[:, :3]
        u = cams.fx[i] * cam[:, 0] / -cam[:, 2] + cams.cx[i]
        v = -cams.fy[i] * cam[:, 1] / -cam[:, 2] + cams.cy[i]
        centre_dist = np.linalg.norm(c2w[:, 3])
        ang = np.arctan2(np.hypot(u - cams.cx[i], v - cams.cy[i]), cams.fx[i])
        assert np.all(ang <= np.arcsin(RADIUS / centre_dist) + 0.03)
    out = geometry.save_geometry(pc, tmp_path / "points.ply")
    assert len(trimesh.load(out).vertices) == len(p)


def test_threshold_out_of_range_is_clear():
    from nerfkit.errors import NerfkitError
    run, _ = fake_run()
    with pytest.raises(NerfkitError, match="threshold"):
        geometry.extract_mesh(run, resolution=16, threshold=1e6)
