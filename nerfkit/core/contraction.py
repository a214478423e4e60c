"""Scene contraction for unbounded scenes, and normalised ray distances ("s-space").

Contraction: Barron, Mildenhall, Verbin, Srinivasan & Hedman, "Mip-NeRF 360: Unbounded
Anti-Aliased Neural Radiance Fields" (CVPR 2022), eq. (10)::

    contract(x) = x                              if |x| <= 1
                  (2 - 1/|x|) * x / |x|          if |x| > 1

It is the identity on the unit ball (the foreground, where the cameras look) and squeezes the rest
of space into the shell ``1 < |z| < 2``, linearly in disparity ``1/|x|``. The norm is a choice:

* ``"l2"``: the paper's Euclidean norm; the image is the open ball of radius 2.
* ``"linf"``: the max-norm, as nerfstudio's ``SceneContraction(order=inf)`` used by nerfacto for
  hash grids; the image is the open cube ``(-2, 2)^3``, so a grid over ``[-2, 2]^3`` (the hash
  grid, the occupancy grid) has no unreachable cells (with ``"l2"`` the cells outside the
  radius-2 ball, about 48% of the cube, are never used).

Both maps are continuous (``2 - 1/1 = 1`` at ``|x| = 1``), bijective from ``R^3`` onto their
image, and their inverse has the same closed form for either norm (the norm is 1-homogeneous)::

    inv_contract(z) = z                          if |z| <= 1
                      z / (|z| (2 - |z|))        if 1 < |z| < 2

The Jacobian (:func:`contract_jacobian`) is in closed form. With ``r = |x| > 1``,
``contract(x) = h(r) x`` where ``h(r) = (2r - 1) / r^2`` and ``h'(r) = 2 (1 - r) / r^3``, so
``J = h(r) I + h'(r) x (grad r)^T`` with ``grad r = x / r`` (L2) or ``sign(x_k) e_k`` with
``k = argmax_i |x_i|`` (L-inf; undefined on the cube's edges, where the first maximal axis is
used).

Numerical guards (in the style of multinerf's ``internal/coord.py``, which clamps ``|x|^2`` at
``eps`` so that the gradient at 0 is finite): the outer branch is evaluated on a copy of ``x``
whose inside points are replaced by a harmless point, so gradients at ``x = 0`` are exact (the
identity); ``|x|`` is computed as ``m * |x / m|`` with ``m = max_i |x_i|`` and ``x / |x|``,
``1 / |x|`` are formed without squaring ``|x|``, so any finite ``x`` (even ``1e38``) contracts to
a finite point and has a finite Jacobian; infinite coordinates are clipped to the largest finite
value (a point at infinity maps onto the boundary ``|z| = 2``). The inverse clamps ``|z|`` below 2
(``z`` on or beyond the boundary maps to a very distant, finite point).

Ray distances in s-space (mip-NeRF 360, text around eq. (11); multinerf's
``coord.construct_ray_warps``): ``s = (g(t) - g(t_near)) / (g(t_far) - g(t_near))`` maps the
metric distance ``t`` in ``[t_near, t_far]`` onto ``[0, 1]``; with ``g(x) = 1/x`` samples evenly
spaced in ``s`` are evenly spaced in disparity, which matches the contraction (its radial part is
linear in ``1/|x|``). ``g = "piecewise"`` (identity below 1, ``1/x`` beyond, as multinerf's
``'piecewise'`` and nerfstudio's ``UniformLinDispPiecewiseSampler``) allows ``t_near = 0``.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Norm = Literal["l2", "linf"]
Spacing = Literal["linear", "reciprocal", "piecewise"]

NORMS: tuple[str, ...] = ("l2", "linf")
SPACINGS: tuple[str, ...] = ("linear", "reciprocal", "piecewise")


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"contraction norm must be one of {NORMS}, got {norm!r}")


def _finite(x: jax.Array) -> jax.Array:
    """``x`` with +-inf clipped to the largest finite value of its dtype (NaN stays NaN)."""
    big = jnp.finfo(x.dtype).max
    return jnp.clip(x, -big, big)


# Points farther than this (max-norm) are pulled in along their direction before the outer branch:
# ``2 - 1/|x|`` already rounds to 2 there, and XLA computes ``x / m`` as ``x * (1 / m)``, whose
# ``1 / m`` would flush to zero (a subnormal) for ``m >~ 1e38`` in float32.
_FAR = 1e30


def _direction_and_inverse_norm(x: jax.Array, norm: str) -> tuple[jax.Array, jax.Array]:
    """``(x / |x|  [..., 3], 1 / |x|  [..., 1])`` for ``x != 0``, without forming ``|x|^2``.

    ``m = max_i |x_i|`` scales ``x`` into ``[-1, 1]^3`` first, so neither overflows for finite x;
    beyond ``m = 1e30`` the point is first pulled in to ``m = 1e30`` (same direction).
    """
    m = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    x = x * jnp.where(m > _FAR, _FAR / m, 1.0)
    m = jnp.minimum(m, _FAR)
    u = x / m  # [-1, 1]^3, with max |u_i| = 1
    if norm == "linf":
        return u, 1.0 / m
    nu = jnp.sqrt(jnp.sum(u * u, axis=-1, keepdims=True))  # in [1, sqrt(3)]
    return u / nu, (1.0 / m) / nu


def contraction_norm(x: jax.Array, norm: Norm = "l2") -> jax.Array:
    """``[..., 1]`` the norm the contraction uses (overflow-safe L2, or max-norm) of ``x [..., 3]``."""
    _check_norm(norm)
    x = _finite(jnp.asarray(x))
    m = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    if norm == "linf":
        return m
    # x / m in [-1, 1]^3 (computed with a clamped m, see _FAR); |x| = m |x / m| may overflow
    # to inf only beyond the largest float / sqrt(3).
    x1 = x * jnp.where(m > _FAR, _FAR / jnp.maximum(m, 1.0), 1.0)
    u = x1 / jnp.clip(m, 1.0, _FAR)
    return jnp.where(m > 1.0, m * jnp.sqrt(jnp.sum(u * u, axis=-1, keepdims=True)),
                     jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)))


def _outside(x: jax.Array, norm: str) -> tuple[jax.Array, jax.Array]:
    """``(outside [..., 1] bool, x_safe [..., 3])``: where ``|x| > 1``, and ``x`` with the inside
    points replaced by ``(2, 0, 0)`` so the outer branch (and its gradient) is finite everywhere."""
    n = jax.lax.stop_gradient(contraction_norm(x, norm))
    outside = n > 1.0
    harmless = jnp.zeros_like(x).at[..., 0].set(2.0)
    return outside, jnp.where(outside, x, harmless)


def contract(x: jax.Array, norm: Norm = "l2") -> jax.Array:
    """Mip-NeRF 360's contraction (eq. 10).

    Args:
      x: ``[..., 3]`` points in scene units (the unit ball / cube is kept as it is).
      norm: ``"l2"`` (paper; image: the open radius-2 ball) or ``"linf"`` (nerfacto; image: the
        open cube ``(-2, 2)^3``).
    Returns:
      ``[..., 3]`` contracted points ``z`` with ``|z| < 2`` in the chosen norm (``|z| = 2`` only for
      infinite input or when ``2 - 1/|x|`` rounds to 2, i.e. ``|x| >~ 1e7`` in float32).
    """
    _check_norm(norm)
    x = _finite(jnp.asarray(x))
    outside, xs = _outside(x, norm)
    direction, inv_r = _direction_and_inverse_norm(xs, norm)
    return jnp.where(outside, (2.0 - inv_r) * direction, x)


def inv_contract(z: jax.Array, norm: Norm = "l2") -> jax.Array:
    """Inverse of :func:`contract` with the same ``norm``.

    Args:
      z: ``[..., 3]`` contracted points, ``|z| < 2`` in the chosen norm; larger norms are clamped
        to ``2 - 1e-6`` first (a very distant point, ``|x| ~ 1e6``, instead of infinity).
    Returns:
      ``[..., 3]`` world points ``x`` with ``contract(x, norm) == z``.
    """
    _check_norm(norm)
    z = jnp.asarray(z)
    n = jax.lax.stop_gradient(contraction_norm(z, norm))
    outside = n > 1.0
    harmless = jnp.zeros_like(z).at[..., 0].set(1.5)
    zs = jnp.where(outside, z, harmless)
    nz = jnp.minimum(contraction_norm(zs, norm), 2.0 - 1e-6)
    # On the shell |z| = nz, |x| = 1 / (2 - nz) and x points along z.
    return jnp.where(outside, zs / (nz * (2.0 - nz)), z)


def contract_jacobian(x: jax.Array, norm: Norm = "l2") -> jax.Array:
    """Closed-form Jacobian ``d contract(x) / dx``.

    ``I`` inside the unit ball / cube; outside, with ``r = |x|``,
    ``J = (2r - 1)/r^2 I + 2(1 - r)/r^3 x (grad r)^T`` (see the module docstring), written in terms
    of ``x / r`` and ``1 / r`` so it stays finite for any finite ``x``.

    Args:
      x: ``[..., 3]`` points; norm: as in :func:`contract`.
    Returns:
      ``[..., 3, 3]`` Jacobians, ``J[..., i, j] = d z_i / d x_j``.
    """
    _check_norm(norm)
    x = _finite(jnp.asarray(x))
    outside, xs = _outside(x, norm)
    direction, inv_r = _direction_and_inverse_norm(xs, norm)
    h = (2.0 - inv_r) * inv_r                       # (2r - 1) / r^2, [..., 1]
    hp_r = 2.0 * inv_r * (inv_r - 1.0)              # h'(r) * r = 2 (1 - r) / r^2, [..., 1]
    if norm == "l2":
        grad_r = direction                          # x / r
    else:
        k = jnp.argmax(jnp.abs(xs), axis=-1)
        grad_r = jax.nn.one_hot(k, 3, dtype=x.dtype) * jnp.sign(xs)
    eye = jnp.eye(3, dtype=x.dtype)
    # h'(r) x grad_r^T = (h'(r) r) (x / r) grad_r^T
    jac = h[..., None] * eye + hp_r[..., None] * direction[..., :, None] * grad_r[..., None, :]
    return jnp.where(outside[..., None], jac, jnp.broadcast_to(eye, jac.shape))


# -- normalised ray distances (s-space) -----------------------------------------------------------


def _spacing_fns(spacing: str):
    if spacing == "linear":
        return (lambda t: t), (lambda g: g)
    if spacing == "reciprocal":
        return (lambda t: 1.0 / t), (lambda g: 1.0 / g)
    if spacing == "piecewise":
        # identity (halved) below 1, 1 - 1/(2t) beyond: continuous with a continuous slope at 1.
        fwd = lambda t: jnp.where(t < 1.0, 0.5 * t, 1.0 - 0.5 / jnp.maximum(t, 1.0))
        inv = lambda g: jnp.where(g < 0.5, 2.0 * g, 0.5 / (1.0 - g))
        return fwd, inv
    raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")


def t_to_s(t: jax.Array, near: jax.Array, far: jax.Array,
           spacing: Spacing = "reciprocal") -> jax.Array:
    """Normalised distance ``s = (g(t) - g(near)) / (g(far) - g(near))`` (mip-NeRF 360, eq. 11).

    Args:
      t: ``[..., N]`` metric distances along the ray (units of ``t``); near, far: ``[..., 1]`` (or
        broadcastable) bounds, ``0 < near < far`` for ``"reciprocal"``, ``0 <= near`` for
        ``"piecewise"``.
      spacing: ``g``: ``"linear"`` (``t``), ``"reciprocal"`` (``1/t``, the paper's choice for
        unbounded scenes) or ``"piecewise"`` (``t/2`` below 1, ``1 - 1/(2t)`` beyond).
    Returns:
      ``[..., N]`` ``s``, 0 at ``near`` and 1 at ``far``, increasing in ``t``.
    """
    fwd, _ = _spacing_fns(spacing)
    g0, g1 = fwd(near), fwd(far)
    return (fwd(t) - g0) / (g1 - g0)


def s_to_t(s: jax.Array, near: jax.Array, far: jax.Array,
           spacing: Spacing = "reciprocal") -> jax.Array:
    """Inverse of :func:`t_to_s`: ``t = g^{-1}(s g(far) + (1 - s) g(near))``.

    Args and shapes as in :func:`t_to_s` (``s [..., N]`` in ``[0, 1]``). A ``far`` of ``inf`` is
    allowed with ``"reciprocal"`` / ``"piecewise"`` (``s = 1`` then maps to ``inf``).
    """
    fwd, inv = _spacing_fns(spacing)
    g0, g1 = fwd(near), fwd(far)
    return inv(s * g1 + (1.0 - s) * g0)
