"""Occupancy grid updates and ray marching against independent numpy computations."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nerfkit.core import occupancy as occ
from nerfkit.core import render
from nerfkit.core.rays import make_rays

AABB = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], np.float32)
R = 8
BLOCK = (slice(2, 6), slice(3, 5), slice(1, 7))  # occupied cells [ix, iy, iz]


_march = jax.jit(occ.march_rays, static_argnames=("num_samples", "step_size", "max_candidates"))


def march(rays, grid, num_samples, step_size, key=None, max_candidates=None):
    """Jit'd march_rays (the default candidate count computed from the concrete AABB here)."""
    k = max_candidates or occ.default_max_candidates(AABB, step_size)
    return _march(rays, grid, num_samples, step_size, key, max_candidates=k)


def block_grid(r=R, block=BLOCK):
    grid = occ.init_occupancy(r, AABB)
    mask = np.zeros((r, r, r), bool)
    mask[block] = True
    return grid._replace(occupied=jnp.asarray(mask), density=jnp.asarray(mask * 1.0, jnp.float32))


def np_cell(p, aabb=AABB, r=R):
    """Independent cell lookup: ``(inside, (ix, iy, iz))`` of one point."""
    u = (np.asarray(p, np.float64) - aabb[0]) / (aabb[1] - aabb[0])
    inside = bool(np.all((u >= 0) & (u <= 1)))
    return inside, tuple(np.clip(np.floor(u * r).astype(int), 0, r - 1))


def np_expected_steps(o, d, near, far, mask, step, aabb=AABB, r=R):
    """Every candidate step [t0 + k dt, t0 + (k+1) dt] (cut at t1) whose midpoint is occupied."""
    o, d = np.asarray(o, np.float64), np.asarray(d, np.float64)
    with np.errstate(divide="ignore"):
        inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
    ta, tb = (aabb[0] - o) * inv, (aabb[1] - o) * inv
    t0 = max(near, np.max(np.minimum(ta, tb)))
    t1 = min(far, np.min(np.maximum(ta, tb)))
    dt = step / np.linalg.norm(d)
    out = []
    k = 0
    while t0 < t1 and t0 + k * dt < t1:
        ts = t0 + k * dt
        te = min(ts + dt, t1)
        inside, c = np_cell(o + 0.5 * (ts + te) * d, aabb, r)
        if inside and mask[c]:
            out.append((ts, te))
        k += 1
    return out


def random_rays(seed, n=64):
    """Rays from a sphere of radius 3 towards random points of the box, with unnormalised
    directions and random [near, far]; plus an axis-parallel ray, one that misses the box and one
    starting inside it. Built in numpy (no per-op JAX compiles)."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(n, 3))
    origins = 3.0 * dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    targets = rng.uniform(-0.9, 0.9, (n, 3))
    scale = rng.uniform(0.5, 2.0, (n, 1))
    directions = (targets - origins) / np.linalg.norm(targets - origins, axis=-1, keepdims=True)
    directions = directions * scale
    near = rng.uniform(0.0, 1.5, (n, 1))
    far = near + rng.uniform(0.5, 4.0, (n, 1))
    origins[:3] = [[-3.0, 0.1, 0.2], [-3.0, 5.0, 0.0], [0.05, 0.0, -0.1]]
    directions[:3] = [[1.5, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.7, 0.7]]
    near[:3], far[:3] = 0.0, 10.0
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return make_rays(f32(origins), f32(directions), f32(near), f32(far))


def test_init_all_occupied():
    grid = occ.init_occupancy(16, AABB)
    assert grid.density.shape == (16, 16, 16) and grid.occupied.shape == (16, 16, 16)
    assert bool(jnp.all(grid.occupied)) and grid.aabb.shape == (2, 3)


def test_warmup_update_finds_the_occupied_block():
    grid = occ.init_occupancy(R, AABB)
    mask = np.zeros((R, R, R), bool)
    mask[BLOCK] = True
    lut = jnp.asarray(mask)

    def density_fn(x):  # 5 inside the block's cells, 0 elsewhere (cell-aligned)
        ijk, _ = occ.cell_index(grid, x)
        return jnp.where(lut[ijk[:, 0], ijk[:, 1], ijk[:, 2]], 5.0, 0.0)

    new = jax.jit(lambda g, k: occ.update_occupancy(g, k, density_fn, 0, step_size=1.0,
                                                      chunk=100))(
        grid, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.asarray(new.occupied), mask)
    np.testing.assert_allclose(np.asarray(new.density), mask * 5.0)
    # EMA: max(decay * old, new); all cells decay, the block is re-evaluated at 5.
    again = jax.jit(lambda g, k: occ.update_occupancy(g, k, density_fn, 3, 1.0, decay=0.5))(
        new._replace(density=new.density * 2), jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(again.density), mask * 5.0)
    # Threshold: min(threshold, mean); a tiny block of small density stays occupied when the mean
    # is below the threshold.
    tiny_fn = lambda x: density_fn(x) * 1e-3
    small = jax.jit(lambda g, k: occ.update_occupancy(g, k, tiny_fn, 0, 1.0, threshold=0.01))(
        grid, jax.random.PRNGKey(2))
    assert np.asarray(small.density).mean() < 0.01
    np.testing.assert_array_equal(np.asarray(small.occupied), mask)


def test_subset_update_after_warmup():
    n = R ** 3
    grid = occ.init_occupancy(R, AABB)
    only = np.zeros((R, R, R), bool)
    only[3, 4, 5] = True  # a single occupied cell
    grid = grid._replace(occupied=jnp.asarray(only), density=jnp.full((R, R, R), 1.0))
    seven = lambda x: jnp.full(x.shape[:1], 7.0)
    upd = jax.jit(lambda g, k, s: occ.update_occupancy(
        g, k, seven, s, 1.0, decay=1e-3, warmup_steps=5, subset_fraction=10 / n,
        occupied_fraction=1 / n))
    new = upd(grid, jax.random.PRNGKey(0), jnp.int32(100))  # traced step -> lax.cond
    d = np.asarray(new.density)
    touched = d == 7.0
    assert touched[3, 4, 5]  # the occupied cell is always among the resampled ones
    assert 2 <= touched.sum() <= 11  # <= 10 uniform cells + 1 draw among the occupied
    np.testing.assert_allclose(d[~touched], 1e-3)  # every other cell decays
    assert np.array_equal(np.asarray(new.occupied), touched)  # 1e-3 < min(0.01, mean) < 7
    # During warm-up (traced step < warmup_steps) every cell is evaluated.
    warm = upd(grid, jax.random.PRNGKey(0), jnp.int32(2))
    np.testing.assert_allclose(np.asarray(warm.density), 7.0)
    # Nothing occupied: the occupied draws fall back to uniform cells (no crash, same shapes).
    none = upd(grid._replace(occupied=jnp.zeros((R, R, R), bool)), jax.random.PRNGKey(1),
               jnp.int32(100))
    assert 1 <= int(np.sum(np.asarray(none.density) == 7.0)) <= 11


@pytest.mark.parametrize("step", [0.05, 0.13])
def test_march_never_drops_an_occupied_step(step):
    grid = block_grid()
    mask = np.asarray(grid.occupied)
    rays = random_rays(0)
    k_max = occ.default_max_candidates(AABB, step)
    ts, te, valid = jax.jit(lambda r, g: occ.march_rays(r, g, k_max, step, max_candidates=k_max))(
        rays, grid)
    with pytest.raises(ValueError, match="max_candidates"):
        jax.jit(lambda r, g: occ.march_rays(r, g, k_max, step))(rays, grid)
    ts, te, valid = map(np.asarray, (ts, te, valid))
    o, d = np.asarray(rays.origins), np.asarray(rays.directions)
    total = 0
    for i in range(o.shape[0]):
        exp = np_expected_steps(o[i], d[i], float(rays.near[i, 0]), float(rays.far[i, 0]), mask,
                                step)
        got = list(zip(ts[i][valid[i]], te[i][valid[i]]))
        assert len(got) == len(exp), i
        if exp:
            np.testing.assert_allclose(np.array(got), np.array(exp), rtol=1e-5, atol=1e-5)
        total += len(exp)
    assert total > 50
    assert not valid[1].any()  # the ray that misses the box


def test_march_samples_sorted_inside_bounds_and_occupied():
    grid = block_grid()
    rays = random_rays(1)
    step = 0.07
    for key in (None, jax.random.PRNGKey(5)):
        ts, te, valid = march(rays, grid, 96, step, key)
        ts, te, valid = map(np.asarray, (ts, te, valid))
        near, far = np.asarray(rays.near), np.asarray(rays.far)
        assert ts.shape == te.shape == valid.shape == (64, 96)
        assert np.all(np.diff(ts, axis=-1) >= 0) and np.all(np.diff(te, axis=-1) >= 0)
        assert np.all(te >= ts) and np.all(ts[:, 1:] >= te[:, :-1] - 1e-6)  # no overlaps
        assert np.all(ts >= near - 1e-6) and np.all(te <= far + 1e-6)
        dt = step / np.linalg.norm(np.asarray(rays.directions), axis=-1, keepdims=True)
        assert np.all(te - ts <= dt + 1e-6)
        mid = 0.5 * (ts + te)
        o, d = np.asarray(rays.origins), np.asarray(rays.directions)
        x = o[:, None] + mid[..., None] * d[:, None]
        assert np.all(np.asarray(occ.is_occupied(grid, jnp.asarray(x)))[valid])
        assert np.all(np.abs(x[valid]) <= 1.0 + 1e-5)
        assert np.all(ts[~valid] == te[~valid])  # masked slots are empty intervals
        assert valid.sum() > 100


def test_march_truncates_far_samples():
    grid = block_grid()
    rays = random_rays(2)
    full = march(rays, grid, 200, 0.05)
    few = march(rays, grid, 4, 0.05)
    assert int(full[2].sum(-1).max()) > 4
    np.testing.assert_array_equal(np.asarray(few[2]), np.asarray(full[2][:, :4]))
    np.testing.assert_allclose(np.where(few[2], few[0], 0), np.where(full[2][:, :4],
                                                                     full[0][:, :4], 0))


def test_masked_entries_do_not_change_the_render_and_empty_grid_gives_background():
    rays = random_rays(3, n=16)
    bg = jnp.array([0.2, 0.5, 0.9])

    @jax.jit
    def render_with(grid, sigma_masked):
        ts, te, valid = march(rays, grid, 64, 0.05)
        sigma = jnp.where(valid, 3.0, sigma_masked)  # garbage density in masked slots
        deltas = (te - ts) * jnp.linalg.norm(rays.directions, axis=-1, keepdims=True)
        w, _, _ = render.weights_from_density(sigma, deltas)
        rgb = jnp.broadcast_to(jnp.array([1.0, 0.0, 0.0]), (*ts.shape, 3))
        return render.render_weights(w, rgb, 0.5 * (ts + te), bg)["rgb"], valid

    a, valid = render_with(block_grid(), 0.0)
    b, _ = render_with(block_grid(), 1e3)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert valid.any()
    empty = occ.init_occupancy(R, AABB)._replace(occupied=jnp.zeros((R, R, R), bool))
    c, valid = render_with(empty, 1e3)
    assert not bool(valid.any())
    np.testing.assert_allclose(c, jnp.broadcast_to(bg, c.shape), atol=1e-6)


def test_march_batch_shapes_and_limited_candidates():
    grid = occ.init_occupancy(4, AABB)
    rays = random_rays(4, n=12).reshape(3, 4)
    ts, te, valid = march(rays, grid, 8, 0.1, max_candidates=5)
    assert ts.shape == te.shape == valid.shape == (3, 4, 8)
    assert int(valid.sum(-1).max()) <= 5  # only K candidate steps are considered
    assert occ.default_max_candidates(AABB, 0.1) == math.ceil(2 * math.sqrt(3) / 0.1) + 1
