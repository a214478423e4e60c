"""Volume rendering against closed forms and a naive float64 reference."""

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from nerfkit.core import render
from nerfkit.errors import ConfigError


def _naive_weights(density, deltas):
    """Float64 loop over samples: T_i = prod_{j<i} exp(-s_j d_j), w_i = T_i (1 - exp(-s_i d_i))."""
    density = np.asarray(density, np.float64)
    deltas = np.asarray(deltas, np.float64)
    w = np.zeros_like(density)
    trans = np.ones(density.shape[:-1])
    for i in range(density.shape[-1]):
        a = 1.0 - np.exp(-density[..., i] * deltas[..., i])
        w[..., i] = trans * a
        trans = trans * (1.0 - a)
    return w


def test_constant_density_slab_matches_beer_lambert():
    # A slab of density sigma occupies t in [1, 2.5] along rays whose directions have norm 2, so
    # the slab is 3 world units thick: T = exp(-3 sigma), acc = 1 - T.
    sigma, bg, slab_rgb = 0.4, np.array([0.2, 0.3, 0.9]), np.array([1.0, 0.5, 0.0])
    rng = np.random.default_rng(0)
    inner = np.sort(rng.uniform(0.0, 4.0, size=(5, 40)), axis=-1)
    t_edges = np.concatenate([np.zeros((5, 1)), np.full((5, 1), 1.0), np.full((5, 1), 2.5),
                              inner, np.full((5, 1), 4.0)], axis=-1)
    t_edges = np.sort(t_edges, axis=-1)
    mid = 0.5 * (t_edges[:, 1:] + t_edges[:, :-1])
    inside = (mid > 1.0) & (mid < 2.5)
    density = np.where(inside, sigma, 0.0)
    rgb = np.where(inside[..., None], slab_rgb, 0.7)          # colour outside does not matter
    d = np.array([[0.0, 2.0, 0.0], [1.2, 1.6, 0.0], [0.0, 0.0, -2.0], [2.0, 0.0, 0.0],
                  [np.sqrt(2.0), np.sqrt(2.0), 0.0]])
    out = render.volume_render(jnp.asarray(density, jnp.float32), jnp.asarray(rgb, jnp.float32),
                               jnp.asarray(t_edges, jnp.float32), jnp.asarray(d, jnp.float32),
                               jnp.asarray(bg, jnp.float32))
    trans = np.exp(-sigma * 3.0)
    np.testing.assert_allclose(out["acc"][..., 0], 1.0 - trans, rtol=1e-5)
    np.testing.assert_allclose(out["rgb"], np.broadcast_to((1 - trans) * slab_rgb + trans * bg, (5, 3)),
                               atol=1e-5)
    # Only slab intervals carry weight, so the depth lies inside the slab.
    assert np.all(out["depth"] > 1.0) and np.all(out["depth"] < 2.5)


def test_weights_match_naive_reference_and_sum_to_at_most_one():
    rng = np.random.default_rng(1)
    density = rng.exponential(2.0, size=(7, 33)) * (rng.uniform(size=(7, 33)) > 0.3)
    deltas = rng.uniform(0.0, 0.3, size=(7, 33))
    ref = _naive_weights(density, deltas)
    w, trans, alpha = render.weights_from_density(jnp.asarray(density, jnp.float32),
                                                  jnp.asarray(deltas, jnp.float32))
    np.testing.assert_allclose(w, ref, atol=2e-6)
    np.testing.assert_allclose(alpha, 1.0 - np.exp(-density * deltas), atol=1e-6)
    assert np.all(np.asarray(w) >= 0.0)
    assert np.all(np.sum(w, -1) <= 1.0 + 1e-6)
    # Both stable forms agree.
    w2, trans2 = render.weights_from_alphas(alpha)
    np.testing.assert_allclose(w2, w, atol=1e-6)
    np.testing.assert_allclose(trans2, trans, atol=1e-6)
    # sum(w) = 1 - prod(1 - alpha) (telescoping), checked in float64.
    np.testing.assert_allclose(np.sum(w, -1), 1.0 - np.exp(-np.sum(density * deltas, -1)),
                               atol=1e-5)


@pytest.mark.parametrize("huge", [1e10, 1e30, np.inf])
def test_huge_density_and_zero_length_intervals_are_finite(huge):
    density = jnp.array([[0.0, huge, huge, 1.0], [huge, huge, 0.5, 0.5]], jnp.float32)
    deltas = jnp.array([[0.1, 0.0, 0.2, 0.1], [0.3, 0.2, 0.1, 0.0]], jnp.float32)
    alpha = render.alphas_from_density(density, deltas)
    w, trans, a2 = render.weights_from_density(density, deltas)
    for arr in (alpha, w, trans, a2):
        assert np.all(np.isfinite(arr))
    # Zero-length interval: alpha 0 even for infinite density. Positive length: alpha 1.
    np.testing.assert_allclose(alpha, [[0, 0, 1, 1 - np.exp(-0.1)], [1, 1, 1 - np.exp(-0.05), 0]],
                               rtol=1e-6, atol=0)
    # First ray: the opaque interval is the third one; second ray: the first.
    np.testing.assert_allclose(w, [[0, 0, 1, 0], [1, 0, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(trans, [[1, 1, 1, 0], [1, 0, 0, 0]], atol=1e-7)
    w3, _ = render.weights_from_alphas(alpha)
    np.testing.assert_allclose(w3, w, atol=1e-7)


def test_gradients_finite_at_opaque_and_empty_intervals():
    def loss_density(density):
        deltas = jnp.array([0.0, 0.5, 0.5, 0.5])
        w, _, _ = render.weights_from_density(density, deltas)
        return jnp.sum(w * jnp.arange(4.0))

    g = jax.grad(loss_density)(jnp.array([1e10, 1e10, 3.0, 0.0]))
    assert np.all(np.isfinite(g))

    def loss_alpha(alpha):
        w, _ = render.weights_from_alphas(alpha)
        return jnp.sum(w * jnp.arange(4.0))

    g = jax.grad(loss_alpha)(jnp.array([0.2, 1.0, 0.5, 1.0]))
    assert np.all(np.isfinite(g))
    # d/d alpha_0 of sum_i w_i i with w = [a0, (1-a0)*1, 0, 0]: = 0 - 1 = -1.
    np.testing.assert_allclose(g[0], -1.0, atol=1e-6)


def test_single_opaque_surface_depth_colour_and_acc():
    t_edges = jnp.linspace(2.0, 6.0, 17)[None]              # 16 intervals of 0.25
    density = jnp.zeros((1, 16)).at[0, 9].set(jnp.inf)
    colours = jnp.zeros((1, 16, 3)).at[0, 9].set(jnp.array([0.1, 0.6, 0.3]))
    out = render.volume_render(density, colours, t_edges, jnp.array([[0.0, 0.0, -1.0]]),
                               jnp.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(out["depth"], [[2.0 + 9.5 * 0.25]], atol=1e-6)  # midpoint of [4.25, 4.5]
    np.testing.assert_allclose(out["acc"], [[1.0]], atol=1e-7)
    np.testing.assert_allclose(out["rgb"], [[0.1, 0.6, 0.3]], atol=1e-6)
    np.testing.assert_allclose(out["weights"][0, 9], 1.0)


def test_two_half_surfaces_depth_is_normalised_mean():
    # alpha 1/2 at t=1, then opaque at t=3: weights 1/2, 1/2 -> depth 2, acc 1.
    weights, _ = render.weights_from_alphas(jnp.array([[0.0, 0.5, 0.0, 1.0, 0.3]]))
    np.testing.assert_allclose(weights, [[0, 0.5, 0, 0.5, 0]], atol=1e-7)
    out = render.render_weights(weights, jnp.ones((1, 5, 3)), jnp.array([[0.0, 1.0, 2.0, 3.0, 4.0]]))
    np.testing.assert_allclose(out["depth"], [[2.0]], atol=1e-6)
    # A half-transparent single surface: depth is still the surface, not pulled toward 0.
    w = jnp.array([[0.0, 0.0, 0.25, 0.0]])
    out = render.render_weights(w, jnp.ones((1, 4, 3)), jnp.array([[1.0, 2.0, 3.0, 4.0]]),
                                jnp.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(out["depth"], [[3.0]], atol=1e-6)
    np.testing.assert_allclose(out["rgb"], [[0.25, 0.25, 0.25 + 0.75]], atol=1e-6)


def test_empty_ray_depth_is_far_and_background_shows():
    t_mid = jnp.array([[2.5, 3.5, 4.5, 5.5]])
    out = render.render_weights(jnp.zeros((1, 4)), jnp.ones((1, 4, 3)), t_mid,
                                jnp.array([[0.3, 0.2, 0.1]]))
    np.testing.assert_allclose(out["depth"], [[5.5]])
    np.testing.assert_allclose(out["acc"], [[0.0]])
    np.testing.assert_allclose(out["rgb"], [[0.3, 0.2, 0.1]])
    assert np.all(np.isfinite(jax.grad(
        lambda w: render.render_weights(w, jnp.ones((1, 4, 3)), t_mid)["depth"].sum())(
            jnp.zeros((1, 4)))))


def test_interval_deltas_midpoints_and_composite():
    t = jnp.array([[0.0, 1.0, 3.0], [1.0, 1.0, 2.0]])
    d = jnp.array([[3.0, 4.0, 0.0], [0.0, 0.0, -0.5]])
    np.testing.assert_allclose(render.interval_deltas(t, d), [[5.0, 10.0], [0.0, 0.5]])
    np.testing.assert_allclose(render.interval_midpoints(t), [[0.5, 2.0], [1.0, 1.5]])
    vals = jnp.arange(12.0).reshape(2, 2, 3)
    np.testing.assert_allclose(render.composite(jnp.array([[1.0, 0.5], [0.0, 2.0]]), vals),
                               [[0 + 1.5, 1 + 2.0, 2 + 2.5], [18.0, 20.0, 22.0]])


def test_background_broadcasting_and_helpers():
    w = jnp.array([[0.5, 0.0], [0.0, 0.0]])
    rgb = jnp.ones((2, 2, 3))
    t_mid = jnp.array([[1.0, 2.0], [1.0, 2.0]])
    per_ray = jnp.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    out = render.render_weights(w, rgb, t_mid, per_ray)
    np.testing.assert_allclose(out["rgb"], [[0.5, 0.5, 1.0], [1.0, 0.0, 0.0]])
    out = render.render_weights(w, rgb, t_mid, jnp.ones(3))
    np.testing.assert_allclose(out["rgb"], np.ones((2, 3)))
    out = render.render_weights(w, rgb, t_mid, None)
    np.testing.assert_allclose(out["rgb"], [[0.5] * 3, [0.0] * 3])

    np.testing.assert_array_equal(render.background_color("white", None, (4,)), np.ones((4, 3)))
    np.testing.assert_array_equal(render.background_color("black", None, (2, 3)),
                                  np.zeros((2, 3, 3)))
    r1 = render.background_color("random", jax.random.PRNGKey(0), (1000,))
    r2 = render.background_color("random", jax.random.PRNGKey(1), (1000,))
    assert r1.shape == (1000, 3) and np.all((r1 >= 0) & (r1 <= 1))
    assert abs(float(r1.mean()) - 0.5) < 0.03 and not np.allclose(r1, r2)
    with pytest.raises(ConfigError):
        render.background_color("grey", None, (1,))
    with pytest.raises(ValueError):
        render.background_color("random", None, (1,))


def test_volume_render_jits_and_matches_eager():
    rng = np.random.default_rng(3)
    density = jnp.asarray(rng.exponential(1.0, (4, 8)), jnp.float32)
    colours = jnp.asarray(rng.uniform(size=(4, 8, 3)), jnp.float32)
    t = jnp.asarray(np.sort(rng.uniform(1, 3, (4, 9)), -1), jnp.float32)
    d = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    eager = render.volume_render(density, colours, t, d, jnp.ones(3))
    jitted = jax.jit(render.volume_render)(density, colours, t, d, jnp.ones(3))
    for k in ("rgb", "depth", "acc", "weights"):
        np.testing.assert_allclose(jitted[k], eager[k], atol=1e-6)
    assert eager["rgb"].shape == (4, 3) and eager["depth"].shape == (4, 1)
    # Independent check of the pixel colour against the float64 loop.
    deltas = np.diff(np.asarray(t), axis=-1) * np.linalg.norm(np.asarray(d), axis=-1)[:, None]
    ref_w = _naive_weights(density, deltas)
    ref_rgb = np.einsum("rs,rsc->rc", ref_w, colours) + (1 - ref_w.sum(-1))[:, None]
    np.testing.assert_allclose(eager["rgb"], ref_rgb, atol=1e-5)
    assert np.all(eager["depth"] >= 0.5 * (t[:, :1] + t[:, 1:2]) - 1e-6)
    assert np.all(eager["depth"] <= 0.5 * (t[:, -2:-1] + t[:, -1:]) + 1e-6)
