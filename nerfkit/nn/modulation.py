"""Capacity where a field needs it: ResField layers (over time) and CAM grids (over a coordinate).

* ResFields: Mihajlovic et al., "ResFields: Residual Neural Fields for Spatiotemporal Signals",
  ICLR 2024. A linear layer whose weight varies with time, ``W(t) = W + dW(t)`` (eq. 2), with the
  residual factorised as ``dW(t) = sum_r v_r(t) M_r`` (eq. 4): a shared basis of ``R`` matrices
  ``M_r [in, out]`` and per-frame coefficients ``v [T, R]``, linearly interpolated in ``t``
  between frames. The coefficients start at zero, so a ResField layer starts as its base layer.
* CAM: Lee et al., "Coordinate-Aware Modulation for Neural Fields", ICLR 2024. After a hidden
  linear layer the features are normalised without parameters and modulated,
  ``h' = gamma(c) * norm(h) + beta(c)`` (eq. 3), with per-channel ``gamma`` and ``beta`` linearly
  interpolated from small grids over a task coordinate ``c``: time (1D line), pixel position (2D
  plane), view direction (2D plane over its angles) or position (3D tri-plane: the sum of three
  axis-aligned planes). ``gamma`` starts at 1 and ``beta`` at 0. The grids are
  :class:`GridParam` variables so that the optimiser gives them their own learning rate
  (:func:`nerfkit.models.base.grid_labels`). The normalisation is over the channels of each sample
  (layer normalisation without affine parameters), so a render never depends on its batch.

Both are plain options of :class:`nerfkit.nn.mlp.MLP` (:class:`ResFieldsConfig`,
:class:`CAMConfig`), usable by any field built on it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from nerfkit.errors import ConfigError

CAM_KINDS = ("auto", "time", "xy", "viewdir", "triplane")


@dataclasses.dataclass(frozen=True)
class ResFieldsConfig:
    """ResField layers (``--model.resfields.*``).

    Attributes:
      layers: indices of the hidden linear layers that become ResField layers (``()``: off), e.g.
        ``1 2 3``. Index 0 is the layer that reads the (encoded) input.
      rank: rank ``R`` of the residual (number of shared basis matrices; paper default 10).
      frames: number ``T`` of per-frame coefficient vectors (0: one per distinct frame time of the
        training data).
    """

    layers: tuple[int, ...] = ()
    rank: int = 10
    frames: int = 0

    @property
    def enabled(self) -> bool:
        return len(self.layers) > 0

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"--model.resfields.rank must be >= 1, got {self.rank}")
        if self.frames < 0:
            raise ConfigError(f"--model.resfields.frames must be >= 0, got {self.frames}")


@dataclasses.dataclass(frozen=True)
class CAMConfig:
    """Coordinate-aware modulation (``--model.cam.*``).

    Attributes:
      enabled: modulate every hidden layer of the field's MLP.
      coord: the coordinate indexing the grids: ``auto`` (the family's natural one: pixel
        position for images, time for videos and dynamic scenes, view direction for static
        NeRF), ``time`` (1D), ``xy`` (2D), ``viewdir`` (2D over azimuth/elevation) or
        ``triplane`` (3D position).
      resolution: grid cells per axis (the paper uses small grids; tens of cells).
      lr: learning rate of the grids at the start of training (decayed with the same schedule
        as the rest of the model).
    """

    enabled: bool = False
    coord: str = "auto"
    resolution: int = 32
    lr: float = 1e-2

    def __post_init__(self):
        if self.coord not in CAM_KINDS:
            raise ConfigError(f"--model.cam.coord must be one of {', '.join(CAM_KINDS)}, "
                              f"got {self.coord!r}")
        if self.resolution < 2:
            raise ConfigError(f"--model.cam.resolution must be >= 2, got {self.resolution}")
        if self.lr <= 0:
            raise ConfigError(f"--model.cam.lr must be > 0, got {self.lr}")


class GridParam(nnx.Param):
    """A parameter of a CAM grid (gets the grid learning rate, see ``CAMConfig.lr``)."""


# ----------------------------------------------------------------------------- ResFields


def frame_coefficients(coeffs: jax.Array, t: jax.Array) -> jax.Array:
    """Per-frame coefficients ``coeffs [T, R]`` linearly interpolated at times ``t [..., 1]``.

    Frame ``k`` sits at ``t = k / (T - 1)`` (``t`` in ``[0, 1]``, clamped); returns ``[..., R]``.
    """
    n = coeffs.shape[0]
    if n == 1:
        return jnp.broadcast_to(coeffs[0], (*t.shape[:-1], coeffs.shape[1]))
    pos = jnp.clip(t[..., 0], 0.0, 1.0) * (n - 1)
    i0 = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 2)
    w = (pos - i0)[..., None]
    return (1.0 - w) * coeffs[i0] + w * coeffs[i0 + 1]


def resfield_linear(x: jax.Array, t: jax.Array, kernel: jax.Array, bias: Optional[jax.Array],
                    basis: jax.Array, coeffs: jax.Array) -> jax.Array:
    """``x @ (W + dW(t)) + b`` with ``dW(t) = sum_r v_r(t) basis_r`` (ResFields eq. 2 and 4).

    Args:
      x: ``[..., in]``. t: ``[..., 1]`` per sample (same batch shape as ``x``), or one time per
        leading batch element, ``[B, 1]`` for ``x [B, S, in]`` (all ``S`` samples of a ray share
        its time; the per-ray weights are then formed once, costing ``R / S`` of a layer instead
        of ``R`` layers).
      kernel: ``[in, out]``; bias: ``[out]`` or ``None``; basis: ``[R, in, out]``;
      coeffs: ``[T, R]``.
    Returns:
      ``[..., out]``.
    """
    v = frame_coefficients(coeffs, t)                                  # [..., R]
    if x.ndim == t.ndim + 1:                                           # shared time per ray
        w = kernel + jnp.einsum("br,rio->bio", v, basis)               # [B, in, out]
        y = jnp.einsum("bsi,bio->bso", x, w)
    else:
        r, din, dout = basis.shape
        xm = (x @ jnp.moveaxis(basis, 0, 1).reshape(din, r * dout)).reshape(
            *x.shape[:-1], r, dout)                                    # [..., R, out]
        y = x @ kernel + jnp.einsum("...r,...ro->...o", v, xm)
    return y if bias is None else y + bias


class ResFieldLinear(nnx.Module):
    """A linear layer with a time-dependent low-rank residual (see :func:`resfield_linear`).

    ``kernel``/``bias`` are initialised like the layer it replaces; the basis ``[R, in, out]``
    with the same initialiser, the coefficients ``[T, R]`` at zero (so ``dW = 0`` at first).
    """

    def __init__(self, in_dim: int, out_dim: int, num_frames: int, rank: int, *, rngs: nnx.Rngs,
                 kernel_init=nnx.initializers.glorot_uniform(),
                 bias_init=nnx.initializers.zeros_init()):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_dim, out_dim)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_dim,)))
        keys = jax.random.split(rngs.params(), rank)
        self.basis = nnx.Param(jnp.stack([kernel_init(k, (in_dim, out_dim)) for k in keys]))
        self.coeffs = nnx.Param(jnp.zeros((num_frames, rank), jnp.float32))

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return resfield_linear(x, t, self.kernel[...], self.bias[...], self.basis[...],
                               self.coeffs[...])


# ----------------------------------------------------------------------------- CAM


def interp_line(grid: jax.Array, u: jax.Array) -> jax.Array:
    """Linear interpolation of ``grid [N, C]`` at ``u [...]`` in ``[-1, 1]`` (clamped); the grid
    values sit on vertices, ``grid[0]`` at ``u = -1`` and ``grid[N-1]`` at ``u = 1``. ``[..., C]``."""
    n = grid.shape[0]
    pos = (jnp.clip(u, -1.0, 1.0) + 1.0) * 0.5 * (n - 1)
    i0 = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 2)
    w = (pos - i0)[..., None]
    return (1.0 - w) * grid[i0] + w * grid[i0 + 1]


def interp_plane(grid: jax.Array, uv: jax.Array) -> jax.Array:
    """Bilinear interpolation of ``grid [Nv, Nu, C]`` at ``uv [..., 2]`` in ``[-1, 1]^2``
    (``u`` along the second axis, ``v`` along the first; vertices at the ends, clamped)."""
    nv, nu = grid.shape[:2]
    pu = (jnp.clip(uv[..., 0], -1.0, 1.0) + 1.0) * 0.5 * (nu - 1)
    pv = (jnp.clip(uv[..., 1], -1.0, 1.0) + 1.0) * 0.5 * (nv - 1)
    iu = jnp.clip(jnp.floor(pu).astype(jnp.int32), 0, nu - 2)
    iv = jnp.clip(jnp.floor(pv).astype(jnp.int32), 0, nv - 2)
    wu = (pu - iu)[..., None]
    wv = (pv - iv)[..., None]
    top = (1.0 - wu) * grid[iv, iu] + wu * grid[iv, iu + 1]
    bot = (1.0 - wu) * grid[iv + 1, iu] + wu * grid[iv + 1, iu + 1]
    return (1.0 - wv) * top + wv * bot


def interp_triplane(planes: jax.Array, xyz: jax.Array) -> jax.Array:
    """Sum of bilinear lookups in ``planes [3, N, N, C]`` (the xy, xz and yz planes) at
    ``xyz [..., 3]`` in ``[-1, 1]^3``; ``[..., C]``."""
    pairs = ((0, 1), (0, 2), (1, 2))
    return sum(interp_plane(planes[k], xyz[..., list(p)]) for k, p in enumerate(pairs))


def direction_angles(d: jax.Array) -> jax.Array:
    """Unit directions ``[..., 3]`` -> ``[..., 2]`` (azimuth / pi, elevation / (pi / 2)), both in
    ``[-1, 1]``: the coordinate of a view-direction CAM plane."""
    az = jnp.arctan2(d[..., 1], d[..., 0]) / math.pi
    el = jnp.arcsin(jnp.clip(d[..., 2], -1.0, 1.0)) / (0.5 * math.pi)
    return jnp.stack([az, el], axis=-1)


GRID_DIMS = {"time": 1, "xy": 2, "viewdir": 2, "triplane": 3}


def layer_norm(h: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Parameter-free normalisation over the channels of each sample: ``(h - mean) / std``.

    One pass (``var = E[h^2] - mean^2``, clamped at 0): on the CPU the two-pass form made a
    CAM-modulated NeRF trunk step ~1.8x slower (measured on the 6x128 ``dnerf`` trunk).
    """
    mu = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(jnp.square(h), axis=-1, keepdims=True) - jnp.square(mu), 0.0)
    return (h - mu) * jax.lax.rsqrt(var + eps)


class CAMGrid(nnx.Module):
    """Scale and shift grids of one hidden layer: ``kind`` in ``time`` (``[N, C]``), ``xy`` /
    ``viewdir`` (``[N, N, C]``) or ``triplane`` (``[3, N, N, C]``; each plane holds a third of
    ``gamma``'s initial 1).

    ``__call__(h [..., C], c [..., D])`` returns ``gamma(c) * layer_norm(h) + beta(c)``, where
    ``c`` is the already-normalised coordinate in ``[-1, 1]^D`` (time mapped from ``[0, 1]``);
    ``c`` may have fewer batch dimensions than ``h`` (one coordinate per ray, broadcast over its
    samples: ``c [B, D]`` with ``h [B, S, C]``).
    """

    def __init__(self, kind: str, resolution: int, channels: int):
        if kind not in GRID_DIMS:
            raise ConfigError(f"CAM coordinate {kind!r} is not one of {sorted(GRID_DIMS)}")
        self.kind = kind
        shape = {"time": (resolution, channels), "xy": (resolution, resolution, channels),
                 "viewdir": (resolution, resolution, channels),
                 "triplane": (3, resolution, resolution, channels)}[kind]
        g0 = 1.0 / 3.0 if kind == "triplane" else 1.0
        self.cam_gamma = GridParam(jnp.full(shape, g0, jnp.float32))
        self.cam_beta = GridParam(jnp.zeros(shape, jnp.float32))

    def lookup(self, grid: jax.Array, c: jax.Array) -> jax.Array:
        if self.kind == "time":
            return interp_line(grid, c[..., 0])
        if self.kind == "triplane":
            return interp_triplane(grid, c)
        return interp_plane(grid, c)

    def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
        gamma = self.lookup(self.cam_gamma[...], c)
        beta = self.lookup(self.cam_beta[...], c)
        while gamma.ndim < h.ndim:  # one coordinate per ray, broadcast over its samples
            gamma, beta = gamma[..., None, :], beta[..., None, :]
        return gamma * layer_norm(h) + beta


def cam_coordinate(kind: str, *, xy: Optional[jax.Array] = None,
                   time: Optional[jax.Array] = None, viewdir: Optional[jax.Array] = None,
                   position: Optional[jax.Array] = None) -> jax.Array:
    """The normalised CAM coordinate ``[..., D]`` of ``kind`` from what a field has at hand:
    ``xy [..., 2]`` and ``position [..., 3]`` already in ``[-1, 1]``, ``time [..., 1]`` in
    ``[0, 1]``, unit ``viewdir [..., 3]``."""
    need = {"time": time, "xy": xy, "viewdir": viewdir, "triplane": position}[kind]
    if need is None:
        raise ConfigError(f"CAM over {kind!r} needs a {kind} input that this field/data lacks")
    if kind == "time":
        return 2.0 * time - 1.0
    if kind == "viewdir":
        return direction_angles(viewdir)
    return need
