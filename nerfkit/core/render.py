"""Volume rendering: densities and colours along rays to pixels.

The emission-absorption model of Max, "Optical Models for Direct Volume Rendering" (IEEE TVCG
1995), discretised as in Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance Fields
for View Synthesis" (ECCV 2020), eq. (3):

    C = sum_i T_i * alpha_i * c_i,   alpha_i = 1 - exp(-sigma_i * delta_i),
    T_i = prod_{j<i} (1 - alpha_j) = exp(-sum_{j<i} sigma_j * delta_j).

Samples are described by interval *edges* ``t_edges [..., S+1]`` along each ray (as in
Barron et al., "Mip-NeRF 360", CVPR 2022): interval ``i`` is ``[t_i, t_{i+1})``, its density and
colour are constant, and it contributes the weight ``w_i = T_i * alpha_i``. There is no open-ended
last interval (NeRF's ``1e10`` trick): light not absorbed by ``far`` comes from the background.

Units: ``t`` is the ray parameter (``point = origin + t * direction``); ``delta`` is a distance in
world units (``diff(t) * |direction|``); ``density`` is per world unit.
"""

from __future__ import annotations

from typing import Optional, Required, TypedDict

import jax
import jax.numpy as jnp

from nerfkit.errors import ConfigError

# Smallest accumulated opacity used as a divisor when normalising the expected depth.
_ACC_EPS = 1e-10



class RenderOutput(TypedDict, total=False):
    """What every family's ``render_rays`` returns for rays of batch shape ``[B]`` (a dict at run
    time; this names the keys other modules rely on).

    Attributes:
      rgb: ``[B, 3]`` composited colour. depth: ``[B, 1]`` expected depth ``t``.
      acc: ``[B, 1]`` accumulated opacity.
      ray_mask: ``[B, 1]`` bool, rays of a training batch that were rendered (the others are left
        out of the loss; the occupancy-grid sampler packs active rays).
      rgb_coarse: ``[B, 3]`` the coarse pass of a two-pass family (NeRF), supervised too.
      t_mid, weights, density: ``[B, S]`` per-sample depths, compositing weights and densities
        (a teacher's extras for distillation, :data:`nerfkit.engine.distill.TEACHER_EXTRAS`).
    """

    rgb: Required[jax.Array]
    depth: Required[jax.Array]
    acc: Required[jax.Array]
    ray_mask: jax.Array
    rgb_coarse: jax.Array
    t_mid: jax.Array
    weights: jax.Array
    density: jax.Array

def _optical_depth(density: jax.Array, deltas: jax.Array) -> jax.Array:
    """``sigma * delta`` per interval, >= 0, never NaN (``inf * 0 -> 0``, ``inf * d -> huge``)."""
    dtype = jnp.result_type(density, deltas, jnp.float32)
    big = jnp.finfo(dtype).max
    # Clipping the density to the largest finite value keeps ``density * 0 == 0`` for empty
    # intervals; ``big * delta`` may still overflow to +inf, which exp(-x) maps cleanly to 0.
    density = jnp.clip(jnp.asarray(density, dtype), 0.0, big)
    deltas = jnp.maximum(jnp.asarray(deltas, dtype), 0.0)
    return density * deltas


def alphas_from_density(density: jax.Array, deltas: jax.Array) -> jax.Array:
    """Per-interval opacity ``alpha = 1 - exp(-sigma * delta)``.

    Args:
      density: ``[..., S]`` volume density sigma (1 / world unit); negative values count as 0,
        ``+inf`` is allowed (an opaque interval).
      deltas: ``[..., S]`` interval lengths in world units; negative values count as 0.
    Returns:
      ``[..., S]`` opacities in ``[0, 1]``. A zero-length interval has alpha 0 even for infinite
      density; infinite density over a positive length gives exactly 1.
    """
    return -jnp.expm1(-_optical_depth(density, deltas))


def weights_from_alphas(alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Compositing weights from per-interval opacities.

    Uses an exclusive cumulative *product* of ``1 - alpha``: exact for ``alpha == 1`` (everything
    behind an opaque interval gets transmittance 0) and differentiable there, unlike the
    ``log1p(-alpha)`` form whose gradient is infinite at ``alpha == 1``.

    Args:
      alpha: ``[..., S]`` opacities in ``[0, 1]`` (clipped into that range).
    Returns:
      ``(weights, transmittance)``, each ``[..., S]``: ``transmittance[i] = prod_{j<i}(1-alpha_j)``
      is the fraction of light reaching the start of interval ``i`` (so ``transmittance[0] == 1``)
      and ``weights = transmittance * alpha``, with ``sum(weights) = 1 - prod(1 - alpha) <= 1``.
    """
    alpha = jnp.clip(alpha, 0.0, 1.0)
    survive = jnp.cumprod(1.0 - alpha, axis=-1)
    trans = jnp.concatenate([jnp.ones_like(survive[..., :1]), survive[..., :-1]], axis=-1)
    return trans * alpha, trans


def weights_from_density(density: jax.Array,
                         deltas: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Compositing weights straight from densities, in the ``exp(-cumsum(sigma * delta))`` form.

    Args:
      density: ``[..., S]`` volume density (1 / world unit), see :func:`alphas_from_density`.
      deltas: ``[..., S]`` interval lengths in world units.
    Returns:
      ``(weights, transmittance, alpha)``, each ``[..., S]``; see :func:`weights_from_alphas`.
      Finite for any non-negative input including ``inf`` densities and zero-length intervals.
    """
    tau = _optical_depth(density, deltas)
    # Exclusive cumulative optical depth. Every term is >= 0, so the sum may reach +inf but never
    # meets an ``inf - inf``.
    tau_before = jnp.concatenate(
        [jnp.zeros_like(tau[..., :1]), jnp.cumsum(tau[..., :-1], axis=-1)], axis=-1)
    trans = jnp.exp(-tau_before)
    alpha = -jnp.expm1(-tau)
    return trans * alpha, trans, alpha


def interval_deltas(t_edges: jax.Array, directions: jax.Array) -> jax.Array:
    """World-space interval lengths ``diff(t) * |d|``.

    Args:
      t_edges: ``[..., S+1]`` interval edges along each ray (sorted ascending).
      directions: ``[..., 3]`` the (not necessarily unit) ray directions the ``t`` refer to.
    Returns:
      ``[..., S]`` interval lengths in world units.
    """
    norm = jnp.linalg.norm(directions, axis=-1, keepdims=True)
    return jnp.diff(t_edges, axis=-1) * norm


def interval_midpoints(t_edges: jax.Array) -> jax.Array:
    """``[..., S]`` midpoints ``(t_i + t_{i+1}) / 2`` of the intervals given by ``[..., S+1]`` edges."""
    return 0.5 * (t_edges[..., 1:] + t_edges[..., :-1])


def composite(weights: jax.Array, values: jax.Array) -> jax.Array:
    """Weighted sum over samples: ``weights [..., S]``, ``values [..., S, C]`` -> ``[..., C]``."""
    return jnp.einsum("...s,...sc->...c", weights, values)


def render_weights(weights: jax.Array, rgb: jax.Array, t_mid: jax.Array,
                   background: Optional[jax.Array] = None) -> dict[str, jax.Array]:
    """Composites per-sample colours and depths with precomputed weights.

    Depth is the *expected termination depth given that the ray terminates*:
    ``sum(w * t) / acc``, with ``acc`` clamped to ``>= 1e-10``, then clipped into
    ``[min(t_mid), max(t_mid)]`` of that ray (rounding can push the ratio slightly outside).
    A ray with ``acc <= 1e-10`` (nothing hit) gets the far end ``max(t_mid)``, i.e. the
    background is treated as being far away (the same choice as multinerf).
    Depth is in units of ``t`` (z-depth for pinhole rays with unit-z directions).

    Args:
      weights: ``[..., S]`` compositing weights (``sum <= 1``).
      rgb: ``[..., S, 3]`` per-sample colours.
      t_mid: ``[..., S]`` per-sample ray parameters (interval midpoints).
      background: ``[..., 3]`` or ``[3]`` colour behind the volume; ``None`` means black.
    Returns:
      dict with ``rgb [..., 3]`` (``sum w c + (1 - acc) * background``), ``depth [..., 1]`` and
      ``acc [..., 1]`` (``sum w``, the opacity of the ray).
    """
    acc = jnp.sum(weights, axis=-1, keepdims=True)
    color = composite(weights, rgb)
    if background is not None:
        color = color + (1.0 - acc) * jnp.asarray(background, color.dtype)
    t_lo = jnp.min(t_mid, axis=-1, keepdims=True)
    t_hi = jnp.max(t_mid, axis=-1, keepdims=True)
    hit = acc > _ACC_EPS
    depth = jnp.sum(weights * t_mid, axis=-1, keepdims=True) / jnp.where(hit, acc, 1.0)
    depth = jnp.clip(jnp.where(hit, depth, t_hi), t_lo, t_hi)
    return {"rgb": color, "depth": depth, "acc": acc}


def volume_render(density: jax.Array, rgb: jax.Array, t_edges: jax.Array, directions: jax.Array,
                  background: Optional[jax.Array] = None) -> dict[str, jax.Array]:
    """Renders rays through a piecewise-constant volume.

    Args:
      density: ``[..., S]`` density per interval (1 / world unit).
      rgb: ``[..., S, 3]`` colour per interval.
      t_edges: ``[..., S+1]`` interval edges in units of ``t``.
      directions: ``[..., 3]`` ray directions (``t`` is measured in multiples of them).
      background: ``[..., 3]``, ``[3]`` or ``None`` (black).
    Returns:
      dict with ``rgb [..., 3]``, ``depth [..., 1]``, ``acc [..., 1]`` (see
      :func:`render_weights`) and ``weights [..., S]``.
    """
    deltas = interval_deltas(t_edges, directions)
    weights, _, _ = weights_from_density(density, deltas)
    out = render_weights(weights, rgb, interval_midpoints(t_edges), background)
    out["weights"] = weights
    return out


def background_color(kind: str, key: Optional[jax.Array], shape: tuple[int, ...]) -> jax.Array:
    """Background colours ``[*shape, 3]`` in ``[0, 1]``.

    Args:
      kind: ``"white"``, ``"black"`` or ``"random"`` (one uniform colour per ray, the usual
        training trick for RGBA scenes that keeps the model from baking a background in).
      key: PRNG key, needed only for ``"random"``.
      shape: batch shape, e.g. ``(num_rays,)``.
    Raises:
      ConfigError: for an unknown ``kind``; ValueError when ``"random"`` has no ``key``.
    """
    shape = tuple(shape)
    if kind == "white":
        return jnp.ones((*shape, 3), jnp.float32)
    if kind == "black":
        return jnp.zeros((*shape, 3), jnp.float32)
    if kind == "random":
        if key is None:
            raise ValueError("background_color('random', ...) needs a PRNG key")
        return jax.random.uniform(key, (*shape, 3), jnp.float32)
    raise ConfigError(f"unknown background {kind!r}; expected 'white', 'black' or 'random'")


def density_from_weights(weights: jax.Array, t_mid: jax.Array, directions: jax.Array,
                         min_transmittance: float = 1e-3) -> tuple[jax.Array, jax.Array]:
    """Densities that produce compositing ``weights [..., S]`` at sorted depths ``t_mid [..., S]``.

    Inverts ``w_i = T_i (1 - exp(-sigma_i delta_i))`` with ``T_i = 1 - sum_{j<i} w_j`` and
    interval lengths ``delta_i`` taken as the smaller spacing to a neighbouring midpoint (exact
    for evenly spaced samples, and for runs of evenly spaced samples separated by skipped empty
    space as occupancy-grid samplers produce): ``sigma_i = -log(1 - w_i / T_i) / delta_i``.
    Behind an opaque surface (``T_i < min_transmittance``) the density is not identifiable from
    the weights.

    Returns:
      ``(density [..., S], visible [..., S] bool)``; density is 0 where not visible.
    """
    trans = 1.0 - jnp.concatenate([jnp.zeros_like(weights[..., :1]),
                                   jnp.cumsum(weights[..., :-1], axis=-1)], axis=-1)
    visible = trans > min_transmittance
    alpha = jnp.clip(weights / jnp.where(visible, trans, 1.0), 0.0, 1.0 - 1e-6)
    gaps = jnp.diff(t_mid, axis=-1)
    left = jnp.concatenate([gaps[..., :1], gaps], axis=-1)
    right = jnp.concatenate([gaps, gaps[..., -1:]], axis=-1)
    delta = jnp.minimum(left, right) * jnp.linalg.norm(directions, axis=-1, keepdims=True)
    density = -jnp.log1p(-alpha) / jnp.maximum(delta, 1e-10)
    return jnp.where(visible, density, 0.0), visible
