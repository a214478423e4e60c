"""Occupancy-grid updates and occupied-length sampling against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core import occupancy, render
from nerfkit.core.rays import make_rays

AABB = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], np.float32)


def block_grid(res, lo, hi):
    """A grid whose occupied cells are exactly those with centres in the box [lo, hi]."""
    c = np.asarray(occupancy.cell_centres(res, AABB)).reshape(res, res, res, 3)
    occ = np.all((c >= lo) & (c <= hi), axis=-1)
    g = occupancy.init_occupancy(res, AABB)
    return g._replace(occupied=jnp.asarray(occ))


def x_rays(ys, zs):
    """Rays along +x from x=-3 through (y, z); t is the distance travelled."""
    o = np.stack([np.full_like(ys, -3.0), ys, zs], -1).astype(np.float32)
    d = np.tile(np.array([[1.0, 0.0, 0.0]], np.float32), (len(ys), 1))
    return make_rays(jnp.asarray(o), jnp.asarray(d), 0.0, 10.0)


def test_ray_aabb_closed_form():
    rays = x_rays(np.array([0.0, 0.5]), np.array([0.0, -0.2]))
    t0, t1 = occupancy.ray_aabb(rays.origins, rays.directions, jnp.asarray(AABB))
    np.testing.assert_allclose(t0, [2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(t1, [4.0, 4.0], atol=1e-6)
    miss = x_rays(np.array([1.5]), np.array([0.0]))
    t0, t1 = occupancy.ray_aabb(miss.origins, miss.directions, jnp.asarray(AABB))
    assert float(t1[0]) < float(t0[0])


def test_samples_cover_exactly_the_occupied_length():
    # Cells 8..11 of 16 along x are occupied (x in [0, 0.5]), and only for |y|,|z| < 0.25.
    res = 16
    g = block_grid(res, [0.0, -0.25, -0.25], [0.5, 0.25, 0.25])
    rays = x_rays(np.array([0.1, -0.1, 0.6]), np.array([0.05, 0.1, 0.0]))
    t, deltas, valid = occupancy.occupied_samples(jax.random.key(0), rays, g, 256, 32)
    t, deltas, valid = map(np.asarray, (t, deltas, valid))
    # Rays 0, 1 cross the block over x in [0, 0.5] -> t in [3, 3.5]; ray 2 misses it.
    for r in (0, 1):
        assert valid[r].all()
        assert np.all((t[r] >= 3.0 - 1e-5) & (t[r] <= 3.5 + 1e-5))
        np.testing.assert_allclose(deltas[r].sum(), 0.5, rtol=1e-4)
        assert np.all(np.diff(t[r]) >= 0)
    assert not valid[2].any()
    np.testing.assert_allclose(deltas[2].sum(), 0.0, atol=1e-7)


def test_samples_split_between_blocks_in_proportion_to_length():
    res = 32
    occ = np.zeros((res, res, res), bool)
    occ[4:8, :, :] = True      # x in [-0.75, -0.5): length 0.25
    occ[20:32, :, :] = True    # x in [0.25, 1.0]: length 0.75
    g = occupancy.init_occupancy(res, AABB)._replace(occupied=jnp.asarray(occ))
    rays = x_rays(np.array([0.0]), np.array([0.0]))
    t, deltas, valid = occupancy.occupied_samples(None, rays, g, 512, 64)
    x = np.asarray(t)[0] - 3.0
    first = np.sum((x >= -0.75) & (x < -0.5))
    second = np.sum((x >= 0.25) & (x <= 1.0))
    assert first + second == 64 and valid.all()
    assert first == 16 and second == 48  # 64 * 0.25 and 64 * 0.75


def test_every_occupied_candidate_step_gets_a_sample_when_dense():
    """With as many samples as occupied steps, no occupied candidate step is skipped."""
    res = 16
    rng = np.random.default_rng(0)
    occ = rng.random((res, res, res)) < 0.3
    g = occupancy.init_occupancy(res, AABB)._replace(occupied=jnp.asarray(occ))
    rays = x_rays(np.array([0.03]), np.array([-0.41]))
    K = 64
    edges, _ = occupancy.candidate_steps(rays, g.aabb, K)
    mids = 0.5 * (edges[..., 1:] + edges[..., :-1])
    pts = rays.origins[:, None] + mids[..., None] * rays.directions[:, None]
    occ_steps = np.flatnonzero(np.asarray(occupancy.is_occupied(g, pts))[0])
    t, _, valid = occupancy.occupied_samples(None, rays, g, K, len(occ_steps))
    step_of_sample = np.searchsorted(np.asarray(edges)[0], np.asarray(t)[0], side="right") - 1
    assert set(step_of_sample.tolist()) == set(occ_steps.tolist())
    assert valid.all()


def test_constant_density_block_matches_analytic_transmittance():
    res = 16
    g = block_grid(res, [0.0, -0.25, -0.25], [0.5, 0.25, 0.25])
    rays = x_rays(np.array([0.0]), np.array([0.0]))
    sigma = 3.0
    t, deltas, valid = occupancy.occupied_samples(None, rays, g, 256, 64)
    dens = jnp.where(valid, sigma, 0.0)
    w, _, _ = render.weights_from_density(dens, deltas)
    np.testing.assert_allclose(1.0 - float(w.sum()), np.exp(-sigma * 0.5), rtol=1e-5)


def test_empty_grid_has_no_valid_samples():
    g = occupancy.init_occupancy(8, AABB)._replace(occupied=jnp.zeros((8, 8, 8), bool))
    rays = x_rays(np.array([0.0, 0.3]), np.array([0.0, 0.1]))
    _, deltas, valid = occupancy.occupied_samples(jax.random.key(1), rays, g, 64, 16)
    assert not np.asarray(valid).any()
    assert float(jnp.sum(deltas)) == 0.0


def test_update_marks_a_sphere():
    res = 16
    g = occupancy.init_occupancy(res, AABB)
    radius = 0.5
    density_fn = lambda x: jnp.where(jnp.linalg.norm(x, axis=-1) < radius, 100.0, 0.0)
    g = occupancy.update_occupancy(g, jax.random.key(0), density_fn, jnp.int32(0),
                                   step_size=2 * np.sqrt(3) / 256)
    c = np.asarray(occupancy.cell_centres(res, AABB)).reshape(res, res, res, 3)
    half_diag = np.sqrt(3) * (2.0 / res) / 2
    r = np.linalg.norm(c, axis=-1)
    occ = np.asarray(g.occupied)
    assert occ[r < radius - half_diag].all()          # cells entirely inside
    assert not occ[r > radius + half_diag].any()      # cells entirely outside
    # After warm-up the EMA decays cells and keeps the max with fresh values.
    zero = lambda x: jnp.zeros(x.shape[:-1])
    g2 = occupancy.update_occupancy(g, jax.random.key(1), zero, jnp.int32(10**6),
                                    step_size=0.01, decay=0.5)
    np.testing.assert_allclose(np.asarray(g2.density), 0.5 * np.asarray(g.density))
    # During warm-up the grid takes the field's current values directly.
    g3 = occupancy.update_occupancy(g, jax.random.key(1), zero, jnp.int32(0), step_size=0.01)
    assert float(jnp.max(g3.density)) == 0.0 and not bool(g3.occupied.any())


def test_update_after_warmup_touches_a_random_subset():
    res = 16
    g = occupancy.init_occupancy(res, AABB)
    g = occupancy.update_occupancy(g, jax.random.key(3), lambda x: jnp.ones(x.shape[:-1]),
                                   jnp.int32(1000), step_size=0.01, warmup_steps=10,
                                   subset_fraction=0.25)
    fresh = np.asarray(g.density) == 1.0
    # 0.25 * R^3 draws with replacement cover 1 - exp(-0.25) of the cells.
    assert abs(fresh.mean() - (1 - np.exp(-0.25))) < 0.02
    assert np.all(np.asarray(g.density)[~fresh] == 0.0)
