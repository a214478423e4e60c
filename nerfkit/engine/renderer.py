"""Rendering full images in bounded-size chunks (bounded memory at any resolution).

Two paths:

* Every family: rays go through the model's ``render_rays`` in chunks of ``chunk`` rays; the last
  chunk is padded only up to the next bucket size (a power of two, at least ``min_chunk``), so a
  small image costs a small call, and a handful of compiled functions serve every image size.
* Families that expose their evaluation samples (:meth:`~nerfkit.models.base.Model.eval_samples`,
  :meth:`~nerfkit.models.base.Model.eval_density` and
  :meth:`~nerfkit.models.base.Model.eval_color`, e.g. the occupancy-grid NGP): *early ray
  termination*, as Instant-NGP's renderer (Müller et al., SIGGRAPH 2022, App. E.1) and nerfacc's
  ``render_transmittance_from_density`` early stop (Li et al., "NerfAcc", ICCV 2023) do. Each
  ray's samples are composited front to back in segments of a few samples; after each segment
  only rays whose transmittance is still above ``early_stop`` (and that have samples left) are
  packed, on the host, into the next calls. Within a segment the densities come first (a
  two-pass renderer, as nerfacc's ``rendering`` with a density-only ``sigma_fn`` before the
  ``rgb_sigma_fn``): the colour network runs only on the samples whose compositing weight exceeds
  ``min_weight``, packed across rays. The image differs from the full composite by at most
  ``early_stop`` plus the sum of the skipped samples' weights per channel (each below
  ``min_weight``), and costs the field only the samples in front of the surfaces.
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from nerfkit.core.rays import Rays
from nerfkit.data.raysource import RayGeometry, camera_image_rays
from nerfkit.data.scene import Scene
from nerfkit.engine import distributed
from nerfkit.models.base import Model

# Samples per segment of the early-terminating renderer (one size: one compiled density
# function per bucket).
DEFAULT_SEGMENT = 8
_ACC_EPS = 1e-10  # as core.render: a ray with less opacity than this "hit nothing"


def bucket_size(m: int, chunk: int, min_chunk: int, multiple: int = 1) -> int:
    """Call size for ``m`` rays: ``chunk`` if ``m >= chunk``, else the next power of two
    ``>= max(m, min_chunk)`` (capped at ``chunk``), rounded up to a multiple of ``multiple``."""
    if m >= chunk:
        size = chunk
    else:
        size = min(chunk, max(int(min_chunk), 1 << max(int(m) - 1, 0).bit_length()))
    return -(-size // multiple) * multiple


def segment_bounds(num_samples: int, segments: Sequence[int]) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(num_samples)`` with the sizes of ``segments``
    (the last size repeats; the last segment is cut at ``num_samples``)."""
    out, k, i = [], 0, 0
    while k < num_samples:
        size = int(segments[min(i, len(segments) - 1)])
        if size < 1:
            raise ValueError(f"segment sizes must be >= 1, got {list(segments)}")
        out.append((k, min(k + size, num_samples)))
        k, i = k + size, i + 1
    return out


class Renderer:
    """Renders rays with a trained model, in jit'd calls of at most ``chunk`` rays.

    Calls are padded to a few bucket sizes (:func:`bucket_size`), so one compiled function per
    bucket serves every image. With a device ``mesh`` (:func:`nerfkit.engine.distributed.data_mesh`)
    the parameters are replicated on it and each call is split across its devices (sizes are
    rounded up to a multiple of their number); every process of a multi-process run must render
    the same rays, and each gets the whole result.

    Args:
      chunk: largest number of rays per call (bounds memory).
      min_chunk: smallest call size (fewer compiled variants for tiny remainders).
      early_stop: transmittance below which a ray stops (early-terminating families only;
        ``0`` composites every sample, still in segments; ``None`` uses the model's own
        ``render_rays`` as every other family does).
      min_weight: compositing weight below which a sample's colour is not evaluated (its
        weight still counts in the opacity); ``0``: every sample with a positive weight.
      segment: samples per segment of the early-terminating path.
      block: rays marched together by the early-terminating path (bounds the host memory of
        their samples: about ``block * S * 9`` bytes).
    """

    def __init__(self, graphdef: nnx.GraphDef, params: Any, buffers: Any, geom: RayGeometry,
                 chunk: int = 4096, mesh: Optional[Mesh] = None, *, min_chunk: int = 1024,
                 early_stop: Optional[float] = 1e-4, min_weight: float = 1e-5,
                 segment: int = DEFAULT_SEGMENT, block: int = 1 << 16):
        self.geom = geom
        self._n_dev = distributed.mesh_size(mesh)
        self.chunk = -(-int(chunk) // self._n_dev) * self._n_dev
        self.min_chunk = max(1, min(int(min_chunk), self.chunk))
        self.mesh = mesh
        self.early_stop = early_stop
        self.min_weight = float(min_weight)
        self.segment = int(segment)
        self.block = max(int(block), self.chunk)
        #: Work done so far: jit'd ``calls``, padded ``ray_slots`` of the model's ``render_rays``;
        #: on the early-terminating path, the samples whose ``densities`` and ``colors`` were
        #: evaluated (padding not counted).
        self.counts = {"calls": 0, "ray_slots": 0, "densities": 0, "colors": 0}
        if mesh is not None:
            self._rep = distributed.replicated(mesh)
            self._rays_sh = distributed.batch_sharding(mesh)
            params, buffers = distributed.put((params, buffers), self._rep)

        def jit(fn, n_args, n_split=1):
            """On a mesh: the ``n_split`` per-ray arguments after (params, buffers) are split
            across the devices, the others replicated."""
            if mesh is None:
                return jax.jit(fn)

            def traced(*args):
                with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                    return fn(*args)
            specs = tuple(self._rays_sh if 2 <= i < 2 + n_split else self._rep
                          for i in range(n_args))
            return jax.jit(traced, in_shardings=specs, out_shardings=self._rep)

        self.params = params
        self.buffers = buffers

        def _render(params, buffers, rays: Rays, background):
            model = nnx.merge(graphdef, params, buffers)
            out = model.render_rays(rays, None, train=False, background=background)
            return {k: out[k] for k in ("rgb", "depth", "acc")}

        self._fn = jit(_render, 4)
        model = nnx.merge(graphdef, params, buffers)
        # Families that know which rays meet nothing (e.g. an occupancy grid) let the renderer
        # skip them: they get the background, zero opacity and depth = far.
        self._mask_fn = None
        if type(model).active_rays is not Model.active_rays:
            mask = lambda params, buffers, rays: nnx.merge(graphdef, params, buffers).active_rays(rays)
            self._mask_fn = jit(mask, 3)
        # Families that expose their evaluation samples render with early ray termination.
        self._samples_fn = self._density_fn = self._color_fn = None
        if early_stop is not None and type(model).eval_samples is not Model.eval_samples:
            def samples(params, buffers, rays):
                return nnx.merge(graphdef, params, buffers).eval_samples(rays)

            def density(params, buffers, rays, t):
                return nnx.merge(graphdef, params, buffers).eval_density(rays, t)

            def color(params, buffers, rays, features):
                return nnx.merge(graphdef, params, buffers).eval_color(rays, features)

            self._samples_fn = jit(samples, 3)
            self._density_fn = jit(density, 4, n_split=2)
            self._color_fn = jit(color, 4, n_split=2)

    def with_params(self, params: Any, buffers: Any) -> "Renderer":
        """This renderer with other parameters of the same model (e.g. a later training state):
        the compiled functions are shared, so nothing is traced or compiled again."""
        other = copy.copy(self)
        other.set_params(params, buffers)
        other.counts = {k: 0 for k in self.counts}
        return other

    def set_params(self, params: Any, buffers: Any) -> None:
        """Renders with these parameters from now on (placed on the mesh, if any), in place:
        for holders of this renderer, e.g. the live viewer during training."""
        if self.mesh is not None:
            params, buffers = distributed.put((params, buffers), self._rep)
        self.params, self.buffers = params, buffers

    def _count(self, rays: int, samples: int = 0, colors: int = 0) -> None:
        self.counts["calls"] += 1
        self.counts["ray_slots"] += rays
        self.counts["densities"] += samples
        self.counts["colors"] += colors

    # -- placement and chunking ------------------------------------------------------------
    def _put(self, tree, sharded: bool = True):
        """Arrays as the jit'd functions take them (global arrays on the mesh)."""
        if self.mesh is None:
            return tree
        return distributed.put(tree, self._rays_sh if sharded else self._rep)

    def _pieces(self, n: int):
        """Yields ``(start, m, size)``: consecutive pieces of ``n`` rays, ``m`` real rays each,
        padded to a call of ``size`` rays (:func:`bucket_size`)."""
        for start in range(0, n, self.chunk):
            m = min(self.chunk, n - start)
            yield start, m, bucket_size(m, self.chunk, self.min_chunk, self._n_dev)

    @staticmethod
    def _take(tree, start: int, m: int, size: int, idx: Optional[np.ndarray] = None):
        """Rows ``start:start+m`` (of ``tree``, or of its rows ``idx``), padded to ``size`` by
        repeating the last row (host arrays)."""
        def take(x):
            x = x[start:start + m] if idx is None else x[idx[start:start + m]]
            if m < size:
                x = np.concatenate([x, np.repeat(x[-1:], size - m, axis=0)])
            return x
        return jax.tree_util.tree_map(take, tree)

    # -- rendering -------------------------------------------------------------------------
    def render_rays(self, rays: Rays, background: np.ndarray) -> dict[str, np.ndarray]:
        """Renders rays of any batch shape ``[...]``; returns numpy ``rgb [...,3]``, ``depth``,
        ``acc [...,1]``. ``background`` is ``[3]``."""
        shape = rays.batch_shape
        flat = jax.tree_util.tree_map(np.asarray, rays.reshape(-1))
        n = int(np.prod(shape))
        bg = np.asarray(background, np.float32).reshape(3)
        if self._samples_fn is not None:
            outs = [self._render_early_stop(
                jax.tree_util.tree_map(lambda x: x[s:s + self.block], flat), bg)
                for s in range(0, n, self.block)]
            out = {k: np.concatenate([o[k] for o in outs]) for k in ("rgb", "depth", "acc")}
        else:
            out = self._render_plain(flat, n, bg)
        return {k: v.reshape(*shape, -1) for k, v in out.items()}

    def _render_plain(self, flat: Rays, n: int, bg: np.ndarray) -> dict[str, np.ndarray]:
        """Every ray (or, with an ``active_rays`` family, every active ray) through the model's
        ``render_rays``."""
        idx = None
        if self._mask_fn is not None:
            active = np.concatenate([
                np.asarray(self._mask_fn(self.params, self.buffers,
                                         self._put(self._take(flat, s, m, size))))[:m]
                for s, m, size in self._pieces(n)])
            idx = np.flatnonzero(active)
        n_r = n if idx is None else int(idx.size)
        outs: list[dict[str, np.ndarray]] = []
        for s, m, size in self._pieces(n_r):
            bgs = self._put(np.broadcast_to(bg, (size, 3)), sharded=False)
            out = self._fn(self.params, self.buffers, self._put(self._take(flat, s, m, size, idx)),
                           bgs)
            self._count(size)
            outs.append({k: np.asarray(v)[:m].reshape(m, -1) for k, v in out.items()})
        if idx is None:
            return {k: np.concatenate([o[k] for o in outs]) for k in ("rgb", "depth", "acc")}
        full = {"rgb": np.broadcast_to(bg, (n, 3)).copy(),
                "depth": np.asarray(flat.far, np.float32).reshape(n, 1).copy(),
                "acc": np.zeros((n, 1), np.float32)}
        if outs:
            for k in full:
                full[k][idx] = np.concatenate([o[k] for o in outs])
        return full

    def _call_pieces(self, fn, n: int, args: tuple, idx: Optional[np.ndarray] = None,
                     per_call: Optional[int] = None) -> list[np.ndarray]:
        """``fn(params, buffers, *piece)`` over the rows ``idx`` (default: all ``n``) of the
        host arrays ``args`` in bucketed calls of at most ``per_call`` rows (default: the chunk);
        returns each output concatenated over the rows (host arrays)."""
        chunk = self.chunk if per_call is None else per_call
        outs = []
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            size = bucket_size(m, chunk, self.min_chunk, self._n_dev)
            out = fn(self.params, self.buffers, *self._put(self._take(args, s, m, size, idx)))
            outs.append([np.asarray(o)[:m] for o in (out if isinstance(out, tuple) else (out,))])
            if fn is self._density_fn:
                self._count(0, m * outs[-1][0].shape[1])
            elif fn is self._color_fn:
                self._count(0, 0, m)
        if not outs:
            return []
        return [np.concatenate(o) for o in zip(*outs)]

    def _render_early_stop(self, flat: Rays, bg: np.ndarray) -> dict[str, np.ndarray]:
        """Front-to-back segments with early ray termination (one block of rays): per segment,
        densities of the live rays' samples, compositing weights on the host, then colours only
        of the samples whose weight exceeds ``min_weight`` (packed)."""
        n = int(flat.origins.shape[0])
        t, deltas, valid = self._call_pieces(self._samples_fn, n, (flat,))
        n_s = t.shape[1]
        deltas = np.where(valid, np.maximum(deltas, 0.0), 0.0).astype(np.float32)
        # any_left[:, k]: the ray has a valid sample at k or beyond.
        any_left = np.flip(np.logical_or.accumulate(np.flip(valid, 1), axis=1), 1)
        rgb = np.zeros((n, 3), np.float32)
        wt = np.zeros((n,), np.float32)
        acc = np.zeros((n,), np.float32)
        trans = np.ones((n,), np.float32)
        for k0, k1 in segment_bounds(n_s, (self.segment,)):
            alive = np.flatnonzero(any_left[:, k0] & (trans > self.early_stop))
            if alive.size == 0:
                break
            ts = t[:, k0:k1]
            sigma, feat = self._call_pieces(self._density_fn, int(alive.size), (flat, ts), alive)
            tau = np.where(valid[alive, k0:k1], np.maximum(sigma, 0.0), 0.0) * deltas[alive, k0:k1]
            tau = np.nan_to_num(tau, nan=0.0, posinf=np.finfo(np.float32).max)
            before = np.cumsum(tau, axis=1) - tau
            w = trans[alive, None] * np.exp(-before) * -np.expm1(-tau)           # [a, K]
            acc[alive] += w.sum(1)
            wt[alive] += (w * ts[alive]).sum(1)
            trans[alive] *= np.exp(-tau.sum(1))
            ri, ki = np.nonzero(w > self.min_weight)
            if ri.size:
                rows = alive[ri]
                sub = jax.tree_util.tree_map(lambda x: x[rows], flat)
                (c,) = self._call_pieces(self._color_fn, int(ri.size), (sub, feat[ri, ki]),
                                         per_call=self.chunk * self.segment)
                contrib = w[ri, ki, None] * c
                for ch in range(3):
                    rgb[:, ch] += np.bincount(alive[ri], contrib[:, ch], minlength=n)
        hit = acc > _ACC_EPS
        t_lo, t_hi = t[:, 0], t[:, -1]
        depth = np.clip(np.where(hit, wt / np.where(hit, acc, 1.0), t_hi), t_lo, t_hi)
        active = any_left[:, 0]
        far = np.asarray(flat.far, np.float32).reshape(n)
        return {"rgb": np.where(active[:, None], rgb + (1.0 - acc[:, None]) * bg, bg),
                "depth": np.where(active, depth, far)[:, None].astype(np.float32),
                "acc": np.where(active, acc, 0.0)[:, None].astype(np.float32)}

    def render_camera(self, c2w, intrinsics, width: int, height: int,
                      background: np.ndarray, time: Optional[float] = None,
                      distortion: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
        """Renders one ``height x width`` image from ``c2w [3,4]``, ``intrinsics [4]`` and optional
        lens ``distortion [6]`` (model ``self.geom.camera_model``; ``None``: pinhole)."""
        rays = camera_image_rays(self.geom, c2w, intrinsics, width, height, time,
                                 distortion=distortion)
        return self.render_rays(rays, background)

    def view_rays(self, scene: Scene, index: int) -> Rays:
        """The ``[H, W]`` pixel rays of view ``index`` of ``scene``."""
        cams = scene.cameras
        intr = np.array([cams.fx[index], cams.fy[index], cams.cx[index], cams.cy[index]])
        t = None if scene.times is None else float(scene.times[index])
        d = None if cams.distortion is None else cams.distortion[index]
        return camera_image_rays(self.geom, cams.c2w[index], intr, cams.width, cams.height, t,
                                 distortion=d)

    def render_view(self, scene: Scene, index: int) -> dict[str, np.ndarray]:
        """Renders view ``index`` of ``scene`` onto the scene's evaluation background."""
        return self.render_rays(self.view_rays(scene, index), scene.background)

    def render_views(self, scene: Scene, indices: Sequence[int]) -> list[dict[str, np.ndarray]]:
        """Renders several views of ``scene`` in shared calls (their rays packed together, so
        small images fill the chunks); returns one :meth:`render_view`-like dict per view."""
        indices = list(indices)
        if not indices:
            return []
        rays = [self.view_rays(scene, i) for i in indices]
        hw = rays[0].batch_shape
        packed = jax.tree_util.tree_map(lambda *xs: np.concatenate(
            [np.asarray(x).reshape(-1, x.shape[-1]) for x in xs]), *rays)
        out = self.render_rays(packed, scene.background)
        n = int(np.prod(hw))
        return [{k: v[j * n:(j + 1) * n].reshape(*hw, -1) for k, v in out.items()}
                for j in range(len(indices))]

    def views_per_call(self, scene: Scene) -> int:
        """How many views of ``scene`` :meth:`render_views` should pack: enough to fill one
        chunk (1 for images of ``chunk`` pixels or more)."""
        return max(1, self.chunk // max(scene.cameras.width * scene.cameras.height, 1))
