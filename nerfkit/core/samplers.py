"""Sampling along rays: stratified samples and inverse-CDF (importance) resampling.

Samples are interval *edges* ``t_edges [..., S+1]`` (see :mod:`nerfkit.core.render`).

* Stratified sampling: Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance Fields for
  View Synthesis" (ECCV 2020), eq. (2), with optional sampling linear in disparity (§5.3 / the
  official code's ``lindisp``).
* Hierarchical sampling: NeRF §5.2. The coarse weights define a piecewise-constant PDF over the
  coarse intervals; its CDF is piecewise linear, so inverse-transform sampling is a piecewise-linear
  interpolation of ``(cdf, t_edges)``. ``merge_samples`` forms NeRF's fine-pass union of coarse and
  fine samples (64 + 128 in the paper).

* Spacing for unbounded scenes: :func:`spaced_samples` draws stratified samples evenly in
  mip-NeRF 360's normalised distance ``s`` (Barron et al., CVPR 2022, eq. 11; see
  :func:`nerfkit.core.contraction.t_to_s`), the starting point of its proposal sampling.

All shapes are static, so every function jits; ``num_samples`` must be a Python int.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def _stratified_unit(key: Optional[jax.Array], batch: tuple[int, ...], num_samples: int,
                     randomized: bool, dtype) -> jax.Array:
    """``[*batch, num_samples + 1]`` sorted edges in ``[0, 1]``.

    Deterministic: ``s_i = i / S``. Randomized: edge ``i`` is uniform in
    ``[(i - 1/2) / S, (i + 1/2) / S] ∩ [0, 1]``, so the midpoint of edges ``i, i+1`` lies in the
    stratum ``[i / S, (i + 1) / S]`` and the edges stay sorted.
    """
    s = jnp.linspace(0.0, 1.0, num_samples + 1, dtype=dtype)
    s = jnp.broadcast_to(s, (*batch, num_samples + 1))
    if not randomized:
        return s
    if key is None:
        raise ValueError("randomized stratified sampling needs a PRNG key")
    mids = 0.5 * (s[..., 1:] + s[..., :-1])
    lower = jnp.concatenate([s[..., :1], mids], axis=-1)
    upper = jnp.concatenate([mids, s[..., -1:]], axis=-1)
    u = jax.random.uniform(key, s.shape, dtype)
    return lower + (upper - lower) * u


def stratified_samples(key: Optional[jax.Array], near: jax.Array, far: jax.Array,
                       num_samples: int, randomized: bool, lindisp: bool = False) -> jax.Array:
    """Stratified interval edges between ``near`` and ``far``.

    Args:
      key: PRNG key; may be ``None`` when ``randomized`` is False.
      near, far: ``[..., 1]`` integration bounds in units of ``t`` (``0 < near`` for ``lindisp``).
      num_samples: number of intervals ``S`` (static).
      randomized: jitter every edge within its stratum (training) or use fixed evenly spaced
        edges (evaluation).
      lindisp: space the edges evenly in disparity ``1/t`` instead of in ``t``.
    Returns:
      ``[..., S+1]`` sorted edges with ``t[..., 0] >= near`` and ``t[..., -1] <= far`` (equal
      when not randomized). Interval ``i``'s midpoint lies in stratum ``i`` of ``S`` equal pieces
      of ``[near, far]``; with ``lindisp`` the same holds in disparity (the midpoint of
      ``1/t_i, 1/t_{i+1}`` lies in piece ``i`` of ``[1/near, 1/far]``).
    """
    near = jnp.asarray(near)
    far = jnp.asarray(far)
    batch = jnp.broadcast_shapes(near.shape, far.shape)[:-1]
    dtype = jnp.result_type(near, far, jnp.float32)
    s = _stratified_unit(key, batch, num_samples, randomized, dtype)
    if lindisp:
        t = 1.0 / ((1.0 - s) / near + s / far)
    else:
        t = near * (1.0 - s) + far * s
    # Rounding must not push an edge outside the bounds.
    return jnp.clip(t, near, far)


def _batched_interp(x: jax.Array, xp: jax.Array, fp: jax.Array) -> jax.Array:
    """``jnp.interp`` over matching leading batch dims: ``x [..., N]``, ``xp, fp [..., M]``."""
    batch = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    xp2 = jnp.broadcast_to(xp, (*batch, xp.shape[-1])).reshape(-1, xp.shape[-1])
    fp2 = jnp.broadcast_to(fp, (*batch, fp.shape[-1])).reshape(-1, fp.shape[-1])
    return jax.vmap(jnp.interp)(x2, xp2, fp2).reshape(x.shape)


def sample_pdf(key: Optional[jax.Array], t_edges: jax.Array, weights: jax.Array, num_samples: int,
               randomized: bool, padding: float = 1e-5) -> jax.Array:
    """Draws ``t`` from the piecewise-constant PDF given by ``weights`` over the intervals.

    The PDF is ``(w_i + padding) / sum_j (w_j + padding)`` on interval ``[t_i, t_{i+1})``, uniform
    inside; ``padding > 0`` keeps the CDF strictly increasing (and gives rays with all-zero weights
    uniform samples). Inverse-transform sampling of a piecewise-linear CDF is a linear
    interpolation of the knots ``(cdf_i, t_i)``.

    Uniform variates: randomized -> stratified ``u_k = (k + U_k) / n`` with ``U_k ~ U[0, 1)``
    (each ``u_k`` uniform in its stratum, lower variance than i.i.d. uniforms, same marginal
    distribution of a randomly chosen sample); deterministic -> bin centres ``u_k = (k + 1/2) / n``.

    Args:
      key: PRNG key; may be ``None`` when ``randomized`` is False.
      t_edges: ``[..., S+1]`` sorted interval edges.
      weights: ``[..., S]`` non-negative interval weights (negative values count as 0).
      num_samples: number of samples ``n`` (static).
      randomized: stratified random ``u`` (training) or evenly spaced ``u`` (evaluation).
      padding: added to every weight before normalising.
    Returns:
      ``[..., n]`` sorted samples in ``[t_0, t_S]``, with gradients stopped.
    """
    t_edges = jax.lax.stop_gradient(t_edges)
    weights = jax.lax.stop_gradient(weights)
    dtype = jnp.result_type(t_edges, weights, jnp.float32)
    w = jnp.maximum(weights.astype(dtype), 0.0) + padding
    pdf = w / jnp.sum(w, axis=-1, keepdims=True)
    cdf = jnp.minimum(1.0, jnp.cumsum(pdf[..., :-1], axis=-1))
    zeros = jnp.zeros_like(cdf[..., :1])
    cdf = jnp.concatenate([zeros, cdf, jnp.ones_like(zeros)], axis=-1)  # [..., S+1]

    batch = jnp.broadcast_shapes(t_edges.shape[:-1], weights.shape[:-1])
    k = jnp.arange(num_samples, dtype=dtype)
    if randomized:
        if key is None:
            raise ValueError("randomized sample_pdf needs a PRNG key")
        u = (k + jax.random.uniform(key, (*batch, num_samples), dtype)) / num_samples
    else:
        u = jnp.broadcast_to((k + 0.5) / num_samples, (*batch, num_samples))
    # Keep u strictly below 1 so that it never lands exactly on the last knot.
    u = jnp.minimum(u, 1.0 - jnp.finfo(dtype).eps)
    t = _batched_interp(u, cdf, jnp.broadcast_to(t_edges, (*batch, t_edges.shape[-1])))
    return jax.lax.stop_gradient(jnp.sort(t, axis=-1))


def merge_samples(t_edges: jax.Array, t_new: jax.Array) -> jax.Array:
    """Sorted union of existing edges and new samples (NeRF's fine-pass samples).

    Args:
      t_edges: ``[..., S+1]`` edges (e.g. the coarse pass's).
      t_new: ``[..., K]`` new samples (e.g. from :func:`sample_pdf`).
    Returns:
      ``[..., S+1+K]`` sorted edges, with gradients stopped; they span the same
      ``[t_0, t_S]`` when ``t_new`` comes from :func:`sample_pdf` on ``t_edges``.
    """
    batch = jnp.broadcast_shapes(t_edges.shape[:-1], t_new.shape[:-1])
    both = jnp.concatenate([jnp.broadcast_to(t_edges, (*batch, t_edges.shape[-1])),
                            jnp.broadcast_to(t_new, (*batch, t_new.shape[-1]))], axis=-1)
    return jax.lax.stop_gradient(jnp.sort(both, axis=-1))


def spaced_samples(key: Optional[jax.Array], near: jax.Array, far: jax.Array, num_samples: int,
                   randomized: bool, spacing: str = "piecewise") -> tuple[jax.Array, jax.Array]:
    """Stratified interval edges evenly spaced in mip-NeRF 360's normalised distance ``s``.

    ``s`` is stratified in ``[0, 1]`` exactly as in :func:`stratified_samples`, then mapped to
    metric distance with :func:`nerfkit.core.contraction.s_to_t`. With ``spacing="reciprocal"``
    (``0 < near``) the samples are evenly spaced in disparity ``1/t``; ``"piecewise"`` (linear up
    to ``t = 1``, disparity beyond, so ``near = 0`` is allowed) is what mip-NeRF 360's released
    code and nerfacto's first proposal round use for unbounded scenes; ``"linear"`` is plain
    stratified sampling.

    Args:
      key: PRNG key; may be ``None`` when ``randomized`` is False.
      near, far: ``[..., 1]`` bounds in units of ``t`` (``far`` may be ``inf`` with
        ``"reciprocal"``/``"piecewise"``; the last edge is then ``inf``).
      num_samples: number of intervals ``S`` (static). randomized: jitter within strata.
      spacing: ``"linear"``, ``"reciprocal"`` or ``"piecewise"``.
    Returns:
      ``(t_edges, s_edges)``, each ``[..., S+1]`` and sorted: metric edges in ``[near, far]`` and
      their normalised distances in ``[0, 1]`` (for resampling in ``s`` and the distortion loss).
    """
    from nerfkit.core.contraction import s_to_t
    near = jnp.asarray(near)
    far = jnp.asarray(far)
    batch = jnp.broadcast_shapes(near.shape, far.shape)[:-1]
    dtype = jnp.result_type(near, far, jnp.float32)
    s = _stratified_unit(key, batch, num_samples, randomized, dtype)
    t = jnp.clip(s_to_t(s, near, far, spacing), near, far)
    return t, s
