"""NeRDF: the frequency basis, rendering of radiance distributions against closed forms, and the
density distillation term."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from nerfkit.core import render, samplers
from nerfkit.core.rays import Batch, make_rays
from nerfkit.models import MODELS, SceneInfo
from nerfkit.core.render import density_from_weights
from nerfkit.models.nerdf import (NeRDFConfig, density_distribution_loss, distribution_values,
                                  frequency_basis, render_distribution)
from nerfkit.models.nerf import NeRFConfig

INFO = SceneInfo(((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5)), 2.0, 6.0)


def _rays(n, near=2.0, far=6.0, seed=0):
    rng = np.random.default_rng(seed)
    o = rng.normal(size=(n, 3)).astype(np.float32)
    d = rng.normal(size=(n, 3)).astype(np.float32)     # non-unit: t is not a distance
    return make_rays(jnp.asarray(o), jnp.asarray(d), near, far)


def test_registered():
    assert MODELS["nerdf"] is NeRDFConfig


def test_basis_closed_form_and_orthogonality():
    t = jnp.linspace(0.0, 1.0, 7)
    b = np.asarray(frequency_basis(t, 6))
    tt = np.asarray(t)
    want = np.stack([np.cos(0 * np.pi * tt), np.sin(2 * np.pi * tt), np.cos(2 * np.pi * tt),
                     np.sin(4 * np.pi * tt), np.cos(4 * np.pi * tt), np.sin(6 * np.pi * tt)], -1)
    np.testing.assert_allclose(b, want, atol=1e-6)
    # Midpoint rule on [0, 1]: the 24 functions are orthogonal, with norms 1 (i = 0) and 1/2.
    n = 4096
    tm = jnp.asarray((np.arange(n) + 0.5) / n, jnp.float32)
    bb = np.asarray(frequency_basis(tm, 24), np.float64)
    gram = bb.T @ bb / n
    np.testing.assert_allclose(gram, np.diag([1.0] + [0.5] * 23), atol=1e-4)


def test_constant_density_gives_analytic_transmittance():
    sigma, k, s = 0.7, 24, 50
    rays = _rays(4)
    coeffs = np.zeros((4, 4, k), np.float32)
    coeffs[:, 0, 0] = sigma                       # B_0 = 1: sigma(t) = 0.7 everywhere
    coeffs[:, 1:, 0] = [0.5, -1.0, 2.0]           # constant colour sigmoid(c)
    s_edges = samplers.stratified_samples(jax.random.key(0), jnp.zeros((4, 1)),
                                          jnp.ones((4, 1)), s, True)
    t_edges = rays.near + s_edges * (rays.far - rays.near)
    bg = jnp.asarray([0.1, 0.2, 0.3])
    out = jax.jit(render_distribution)(jnp.asarray(coeffs), rays, s_edges, bg)
    dnorm = np.linalg.norm(np.asarray(rays.directions), axis=-1)
    # Light reaching edge j: exp(-sigma * (t_j - t_0) * |d|) (jittered edges: t_0 >= near).
    cum = np.concatenate([np.zeros((4, 1)), np.cumsum(np.asarray(out["weights"]), -1)], -1)
    te = np.asarray(t_edges, np.float64)
    np.testing.assert_allclose(1 - cum, np.exp(-sigma * (te - te[:, :1]) * dnorm[:, None]),
                               rtol=1e-5, atol=1e-6)
    acc = 1 - np.exp(-sigma * (te[:, -1] - te[:, 0]) * dnorm)
    np.testing.assert_allclose(np.asarray(out["acc"])[:, 0], acc, rtol=1e-5)
    col = 1 / (1 + np.exp(-np.array([0.5, -1.0, 2.0])))
    np.testing.assert_allclose(np.asarray(out["rgb"]),
                               acc[:, None] * col + (1 - acc[:, None]) * np.asarray(bg),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out["density"]), sigma, rtol=1e-6)


def test_series_is_evaluated_at_normalised_depth():
    # sigma(t_hat) = 2 + sin(2 pi t_hat) (coefficient of B_1); t_hat = (t - near) / (far - near).
    rays = _rays(3, near=1.0, far=3.0)
    coeffs = np.zeros((3, 4, 4), np.float32)
    coeffs[:, 0, 0], coeffs[:, 0, 1] = 2.0, 1.0
    s_edges = jnp.linspace(0.0, 1.0, 9)                  # shared by all rays
    out = jax.jit(render_distribution)(jnp.asarray(coeffs), rays, s_edges, None)
    t_mid = np.asarray(out["t_mid"])
    np.testing.assert_allclose(t_mid, 1.0 + 2.0 * (np.arange(8) + 0.5) / 8 * np.ones((3, 1)),
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out["density"]),
                               2.0 + np.sin(2 * np.pi * (t_mid - 1.0) / 2.0), atol=1e-5)


def test_density_from_weights_round_trip():
    rng = np.random.default_rng(0)
    rays = _rays(5)
    t_edges = samplers.stratified_samples(None, rays.near, rays.far, 32, False)
    density = rng.uniform(0.0, 1.5, size=(5, 32)).astype(np.float32)
    out = jax.jit(render.volume_render)(jnp.asarray(density), jnp.zeros((5, 32, 3)), t_edges,
                                        rays.directions)
    t_mid = render.interval_midpoints(t_edges)
    rec, visible = jax.jit(density_from_weights)(out["weights"], t_mid, rays.directions)
    vis = np.asarray(visible)
    assert vis[:, 0].all()
    np.testing.assert_allclose(np.asarray(rec)[vis], density[vis], rtol=2e-3, atol=2e-3)


def test_density_loss_is_scale_invariant_and_masks_padding():
    loss_fn = jax.jit(density_distribution_loss)
    rays = _rays(6)
    rng = np.random.default_rng(1)
    coeffs = jnp.asarray(rng.normal(size=(6, 4, 8)), jnp.float32)
    t = np.sort(rng.uniform(2.0, 6.0, size=(6, 20)), -1).astype(np.float32)
    t_hat = (t - 2.0) / 4.0
    series = np.asarray(jax.jit(distribution_values)(coeffs[:, :1], jnp.asarray(t_hat)))[..., 0]
    extras = {"t_mid": jnp.asarray(t), "density": jnp.asarray(3.0 * series)}
    assert float(loss_fn(coeffs, rays, extras)) == pytest.approx(0, abs=1e-10)
    # Samples outside [near, far] (padding) are ignored whatever their value.
    t_pad = t.copy()
    t_pad[:, -3:] = 100.0
    dens = 3.0 * series
    dens[:, -3:] = 50.0
    extras_pad = {"t_mid": jnp.asarray(t_pad), "density": jnp.asarray(dens)}
    base = loss_fn(coeffs, rays, {"t_mid": jnp.asarray(t[:, :-3]),
                                  "density": jnp.asarray(dens[:, :-3])})
    assert float(loss_fn(coeffs, rays, extras_pad)) == pytest.approx(
        float(base) * 17 / 20, abs=1e-7)
    # A different teacher distribution gives a positive loss with a gradient.
    other = {"t_mid": jnp.asarray(t), "density": jnp.asarray(np.abs(rng.normal(size=(6, 20))))}
    loss, grad = jax.jit(jax.value_and_grad(
        lambda c: density_distribution_loss(c, rays, other)))(coeffs)
    assert float(loss) > 1e-3 and float(jnp.abs(grad[:, 0]).sum()) > 0
    assert float(jnp.abs(grad[:, 1:]).sum()) == 0          # colour weights untouched
    assert density_distribution_loss(coeffs, rays, None) is None


def test_model_outputs_loss_and_flops():
    cfg = NeRDFConfig(depth=3, width=16, num_basis=6, samples=10, points=4, pos_freqs=2)
    model = cfg.build(INFO, nnx.Rngs(0))
    count = sum(x.size for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
    assert count == cfg.num_params()
    rays = _rays(8)
    t = jnp.broadcast_to(jnp.linspace(2.5, 5.5, 12), (8, 12))
    batch = Batch(rays, jnp.full((8, 3), 0.5), jnp.ones((8, 3)),
                  {"t_mid": t, "density": jnp.ones((8, 12))})

    @nnx.jit
    def run(model, batch):
        out = model.render_rays(batch.rays, jax.random.key(0), train=True,
                                background=batch.background)
        return out, model.loss(out, batch)

    out, (loss, metrics) = run(model, batch)
    assert out["rgb"].shape == (8, 3) and out["coeffs"].shape == (8, 4, 6)
    assert out["weights"].shape == (8, 10)
    assert float(loss) == pytest.approx(float(metrics["mse"] + 0.1 * metrics["density_loss"]))
    d = NeRDFConfig()
    assert d.flops_per_ray() < NeRFConfig().flops_per_ray() / 100
