"""Scene contraction and s-space warps against closed forms written here in float64 numpy, finite
differences and jax.jacfwd (the multinerf coord_test.py checks, for both norms)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nerfkit.core import contraction as C
from nerfkit.core.samplers import spaced_samples

NORMS = ("l2", "linf")


def np_norm(x, norm):
    return np.linalg.norm(x, axis=-1, keepdims=True) if norm == "l2" else \
        np.max(np.abs(x), axis=-1, keepdims=True)


def np_contract(x, norm):
    """Eq. 10 of mip-NeRF 360, literally."""
    x = np.asarray(x, np.float64)
    n = np_norm(x, norm)
    return np.where(n <= 1, x, (2 - 1 / np.maximum(n, 1e-300)) * x / np.maximum(n, 1e-300))


def random_points(rng, n, log_lo=-3.0, log_hi=4.0):
    """Random directions at log-uniform radii in [10^log_lo, 10^log_hi]."""
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return d * 10.0 ** rng.uniform(log_lo, log_hi, size=(n, 1))


@pytest.mark.parametrize("norm", NORMS)
def test_matches_closed_form(norm):
    x = random_points(np.random.default_rng(0), 500)
    np.testing.assert_allclose(C.contract(jnp.asarray(x, jnp.float32), norm),
                               np_contract(x, norm), rtol=2e-6, atol=1e-6)


def test_hand_values():
    # |(3, 4, 0)|_2 = 5: (2 - 1/5) (0.6, 0.8, 0); |(3, -4, 0)|_inf = 4: (2 - 1/4) (0.75, -1, 0).
    np.testing.assert_allclose(C.contract(jnp.array([3.0, 4.0, 0.0]), "l2"), [1.08, 1.44, 0.0],
                               rtol=1e-6)
    np.testing.assert_allclose(C.contract(jnp.array([3.0, -4.0, 0.0]), "linf"),
                               [1.3125, -1.75, 0.0], rtol=1e-6)
    inside = jnp.array([0.3, -0.5, 0.2])
    for norm in NORMS:
        np.testing.assert_array_equal(C.contract(inside, norm), inside)


@pytest.mark.parametrize("norm", NORMS)
def test_inverse_round_trips(norm):
    rng = np.random.default_rng(1)
    x = random_points(rng, 400, -2.0, 3.0).astype(np.float32)
    back = np.asarray(C.inv_contract(C.contract(x, norm), norm), np.float64)
    # float32 keeps 1/|x| (the gap 2 - |z|) to ~1e-7 of 2, so |x| comes back to ~1e-7 |x|^2.
    r = np_norm(x.astype(np.float64), "l2")
    assert np.all(np.linalg.norm(back - x, axis=-1, keepdims=True) <= 1e-6 * r * np.maximum(r, 1))
    # Contracted points anywhere in the image (|z| < 2) come back.
    z = rng.uniform(-2, 2, size=(2000, 3))
    z = z[np_norm(z, norm)[:, 0] < 1.99].astype(np.float32)
    np.testing.assert_allclose(C.contract(C.inv_contract(z, norm), norm), z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", NORMS)
def test_image_inside_radius_two(norm):
    x = random_points(np.random.default_rng(2), 1000, -3.0, 6.0).astype(np.float32)
    z = np.asarray(C.contract(x, norm), np.float64)
    assert np.all(np_norm(z, norm) < 2.0)
    # Radially monotone: farther points map farther out.
    r = np_norm(x.astype(np.float64), norm)[:, 0]
    order = np.argsort(r)
    assert np.all(np.diff(np_norm(z, norm)[order, 0]) >= -1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_continuous_at_the_unit_sphere(norm):
    d = random_points(np.random.default_rng(3), 200, 0.0, 0.0)
    d = d / np_norm(d, norm)  # on the unit sphere (l2) or cube surface (linf)
    eps = 1e-4
    a = np.asarray(C.contract(jnp.asarray(d * (1 - eps), jnp.float32), norm))
    b = np.asarray(C.contract(jnp.asarray(d * (1 + eps), jnp.float32), norm))
    # |contract| is Lipschitz-1 radially at r = 1: the jump is at most ~ 2 eps |d|.
    assert np.max(np.abs(a - b)) < 3 * eps * np.max(np.abs(d))
    # The Jacobian is continuous there too (both branches are I at r = 1).
    j_in = C.contract_jacobian(jnp.asarray(d * (1 - eps), jnp.float32), norm)
    j_out = C.contract_jacobian(jnp.asarray(d * (1 + eps), jnp.float32), norm)
    np.testing.assert_allclose(j_in, j_out, atol=1e-3)


def fd_jacobian(x, norm, h=1e-6):
    """Central differences of the float64 closed form, ``[N, 3, 3]``."""
    jac = np.zeros((x.shape[0], 3, 3))
    for j in range(3):
        e = np.zeros(3)
        e[j] = h
        jac[:, :, j] = (np_contract(x + e, norm) - np_contract(x - e, norm)) / (2 * h)
    return jac


@pytest.mark.parametrize("norm", NORMS)
def test_jacobian_against_finite_differences_and_jacfwd(norm):
    x = random_points(np.random.default_rng(4), 300, -1.0, 2.0)
    # keep away from |x| = 1 where the difference quotient straddles the two branches
    x = x[np.abs(np_norm(x, norm)[:, 0] - 1) > 1e-3]
    jac = np.asarray(C.contract_jacobian(jnp.asarray(x, jnp.float32), norm))
    scale = np.maximum(1.0, np.abs(fd_jacobian(x, norm)).max(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(jac / scale, fd_jacobian(x, norm) / scale, atol=2e-5)
    auto = jax.vmap(jax.jacfwd(lambda p: C.contract(p, norm)))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(jac, auto, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_safe_at_zero_and_for_huge_points(norm):
    zero = jnp.zeros(3)
    np.testing.assert_array_equal(C.contract(zero, norm), zero)
    np.testing.assert_array_equal(jax.jacfwd(lambda p: C.contract(p, norm))(zero), np.eye(3))
    np.testing.assert_array_equal(jax.grad(lambda p: jnp.sum(C.contract(p, norm)))(zero), 1.0)
    np.testing.assert_array_equal(C.contract_jacobian(zero, norm), np.eye(3))
    huge = jnp.array([[1e20, -3e19, 2e19], [3e38, 3e38, -1e38], [jnp.inf, 0.0, 0.0]], jnp.float32)
    z = C.contract(huge, norm)
    assert np.all(np.isfinite(z)) and np.all(np_norm(np.asarray(z), norm) <= 2.0)
    # far points land on the boundary along their direction
    dirs = np.asarray(huge, np.float64)
    dirs[2] = [1.0, 0.0, 0.0]
    np.testing.assert_allclose(z, 2 * dirs / np_norm(dirs, norm), rtol=1e-5)
    jac = C.contract_jacobian(huge, norm)
    assert np.all(np.isfinite(jac)) and np.max(np.abs(jac)) < 1e-18
    g = jax.vmap(jax.grad(lambda p: jnp.sum(C.contract(p, norm))))(huge[:2])
    assert np.all(np.isfinite(g))
    # the inverse of the boundary is a distant but finite point
    back = C.inv_contract(jnp.array([2.0, 0.0, 0.0]), norm)
    assert np.all(np.isfinite(back)) and back[0] > 1e5


def test_bad_norm():
    with pytest.raises(ValueError, match="norm"):
        C.contract(jnp.zeros(3), "l1")


# -- s-space -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", C.SPACINGS)
def test_t_to_s_endpoints_and_round_trip(spacing):
    near, far = (0.0 if spacing == "piecewise" else 0.2), 50.0
    t = np.geomspace(0.2, 50.0, 33).astype(np.float32)
    s = np.asarray(C.t_to_s(t, near, far, spacing))
    assert np.all(np.diff(s) > 0) and s[-1] == pytest.approx(1.0)
    assert float(C.t_to_s(jnp.float32(near), near, far, spacing)) == pytest.approx(0.0, abs=1e-7)
    np.testing.assert_allclose(C.s_to_t(s, near, far, spacing), t, rtol=5e-5)


def test_reciprocal_spacing_is_linear_in_disparity():
    near, far = 0.5, 200.0
    s = np.linspace(0, 1, 11)
    t = np.asarray(C.s_to_t(jnp.asarray(s, jnp.float32), near, far, "reciprocal"), np.float64)
    np.testing.assert_allclose(1 / t, (1 - s) / near + s / far, rtol=1e-5)


def test_piecewise_spacing_closed_form():
    # g(t) = t/2 below 1, 1 - 1/(2t) beyond; near 0, far inf: s = g(t).
    t = jnp.array([0.0, 0.5, 1.0, 2.0, 4.0, 100.0])
    np.testing.assert_allclose(C.t_to_s(t, 0.0, jnp.inf, "piecewise"),
                               [0.0, 0.25, 0.5, 0.75, 0.875, 0.995], rtol=1e-6)


def test_spaced_samples():
    near = jnp.full((4, 1), 0.0)
    far = jnp.full((4, 1), 1e3)
    t, s = spaced_samples(jax.random.key(0), near, far, 32, True, "piecewise")
    assert t.shape == s.shape == (4, 33)
    assert np.all(np.diff(np.asarray(t), axis=-1) >= 0) and np.all(t >= 0) and np.all(t <= 1e3)
    np.testing.assert_allclose(C.t_to_s(t, near, far, "piecewise"), s, atol=1e-5)
    # deterministic, reciprocal: even in disparity between near and far
    t, s = spaced_samples(None, jnp.full((1, 1), 0.5), jnp.full((1, 1), 8.0), 4, False,
                          "reciprocal")
    np.testing.assert_allclose(1 / np.asarray(t[0], np.float64),
                               2.0 + (1 / 8 - 2.0) * np.linspace(0, 1, 5), rtol=1e-5)
