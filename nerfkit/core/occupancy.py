"""Occupancy grid and occupancy-aware ray sampling with static shapes.

The grid follows Instant-NGP (Müller et al., SIGGRAPH 2022, App. E.2): a ``R^3`` grid of density
estimates over the scene box, updated every few steps by an exponential moving average of the
field's density at a jittered point of each (or a random subset of each) cell; a cell is occupied
when its estimated opacity over one marching step, ``1 - exp(-sigma * dt) ~ sigma * dt``, exceeds a
threshold (0.01), or the mean when the mean is lower.

Sampling (:func:`occupied_samples`) keeps shapes static under jit: each ray is cut into ``K``
candidate steps across the box; the occupied ones form the ray's *occupied length* ``L``;
``S`` stratified samples are spread evenly over that length, each standing for ``L / S`` of it.
This is the change of variables ``s(t) = integral_0^t occ(u) du``: with zero density outside
occupied cells, the optical depth ``int sigma(t) dt = int sigma(t(s)) ds``, which the stratified
samples estimate without bias. Empty space costs no field evaluation, and no occupied candidate
step is ever skipped.

:func:`march_rays` is the classic Instant-NGP / nerfacc alternative: uniform steps of a fixed world
length through the box, keeping only the steps whose midpoint lies in an occupied cell, compacted
into a fixed-size buffer of ``S`` intervals per ray (``t_starts``, ``t_ends``, ``mask``).

Unbounded scenes (end of the module): :func:`init_contracted_occupancy`,
:func:`update_contracted_occupancy` and :func:`march_rays_contracted` keep one grid over the
*contracted* cube ``[-2, 2]^3`` (mip-NeRF 360's contraction, :mod:`nerfkit.core.contraction`) and
march from ``near`` to ``far`` with Instant-NGP's cone stepping (steps grow with distance), into
the same fixed-size buffers as :func:`march_rays`. The functions above are unchanged by them.

Cascades: the state holds one level (``[R, R, R]`` over ``aabb``). Multi-scale cascades (Instant-NGP
App. E.2) would add a leading axis ``[C, R, R, R]`` with level ``c`` spanning ``2**c`` times the
base box; only :func:`cell_index` (point -> level and cell) and the cell sampling in
:func:`update_occupancy` would change, every other function goes through them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core.rays import Rays


class OccupancyGrid(NamedTuple):
    """Occupancy state (a pytree).

    Attributes:
      density: ``[R, R, R]`` EMA of the density estimate per cell (indexed ``[ix, iy, iz]``).
      occupied: ``[R, R, R]`` bool, cells that may contain matter.
      aabb: ``[2, 3]`` box ``(min, max)`` the grid spans.
    """

    density: jax.Array
    occupied: jax.Array
    aabb: jax.Array

    @property
    def resolution(self) -> int:
        return int(self.density.shape[0])


def init_occupancy(resolution: int, aabb) -> OccupancyGrid:
    """A grid with every cell occupied (nothing is known yet)."""
    r = int(resolution)
    return OccupancyGrid(jnp.zeros((r, r, r), jnp.float32), jnp.ones((r, r, r), bool),
                         jnp.asarray(aabb, jnp.float32).reshape(2, 3))


def cell_index(grid: OccupancyGrid, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Integer cell ``[..., 3]`` of points ``x [..., 3]`` and whether they lie inside the box."""
    lo, hi = grid.aabb[0], grid.aabb[1]
    u = (x - lo) / (hi - lo)
    inside = jnp.all((u >= 0.0) & (u <= 1.0), axis=-1)
    r = grid.density.shape[0]
    idx = jnp.clip(jnp.floor(u * r).astype(jnp.int32), 0, r - 1)
    return idx, inside


def is_occupied(grid: OccupancyGrid, x: jax.Array) -> jax.Array:
    """``[...]`` bool: ``x [..., 3]`` lies inside the box in an occupied cell."""
    idx, inside = cell_index(grid, x)
    return inside & grid.occupied[idx[..., 0], idx[..., 1], idx[..., 2]]


def cell_centres(resolution: int, aabb) -> jax.Array:
    """``[R^3, 3]`` cell centres in world coordinates, in ``[ix, iy, iz]`` C order."""
    r = resolution
    i = (jnp.arange(r, dtype=jnp.float32) + 0.5) / r
    g = jnp.stack(jnp.meshgrid(i, i, i, indexing="ij"), -1).reshape(-1, 3)
    aabb = jnp.asarray(aabb, jnp.float32)
    return aabb[0] + g * (aabb[1] - aabb[0])


def update_occupancy(grid: OccupancyGrid, key: jax.Array,
                     density_fn: Callable[[jax.Array], jax.Array], step: jax.Array,
                     step_size: float, decay: float = 0.95, threshold: float = 0.01,
                     warmup_steps: int = 256, chunk: int = 1 << 16,
                     subset_fraction: float = 0.25,
                     occupied_fraction: float = 0.0) -> OccupancyGrid:
    """One EMA update of the grid (Instant-NGP App. E.2).

    Every cell decays by ``decay``; during the first ``warmup_steps`` every cell is re-evaluated
    and takes the new value directly,
    later a random ``subset_fraction`` of the cells (drawn with replacement, so the cost is a fixed
    fraction of a full update), each at a uniformly jittered point of the cell. The estimate is
    ``max(decay * old, sigma)``. A cell is occupied when ``sigma * step_size`` exceeds
    ``min(threshold, mean(density) * step_size)``.

    Args:
      density_fn: ``[N, 3] -> [N]`` density at world points (no gradient needed).
      step: the current training step (selects warm-up vs. subset updates).
      step_size: a typical marching step in world units (``dt`` of the opacity threshold).
      chunk: points per density call (bounds memory).
      occupied_fraction: after warm-up, additionally re-evaluate ``occupied_fraction * R^3``
        cells drawn (with replacement) among the currently *occupied* ones, as Instant-NGP and
        nerfacc do (uniform cells find new matter, occupied ones keep the estimate fresh where it
        matters). Drawn by inverting the cumulative count of occupied cells, so shapes stay
        fixed under jit; uniform cells stand in when nothing is occupied. 0 (default) keeps the
        purely uniform subset.
    """
    r = grid.density.shape[0]
    n_cells = r ** 3
    lo, hi = grid.aabb[0], grid.aabb[1]
    k_sub, k_jit = jax.random.split(key)

    def sigma_at(cells: jax.Array, k: jax.Array) -> jax.Array:
        n = cells.shape[0]
        ijk = jnp.stack([cells // (r * r), (cells // r) % r, cells % r], -1).astype(jnp.float32)
        u = (ijk + jax.random.uniform(k, (n, 3))) / r
        pts = lo + u * (hi - lo)
        c = min(chunk, n)
        pad = (-n) % c
        pts = jnp.pad(pts, ((0, pad), (0, 0)))
        sig = jax.lax.map(density_fn, pts.reshape(-1, c, 3)).reshape(-1)[:n]
        return jnp.where(jnp.isfinite(sig), sig, 0.0)

    old = grid.density.reshape(-1)

    def subset(_):
        m = max(1, int(n_cells * subset_fraction))
        cells = jax.random.randint(k_sub, (m,), 0, n_cells)
        m_occ = int(n_cells * occupied_fraction)
        if m_occ > 0:
            k_rank, k_alt = jax.random.split(jax.random.fold_in(k_sub, 1))
            count = jnp.cumsum(grid.occupied.reshape(-1).astype(jnp.int32))  # inclusive
            rank = jax.random.randint(k_rank, (m_occ,), 0, jnp.maximum(count[-1], 1))
            occ = jnp.minimum(jnp.searchsorted(count, rank, side="right"), n_cells - 1)
            alt = jax.random.randint(k_alt, (m_occ,), 0, n_cells)
            cells = jnp.concatenate([cells, jnp.where(count[-1] > 0, occ, alt).astype(cells.dtype)])
        fresh = jnp.zeros((n_cells,), old.dtype).at[cells].max(sigma_at(cells, k_jit))
        return jnp.maximum(decay * old, fresh)

    # During warm-up the grid follows the field directly (no max with the decayed old value):
    # the untrained field's density (~1 everywhere) would otherwise keep empty space marked
    # occupied for hundreds of steps while the EMA decays.
    new = jax.lax.cond(step < warmup_steps,
                       lambda _: sigma_at(jnp.arange(n_cells), k_jit), subset, None)
    # A uniform field would sit exactly at its mean: keep a small absolute floor (alpha 1e-3 of
    # the threshold) so that an empty volume becomes empty rather than tied at the mean.
    thresh = jnp.maximum(jnp.minimum(threshold, jnp.mean(new) * step_size), 1e-3 * threshold)
    occupied = (new * step_size) > thresh
    return OccupancyGrid(new.reshape(r, r, r), occupied.reshape(r, r, r), grid.aabb)


def ray_aabb(origins: jax.Array, directions: jax.Array, aabb: jax.Array
             ) -> tuple[jax.Array, jax.Array]:
    """Slab-method intersection of rays ``[..., 3]`` with a box ``[2, 3]``.

    Returns ``(t_enter, t_exit)`` each ``[...]`` along the (unnormalised) directions; rays that
    miss have ``t_exit < t_enter``. Axis-parallel directions are handled (no NaN).
    """
    d = jnp.where(jnp.abs(directions) < 1e-12, 1e-12, directions)
    t0 = (aabb[0] - origins) / d
    t1 = (aabb[1] - origins) / d
    t_enter = jnp.max(jnp.minimum(t0, t1), axis=-1)
    t_exit = jnp.min(jnp.maximum(t0, t1), axis=-1)
    return t_enter, t_exit


def candidate_steps(rays: Rays, aabb: jax.Array, march_steps: int
                    ) -> tuple[jax.Array, jax.Array]:
    """``K = march_steps`` equal candidate steps over each ray's segment inside the box and
    ``[near, far]``: edges ``[..., K+1]`` and a ``[...]`` flag of rays that hit the box."""
    t_enter, t_exit = ray_aabb(rays.origins, rays.directions, aabb)
    t0 = jnp.maximum(t_enter, rays.near[..., 0])
    t1 = jnp.minimum(t_exit, rays.far[..., 0])
    hit = t1 > t0
    t1 = jnp.where(hit, t1, t0)
    s = jnp.linspace(0.0, 1.0, march_steps + 1, dtype=jnp.float32)
    edges = t0[..., None] + (t1 - t0)[..., None] * s
    return edges, hit


def occupied_steps(rays: Rays, grid: OccupancyGrid, march_steps: int
                   ) -> tuple[jax.Array, jax.Array]:
    """Candidate step edges ``[..., K+1]`` and whether each step's midpoint is in an occupied
    cell ``[..., K]`` (False for rays that miss the box)."""
    edges, hit = candidate_steps(rays, grid.aabb, march_steps)
    mids = 0.5 * (edges[..., 1:] + edges[..., :-1])
    x = rays.points_at(mids)
    return edges, is_occupied(grid, x) & hit[..., None]


def occupied_length(rays: Rays, grid: OccupancyGrid, march_steps: int) -> jax.Array:
    """``[...]`` total length (in ``t``) of each ray's occupied candidate steps."""
    edges, occ = occupied_steps(rays, grid, march_steps)
    return jnp.sum(jnp.where(occ, edges[..., 1:] - edges[..., :-1], 0.0), axis=-1)


def occupied_samples(key: Optional[jax.Array], rays: Rays, grid: OccupancyGrid,
                     march_steps: int, num_samples: int
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``num_samples`` stratified samples per ray over its occupied length (static shapes).

    Args:
      key: jitters each sample inside its stratum (training); ``None``: stratum centres.
      rays: batch ``[...]``; grid: the occupancy grid; march_steps: candidate steps ``K``.
    Returns:
      ``t_mid [..., S]`` sample positions (sorted along each ray), ``deltas [..., S]`` the
      length in ``t`` each sample stands for (``L_occ / S``), and ``valid [..., S]`` (the sample
      lies in an occupied cell; rays with no occupied length have no valid sample).
    """
    edges, occ = occupied_steps(rays, grid, march_steps)
    seg = edges[..., 1:] - edges[..., :-1]
    cum = jnp.concatenate([jnp.zeros_like(seg[..., :1]),
                           jnp.cumsum(jnp.where(occ, seg, 0.0), axis=-1)], axis=-1)
    total = cum[..., -1:]
    batch = seg.shape[:-1]
    j = jnp.arange(num_samples, dtype=jnp.float32)
    if key is None:
        u = jnp.broadcast_to((j + 0.5) / num_samples, (*batch, num_samples))
    else:
        u = (j + jax.random.uniform(key, (*batch, num_samples))) / num_samples
    s = u * total
    flat_s = s.reshape(-1, num_samples)
    flat_cum = cum.reshape(-1, march_steps + 1)
    flat_edges = edges.reshape(-1, march_steps + 1)
    # Inverse of the piecewise-linear s(t): locate each s in the cumulative occupied length.
    idx = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(flat_cum, flat_s)
    idx = jnp.clip(idx - 1, 0, march_steps - 1)
    c0 = jnp.take_along_axis(flat_cum, idx, -1)
    e0 = jnp.take_along_axis(flat_edges, idx, -1)
    t = (e0 + (flat_s - c0)).reshape(*batch, num_samples)
    t = jnp.clip(t, edges[..., :1], edges[..., -1:])
    deltas = jnp.broadcast_to(total / num_samples, t.shape)
    xs = rays.points_at(t)
    valid = is_occupied(grid, xs) & (total > 0)
    return jax.lax.stop_gradient(t), jax.lax.stop_gradient(deltas), valid


def default_max_candidates(aabb, step_size: float) -> int:
    """Candidate steps that cover the longest chord of the box: ``ceil(|diag| / step_size) + 1``."""
    aabb = np.asarray(aabb, np.float64).reshape(2, 3)
    return int(np.ceil(np.linalg.norm(aabb[1] - aabb[0]) / float(step_size))) + 1


def march_rays(rays: Rays, grid: OccupancyGrid, num_samples: int, step_size: float,
               key: Optional[jax.Array] = None, *, max_candidates: Optional[int] = None,
               ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Uniform ray marching through occupied cells into a fixed-size buffer (static shapes).

    Each ray is clipped to the box and to ``[near, far]`` (``t0 = max(near, t_enter)``,
    ``t1 = min(far, t_exit)``). Candidate step ``k`` is ``[t0 + (k + u) dt, t0 + (k + 1 + u) dt]``
    with ``dt = step_size / |d|`` (``step_size`` in world units, ``t`` along the *unnormalised*
    direction, as in :class:`Rays`), ``u ~ U[0, 1)`` per ray when ``key`` is given (jittered start)
    and ``0`` otherwise; the last step is cut at ``t1``. A candidate is kept when it starts before
    ``t1`` and its midpoint lies in an occupied cell. Kept steps are compacted, in order, into
    ``S = num_samples`` slots: an inclusive cumsum of the keep flags gives each kept step its slot,
    and each slot finds its step by a binary search in that cumsum (gathers only: no sort, no
    serial scatter).

    Limits (documented behaviour):
      * At most ``K = max_candidates`` steps are considered per ray; the default,
        :func:`default_max_candidates`, covers the box diagonal, so no occupied step is missed.
        With a smaller ``K`` the part of a ray beyond ``t0 + K dt`` is not marched.
      * When more than ``S`` steps are occupied, the first ``S`` (nearest) are kept and the far
        ones are dropped (truncation; raise ``num_samples`` or ``step_size`` to avoid it).

    Args:
      rays: batch ``[...]`` (``origins``, ``directions``, ``near``, ``far`` are used).
      grid: the occupancy grid. num_samples: ``S``. step_size: world-space step length.
      key: optional PRNG key for the start jitter.
      max_candidates: ``K`` (static); see above. Required when ``grid`` is traced (e.g. passed
        into a jit'd function), since the default is computed from ``grid.aabb``.
    Returns:
      ``t_starts [..., S]``, ``t_ends [..., S]`` (sorted along each ray, inside ``[near, far]``
      and the box) and ``mask [..., S]`` bool. Masked-out slots hold the zero-length interval
      ``[t1, t1]`` (``[near, near]`` for rays missing the box), so they carry no weight in volume
      rendering even if the mask is ignored; a ray with no occupied step has no valid sample.
    """
    s_out = int(num_samples)
    if max_candidates is None:
        try:
            aabb = np.asarray(grid.aabb)
        except jax.errors.TracerArrayConversionError:
            raise ValueError(
                "march_rays: the grid's aabb is traced, so the number of candidate steps cannot be "
                "derived from it; pass max_candidates=default_max_candidates(aabb, step_size) "
                "(a static int)") from None
        k_max = default_max_candidates(aabb, step_size)
    else:
        k_max = int(max_candidates)
    batch = rays.origins.shape[:-1]
    o = rays.origins.reshape(-1, 3)
    d = rays.directions.reshape(-1, 3)
    near = rays.near.reshape(-1)
    far = rays.far.reshape(-1)
    n = o.shape[0]
    t_enter, t_exit = ray_aabb(o, d, grid.aabb)
    t0 = jnp.maximum(t_enter, near)
    t1 = jnp.minimum(t_exit, far)
    hit = t1 > t0
    dt = step_size / jnp.maximum(jnp.linalg.norm(d, axis=-1), 1e-12)  # [n] in units of t
    if key is None:
        u = jnp.zeros((n, 1), jnp.float32)
    else:
        u = jax.random.uniform(key, (n, 1), jnp.float32)
    k = jnp.arange(k_max, dtype=jnp.float32)
    ts = t0[:, None] + (k + u) * dt[:, None]  # [n, K]
    te = jnp.minimum(ts + dt[:, None], t1[:, None])
    mid = 0.5 * (ts + te)
    x = o[:, None, :] + mid[..., None] * d[:, None, :]
    keep = hit[:, None] & (ts < t1[:, None]) & is_occupied(grid, x)
    count = jnp.cumsum(keep.astype(jnp.int32), axis=-1)  # [n, K] inclusive
    slots = jnp.arange(s_out, dtype=jnp.int32)
    # Slot j holds the (j+1)-th kept step: the first k with count[k] > j.
    src = jax.vmap(lambda c: jnp.searchsorted(c, slots, side="right"))(count)
    src = jnp.minimum(src, k_max - 1).astype(jnp.int32)
    mask = slots[None, :] < count[:, -1:]
    fill = jnp.where(hit, t1, near)[:, None]
    t_starts = jnp.where(mask, jnp.take_along_axis(ts, src, axis=-1), fill)
    t_ends = jnp.where(mask, jnp.take_along_axis(te, src, axis=-1), fill)
    shape = (*batch, s_out)
    return (jax.lax.stop_gradient(t_starts).reshape(shape),
            jax.lax.stop_gradient(t_ends).reshape(shape), mask.reshape(shape))


# -- unbounded scenes: a grid over contracted space, cone stepping -----------------------------
#
# Mip-NeRF 360's contraction (:mod:`nerfkit.core.contraction`) maps all of R^3 into the radius-2
# ball (L2) or the cube (-2, 2)^3 (L-inf), so one grid over ``[-2, 2]^3`` of *contracted*
# coordinates covers an unbounded scene: cells near the centre are small in world space, cells
# near the boundary stand for ever larger shells (Instant-NGP covers large scenes with cascades
# instead; nerfstudio's nerfacto and nerfacc use a grid over the contracted cube as here).
# Rays are marched in world space with Instant-NGP's cone stepping (paper App. E.1; its
# ``calc_dt``): a step at distance ``t`` from the ray origin is ``clamp(t * cone_angle, dt_min,
# dt_max)``, so steps grow with distance like the footprint of a pixel cone, and the number of
# steps to ``far`` grows only logarithmically once ``t * cone_angle > dt_min``.

#: The contracted space the grid covers, ``[2, 3]``.
CONTRACTED_AABB = np.array([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]], np.float32)


def init_contracted_occupancy(resolution: int) -> OccupancyGrid:
    """A grid over the contracted cube ``[-2, 2]^3``, every cell occupied (nothing is known yet).

    Its ``aabb`` is :data:`CONTRACTED_AABB`; look points up with :func:`is_occupied_contracted`
    (world points) or :func:`is_occupied` (already contracted points).
    """
    return init_occupancy(resolution, CONTRACTED_AABB)


def is_occupied_contracted(grid: OccupancyGrid, x: jax.Array, norm: str = "l2") -> jax.Array:
    """``[...]`` bool: the *world* point ``x [..., 3]``, contracted with ``norm``, lies in an
    occupied cell of ``grid`` (a grid from :func:`init_contracted_occupancy`)."""
    from nerfkit.core.contraction import contract
    return is_occupied(grid, contract(x, norm))


def cone_step(t: jax.Array, cone_angle: float, dt_min: float, dt_max: float) -> jax.Array:
    """Instant-NGP's step length ``clamp(t * cone_angle, dt_min, dt_max)`` at distance ``t``.

    Args:
      t: ``[...]`` distance from the ray origin in world units.
      cone_angle: step growth per unit distance (Instant-NGP: 1/256 for large scenes, 0 for
        synthetic objects); dt_min, dt_max: step bounds in world units (``0 < dt_min <= dt_max``).
    Returns:
      ``[...]`` step lengths in world units.
    """
    return jnp.clip(t * cone_angle, dt_min, dt_max)


def _check_cone(cone_angle: float, dt_min: float, dt_max: float) -> None:
    if not (cone_angle >= 0.0 and 0.0 < dt_min <= dt_max):
        raise ValueError(f"cone stepping needs cone_angle >= 0 and 0 < dt_min <= dt_max, got "
                         f"cone_angle={cone_angle}, dt_min={dt_min}, dt_max={dt_max}")


def cone_step_edges(t0: jax.Array, num_steps: int, cone_angle: float, dt_min: float,
                    dt_max: float) -> jax.Array:
    """The first ``num_steps`` cone steps from ``t0``, in closed form (no sequential loop).

    The recurrence ``t_{k+1} = t_k + clamp(c t_k, a, b)`` (``c = cone_angle``, ``a = dt_min``,
    ``b = dt_max``) has three phases: steps of ``a`` while ``t < a / c``; geometric growth
    ``t_{k+1} = (1 + c) t_k`` while ``t < b / c``; steps of ``b`` beyond. The phase lengths follow
    from ``t0`` by a ``ceil`` each, so every edge is computed independently (vectorised over rays
    and steps; float rounding at a phase boundary may give one step of ``c t`` instead of ``a`` or
    ``b``, which differ there by a rounding error).

    Args:
      t0: ``[...]`` start distances in world units (``>= 0``).
      num_steps: ``K`` (static). cone_angle, dt_min, dt_max: as in :func:`cone_step` (static).
    Returns:
      ``[..., K+1]`` increasing edges, ``edges[..., 0] == t0``.
    """
    _check_cone(cone_angle, dt_min, dt_max)
    t0 = jnp.asarray(t0, jnp.float32)
    k = jnp.arange(num_steps + 1, dtype=jnp.float32)
    t0e = t0[..., None]
    if cone_angle == 0.0:
        return t0e + k * dt_min
    c, a, b = float(cone_angle), float(dt_min), float(dt_max)
    ta, tb = a / c, b / c
    log_g = float(np.log1p(c))
    n1 = jnp.maximum(jnp.ceil((ta - t0e) / a), 0.0)            # steps of a
    g0 = t0e + n1 * a                                           # start of geometric growth
    n2 = jnp.maximum(jnp.ceil(jnp.log(tb / jnp.maximum(g0, 1e-30)) / log_g), 0.0)
    g1 = g0 * jnp.exp(n2 * log_g)                               # start of steps of b
    lin_a = t0e + k * a
    geo = g0 * jnp.exp(jnp.clip(k - n1, 0.0, n2) * log_g)
    lin_b = g1 + (k - n1 - n2) * b
    return jnp.where(k <= n1, lin_a, jnp.where(k <= n1 + n2, geo, lin_b))


def cone_step_count(near: float, far: float, cone_angle: float, dt_min: float,
                    dt_max: float) -> int:
    """Number of cone steps from ``near`` to reach ``far`` (world distances, static floats).

    Use it for ``max_candidates`` of :func:`march_rays_contracted`, with the smallest near and the
    largest far *distance* of any ray (``t * |direction|``). A later start (the jitter) never needs
    more steps: the step map ``t -> t + clamp(c t, a, b)`` is increasing.
    """
    _check_cone(cone_angle, dt_min, dt_max)
    near, far = float(near), float(far)
    if not far > near:
        return 1
    c, a, b = float(cone_angle), float(dt_min), float(dt_max)
    ta = a / c if c > 0 else np.inf
    tb = b / c if c > 0 else np.inf
    n = 0
    t = near
    if t < ta:  # steps of a up to min(ta, far)
        m = int(np.ceil((min(ta, far) - t) / a))
        n += m
        t += m * a
    if t < far and t < tb:  # geometric growth up to min(tb, far)
        m = int(np.ceil(np.log(min(tb, far) / t) / np.log1p(c)))
        n += m
        t *= (1.0 + c) ** m
    if t < far:
        n += int(np.ceil((far - t) / b))
    return max(1, n + 1)  # +1: margin for float32 rounding of the closed form


def update_contracted_occupancy(grid: OccupancyGrid, key: jax.Array,
                                density_fn: Callable[[jax.Array], jax.Array], step: jax.Array,
                                *, cone_angle: float, dt_min: float, dt_max: float = 1e10,
                                norm: str = "l2", contracted_input: bool = False,
                                decay: float = 0.95, threshold: float = 0.01,
                                warmup_steps: int = 256, chunk: int = 1 << 16,
                                subset_fraction: float = 0.25,
                                occupied_fraction: float = 0.0) -> OccupancyGrid:
    """One EMA update of a grid over contracted space (:func:`update_occupancy`'s rules).

    Each cell is probed at a jittered point ``z`` of contracted space, mapped back to the world
    point ``x = inv_contract(z)``. A cone step there is long (``dt(x) = cone_step(|x|, ...)``,
    taking the distance ``|x|`` from the scene centre as the distance from the camera, the cameras
    being near the centre), so the grid stores the EMA of the *optical depth of one marching
    step*, ``sigma(x) * dt(x)`` (dimensionless), rather than of ``sigma``; a cell is occupied when
    it exceeds ``min(threshold, mean)`` (that is :func:`update_occupancy` with ``step_size = 1``).
    Probes outside the contraction's image (``|z| >= 2``: the corners of the cube for ``"l2"``)
    count as empty, since no point ever lands there.

    Args:
      grid: from :func:`init_contracted_occupancy`.
      density_fn: ``[N, 3] -> [N]`` density (per world unit) at world points, or at contracted
        points when ``contracted_input`` (what a hash grid over contracted space takes directly).
      step: the training step (warm-up vs. subset updates, as in :func:`update_occupancy`).
      cone_angle, dt_min, dt_max: the marcher's cone stepping (world units).
      norm: the contraction's norm (``"l2"`` or ``"linf"``), as used by the marcher.
      decay, threshold, warmup_steps, chunk, subset_fraction, occupied_fraction: as in
        :func:`update_occupancy`.
    Returns:
      the updated grid; ``density [R, R, R]`` holds the per-step optical depth.
    """
    from nerfkit.core.contraction import contraction_norm, inv_contract
    _check_cone(cone_angle, dt_min, dt_max)

    def step_depth(z: jax.Array) -> jax.Array:
        reachable = contraction_norm(z, norm)[..., 0] < 2.0
        x = inv_contract(z, norm)
        sigma = density_fn(z if contracted_input else x)
        dt = cone_step(jnp.linalg.norm(x, axis=-1), cone_angle, dt_min, dt_max)
        return jnp.where(reachable, sigma * dt, 0.0)

    return update_occupancy(grid, key, step_depth, step, step_size=1.0, decay=decay,
                            threshold=threshold, warmup_steps=warmup_steps, chunk=chunk,
                            subset_fraction=subset_fraction, occupied_fraction=occupied_fraction)


class _ConeSteps(NamedTuple):
    batch: tuple
    near: jax.Array       # [n] ray bounds in t
    far: jax.Array
    dn: jax.Array         # [n] world length per unit t
    r_near: jax.Array     # [n] bounds in world distance
    r_far: jax.Array
    edges: jax.Array      # [n, K+1] cone-step edges, world distance
    rs: jax.Array         # [n, K] step starts
    re: jax.Array         # [n, K] step ends (cut at far)
    keep: jax.Array       # [n, K] the step starts before far and its midpoint's cell is occupied
    k_max: int


def _contracted_steps(rays: Rays, grid: OccupancyGrid, cone_angle: float, dt_min: float,
                      dt_max: float, max_candidates: int, norm: str,
                      key: Optional[jax.Array]) -> _ConeSteps:
    """The cone steps of flattened rays and which are occupied (shared by the contracted
    marchers); with ``key``, each ray's first step starts at a random fraction of a step."""
    from nerfkit.core.contraction import contract
    _check_cone(cone_angle, dt_min, dt_max)
    k_max = int(max_candidates)
    batch = rays.origins.shape[:-1]
    o = rays.origins.reshape(-1, 3)
    d = rays.directions.reshape(-1, 3)
    near = rays.near.reshape(-1)
    far = rays.far.reshape(-1)
    dn = jnp.maximum(jnp.linalg.norm(d, axis=-1), 1e-12)
    r_near, r_far = near * dn, far * dn
    r0 = r_near
    if key is not None:
        u = jax.random.uniform(key, r_near.shape, jnp.float32)
        r0 = r_near + u * cone_step(r_near, cone_angle, dt_min, dt_max)
    edges = cone_step_edges(r0, k_max, cone_angle, dt_min, dt_max)
    rs = edges[:, :-1]
    re = jnp.minimum(edges[:, 1:], r_far[:, None])
    mid = 0.5 * (rs + re) / dn[:, None]                          # in units of t
    x = o[:, None, :] + mid[..., None] * d[:, None, :]
    keep = (rs < r_far[:, None]) & is_occupied(grid, contract(x, norm))
    return _ConeSteps(batch, near, far, dn, r_near, r_far, edges, rs, re, keep, k_max)


def march_rays_contracted(rays: Rays, grid: OccupancyGrid, num_samples: int, *,
                          cone_angle: float, dt_min: float, dt_max: float = 1e10,
                          max_candidates: int, key: Optional[jax.Array] = None,
                          norm: str = "l2") -> tuple[jax.Array, jax.Array, jax.Array]:
    """Cone-stepping ray marching from ``near`` to ``far`` through a contracted-space grid.

    In world distance along the ray (``r = t |d|``), candidate step ``k`` is
    ``[r_k, r_{k+1}]`` with ``r_0 = near |d| + u * cone_step(near |d|)`` (``u ~ U[0, 1)`` per ray
    when ``key`` is given, else 0) and ``r_{k+1} = r_k + cone_step(r_k)`` (closed form:
    :func:`cone_step_edges`); the step reaching ``far`` is cut there. A candidate is kept when it
    starts before ``far`` and the contraction of its midpoint lies in an occupied cell. Kept steps
    are compacted, in order, into ``S = num_samples`` slots exactly as in :func:`march_rays`
    (cumsum + binary search; static shapes). No box clipping: contracted space covers every
    point.

    Limits (documented behaviour):
      * ``K = max_candidates`` (static) bounds the steps per ray; :func:`cone_step_count` gives the
        ``K`` that reaches ``far``. With a smaller ``K`` the part beyond step ``K`` is not marched.
      * When more than ``S`` steps are occupied, the nearest ``S`` are kept.

    Args:
      rays: batch ``[...]`` (``origins``, ``directions`` (unnormalised), ``near``, ``far``).
      grid: from :func:`init_contracted_occupancy` (updated by
        :func:`update_contracted_occupancy`).
      num_samples: ``S`` (static). cone_angle, dt_min, dt_max: :func:`cone_step` (static, world
        units). max_candidates: ``K`` (static). key: optional PRNG key for the start jitter.
      norm: the contraction's norm, as used by the grid's update.
    Returns:
      ``t_starts [..., S]``, ``t_ends [..., S]`` (in units of ``t``, sorted along each ray, inside
      ``[near, far]``) and ``mask [..., S]`` bool. Masked slots hold the zero-length interval at
      the end of the marched segment, so they carry no weight even if the mask is ignored.
    """
    s_out = int(num_samples)
    st = _contracted_steps(rays, grid, cone_angle, dt_min, dt_max, max_candidates, norm, key)
    batch, near, far, dn, r_near, r_far = st.batch, st.near, st.far, st.dn, st.r_near, st.r_far
    edges, rs, re, keep, k_max = st.edges, st.rs, st.re, st.keep, st.k_max
    count = jnp.cumsum(keep.astype(jnp.int32), axis=-1)          # [n, K] inclusive
    slots = jnp.arange(s_out, dtype=jnp.int32)
    src = jax.vmap(lambda c: jnp.searchsorted(c, slots, side="right"))(count)
    src = jnp.minimum(src, k_max - 1).astype(jnp.int32)
    mask = slots[None, :] < count[:, -1:]
    end = jnp.clip(jnp.minimum(edges[:, -1], r_far), r_near, None)[:, None]  # marched segment end
    r_starts = jnp.where(mask, jnp.take_along_axis(rs, src, axis=-1), end)
    r_ends = jnp.where(mask, jnp.take_along_axis(re, src, axis=-1), end)
    # Back to units of t, clipped so that rounding never leaves [near, far].
    lo, hi = near[:, None], jnp.maximum(far, near)[:, None]
    t_starts = jnp.clip(r_starts / dn[:, None], lo, hi)
    t_ends = jnp.clip(r_ends / dn[:, None], lo, hi)
    shape = (*batch, s_out)
    return (jax.lax.stop_gradient(t_starts).reshape(shape),
            jax.lax.stop_gradient(t_ends).reshape(shape), mask.reshape(shape))


def occupied_samples_contracted(rays: Rays, grid: OccupancyGrid, num_samples: int, *,
                                cone_angle: float, dt_min: float, dt_max: float = 1e10,
                                max_candidates: int, key: Optional[jax.Array] = None,
                                norm: str = "l2") -> tuple[jax.Array, jax.Array, jax.Array]:
    """``num_samples`` samples per ray spread over *all* its occupied cone steps, near to far.

    The unbounded counterpart of :func:`occupied_samples`. The ray is cut into the cone steps of
    :func:`march_rays_contracted` (step length grows with distance, so steps are about evenly
    spaced in log-distance, like mip-NeRF 360's disparity spacing); the ``M`` occupied ones are
    concatenated and counted as one unit each, and the ``S`` samples are spread evenly over
    those ``M`` units (stratified: sample ``i`` covers units ``[i M/S, (i+1) M/S)``, placed at its
    centre or, with ``key``, uniformly inside). Each sample stands for the occupied world length
    of its units, so every occupied step is covered whatever ``M`` is: samples always reach
    ``far`` (the nearest-``S`` compaction of :func:`march_rays_contracted` stops short when many
    steps are occupied, e.g. early in training), and they concentrate where the grid is occupied
    as it empties.

    Args:
      rays: batch ``[...]``; grid: from :func:`init_contracted_occupancy`; num_samples: ``S``.
      cone_angle, dt_min, dt_max, max_candidates, norm: as :func:`march_rays_contracted`.
      key: stratified jitter (training); ``None``: stratum centres.
    Returns:
      ``t_mid [..., S]`` sorted sample positions (units of ``t``), ``deltas [..., S]`` the occupied
      length in ``t`` each stands for, and ``valid [..., S]`` (false for rays with no occupied
      step; their samples carry zero length).
    """
    s_out = int(num_samples)
    st = _contracted_steps(rays, grid, cone_angle, dt_min, dt_max, max_candidates, norm, None)
    batch, near, far, dn = st.batch, st.near, st.far, st.dn
    rs, re, keep, k_max, n = st.rs, st.re, st.keep, st.k_max, st.near.shape[0]
    length = jnp.where(keep, jnp.maximum(re - rs, 0.0), 0.0)
    count = jnp.cumsum(keep.astype(jnp.float32), axis=-1)      # [n, K] inclusive
    cum_len = jnp.cumsum(length, axis=-1)                      # [n, K] inclusive
    m = count[:, -1:]                                          # [n, 1] occupied steps

    def locate(u):
        """World distance and occupied length at unit position ``u [n, J]`` (in ``[0, M]``)."""
        k = jnp.clip(jnp.floor(u), 0.0, jnp.maximum(m - 1.0, 0.0))     # occupied index
        frac = u - k
        src = jax.vmap(lambda c, q: jnp.searchsorted(c, q, side="right"))(count, k)
        src = jnp.clip(src, 0, k_max - 1)
        r = (jnp.take_along_axis(rs, src, -1)
             + frac * (jnp.take_along_axis(re, src, -1) - jnp.take_along_axis(rs, src, -1)))
        ln = jnp.take_along_axis(cum_len, src, -1) - (1.0 - frac) * jnp.take_along_axis(
            length, src, -1)
        return r, ln

    j = jnp.arange(s_out + 1, dtype=jnp.float32)
    _, l_edges = locate(j[None, :] / s_out * m)                 # [n, S+1] occupied length
    deltas = jnp.maximum(l_edges[:, 1:] - l_edges[:, :-1], 0.0)
    if key is None:
        xi = jnp.full((n, s_out), 0.5, jnp.float32)
    else:
        xi = jax.random.uniform(key, (n, s_out), jnp.float32)
    r_mid, _ = locate((j[None, :-1] + xi) / s_out * m)
    valid = jnp.broadcast_to(m > 0, (n, s_out))
    t_mid = jnp.clip(r_mid / dn[:, None], near[:, None], jnp.maximum(far, near)[:, None])
    deltas = jnp.where(valid, deltas / dn[:, None], 0.0)
    shape = (*batch, s_out)
    return (jax.lax.stop_gradient(t_mid).reshape(shape),
            jax.lax.stop_gradient(deltas).reshape(shape), valid.reshape(shape))
