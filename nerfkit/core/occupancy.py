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
                     warmup_steps: int = 256, chunk: int = 1 << 16) -> OccupancyGrid:
    """One EMA update of the grid (Instant-NGP App. E.2).

    Every cell decays by ``decay``; during the first ``warmup_steps`` every cell is re-evaluated,
    later a random half of the cells, each at a uniformly jittered point of the cell. The estimate
    is ``max(decay * old, sigma)``. A cell is occupied when ``sigma * step_size`` exceeds
    ``min(threshold, mean(density) * step_size)``.

    Args:
      density_fn: ``[N, 3] -> [N]`` density at world points (no gradient needed).
      step: the current training step (selects warm-up vs. subset updates).
      step_size: a typical marching step in world units (``dt`` of the opacity threshold).
      chunk: points per density call (bounds memory).
    """
    r = grid.density.shape[0]
    n_cells = r ** 3
    lo, hi = grid.aabb[0], grid.aabb[1]
    k_sub, k_jit = jax.random.split(key)
    # A random half of the cells after warm-up; all cells during warm-up. Shapes stay fixed by
    # always evaluating all cells' jittered points and masking which updates are kept.
    keep = jnp.where(step < warmup_steps, True,
                     jax.random.bernoulli(k_sub, 0.5, (n_cells,)))
    cells = jnp.arange(n_cells)
    ijk = jnp.stack([cells // (r * r), (cells // r) % r, cells % r], -1).astype(jnp.float32)
    u = (ijk + jax.random.uniform(k_jit, (n_cells, 3))) / r
    pts = lo + u * (hi - lo)
    pad = (-n_cells) % chunk
    pts = jnp.pad(pts, ((0, pad), (0, 0)))
    sigma = jax.lax.map(density_fn, pts.reshape(-1, chunk, 3)).reshape(-1)[:n_cells]
    sigma = jnp.where(jnp.isfinite(sigma), sigma, 0.0)
    old = grid.density.reshape(-1)
    new = jnp.where(keep, jnp.maximum(decay * old, sigma), decay * old)
    thresh = jnp.minimum(threshold, jnp.mean(new) * step_size)
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
    edges, hit = candidate_steps(rays, grid.aabb, march_steps)
    mids = 0.5 * (edges[..., 1:] + edges[..., :-1])
    x = rays.origins[..., None, :] + mids[..., None] * rays.directions[..., None, :]
    occ = is_occupied(grid, x) & hit[..., None]
    seg = edges[..., 1:] - edges[..., :-1]
    cum = jnp.concatenate([jnp.zeros_like(seg[..., :1]),
                           jnp.cumsum(jnp.where(occ, seg, 0.0), axis=-1)], axis=-1)
    total = cum[..., -1:]
    batch = mids.shape[:-1]
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
    xs = rays.origins[..., None, :] + t[..., None] * rays.directions[..., None, :]
    valid = is_occupied(grid, xs) & (total > 0)
    return jax.lax.stop_gradient(t), jax.lax.stop_gradient(deltas), valid
