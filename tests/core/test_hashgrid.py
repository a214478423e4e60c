"""Hash-grid encoding: both implementations against an independent loop-based numpy reference."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nerfkit.core.hashgrid import (
    HashGridConfig,
    hash_encode,
    hash_encode_naive,
    init_hash_tables,
)

# Small configs: (4, 8, 16, 32) with T = 2**10 -> 2 direct levels (125, 729 vertices), 2 hashed.
SMALL = HashGridConfig(num_levels=4, features_per_level=2, log2_table_size=10,
                       base_resolution=4, max_resolution=32)
# One feature, 3 levels, tiny table: hashing from the second level on.
TINY = HashGridConfig(num_levels=3, features_per_level=1, log2_table_size=8,
                      base_resolution=3, max_resolution=12)
# Four features, a single (direct) level.
SINGLE = HashGridConfig(num_levels=1, features_per_level=4, log2_table_size=12,
                        base_resolution=7, max_resolution=7)
# Two levels, one direct (4^3 = 64 rows) and one hashed: small programs for the x-gradient tests
# (XLA takes seconds to compile the naive version's x-gradient for more levels).
DUO = HashGridConfig(num_levels=2, features_per_level=1, log2_table_size=6,
                     base_resolution=3, max_resolution=6)
CONFIGS = [SMALL, TINY, SINGLE]
IMPLS = {"naive": hash_encode_naive, "optimised": hash_encode}


def reference_encode(tables: np.ndarray, x: np.ndarray, L, F, T, n_min, n_max) -> np.ndarray:
    """Slow, obvious encoding written from the paper (eqs. 2-4), in float64 Python loops."""
    b = 1.0 if L == 1 else math.exp((math.log(n_max) - math.log(n_min)) / (L - 1))
    out = np.zeros((x.shape[0], L * F))
    offset = 0
    for l in range(L):
        n = int(math.floor(n_min * b ** l + 1e-9))
        direct = (n + 1) ** 3 <= T
        size = (n + 1) ** 3 if direct else T
        for p in range(x.shape[0]):
            pos = [min(max(float(v), 0.0), 1.0) * n for v in x[p]]  # clamp to the cube
            base = [min(int(math.floor(v)), n - 1) for v in pos]  # x == 1 -> last cell
            frac = [v - c for v, c in zip(pos, base)]
            for corner in itertools.product((0, 1), repeat=3):
                i, j, k = (c + o for c, o in zip(base, corner))
                if direct:
                    row = i + j * (n + 1) + k * (n + 1) ** 2
                else:
                    row = ((i * 1) ^ (j * 2654435761) ^ (k * 805459861)) % (1 << 32) % T
                assert 0 <= row < size
                w = 1.0
                for o, f in zip(corner, frac):
                    w *= f if o else 1.0 - f
                out[p, l * F:(l + 1) * F] += w * tables[offset + row]
        offset += size
    assert offset == tables.shape[0]
    return out


def sample_points(key, n=48):
    """Random points inside and outside the cube plus its corners, faces and grid vertices."""
    inside = jax.random.uniform(key, (n, 3))
    outside = jax.random.uniform(jax.random.fold_in(key, 1), (16, 3), minval=-0.5, maxval=1.5)
    corners = np.array(list(itertools.product((0.0, 1.0), repeat=3)))
    faces = np.array(inside[:12])
    faces[np.arange(12), np.arange(12) % 3] = np.arange(12) % 2  # one coordinate at 0 or 1
    vertices = np.array([[0.25, 0.5, 0.75], [1 / 3, 2 / 3, 1.0], [0.125, 0.0, 0.875]])
    return np.concatenate([np.asarray(inside), np.asarray(outside), corners, faces, vertices])


def cfg_args(cfg):
    return (cfg.num_levels, cfg.features_per_level, cfg.table_size, cfg.base_resolution,
            cfg.max_resolution)


@pytest.fixture
def x64():
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", prev)


def test_growth_factor_and_resolutions_follow_the_paper():
    cfg = HashGridConfig()  # paper defaults
    b = math.exp((math.log(2048) - math.log(16)) / 15)
    assert cfg.growth_factor == pytest.approx(b) and b == pytest.approx(1.3819128799677762)
    assert cfg.resolutions == (16, 22, 30, 42, 58, 80, 111, 153, 212, 294, 406, 561, 776, 1072,
                               1482, 2048)
    assert cfg.resolutions == tuple(int(np.floor(16 * b ** l + 1e-9)) for l in range(16))
    assert cfg.table_sizes[:5] == (17 ** 3, 23 ** 3, 31 ** 3, 43 ** 3, 59 ** 3)  # direct levels
    assert cfg.table_sizes[5:] == (2 ** 19,) * 11 and cfg.hashed == (False,) * 5 + (True,) * 11
    assert cfg.output_dim == 32 and cfg.total_entries == sum(cfg.table_sizes)
    two = HashGridConfig(num_levels=2, base_resolution=2, max_resolution=8)
    assert two.growth_factor == pytest.approx(4.0) and two.resolutions == (2, 8)
    assert SINGLE.growth_factor == 1.0 and SINGLE.resolutions == (7,)
    assert SMALL.resolutions == (4, 8, 16, 32) and SMALL.hashed == (False, False, True, True)
    assert SMALL.table_sizes == (125, 729, 1024, 1024) and SMALL.offsets == (0, 125, 854, 1878)


def test_init_tables():
    t = init_hash_tables(jax.random.PRNGKey(0), SMALL)
    assert t.shape == (SMALL.total_entries, 2) and t.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(t))) <= 1e-4 and float(jnp.std(t)) > 1e-5


@pytest.mark.parametrize("cfg", CONFIGS, ids=["small", "tiny", "single"])
@pytest.mark.parametrize("impl", list(IMPLS))
def test_matches_loop_reference(cfg, impl):
    key = jax.random.PRNGKey(1)
    tables = jax.random.uniform(key, (cfg.total_entries, cfg.features_per_level), minval=-1.0,
                                maxval=1.0)
    x = sample_points(jax.random.fold_in(key, 2))
    ref = reference_encode(np.asarray(tables, np.float64), x, *cfg_args(cfg))
    got = jax.jit(lambda t, x: IMPLS[impl](t, x, cfg))(tables, jnp.asarray(x, jnp.float32))
    assert got.shape == (x.shape[0], cfg.output_dim)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=0, atol=2e-6)


def test_batch_shapes_and_empty_input():
    tables = jax.random.uniform(jax.random.PRNGKey(0), (SMALL.total_entries, 2), minval=-1.0,
                                maxval=1.0)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 3, 5, 3))
    for enc in IMPLS.values():
        f = lambda t, x, enc=enc: enc(t, x, SMALL)
        assert jax.eval_shape(f, tables, x).shape == (2, 3, 5, SMALL.output_dim)
        assert jax.eval_shape(f, tables, x[:0]).shape == (0, 3, 5, SMALL.output_dim)
    out = jax.jit(lambda t, x: hash_encode(t, x, SMALL))(tables, x)
    ref = reference_encode(np.asarray(tables, np.float64), np.asarray(x).reshape(-1, 3),
                           *cfg_args(SMALL))
    np.testing.assert_allclose(np.asarray(out).reshape(-1, 8), ref, atol=2e-6)


@pytest.mark.parametrize("cfg", [SMALL, DUO], ids=["small", "duo"])
def test_optimised_equals_naive_values_and_gradients(cfg):
    key = jax.random.PRNGKey(3)
    tables = jax.random.uniform(key, (cfg.total_entries, cfg.features_per_level), minval=-1.0,
                                maxval=1.0)
    x = jnp.asarray(sample_points(jax.random.fold_in(key, 4)), jnp.float32)
    cot = jax.random.normal(jax.random.fold_in(key, 5), (x.shape[0], cfg.output_dim))
    # Gradients w.r.t. the tables (what training needs) on SMALL, w.r.t. both on DUO.
    argnums = (0,) if cfg is SMALL else (0, 1)

    def value_and_grad(enc):
        return jax.jit(jax.value_and_grad(
            lambda t, x: jnp.sum(jnp.sin(enc(t, x, cfg)) * cot), argnums=argnums))

    v_n, g_n = value_and_grad(hash_encode_naive)(tables, x)
    v_o, g_o = value_and_grad(hash_encode)(tables, x)
    np.testing.assert_allclose(v_o, v_n, rtol=1e-5)
    for a, b in zip(g_o, g_n):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(jnp.max(jnp.abs(b))))
    if cfg is DUO:
        assert DUO.hashed == (False, True)
        # Coordinates outside the cube are clamped: no spatial gradient along them.
        outside = (np.asarray(x) < 0) | (np.asarray(x) > 1)
        assert outside.sum() > 0 and np.all(np.asarray(g_o[1])[outside] == 0.0)
        assert np.any(np.asarray(g_o[1])[~outside] != 0.0)
        # x alone (tables not differentiated): the same x-gradient.
        gx = jax.jit(jax.grad(lambda x: jnp.sum(jnp.sin(hash_encode(tables, x, cfg)) * cot)))(x)
        np.testing.assert_allclose(gx, g_o[1], rtol=0, atol=1e-6 * float(jnp.max(jnp.abs(gx))))


@pytest.mark.parametrize("impl", list(IMPLS))
def test_gradients_match_central_differences_float64(x64, impl):
    cfg = DUO  # a direct and a hashed level
    enc = IMPLS[impl]
    key = jax.random.PRNGKey(7)
    tables = jax.random.uniform(key, (cfg.total_entries, 1), jnp.float64, -1.0, 1.0)
    # Interior points away from the faces (the clamp's kink), random otherwise.
    x = jax.random.uniform(jax.random.fold_in(key, 1), (24, 3), jnp.float64, 0.02, 0.98)
    cot = jax.random.normal(jax.random.fold_in(key, 2), (24, cfg.output_dim), jnp.float64)
    f = jax.jit(lambda t, x: jnp.sum(jnp.tanh(enc(t, x, cfg)) * cot))
    gt, gx = jax.jit(jax.grad(f, argnums=(0, 1)))(tables, x)
    assert gt.dtype == jnp.float64 and gx.dtype == jnp.float64
    eps = 1e-6
    for i in range(3):  # random directions
        vt = jax.random.normal(jax.random.fold_in(key, 10 + i), tables.shape, jnp.float64)
        fd = (f(tables + eps * vt, x) - f(tables - eps * vt, x)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(gt, vt), fd, rtol=1e-6)
        vx = jax.random.normal(jax.random.fold_in(key, 20 + i), x.shape, jnp.float64)
        fd = (f(tables, x + eps * vx) - f(tables, x - eps * vx)) / (2 * eps)
        np.testing.assert_allclose(jnp.vdot(gx, vx), fd, rtol=1e-6)


def test_gradient_wrt_tables_is_a_scatter_of_the_weights():
    # d out[p, l*F + f] / d tables[row, f] = trilinear weight of the corner at row (summed over
    # the corners that share the row): check against the reference's one-hot tables.
    cfg = TINY
    x = jnp.asarray(sample_points(jax.random.PRNGKey(9), n=12), jnp.float32)
    jac = jax.jit(jax.jacrev(lambda t: hash_encode(t, x, cfg)))(jnp.zeros((cfg.total_entries, 1)))
    jac = np.asarray(jac)[..., 0]  # [P, L, rows]
    rows = np.random.default_rng(0).choice(cfg.total_entries, 40, replace=False)
    for row in rows:
        onehot = np.zeros((cfg.total_entries, 1))
        onehot[row] = 1.0
        np.testing.assert_allclose(jac[:, :, row],
                                   reference_encode(onehot, np.asarray(x), *cfg_args(cfg)),
                                   atol=1e-6)
