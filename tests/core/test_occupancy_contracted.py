"""Occupancy grid over contracted space and cone-stepping marching, against a step-by-step float64
numpy marcher and a literal numpy contraction written here."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nerfkit.core import occupancy as occ
from nerfkit.core.rays import make_rays

CONE, DT_MIN, DT_MAX = 1 / 64, 0.02, 0.5
R = 16


def np_contract(x, norm):
    x = np.asarray(x, np.float64)
    n = (np.linalg.norm(x, axis=-1, keepdims=True) if norm == "l2"
         else np.max(np.abs(x), axis=-1, keepdims=True))
    return np.where(n <= 1, x, (2 - 1 / np.maximum(n, 1e-300)) * x / np.maximum(n, 1e-300))


def np_cell(z, r=R):
    return np.clip(np.floor((np.asarray(z) + 2.0) / 4.0 * r).astype(int), 0, r - 1)


def np_steps(r0, r_far, c=CONE, a=DT_MIN, b=DT_MAX, limit=100000):
    """The cone-stepping recurrence, one step at a time: world-distance intervals to r_far."""
    out, t = [], r0
    while t < r_far and len(out) < limit:
        dt = min(max(t * c, a), b)
        out.append((t, min(t + dt, r_far)))
        t += dt
    return out


def shell_grid(norm="l2", lo=1.4, hi=1.7):
    """Occupied: cells whose centre's contracted norm lies in [lo, hi] (a shell far away)."""
    grid = occ.init_contracted_occupancy(R)
    c = (np.arange(R) + 0.5) / R * 4 - 2
    zc = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1)
    n = np.linalg.norm(zc, axis=-1) if norm == "l2" else np.max(np.abs(zc), axis=-1)
    mask = (n >= lo) & (n <= hi)
    return grid._replace(occupied=jnp.asarray(mask)), mask


_march = jax.jit(occ.march_rays_contracted,
                 static_argnames=("num_samples", "cone_angle", "dt_min", "dt_max",
                                  "max_candidates", "norm"))


def march(rays, grid, s, k, key=None, norm="l2"):
    return _march(rays, grid, s, cone_angle=CONE, dt_min=DT_MIN, dt_max=DT_MAX,
                  max_candidates=k, key=key, norm=norm)


def some_rays(n=6, seed=0, near=0.05, far=300.0):
    rng = np.random.default_rng(seed)
    o = rng.uniform(-0.5, 0.5, size=(n, 3))
    d = rng.normal(size=(n, 3))
    d = d / np.linalg.norm(d, axis=-1, keepdims=True) * rng.uniform(1.0, 1.5, size=(n, 1))
    return make_rays(jnp.asarray(o, jnp.float32), jnp.asarray(d, jnp.float32), near, far), o, d


@pytest.mark.parametrize("t0", [0.0, 0.05, 1.0, 1.27, 30.0, 200.0])
def test_cone_step_edges_follow_the_recurrence(t0):
    e = np.asarray(occ.cone_step_edges(jnp.float32(t0), 300, CONE, DT_MIN, DT_MAX), np.float64)
    ref = [t0]
    for _ in range(300):
        ref.append(ref[-1] + min(max(ref[-1] * CONE, DT_MIN), DT_MAX))
    np.testing.assert_allclose(e, ref, rtol=2e-6, atol=1e-6)


def test_cone_step_count_reaches_far():
    for near, far in [(0.05, 300.0), (0.0, 10.0), (2.0, 1e4), (0.1, 0.15)]:
        k = occ.cone_step_count(near, far, CONE, DT_MIN, DT_MAX)
        assert len(np_steps(near, far)) <= k <= len(np_steps(near, far)) + 1
    # logarithmic growth with far once steps grow: 100x farther costs far fewer than 100x steps
    k1 = occ.cone_step_count(0.05, 100.0, 1 / 256, 0.003, 1e10)
    k2 = occ.cone_step_count(0.05, 1e4, 1 / 256, 0.003, 1e10)
    assert k2 < 2.5 * k1
    with pytest.raises(ValueError):
        occ.cone_step_count(0.0, 1.0, CONE, 0.0, 1.0)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_march_matches_step_by_step_reference(norm):
    rays, o, d = some_rays()
    grid, mask = shell_grid(norm)
    dn = np.linalg.norm(d, axis=-1)
    k = occ.cone_step_count(0.05 * dn.min(), 300.0 * dn.max(), CONE, DT_MIN, DT_MAX)
    ts, te, m = march(rays, grid, 256, k, norm=norm)
    ts, te, m = (np.asarray(a, np.float64) for a in (ts, te, m))
    checked = 0
    for i in range(len(o)):
        ref = []
        for a, b in np_steps(0.05 * dn[i], 300.0 * dn[i]):
            mid = 0.5 * (a + b) / dn[i]
            ijk = np_cell(np_contract(o[i] + mid * d[i], norm))
            if mask[tuple(ijk)]:
                ref.append((a / dn[i], b / dn[i]))
        assert 0 < len(ref) <= 256
        # float32 vs float64 may flip a step whose midpoint sits on a cell face: allow one
        assert abs(int(m[i].sum()) - len(ref)) <= 1
        if int(m[i].sum()) == len(ref):
            np.testing.assert_allclose(ts[i][m[i] > 0], [a for a, _ in ref], rtol=1e-5)
            np.testing.assert_allclose(te[i][m[i] > 0], [b for _, b in ref], rtol=1e-5)
            checked += 1
    assert checked >= len(o) - 1


def test_march_invariants():
    rays, o, d = some_rays(n=32, seed=1)
    grid, mask = shell_grid("l2", 1.0, 1.9)
    dn = np.linalg.norm(d, axis=-1)
    k = occ.cone_step_count(0.05, 300.0 * dn.max(), CONE, DT_MIN, DT_MAX)
    ts, te, m = (np.asarray(a, np.float64) for a in march(rays, grid, 64, k))
    m = m.astype(bool)
    near, far = 0.05, 300.0
    # sorted, inside [near, far], zero-length padding
    flat = np.stack([ts, te], -1).reshape(len(o), -1)
    assert np.all(np.diff(flat, axis=-1) >= -1e-6 * far)
    assert np.all(ts >= near - 1e-7) and np.all(te <= far * (1 + 1e-7))
    np.testing.assert_array_equal(ts[~m], te[~m])
    # each kept step follows the cone rule (in world distance), unless cut at far
    r0, r1 = ts * dn[:, None], te * dn[:, None]
    rule = np.clip(r0 * CONE, DT_MIN, DT_MAX)
    cut = np.isclose(te, far, rtol=1e-6)
    np.testing.assert_allclose((r1 - r0)[m & ~cut], rule[m & ~cut], rtol=1e-3, atol=1e-6)
    # consecutive kept steps either abut or skip whole (unoccupied) steps: never overlap
    assert np.all((ts[:, 1:] - te[:, :-1])[m[:, 1:]] >= -1e-6)
    # occupied cells only (by the literal contraction + cell lookup)
    mids = 0.5 * (ts + te)
    x = o[:, None, :] + mids[..., None] * d[:, None, :]
    ijk = np_cell(np_contract(x, "l2"))
    occ_ok = mask[ijk[..., 0], ijk[..., 1], ijk[..., 2]]
    assert np.mean(occ_ok[m]) > 0.999  # float32/64 may disagree on a cell face, rarely


def test_shapes_jitter_and_truncation():
    rays, o, d = some_rays(n=6, seed=2)
    rays = jax.tree_util.tree_map(lambda a: a.reshape(2, 3, -1), rays)
    grid = occ.init_contracted_occupancy(R)  # all occupied: every step is kept
    k = occ.cone_step_count(0.05, 300.0 * 1.5, CONE, DT_MIN, DT_MAX)
    ts, te, m = march(rays, grid, 16, k, key=jax.random.key(3))
    assert ts.shape == te.shape == m.shape == (2, 3, 16) and m.dtype == bool
    assert bool(jnp.all(m))  # truncated: the 16 nearest steps fill every slot
    dn = np.linalg.norm(np.asarray(rays.directions), axis=-1)
    # jittered start within the first step; then contiguous steps
    first = np.asarray(ts[..., 0]) * dn
    assert np.all(first >= 0.05 * dn - 1e-7)
    assert np.all(first <= 0.05 * dn + np.clip(0.05 * dn * CONE, DT_MIN, DT_MAX) + 1e-6)
    np.testing.assert_allclose(ts[..., 1:], te[..., :-1], rtol=1e-6)
    # an empty grid yields no samples
    _, _, m0 = march(rays, grid._replace(occupied=jnp.zeros_like(grid.occupied)), 16, k)
    assert not bool(jnp.any(m0))


def blob_density(centre, radius, value=50.0):
    centre = jnp.asarray(centre, jnp.float32)
    return lambda x: jnp.where(jnp.linalg.norm(x - centre, axis=-1) < radius, value, 0.0)


def box_cells(lo, hi, r=32):
    """Mask of the cells ``lo <= ijk <= hi`` (inclusive) and the matching contracted box."""
    mask = np.zeros((r, r, r), bool)
    mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = True
    zlo = np.asarray(lo) / r * 4 - 2
    zhi = (np.asarray(hi) + 1) / r * 4 - 2
    return mask, zlo, zhi


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_update_marks_exactly_the_cells_with_density(norm):
    from nerfkit.core.contraction import contract
    # density 50 (per world unit) wherever the contracted point falls in one of two boxes of
    # whole cells: one far out (world radius ~4 to ~8), one in the uncontracted centre.
    far, zlo_f, zhi_f = box_cells((28, 16, 12), (29, 17, 13))
    near, zlo_n, zhi_n = box_cells((17, 13, 16), (18, 14, 16))

    def density_fn(x):
        z = contract(x, norm)
        inside = lambda lo, hi: jnp.all((z >= lo) & (z < hi), axis=-1)
        return jnp.where(inside(zlo_f, zhi_f) | inside(zlo_n, zhi_n), 50.0, 0.0)

    new = occ.update_contracted_occupancy(occ.init_contracted_occupancy(32), jax.random.key(0),
                                          density_fn, jnp.int32(0), cone_angle=CONE,
                                          dt_min=DT_MIN, dt_max=DT_MAX, norm=norm)
    np.testing.assert_array_equal(np.asarray(new.occupied), far | near)
    # after warm-up, an EMA update of a now-empty field keeps them for a while (decay 0.95)
    later = occ.update_contracted_occupancy(new, jax.random.key(1), lambda x: jnp.zeros(x.shape[:-1]),
                                            jnp.int32(1000), cone_angle=CONE, dt_min=DT_MIN,
                                            dt_max=DT_MAX, norm=norm, warmup_steps=256)
    np.testing.assert_array_equal(np.asarray(later.occupied), far | near)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_update_with_world_blobs_has_no_false_positives(norm):
    far_c, near_c = np.array([12.0, 3.0, -2.0]), np.array([0.3, -0.2, 0.1])
    fn_far, fn_near = blob_density(far_c, 3.0), blob_density(near_c, 0.15)
    density_fn = lambda x: fn_far(x) + fn_near(x)
    new = occ.update_contracted_occupancy(occ.init_contracted_occupancy(32), jax.random.key(0),
                                          density_fn, jnp.int32(0), cone_angle=CONE,
                                          dt_min=DT_MIN, dt_max=DT_MAX, norm=norm)
    occupied = np.asarray(new.occupied)
    # the cell holding near_c lies wholly inside its blob
    ijk = tuple(np.clip(np.floor((np_contract(near_c, norm) + 2) / 4 * 32).astype(int), 0, 31))
    assert occupied[ijk]
    # every occupied cell holds points of a blob: its contracted box, mapped back, meets one
    from nerfkit.core.contraction import inv_contract
    idx = np.argwhere(occupied)
    assert len(idx) > 8  # both blobs found (the near one alone covers 8 cells at most)
    u = np.random.default_rng(0).uniform(size=(4096, 3))
    for cell in idx:
        z = (cell + u) / 32 * 4 - 2
        x = np.asarray(inv_contract(jnp.asarray(z, jnp.float32), norm), np.float64)
        d = np.minimum(np.linalg.norm(x - far_c, axis=-1) - 3.0,
                       np.linalg.norm(x - near_c, axis=-1) - 0.15)
        assert d.min() < 0.05


def test_update_stores_optical_depth_of_one_step():
    # constant density; cone_angle 0 -> every step is dt_min, so each reachable cell stores
    # sigma * dt_min, and cells outside the radius-2 ball (L2) are unreachable -> empty.
    grid = occ.init_contracted_occupancy(8)
    new = occ.update_contracted_occupancy(grid, jax.random.key(1), lambda x: jnp.full(x.shape[:-1], 3.0),
                                          jnp.int32(0), cone_angle=0.0, dt_min=0.01, dt_max=0.01,
                                          norm="l2")
    c = (np.arange(8) + 0.5) / 8 * 4 - 2
    n = np.linalg.norm(np.stack(np.meshgrid(c, c, c, indexing="ij"), -1), axis=-1)
    dens = np.asarray(new.density)
    np.testing.assert_allclose(dens[n < 1.7], 0.03, rtol=1e-6)
    np.testing.assert_array_equal(dens[n > 2 + np.sqrt(3) * 0.5 / 2 * 1.01], 0.0)
    assert np.all(np.asarray(new.occupied)[n < 1.7])
    # linf: the whole cube is reachable
    new = occ.update_contracted_occupancy(grid, jax.random.key(1), lambda x: jnp.full(x.shape[:-1], 3.0),
                                          jnp.int32(0), cone_angle=0.0, dt_min=0.01, dt_max=0.01,
                                          norm="linf")
    np.testing.assert_allclose(np.asarray(new.density), 0.03, rtol=1e-6)


def test_update_with_contracted_input_matches_world_input():
    from nerfkit.core.contraction import inv_contract
    world = blob_density([6.0, 0.0, 0.0], 2.0)
    kw = dict(cone_angle=CONE, dt_min=DT_MIN, dt_max=DT_MAX, norm="linf")
    grid = occ.init_contracted_occupancy(16)
    a = occ.update_contracted_occupancy(grid, jax.random.key(2), world, jnp.int32(0), **kw)
    b = occ.update_contracted_occupancy(grid, jax.random.key(2),
                                        lambda z: world(inv_contract(z, "linf")), jnp.int32(0),
                                        contracted_input=True, **kw)
    np.testing.assert_array_equal(a.occupied, b.occupied)
    assert 0 < int(a.occupied.sum()) < 16 ** 3


def test_marching_after_update_finds_the_blob():
    # blob over world z in [2, 4] on the axis: contracted [1.5, 1.75], i.e. two whole cells along
    # the axis; the cells next to them ([1.6, 2] and [4, 8] in world z) may also be marked.
    centre = np.array([0.0, 0.0, 3.0])
    # One probe per cell and update may miss a cell that the blob only partly fills: a few
    # post-warm-up updates (EMA of the max) fill the gaps, as in training.
    grid = occ.init_contracted_occupancy(32)
    for step in (0, 300, 301, 302, 303, 304, 305, 306, 307):
        grid = occ.update_contracted_occupancy(
            grid, jax.random.key(step), blob_density(centre, 1.0), jnp.int32(step),
            cone_angle=CONE, dt_min=DT_MIN, dt_max=DT_MAX, subset_fraction=1.0)
    o = jnp.zeros((2, 3))
    d = jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])
    rays = make_rays(o, d, 0.05, 1000.0)
    k = occ.cone_step_count(0.05, 1000.0, CONE, DT_MIN, DT_MAX)
    ts, te, m = march(rays, grid, 128, k)
    assert int(m[1].sum()) == 0  # looking away: nothing
    hit = np.asarray(0.5 * (ts[0] + te[0]))[np.asarray(m[0])]
    assert hit.size > 0
    # samples only in the cells around the blob, and all through it
    assert hit.min() > 1.6 - 1e-4 and hit.max() < 8.0
    assert np.all(np.histogram(hit, bins=4, range=(2.0, 4.0))[0] > 0)


# ------------------------------------------------- samples spread over every occupied cone step

def _reference_occupied_steps(o, d, near, far, occ_fn, cone, dt_min, k):
    """Plain-Python cone stepping: the occupied world intervals [r0, r1) of one ray."""
    dn = float(np.linalg.norm(d))
    r, r_far, out = near * dn, far * dn, []
    for _ in range(k):
        if r >= r_far:
            break
        dt = min(max(r * cone, dt_min), 1e10)
        r1 = min(r + dt, r_far)
        x = np.asarray(o) + 0.5 * (r + r1) / dn * np.asarray(d)
        if occ_fn(x):
            out.append((r / dn, r1 / dn))
        r = r + dt
    return out


@pytest.mark.parametrize("occupied", ["all", "shell"])
def test_occupied_samples_contracted_cover_every_occupied_step(occupied):
    from nerfkit.core.contraction import contract
    from nerfkit.core.occupancy import (cone_step_count, init_contracted_occupancy,
                                        is_occupied, occupied_samples_contracted)
    res, cone, dt_min, near, far, s = 16, 1 / 16, 0.05, 0.05, 200.0, 24
    grid = init_contracted_occupancy(res)
    if occupied == "shell":  # only cells whose centre has 1.2 < |z|_inf < 1.6 (world 1.25..2.5)
        centres = (np.stack(np.meshgrid(*[np.arange(res)] * 3, indexing="ij"), -1) + 0.5)
        z = centres / res * 4.0 - 2.0
        zi = np.abs(z).max(-1)
        grid = grid._replace(occupied=jnp.asarray((zi > 1.2) & (zi < 1.6)).reshape(
            grid.occupied.shape))
    k = cone_step_count(near, far, cone, dt_min, 1e10)
    rng = np.random.default_rng(0)
    o = rng.uniform(-0.3, 0.3, (5, 3)).astype(np.float32)
    d = rng.normal(size=(5, 3)).astype(np.float32)
    rays = make_rays(jnp.asarray(o), jnp.asarray(d), near, far)
    t, delta, valid = occupied_samples_contracted(rays, grid, s, cone_angle=cone, dt_min=dt_min,
                                                  max_candidates=k, norm="linf")
    t, delta, valid = map(np.asarray, (t, delta, valid))
    occ = lambda x: bool(is_occupied(grid, contract(jnp.asarray(x, jnp.float32), "linf")))
    for i in range(5):
        ref = _reference_occupied_steps(o[i], d[i], near, far, occ, cone, dt_min, k)
        total = sum(b - a for a, b in ref)
        assert valid[i].all() == bool(ref)
        np.testing.assert_allclose(delta[i].sum(), total, rtol=2e-3)   # every step covered
        assert np.all(np.diff(t[i]) >= -1e-5 * far)                     # sorted
        inside = [any(a - 1e-4 * b <= ti <= b * (1 + 1e-4) for a, b in ref) for ti in t[i]]
        assert all(inside)                                              # only occupied steps
        if occupied == "all":
            assert t[i].max() > 0.5 * far                               # samples reach far
