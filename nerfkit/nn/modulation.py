"""Capacity where a field needs it: ResField layers (over time) and CAM grids (over a coordinate).

* ResFields: Mihajlovic et al., "ResFields: Residual Neural Fields for Spatiotemporal Signals",
  ICLR 2024; official code github.com/markomih/ResFields (``resfields/resfields.py``, compression
  ``vm``; ``dyrecon/datasets/video_dataset.py``). A linear layer whose weight varies with time,
  ``W(t) = W + dW(t)`` (eq. 2), with the residual factorised as ``dW(t) = sum_r v_r(t) M_r``
  (eq. 4): a shared basis of ``R`` matrices ``M_r [in, out]`` and per-frame coefficients
  ``v [T, R]`` (linearly interpolated in ``t`` between frames; at frame times this is the
  official ``lookup`` mode). Both factors start at ``0.01 * N(0, 1)`` as in the official ``vm``
  layer, so ``dW`` starts small but not zero and both factors get gradients from the first step.
  The official video code draws the same number of pixels from every frame of a step and forms
  ``W(t)`` once per frame: :func:`resfield_linear` does this whenever ``x`` has more batch
  dimensions than ``t`` (one time per leading row), the frame-stratified batches of
  :class:`nerfkit.data.raysource.FrameSource` reach it; with one time per sample it falls back to
  the per-sample form ``x W + sum_r v_r(t) (x M_r)`` (about ``R + 1`` layer costs).
  Measured (``benchmarks/signals.py``, README "ResFields and CAM"): the factors grow slowly, at
  the official video lr 5e-5 (set for 100,000 steps) ``dW`` is still near its start after 1,000
  steps, so short runs want a higher lr (5e-4 there); and they pay against a wider SIREN of the
  same size on clips with much change (all 250 frames of ``bikes``), not on a 50-frame one. The
  per-frame path's cost grows with the frames in a step (250 per-frame ``W(t)`` and a batched
  matmul of 250 small groups: 1.5x a SIREN step on this CPU); 50 frames per step of the 250
  (``frames_per_batch``) cost 1.15x and keep the order above at 0.5 dB less.
* CAM: Lee et al., "Coordinate-Aware Modulation for Neural Fields", ICLR 2024; official code
  github.com/maincold2/CAM (``CAM_image.py``; ``CAM_nerfacc/examples/radiance_fields/mlp.py`` for
  T-NeRF and the tri-plane NeRF; ``CAM_mipnerf/internal/models.py`` for the view direction).
  After a hidden linear layer the features are (optionally) normalised without parameters and
  modulated, ``h' = gamma(c) * norm(h) + beta(c)`` (eq. 3), before the activation, with
  ``gamma``/``beta`` interpolated from small grids over a task coordinate ``c``: time (1D line),
  pixel position (2D plane), view direction (2D plane over azimuth/elevation) or position
  (tri-plane, the three planes' lookups multiplied, as the official NeRF code does). As in every
  official variant the grids are *scalar* by default (one ``gamma`` and one ``beta`` per cell,
  shared by all channels; ``per_channel`` gives each channel its own). ``gamma`` starts at 1 and
  ``beta`` at 0. The normalisation is task-specific in the official code and so here
  (``CAMConfig.norm``, :func:`cam_norm`): ``layer`` (each sample over its channels; the image
  code's ``instance_norm`` of ``[1, pixels, C]``), ``ray`` (each ray over its samples and
  channels; mip-NeRF's ``GroupNorm(1)`` of ``[rays, samples, C]``) or ``none`` (T-NeRF's time
  grid, the tri-plane NeRF). The grids are :class:`GridParam` variables so that the optimiser
  gives them their own learning rate (:func:`nerfkit.models.base.grid_labels`).

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
CAM_NORMS = ("auto", "none", "layer", "ray")
TRIPLANE_COMBINE = ("product", "sum")

#: The official per-task defaults: grid cells (per axis; the view-direction grid is
#: ``(azimuth, elevation)``), normalisation and the grid learning rate as a multiple of the
#: network's. Image: ``CAM_image.py`` (32x32, instance norm, Adam groups lr / 10 lr); T-NeRF:
#: nerfacc ``TNeRFRadianceField`` (5 cells over time, no norm, one lr); view direction: mip-NeRF
#: ``affine`` (10 x 3, GroupNorm(1) per ray, one lr); tri-plane: nerfacc ``coord_dim == 3``
#: (512^2 planes there; 128 here, a CPU-sized default; product of planes, no norm, lr x10).
CAM_DEFAULTS = {
    "xy": {"resolution": (32, 32), "norm": "layer", "lr_ratio": 10.0},
    "time": {"resolution": (5,), "norm": "none", "lr_ratio": 1.0},
    "viewdir": {"resolution": (10, 3), "norm": "ray", "lr_ratio": 1.0},
    "triplane": {"resolution": (128, 128), "norm": "none", "lr_ratio": 10.0},
}


@dataclasses.dataclass(frozen=True)
class ResFieldsConfig:
    """ResField layers (``--model.resfields.*``).

    Attributes:
      layers: indices of the hidden linear layers that become ResField layers (``()``: off), e.g.
        ``1 2 3`` (the official video layout: every hidden->hidden layer of a 4-hidden-layer
        SIREN). Index 0 is the layer that reads the (encoded) input.
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
      enabled: modulate every hidden layer of the field's MLP (NeRF: of its density trunk).
      coord: the coordinate indexing the grids: ``auto`` (the family's natural one: pixel
        position for images, time for videos and dynamic scenes, view direction for static
        NeRF), ``time`` (1D), ``xy`` (2D), ``viewdir`` (2D over azimuth/elevation) or
        ``triplane`` (3D position).
      resolution: grid cells per axis; 0: the official default of the coordinate
        (:data:`CAM_DEFAULTS`: 32x32 over the image, 5 over time, 10 x 3 over the view direction).
      lr: learning rate of the grids at the start of training (decayed with the same schedule as
        the rest of the model); 0: the official ratio to the model's ``lr_init`` (10x for images
        and tri-planes, 1x for time and view direction).
      per_channel: one ``gamma``/``beta`` per channel and cell instead of the official scalar
        grids (one per cell, shared by all channels).
      norm: the normalisation before the modulation: ``none``, ``layer`` (each sample over its
        channels), ``ray`` (each ray over its samples and channels) or ``auto`` (the official
        choice of the coordinate, :data:`CAM_DEFAULTS`; ``none`` before a sine activation).
        ``layer``/``ray`` before a sine activation (SIREN) are refused.
      triplane: how the three planes' lookups combine: ``product`` (official) or ``sum``.
    """

    enabled: bool = False
    coord: str = "auto"
    resolution: int = 0
    lr: float = 0.0
    per_channel: bool = False
    norm: str = "auto"
    triplane: str = "product"

    def __post_init__(self):
        if self.coord not in CAM_KINDS:
            raise ConfigError(f"--model.cam.coord must be one of {', '.join(CAM_KINDS)}, "
                              f"got {self.coord!r}")
        if self.resolution != 0 and self.resolution < 2:
            raise ConfigError(f"--model.cam.resolution must be 0 (official default) or >= 2, "
                              f"got {self.resolution}")
        if self.lr < 0:
            raise ConfigError(f"--model.cam.lr must be >= 0 (0: official ratio), got {self.lr}")
        if self.norm not in CAM_NORMS:
            raise ConfigError(f"--model.cam.norm must be one of {', '.join(CAM_NORMS)}, "
                              f"got {self.norm!r}")
        if self.triplane not in TRIPLANE_COMBINE:
            raise ConfigError(f"--model.cam.triplane must be one of "
                              f"{', '.join(TRIPLANE_COMBINE)}, got {self.triplane!r}")

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """Plain values saved by an older nerfkit -> today's keys (called by
        :func:`nerfkit.engine.config.from_dict`). Before ``norm`` existed, CAM grids were
        per-channel, always layer-normalised and tri-planes summed; a complete old dump (it has
        ``resolution`` and ``lr`` but no ``norm``) keeps that meaning so that its checkpoints
        still fit."""
        if isinstance(data, dict) and "norm" not in data and {"resolution", "lr"} <= set(data):
            data = {**data, "per_channel": True, "norm": "layer", "triplane": "sum"}
        return data

    def resolved(self, kind: str, sine: bool = False) -> "CAMSpec":
        """The concrete grid of coordinate ``kind`` (``auto`` values replaced by the official
        defaults); ``sine``: the modulated layers feed a sine activation (SIREN)."""
        d = CAM_DEFAULTS[kind]
        if self.resolution:
            res = (self.resolution,) * len(d["resolution"])
        else:
            res = d["resolution"]
        norm = self.norm
        if norm == "auto":
            norm = "none" if sine else d["norm"]
        if sine and norm != "none":
            raise ConfigError(
                f"--model.cam.norm {norm}: normalising features before a sine activation "
                f"(SIREN) maps every pre-activation to unit variance, so sin(w0 * h) with w0 = 30 "
                f"turns into noise; use --model.cam.norm none (or auto) with SIREN, or a ReLU "
                f"network (--model.activation relu)")
        return CAMSpec(kind, tuple(res), norm, self.per_channel, self.triplane, d["lr_ratio"])

    def grid_lr(self, kind: str, lr_init: float) -> float:
        """The grids' initial learning rate: ``lr`` if set, else the official ratio times the
        network's ``lr_init``."""
        return self.lr if self.lr > 0 else CAM_DEFAULTS[kind]["lr_ratio"] * lr_init


@dataclasses.dataclass(frozen=True)
class CAMSpec:
    """A resolved CAM grid: ``kind``, cells per axis ``resolution`` (``xy``: ``(Nx, Ny)``,
    ``viewdir``: ``(N_azimuth, N_elevation)``, ``time``: ``(N,)``, ``triplane``: ``(N, N)``),
    ``norm`` (``none``/``layer``/``ray``), ``per_channel``, tri-plane ``combine``."""

    kind: str
    resolution: tuple[int, ...]
    norm: str = "none"
    per_channel: bool = False
    combine: str = "product"
    lr_ratio: float = 1.0


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
      x: ``[*L, *M, in]``.
      t: either one time per sample, ``[*L, *M, 1]`` (the per-sample path: ``x W`` plus
        ``x @ basis`` of width ``R * out``, about ``R + 1`` layer costs), or one time per leading
        row, ``[*L, 1]`` with ``x`` having more dimensions (the per-frame path: ``W(t)`` is formed
        once per row, ``[*L, in, out]``, then one batched matmul; e.g. ``t [K, 1]`` for the
        ``x [K, P, in]`` of ``K`` frames with ``P`` pixels each, or ``t [B, 1]`` for the
        ``x [B, S, in]`` of ``B`` rays with ``S`` samples each).
      kernel: ``[in, out]``; bias: ``[out]`` or ``None``; basis: ``[R, in, out]``;
      coeffs: ``[T, R]``.
    Returns:
      ``[*L, *M, out]``.
    """
    v = frame_coefficients(coeffs, t)                                  # [*L, R] or [..., R]
    if x.ndim > t.ndim:                                                # one time per row
        lead = t.shape[:-1]
        rows = math.prod(lead)
        inner = x.shape[len(lead):-1]
        w = kernel + jnp.einsum("lr,rio->lio", v.reshape(rows, -1), basis)   # [L, in, out]
        y = jnp.einsum("lmi,lio->lmo", x.reshape(rows, -1, x.shape[-1]), w)
        y = y.reshape(*lead, *inner, y.shape[-1])
    else:
        r, din, dout = basis.shape
        xm = (x @ jnp.moveaxis(basis, 0, 1).reshape(din, r * dout)).reshape(
            *x.shape[:-1], r, dout)                                    # [..., R, out]
        y = x @ kernel + jnp.einsum("...r,...ro->...o", v, xm)
    return y if bias is None else y + bias


#: Standard deviation of both ResField factors at initialisation (official ``vm`` layer).
RESFIELD_INIT_STD = 0.01


class ResFieldLinear(nnx.Module):
    """A linear layer with a time-dependent low-rank residual (see :func:`resfield_linear`).

    ``kernel``/``bias`` are initialised like the layer it replaces; the basis ``[R, in, out]``
    and the coefficients ``[T, R]`` from ``0.01 * N(0, 1)`` (the official initialisation).
    """

    def __init__(self, in_dim: int, out_dim: int, num_frames: int, rank: int, *, rngs: nnx.Rngs,
                 kernel_init=nnx.initializers.glorot_uniform(),
                 bias_init=nnx.initializers.zeros_init()):
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_dim, out_dim)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_dim,)))
        self.basis = nnx.Param(RESFIELD_INIT_STD * jax.random.normal(
            rngs.params(), (rank, in_dim, out_dim), jnp.float32))
        self.coeffs = nnx.Param(RESFIELD_INIT_STD * jax.random.normal(
            rngs.params(), (num_frames, rank), jnp.float32))

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


def hat_weights(pos: jax.Array, n: int) -> jax.Array:
    """Linear-interpolation weights ``[..., n]`` of vertex positions ``pos [...]`` in
    ``[0, n - 1]``: ``max(0, 1 - |pos - i|)`` (two non-zero entries summing to 1)."""
    return jnp.maximum(0.0, 1.0 - jnp.abs(pos[..., None] - jnp.arange(n, dtype=pos.dtype)))


def interp_line_dense(grid: jax.Array, u: jax.Array) -> jax.Array:
    """:func:`interp_line` as a product with dense hat weights, ``[..., N] @ [N, C]``: no gather
    (and no scatter-add in its gradient), the faster form on the CPU for small grids."""
    n = grid.shape[0]
    pos = (jnp.clip(u, -1.0, 1.0) + 1.0) * 0.5 * (n - 1)
    return hat_weights(pos, n) @ grid


def interp_plane_dense(grid: jax.Array, uv: jax.Array) -> jax.Array:
    """:func:`interp_plane` with dense hat weights along both axes:
    ``sum_ij wv_i wu_j grid[i, j]`` (``[..., Nv] @ [Nv, Nu * C]``, then contracted with
    ``wu [..., Nu]``); the faster form for scalar grids (``C = 1``)."""
    nv, nu, c = grid.shape
    pu = (jnp.clip(uv[..., 0], -1.0, 1.0) + 1.0) * 0.5 * (nu - 1)
    pv = (jnp.clip(uv[..., 1], -1.0, 1.0) + 1.0) * 0.5 * (nv - 1)
    rows = (hat_weights(pv, nv) @ grid.reshape(nv, nu * c)).reshape(*uv.shape[:-1], nu, c)
    return jnp.einsum("...uc,...u->...c", rows, hat_weights(pu, nu))


def interp_triplane(planes: jax.Array, xyz: jax.Array, combine: str = "sum",
                    dense: bool = False) -> jax.Array:
    """Bilinear lookups in ``planes [3, N, N, C]`` (the xy, xz and yz planes) at ``xyz [..., 3]``
    in ``[-1, 1]^3``, combined by ``sum`` or ``product`` (the official CAM NeRF); ``[..., C]``."""
    pairs = ((0, 1), (0, 2), (1, 2))
    plane = interp_plane_dense if dense else interp_plane
    looks = [plane(planes[k], xyz[..., list(p)]) for k, p in enumerate(pairs)]
    return looks[0] * looks[1] * looks[2] if combine == "product" else sum(looks)


def direction_angles(d: jax.Array) -> jax.Array:
    """Unit directions ``[..., 3]`` -> ``[..., 2]`` (azimuth / pi, elevation / (pi / 2)), both in
    ``[-1, 1]``: the coordinate of a view-direction CAM plane."""
    az = jnp.arctan2(d[..., 1], d[..., 0]) / math.pi
    el = jnp.arcsin(jnp.clip(d[..., 2], -1.0, 1.0)) / (0.5 * math.pi)
    return jnp.stack([az, el], axis=-1)


GRID_DIMS = {"time": 1, "xy": 2, "viewdir": 2, "triplane": 3}


def layer_norm(h: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Parameter-free normalisation over the channels of each sample: ``(h - mean) / std``
    (biased variance, ``eps`` inside the root: PyTorch's ``instance_norm`` of the official image
    code applied to ``[1, pixels, C]``).

    One pass (``var = E[h^2] - mean^2``, clamped at 0): on the CPU the two-pass form made a
    CAM-modulated NeRF trunk step ~1.8x slower (measured on the 6x128 ``dnerf`` trunk).
    """
    mu = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.maximum(jnp.mean(jnp.square(h), axis=-1, keepdims=True) - jnp.square(mu), 0.0)
    return (h - mu) * jax.lax.rsqrt(var + eps)


def ray_norm(h: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Parameter-free normalisation of each ray over its samples and channels: ``h [..., S, C]``
    (Flax ``GroupNorm(num_groups=1)`` of ``[rays, S, C]`` in the official mip-NeRF CAM)."""
    if h.ndim < 3:
        raise ValueError(f"ray normalisation needs features [rays, samples, C], got {h.shape}")
    mu = jnp.mean(h, axis=(-2, -1), keepdims=True)
    var = jnp.maximum(jnp.mean(jnp.square(h), axis=(-2, -1), keepdims=True) - jnp.square(mu),
                      0.0)
    return (h - mu) * jax.lax.rsqrt(var + eps)


def cam_norm(h: jax.Array, mode: str) -> jax.Array:
    """``none`` (identity), ``layer`` (:func:`layer_norm`) or ``ray`` (:func:`ray_norm`)."""
    if mode == "none":
        return h
    if mode == "layer":
        return layer_norm(h)
    if mode == "ray":
        return ray_norm(h)
    raise ConfigError(f"CAM normalisation must be none, layer or ray, got {mode!r}")


def cam_grid_shape(spec: CAMSpec, channels: int) -> tuple[int, ...]:
    """Shape of one of ``spec``'s grids (``gamma`` or ``beta``) for a layer of ``channels``
    features: the last axis is ``channels`` (per-channel) or 1 (scalar, official)."""
    c = channels if spec.per_channel else 1
    r = spec.resolution
    if spec.kind == "time":
        return (r[0], c)
    r = r * 2 if len(r) == 1 else r
    return (3, r[1], r[0], c) if spec.kind == "triplane" else (r[1], r[0], c)


class CAMGrid(nnx.Module):
    """Scale and shift grids of one hidden layer (see :class:`CAMSpec`): ``time`` ``[N, c]``,
    ``xy`` ``[Ny, Nx, c]``, ``viewdir`` ``[N_el, N_az, c]``, ``triplane`` ``[3, N, N, c]``, with
    ``c = 1`` (scalar grids, official) or the layer's channels.

    ``__call__(h [..., C], c [..., D])`` returns ``gamma(c) * norm(h) + beta(c)``, where ``c``
    is the already-normalised coordinate in ``[-1, 1]^D`` (time mapped from ``[0, 1]``); ``c``
    may have fewer batch dimensions than ``h`` (one coordinate per ray or per frame, broadcast
    over the rest: ``c [B, D]`` with ``h [B, S, C]``, ``c [K, D]`` with ``h [K, P, S, C]``).
    ``gamma`` starts at 1 (each tri-plane plane at 1/3 when summed), ``beta`` at 0.
    """

    def __init__(self, spec: CAMSpec, channels: int):
        if spec.kind not in GRID_DIMS:
            raise ConfigError(f"CAM coordinate {spec.kind!r} is not one of {sorted(GRID_DIMS)}")
        self.kind = spec.kind
        self.norm = spec.norm
        self.combine = spec.combine
        shape = cam_grid_shape(spec, channels)
        g0 = 1.0 / 3.0 if spec.kind == "triplane" and spec.combine == "sum" else 1.0
        self.cam_gamma = GridParam(jnp.full(shape, g0, jnp.float32))
        self.cam_beta = GridParam(jnp.zeros(shape, jnp.float32))

    def lookup(self, grid: jax.Array, c: jax.Array) -> jax.Array:
        # Scalar grids: dense hat weights (matrix products) instead of gathers, whose gradient
        # is a scatter-add; on the CPU the gathers made a CAM image step 2.6x an FFN step.
        dense = grid.shape[-1] == 1
        if self.kind == "time":
            return (interp_line_dense if dense else interp_line)(grid, c[..., 0])
        if self.kind == "triplane":
            return interp_triplane(grid, c, self.combine, dense)
        return (interp_plane_dense if dense else interp_plane)(grid, c)

    def __call__(self, h: jax.Array, c: jax.Array) -> jax.Array:
        gamma = self.lookup(self.cam_gamma[...], c)
        beta = self.lookup(self.cam_beta[...], c)
        while gamma.ndim < h.ndim:  # one coordinate per ray / frame, broadcast over the rest
            gamma, beta = gamma[..., None, :], beta[..., None, :]
        return gamma * cam_norm(h, self.norm) + beta


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
