"""Hash-grid NeRF on unbounded scenes: bounded path unchanged, contracted field and grid,
appearance embeddings, distortion loss, a short training run and a render."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nerfkit.core.cameras import Cameras
from nerfkit.core.contraction import contract
from nerfkit.core.occupancy import is_occupied
from nerfkit.core.rays import Batch, Rays, make_rays
from nerfkit.data.raysource import PixelSource, RayGeometry, camera_image_rays, ray_geometry
from nerfkit.data.scene import Scene
from nerfkit.engine.renderer import Renderer
from nerfkit.engine.run import init_state, scene_info
from nerfkit.engine.trainer import make_train_step
from nerfkit.errors import ConfigError
from nerfkit.models.base import SceneInfo
from nerfkit.models.ngp import NGPConfig

SMALL = NGPConfig(levels=4, log2_table_size=10, max_resolution=64, hidden=16,
                  occupancy_resolution=8, march_steps=32, num_samples=8, eval_samples=8,
                  unbounded_eval_samples=8, max_candidates=64, appearance_dim=4, batch_size=64)
BOUNDED = SceneInfo(aabb=((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)), near=2.0, far=6.0)
UNBOUNDED = SceneInfo(aabb=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)), near=0.05, far=1000.0,
                      white_background=False, unbounded=True, num_images=5)


def _rays(n=6, origin=(0.0, 0.0, 4.0), near=2.0, far=6.0):
    o = jnp.tile(jnp.array([origin]), (n, 1))
    d = jax.random.normal(jax.random.key(2), (n, 3)) * 0.1 + jnp.array([0.0, 0.0, -1.0])
    return make_rays(o, d, near, far)


class IndexedRays(Rays):
    """Rays with a ``camera_index`` attribute, for main before ``Rays.camera_index`` exists."""


def _with_index(rays: Rays, ids) -> Rays:
    ids = jnp.asarray(ids, jnp.int32)[:, None]
    if "camera_index" in Rays._fields:
        return rays._replace(camera_index=ids)
    r = IndexedRays(*rays)
    r.camera_index = ids
    return r


def _render(model, rays, key=None, train=False, background=None):
    """``model.render_rays`` under jit (rays, key and background closed over as constants)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    fn = lambda p: nnx.merge(graphdef, p, rest).render_rays(rays, key, train=train,
                                                            background=background)
    return jax.jit(fn)(params)


def _tree_shapes(tree):
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def test_bounded_scene_builds_the_bounded_model():
    """``auto`` on a bounded scene is the bounded model: its parameters are exactly the hash
    table and the two MLPs of the paper's sizes (colour input 16 + 16 SH, no appearance), and its
    renders equal those of an explicit ``scene="bounded"`` model with the same seed."""
    cfg = dataclasses.replace(SMALL, appearance_dim=None)
    auto = cfg.build(BOUNDED, nnx.Rngs(0))
    forced = dataclasses.replace(cfg, scene="bounded").build(BOUNDED, nnx.Rngs(0))
    assert not auto.unbounded and auto.appearance is None
    params = nnx.state(auto, nnx.Param)
    assert set(params.keys()) == {"encoding", "density_mlp", "color_mlp"}
    assert params["color_mlp"]["layers"][0]["kernel"].shape == (16 + 16, 16)
    assert _tree_shapes(params) == _tree_shapes(nnx.state(forced, nnx.Param))
    for a, b in zip(jax.tree_util.tree_leaves(params),
                    jax.tree_util.tree_leaves(nnx.state(forced, nnx.Param))):
        np.testing.assert_array_equal(a, b)
    rays, bg = _rays(), jnp.full((6, 3), 0.3)
    out_a = _render(auto, rays, background=bg)
    out_f = _render(forced, rays, background=bg)
    np.testing.assert_array_equal(out_a["rgb"], out_f["rgb"])
    # The grid still spans the scene box (not the contracted cube).
    np.testing.assert_array_equal(auto.grid.get_value().aabb, np.asarray(BOUNDED.aabb, np.float32))


def test_bounded_flag_on_unbounded_scene_and_bad_mode():
    m = dataclasses.replace(SMALL, scene="bounded").build(UNBOUNDED, nnx.Rngs(0))
    assert not m.unbounded
    u = dataclasses.replace(SMALL, scene="unbounded").build(BOUNDED, nnx.Rngs(0))
    assert u.unbounded
    with pytest.raises(ConfigError):
        dataclasses.replace(SMALL, scene="huge").build(BOUNDED, nnx.Rngs(0))


def test_unbounded_far_point_inside_grid_and_hash_coordinates():
    m = SMALL.build(UNBOUNDED, nnx.Rngs(0))
    assert m.unbounded
    x = jnp.array([[50.0, 10.0, 0.0], [0.5, -0.25, 0.0], [-1e6, 3.0, 2e5]])
    u = m._normalise(x)
    # Closed form of the L-inf contraction: (2 - 1/m) x / m with m = max|x_i| when m > 1.
    z0 = (2.0 - 1.0 / 50.0) * np.array([50.0, 10.0, 0.0]) / 50.0
    z2 = (2.0 - 1.0 / 1e6) * np.array([-1e6, 3.0, 2e5]) / 1e6
    expect = (np.stack([z0, [0.5, -0.25, 0.0], z2]) + 2.0) / 4.0
    np.testing.assert_allclose(u, expect, rtol=1e-6, atol=1e-7)
    assert bool(jnp.all((u > 0) & (u < 1)))
    grid = m.grid.get_value()
    assert bool(jnp.all(is_occupied(grid, contract(x, "linf"))))
    sigma, rgb = m.field(x, jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), x.shape))
    assert sigma.shape == (3,) and rgb.shape == (3, 3) and bool(jnp.all(jnp.isfinite(sigma)))


def test_unbounded_render_shapes_reach_and_empty_grid():
    m = SMALL.build(UNBOUNDED, nnx.Rngs(0))
    rays = _rays(5, origin=(0.0, 0.0, 0.5), near=0.05, far=1000.0)
    bg = jnp.zeros((5, 3))
    out = _render(m, rays, jax.random.key(0), train=True, background=bg)
    assert out["rgb"].shape == (5, 3) and out["depth"].shape == (5, 1)
    assert out["weights"].shape == (5, SMALL.num_samples)
    assert out["ray_mask"].shape == (5, 1)
    g = m.grid.get_value()
    m.grid.set_value(g._replace(occupied=jnp.zeros_like(g.occupied)))
    out = _render(m, rays, background=jnp.full((5, 3), 0.7))
    np.testing.assert_allclose(out["rgb"], 0.7, atol=1e-7)
    np.testing.assert_allclose(out["acc"], 0.0, atol=1e-7)


def test_appearance_gradients_only_for_images_in_batch():
    m = SMALL.build(UNBOUNDED, nnx.Rngs(0))
    rays = _with_index(_rays(4, origin=(0.0, 0.0, 0.5), near=0.05, far=1000.0), [1, 3, 3, 1])
    bg = jnp.zeros((4, 3))
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)

    def loss(params):
        model = nnx.merge(graphdef, params, rest)
        return jnp.sum(model.render_rays(rays, None, train=False, background=bg)["rgb"])

    g = jax.jit(jax.grad(loss))(params)["appearance"]["embedding"]["embedding"][...]
    row_norm = np.abs(np.asarray(g)).sum(-1)
    assert row_norm[1] > 0 and row_norm[3] > 0
    np.testing.assert_array_equal(row_norm[[0, 2, 4]], 0.0)
    # Without camera indices (held-out views) the mean vector is used and the table gets none.
    plain = _rays(4, origin=(0.0, 0.0, 0.5), near=0.05, far=1000.0)

    def loss_plain(params):
        model = nnx.merge(graphdef, params, rest)
        return jnp.sum(model.render_rays(plain, None, train=False, background=bg)["rgb"])

    g = jax.jit(jax.grad(loss_plain))(params)["appearance"]["embedding"]["embedding"][...]
    np.testing.assert_array_equal(g, 0.0)
    # The mean vector is what unseen cameras get: equal to rendering with the table's mean.
    model = nnx.merge(graphdef, params, rest)
    x = jnp.array([[0.1, 0.2, 0.3]])
    d = jnp.array([[0.0, 0.0, 1.0]])
    table = model.appearance.embedding.embedding[...]
    np.testing.assert_allclose(model.field(x, d)[1], model.field(x, d, table.mean(0))[1],
                               rtol=1e-6)


def test_distortion_loss_term():
    cfg = dataclasses.replace(SMALL, distortion_loss_weight=0.01)
    m = cfg.build(UNBOUNDED, nnx.Rngs(0))
    rays = _rays(4, origin=(0.0, 0.0, 0.5), near=0.05, far=1000.0)
    out = _render(m, rays, background=jnp.zeros((4, 3)))
    assert out["s_starts"].shape == (4, SMALL.num_samples)
    assert bool(jnp.all((out["s_starts"] >= 0) & (out["s_ends"] <= 1)))
    batch = Batch(rays, jnp.zeros((4, 3)), jnp.zeros((4, 3)))
    total, metrics = m.loss(out, batch)
    # Independent reference: the double sum of eq. 14 over interval midpoints plus 1/3 w^2 len.
    w, a, b = (np.asarray(out[k], np.float64) for k in ("weights", "s_starts", "s_ends"))
    mid = 0.5 * (a + b)
    ref = (np.einsum("ri,rj,rij->r", w, w, np.abs(mid[:, :, None] - mid[:, None, :]))
           + (w ** 2 * (b - a)).sum(-1) / 3).mean()
    np.testing.assert_allclose(float(metrics["distortion"]), ref, rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(float(total), float(metrics["mse"]) + 0.01 * ref,
                               rtol=1e-5, atol=1e-9)


def _tiny_unbounded_scene() -> Scene:
    """Cameras inside the unit cube looking outwards at a coloured 'room' (distance 4): each
    pixel's colour depends on its ray direction only, like a far background."""
    n, h, w = 5, 12, 12
    c2w = np.tile(np.eye(4, dtype=np.float32)[:3], (n, 1, 1))
    for i in range(n):
        a = 2 * np.pi * i / n
        c, s = np.cos(a), np.sin(a)
        c2w[i, :3, :3] = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)
        c2w[i, :3, 3] = [0.2 * s, 0.0, 0.2 * c]
    f = np.full(n, 10.0, np.float32)
    cams = Cameras(c2w, f, f, np.full(n, w / 2, np.float32), np.full(n, h / 2, np.float32), w, h)
    imgs = []
    for i in range(n):
        r = camera_image_rays(RayGeometry(0.05, 1000.0), c2w[i], [10.0, 10.0, w / 2, h / 2],
                              w, h)
        v = np.asarray(r.viewdirs)
        imgs.append(0.5 + 0.4 * v)
    sc = Scene(np.stack(imgs).astype(np.float32), cams, [str(i) for i in range(n)], 0.05, 1000.0,
               aabb=np.array([[-1, -1, -1], [1, 1, 1]], np.float32), white_background=False,
               unbounded=True)
    return sc


def test_short_unbounded_training_and_render():
    sc = _tiny_unbounded_scene()
    info = scene_info(sc)
    assert info.unbounded and info.num_images == 5
    cfg = dataclasses.replace(SMALL, batch_size=256, lr_init=1e-2, occupancy_warmup=4,
                              occupancy_every=4, distortion_loss_weight=0.001)
    graphdef, state, tx = init_state(cfg, info)
    src = PixelSource(sc, cfg.background)
    step = make_train_step(graphdef, tx, src, cfg.batch_size, False)
    losses = []
    for i in range(30):
        state, m = step(state, src.data, jax.random.key(i), jnp.float32(1e-2))
        losses.append(float(m["loss"]))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), losses
    r = Renderer(graphdef, state.params, state.buffers, ray_geometry(sc), chunk=128)
    out = r.render_camera(sc.cameras.c2w[0], np.array([10.0, 10.0, 8.0, 8.0]), 16, 16,
                          np.zeros(3, np.float32))
    assert out["rgb"].shape == (16, 16, 3) and np.all(np.isfinite(out["rgb"]))
    assert out["acc"].mean() > 0.5


def test_unbounded_training_marches_only_the_rays_its_sample_budget_needs():
    """Budget 0.25 * 64 rays * 8 samples = 128 samples = 16 full rays: the first 32 rays are
    marched (and render exactly as a batch of those 32 with the same budget); the other 32 render
    the background, out of the loss."""
    cfg = dataclasses.replace(SMALL, train_active_fraction=0.25)
    m = cfg.build(UNBOUNDED, nnx.Rngs(0))
    o = jnp.tile(jnp.array([[0.0, 0.0, 0.5]]), (64, 1))
    d = jax.random.normal(jax.random.key(3), (64, 3)) * 0.3 + jnp.array([0.0, 0.0, -1.0])
    rays = make_rays(o, d, 0.05, 1000.0)
    bg = jax.random.uniform(jax.random.key(4), (64, 3))
    key = jax.random.key(7)
    out = _render(m, rays, key, train=True, background=bg)
    graphdef, params, rest = nnx.split(m, nnx.Param, ...)
    first = jax.tree_util.tree_map(lambda a: a[:32], rays)
    ref = jax.jit(lambda p: nnx.merge(graphdef, p, rest)._render_unbounded(
        first, key, cfg.num_samples, bg[:32], True, 128))(params)
    for k in ("rgb", "depth", "acc", "weights", "ray_mask"):
        assert out[k].shape[0] == 64, k
        np.testing.assert_allclose(out[k][:32], ref[k], atol=1e-6, err_msg=k)
    np.testing.assert_allclose(out["rgb"][32:], bg[32:])
    assert float(jnp.abs(out["weights"][32:]).sum()) == 0.0
    mask = np.asarray(out["ray_mask"])[:, 0]
    assert mask[32:].sum() == 0 and 0 < mask[:32].sum() < 32  # the budget binds
    target = jnp.full((64, 3), 0.5)
    loss, _ = m.loss(out, Batch(rays, target, bg))
    kept = mask > 0
    np.testing.assert_allclose(float(loss), float(jnp.mean((out["rgb"][kept] - 0.5) ** 2)),
                               rtol=1e-5)
