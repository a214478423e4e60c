"""R2L: the ray encoding's size and order, the paper's network size, the scanned network against
an unrolled reference, and hard-ray mining."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nerfkit.core.rays import Batch, make_rays
from nerfkit.errors import ConfigError
from nerfkit.models import MODELS, SceneInfo
from nerfkit.models.nerf import NeRFConfig
from nerfkit.core.encodings import ray_encoding, ray_points
from nerfkit.models.r2l import R2LConfig

INFO = SceneInfo(((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)), 2.0, 6.0)


def _rays(n, seed=0):
    rng = np.random.default_rng(seed)
    o = rng.normal(size=(n, 3)).astype(np.float32)
    o = 4.0 * o / np.linalg.norm(o, axis=-1, keepdims=True)
    d = -o / 4.0 + 0.1 * rng.normal(size=(n, 3)).astype(np.float32)
    return make_rays(jnp.asarray(o), jnp.asarray(d), 2.0, 6.0)


def test_registered():
    assert MODELS["r2l"] is R2LConfig


def test_points_fixed_at_test_and_jittered_within_strata():
    rays = _rays(7)
    pts = np.asarray(ray_points(rays, 16, None, False))
    t = np.linspace(2.0, 6.0, 16)
    want = np.asarray(rays.origins)[:, None] + t[:, None] * np.asarray(rays.directions)[:, None]
    np.testing.assert_allclose(pts, want, rtol=1e-5, atol=1e-5)

    pts_r = np.asarray(ray_points(rays, 16, jax.random.key(1), True))
    d = np.asarray(rays.directions)
    t_r = ((pts_r - np.asarray(rays.origins)[:, None]) @ np.eye(3))[..., 0] / d[:, None, 0]
    half = (6.0 - 2.0) / 15 / 2
    assert np.all(np.abs(t_r - t) <= half + 1e-4)
    assert np.all((t_r >= 2.0 - 1e-5) & (t_r <= 6.0 + 1e-5))
    assert not np.allclose(t_r, t)


def test_encoding_size_and_order():
    rays = _rays(3)
    pts = ray_points(rays, 16, None, False)
    enc = np.asarray(ray_encoding(pts, 10))
    assert enc.shape == (3, 1008) == (3, R2LConfig().input_dim)
    p = np.asarray(pts).reshape(3, 48)                     # x0, y0, z0, x1, ... (point-major)
    np.testing.assert_allclose(p[:, 3:6], np.asarray(pts)[:, 1])
    np.testing.assert_allclose(enc[:, :48], p, rtol=1e-6)
    for k in range(10):
        sin = enc[:, 48 + 96 * k: 48 + 96 * k + 48]
        cos = enc[:, 96 + 96 * k: 96 + 96 * k + 48]
        np.testing.assert_allclose(sin, np.sin(2.0 ** k * p), atol=2e-5)
        np.testing.assert_allclose(cos, np.cos(2.0 ** k * p), atol=2e-5)


def test_paper_size_params_and_flops():
    cfg = R2LConfig()
    assert cfg.depth == 88 and 1 + 2 * cfg.num_blocks + 1 == 88 and cfg.num_blocks == 43
    model = cfg.build(INFO, nnx.Rngs(0))
    count = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    assert count == cfg.num_params() == 5_917_187          # "about 5.9 M"
    assert cfg.flops_per_ray() == pytest.approx(11.79e6, rel=1e-3)   # paper: 11.8 M
    nerf = NeRFConfig().flops_per_ray()
    assert nerf == pytest.approx(303.8e6, rel=1e-3)                    # paper: 303.8 M
    assert nerf / cfg.flops_per_ray() >= 25


def test_scanned_network_matches_unrolled_reference():
    cfg = R2LConfig(depth=8, width=16, points=4, pos_freqs=2)
    model = cfg.build(INFO, nnx.Rngs(3))
    rays = _rays(5)
    out = nnx.jit(lambda m, r: m.render_rays(r, None, train=False,
                                             background=jnp.ones((5, 3))))(model, rays)
    net = model.net
    x = np.asarray(ray_encoding(ray_points(rays, 4, None, False), 2), np.float64)
    relu = lambda v: np.maximum(v, 0)
    h0 = relu(x @ np.asarray(net.head.kernel[...]) + np.asarray(net.head.bias[...]))
    h = h0
    for b in range(cfg.num_blocks):
        y = relu(h @ np.asarray(net.w1[...])[b] + np.asarray(net.b1[...])[b])
        h = h + y @ np.asarray(net.w2[...])[b] + np.asarray(net.b2[...])[b]
    logits = (h + h0) @ np.asarray(net.tail.kernel[...]) + np.asarray(net.tail.bias[...])
    np.testing.assert_allclose(np.asarray(out["rgb"]), 1 / (1 + np.exp(-logits)), atol=1e-5)
    assert out["depth"].shape == (5, 1) and np.all(np.asarray(out["acc"]) == 1)


def test_hard_ray_mining_fills_pool_then_replays():
    cfg = R2LConfig(depth=4, width=8, points=4, pos_freqs=1, batch_size=10, hard_ratio=0.2,
                    hard_pool=3)
    model = cfg.build(INFO, nnx.Rngs(0))
    assert cfg.hard_rays == 2 and model.pool_rays[...].shape == (6, 8)
    rays = _rays(10, seed=1)
    bg = jnp.ones((10, 3))

    @nnx.jit
    def step_fn(model, target, step):
        out = model.render_rays(rays, jax.random.key(step), train=True, background=bg)
        return model.loss(out, Batch(rays, target, bg), jax.random.key(100 + step))

    for step in range(4):
        target = jnp.zeros((10, 3)).at[step].set(1.0).at[9 - step].set(1.0)  # two hard rays
        loss, metrics = step_fn(model, target, step)
        assert np.isfinite(float(loss))
        if step < 3:   # pool filling: appended, not replayed yet
            assert int(model.pool_count[...]) == 2 * (step + 1)
            assert float(metrics["hard_pool_full"]) == 0.0
            assert float(loss) == pytest.approx(float(metrics["mse"]))
            np.testing.assert_allclose(np.sort(np.asarray(model.pool_rays[...])[2 * step:2 * step + 2, 0]),
                                       np.sort(np.asarray(rays.origins)[[step, 9 - step], 0]))
        else:
            assert float(metrics["hard_pool_full"]) == 1.0
            want = (10 * float(metrics["mse"]) + 2 * float(metrics["mse_hard"])) / 12
            assert float(loss) == pytest.approx(want, rel=1e-5)
    # The pool's targets are the batch targets of the rays it holds.
    assert np.all(np.asarray(model.pool_rgb[...]).max(-1) == 1.0)


def test_random_background_is_rejected():
    with pytest.raises(ConfigError, match="background"):
        R2LConfig(background="random")
    with pytest.raises(ConfigError, match="even"):
        R2LConfig(depth=7)
