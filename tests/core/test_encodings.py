"""Encodings: positional encoding values/order, spherical harmonics vs scipy and quadrature."""

import math

import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy import special

from nerfkit.core import encodings
from nerfkit.errors import ConfigError


def test_positional_encoding_values_and_order():
    x = [0.3, -1.2]
    got = np.asarray(encodings.positional_encoding(jnp.array([x]), 3))[0]
    expected = list(x)
    for k in range(3):
        expected += [math.sin(2.0**k * v) for v in x]
        expected += [math.cos(2.0**k * v) for v in x]
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_positional_encoding_min_deg_no_input_and_dims():
    x = jnp.array([[[0.1, 0.2, 0.7]]])                                   # [1, 1, 3]
    got = np.asarray(encodings.positional_encoding(x, 2, include_input=False, min_deg=2))
    assert got.shape == (1, 1, 12)
    v = [0.1, 0.2, 0.7]
    expected = ([math.sin(4 * a) for a in v] + [math.cos(4 * a) for a in v]
                + [math.sin(8 * a) for a in v] + [math.cos(8 * a) for a in v])
    np.testing.assert_allclose(got[0, 0], expected, atol=1e-6)
    assert encodings.positional_encoding_dim(3, 10, True) == 63                # NeRF's xyz
    assert encodings.positional_encoding_dim(3, 4, True) == 27                 # NeRF's viewdirs
    assert encodings.positional_encoding(jnp.ones((5, 3)), 10).shape == (5, 63)
    np.testing.assert_array_equal(encodings.positional_encoding(x, 0), x)


def test_positional_encoding_jits():
    f = jax.jit(encodings.positional_encoding, static_argnums=(1, 2, 3))
    x = jnp.linspace(-1, 1, 12).reshape(4, 3)
    np.testing.assert_allclose(f(x, 6, True, 0), encodings.positional_encoding(x, 6), atol=1e-6)


def _scipy_real_sh(dirs, degree):
    """Real SH from scipy's complex ones (Condon-Shortley phase kept), see the encodings docs."""
    x, y, z = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    theta = np.arccos(np.clip(z, -1, 1))
    phi = np.mod(np.arctan2(y, x), 2 * np.pi)
    cols = []
    for l in range(degree):
        for m in range(-l, l + 1):
            ylm = special.sph_harm_y(l, abs(m), theta, phi)
            if m < 0:
                cols.append(np.sqrt(2.0) * ylm.imag)
            elif m == 0:
                cols.append(ylm.real)
            else:
                cols.append(np.sqrt(2.0) * ylm.real)
    return np.stack(cols, axis=-1)


def _random_dirs(n, seed):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.mark.parametrize("degree", [1, 2, 3, 4, 5])
def test_spherical_harmonics_match_scipy(degree):
    dirs = np.concatenate([_random_dirs(200, degree), np.eye(3), -np.eye(3)])
    got = np.asarray(encodings.spherical_harmonics(jnp.asarray(dirs, jnp.float32), degree))
    assert got.shape == (206, degree**2)
    np.testing.assert_allclose(got, _scipy_real_sh(dirs, degree), atol=2e-6)


def test_spherical_harmonics_known_values():
    # Band 1 is sqrt(3/(4 pi)) * (-y, z, -x) (tiny-cuda-nn / Instant-NGP signs).
    c1 = math.sqrt(3 / (4 * math.pi))
    got = encodings.spherical_harmonics(jnp.array([[1.0, 0.0, 0.0], [0.0, 0.6, 0.8]]), 2)
    np.testing.assert_allclose(got, [[0.5 / math.sqrt(math.pi), 0, 0, -c1],
                                     [0.5 / math.sqrt(math.pi), -0.6 * c1, 0.8 * c1, 0]], atol=1e-6)


def test_spherical_harmonics_orthonormal_by_quadrature():
    # Gauss-Legendre in cos(theta) x uniform in phi integrates products of bands <= 4 exactly.
    mu, wmu = np.polynomial.legendre.leggauss(12)
    phi = np.arange(24) * (2 * np.pi / 24)
    mu_g, phi_g = np.meshgrid(mu, phi, indexing="ij")
    s = np.sqrt(1 - mu_g**2)
    dirs = np.stack([s * np.cos(phi_g), s * np.sin(phi_g), mu_g], -1).reshape(-1, 3)
    w = (wmu[:, None] * np.full_like(phi_g, 2 * np.pi / 24)).reshape(-1)
    y = np.asarray(encodings.spherical_harmonics(jnp.asarray(dirs, jnp.float32), 5), np.float64)
    gram = np.einsum("n,ni,nj->ij", w, y, y)
    np.testing.assert_allclose(gram, np.eye(25), atol=2e-5)


def test_spherical_harmonics_prefix_jit_and_bad_degree():
    dirs = jnp.asarray(_random_dirs(10, 0), jnp.float32)
    full = encodings.spherical_harmonics(dirs, 5)
    for d in range(1, 5):
        np.testing.assert_allclose(encodings.spherical_harmonics(dirs, d), full[:, : d * d])
    np.testing.assert_allclose(jax.jit(encodings.spherical_harmonics, static_argnums=1)(dirs, 4),
                               full[:, :16], atol=1e-6)
    assert encodings.spherical_harmonics_dim(4) == 16
    for bad in (0, 6):
        with pytest.raises(ConfigError):
            encodings.spherical_harmonics(dirs, bad)
