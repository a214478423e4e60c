"""Mip-NeRF 360's distortion loss: the O(n) form against the brute-force double sum (eq. 15), the
double integral it is the closed form of (eq. 14, by quadrature), and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core.losses import distortion_loss, distortion_loss_intervals


def brute(starts, ends, w):
    """Eq. 15 literally: sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 (b_i - a_i), float64."""
    m = 0.5 * (starts + ends)
    inter = np.sum(w[..., :, None] * w[..., None, :] * np.abs(m[..., :, None] - m[..., None, :]),
                   axis=(-1, -2))
    return inter + np.sum(w * w * (ends - starts), axis=-1) / 3


def quadrature(starts, ends, w, sub=200):
    """Eq. 14, int int w(u) w(v) |u - v| du dv for the step function, by the midpoint rule with
    ``sub`` cells per interval (exact across intervals, error O(1/sub^2) within one)."""
    u, mass = [], []
    for a, b, wi in zip(starts, ends, w):
        u.append(a + (np.arange(sub) + 0.5) / sub * (b - a))
        mass.append(np.full(sub, wi / sub))
    u, mass = np.concatenate(u), np.concatenate(mass)
    return float(np.sum(mass[:, None] * mass[None, :] * np.abs(u[:, None] - u[None, :])))


def random_rays(seed, n=16, s=12, gaps=False):
    rng = np.random.default_rng(seed)
    if gaps:
        pts = np.sort(rng.uniform(0, 5, size=(n, 2 * s)), axis=-1)
        starts, ends = pts[:, 0::2], pts[:, 1::2]
    else:
        edges = np.sort(rng.uniform(0, 5, size=(n, s + 1)), axis=-1)
        starts, ends = edges[:, :-1], edges[:, 1:]
    w = rng.uniform(size=(n, s)) * (rng.uniform(size=(n, s)) < 0.7)
    w = w / w.sum(-1, keepdims=True) * rng.uniform(0.3, 1.0, size=(n, 1))
    return starts, ends, w


def test_matches_the_double_sum_and_the_integral():
    starts, ends, w = random_rays(0)
    edges = np.concatenate([starts, ends[:, -1:]], axis=-1)
    got = np.asarray(distortion_loss(jnp.asarray(edges, jnp.float32), jnp.asarray(w, jnp.float32)))
    assert got.shape == (16,)
    np.testing.assert_allclose(got, brute(starts, ends, w), rtol=1e-5, atol=1e-7)
    for i in range(3):
        np.testing.assert_allclose(got[i], quadrature(starts[i], ends[i], w[i]), rtol=1e-4)


def test_intervals_with_gaps_and_padding():
    starts, ends, w = random_rays(1, gaps=True)
    got = distortion_loss_intervals(*(jnp.asarray(a, jnp.float32) for a in (starts, ends, w)))
    np.testing.assert_allclose(got, brute(starts, ends, w), rtol=1e-5, atol=1e-7)
    for i in range(3):
        np.testing.assert_allclose(got[i], quadrature(starts[i], ends[i], w[i]), rtol=1e-4)
    # zero-weight, zero-length padding at the end (march_rays' empty slots) adds nothing
    pad = np.repeat(ends[:, -1:], 4, axis=-1)
    padded = distortion_loss_intervals(
        jnp.asarray(np.concatenate([starts, pad], -1), jnp.float32),
        jnp.asarray(np.concatenate([ends, pad], -1), jnp.float32),
        jnp.asarray(np.concatenate([w, np.zeros_like(pad)], -1), jnp.float32))
    np.testing.assert_allclose(padded, got, rtol=1e-6)


def test_hand_values():
    # one interval [0, 1] of weight 1: 1/3; two unit point-like masses 0.5 at distance 2:
    # 2 * 0.25 * 2 = 1.
    assert float(distortion_loss(jnp.array([0.0, 1.0]), jnp.array([1.0]))) == np.float32(1 / 3)
    got = distortion_loss_intervals(jnp.array([0.0, 2.0]), jnp.array([0.0, 2.0]),
                                    jnp.array([0.5, 0.5]))
    assert abs(float(got) - 1.0) < 1e-6


def test_gradient_against_finite_differences():
    starts, ends, w = random_rays(2, n=3, s=8)
    edges = np.concatenate([starts, ends[:, -1:]], axis=-1)

    def ref(e, wt):
        return brute(e[:, :-1], e[:, 1:], wt).sum()

    g_e, g_w = jax.grad(lambda e, wt: jnp.sum(distortion_loss(e, wt)), argnums=(0, 1))(
        jnp.asarray(edges, jnp.float32), jnp.asarray(w, jnp.float32))
    h = 1e-6
    fd_w = np.zeros_like(w)
    fd_e = np.zeros_like(edges)
    for idx in np.ndindex(*w.shape):
        d = np.zeros_like(w)
        d[idx] = h
        fd_w[idx] = (ref(edges, w + d) - ref(edges, w - d)) / (2 * h)
    for idx in np.ndindex(*edges.shape):
        d = np.zeros_like(edges)
        d[idx] = h
        fd_e[idx] = (ref(edges + d, w) - ref(edges - d, w)) / (2 * h)
    np.testing.assert_allclose(g_w, fd_w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_e, fd_e, rtol=1e-4, atol=1e-5)
