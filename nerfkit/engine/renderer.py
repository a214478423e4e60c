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
  packed, on the host, into the next calls. One jit'd call composites a segment of its rays on
  the device (densities, weights, colours of every sample and the sums), so only a few numbers
  per ray cross to the host between segments. The image differs from the full composite by at
  most ``early_stop`` per channel, and costs the field only the samples in front of the
  surfaces (and the rest of the segment in which a ray stops).
"""

from __future__ import annotations

import copy
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
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
      segment: samples per segment of the early-terminating path.
      segment_samples: samples per call of the early-terminating path (``segment_samples //
        segment`` rays, at most ``chunk``; measured on the 2-core CPU, 32 k samples ran faster
        than 64 k).
      block: rays marched together by the early-terminating path (bounds the host memory of
        their samples: about ``block * S * 9`` bytes).
    """

    def __init__(self, graphdef: nnx.GraphDef, params: Any, buffers: Any, geom: RayGeometry,
                 chunk: int = 4096, mesh: Optional[Mesh] = None, *, min_chunk: int = 1024,
                 early_stop: Optional[float] = 1e-4, segment: int = DEFAULT_SEGMENT,
                 segment_samples: int = 1 << 15, block: int = 1 << 16):
        self.geom = geom
        self._n_dev = distributed.mesh_size(mesh)
        self.chunk = -(-int(chunk) // self._n_dev) * self._n_dev
        self.min_chunk = max(1, min(int(min_chunk), self.chunk))
        self.mesh = mesh
        self.early_stop = early_stop
        self.segment = int(segment)
        rays = min(self.chunk, max(1, int(segment_samples) // self.segment))
        self.segment_chunk = -(-rays // self._n_dev) * self._n_dev
        self.block = max(int(block), self.chunk)
        #: Work done so far: jit'd ``calls``, padded ``ray_slots`` of the model's ``render_rays``;
        #: on the early-terminating path, the ``samples`` whose density and colour were
        #: evaluated (padding not counted).
        self.counts = {"calls": 0, "ray_slots": 0, "samples": 0}
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
        self._samples_fn = self._segment_fn = None
        if early_stop is not None and type(model).eval_samples is not Model.eval_samples:
            def samples(params, buffers, rays):
                """The rays' samples, invalid ones with zero length, and the index of each
                ray's last valid sample (-1: none)."""
                t, deltas, valid = nnx.merge(graphdef, params, buffers).eval_samples(rays)
                deltas = jnp.where(valid, jnp.maximum(deltas, 0.0), 0.0)
                n_s = valid.shape[1]
                last = jnp.where(valid.any(1), n_s - 1 - jnp.argmax(valid[:, ::-1], axis=1), -1)
                return t, deltas, valid, last

            def segment(params, buffers, rays, t, deltas, valid, trans):
                """One segment of ``K`` samples of ``m`` rays, composited: densities, then the
                colours of all ``m * K`` samples in the same call (nothing goes back to the host
                in between). Returns ``rgb [m,3]`` (the segment's weighted colour), the opacity
                and weighted ``t`` it adds, and the transmittance after it."""
                model = nnx.merge(graphdef, params, buffers)
                sigma, feat = model.eval_density(rays, t)
                tau = jnp.where(valid, jnp.maximum(sigma, 0.0), 0.0) * deltas
                tau = jnp.nan_to_num(tau, nan=0.0, posinf=jnp.finfo(jnp.float32).max)
                before = jnp.cumsum(tau, axis=1) - tau
                w = trans[:, None] * jnp.exp(-before) * -jnp.expm1(-tau)         # [m, K]
                m, k = t.shape
                per_sample = jax.tree_util.tree_map(lambda x: jnp.repeat(x, k, axis=0), rays)
                c = model.eval_color(per_sample, feat.reshape(m * k, -1)).reshape(m, k, 3)
                return ((w[..., None] * c).sum(1), w.sum(1), (w * t).sum(1),
                        trans * jnp.exp(-tau.sum(1)))

            self._samples_fn = jit(samples, 3)
            self._segment_fn = jit(segment, 7, n_split=5)

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

    def _count(self, rays: int, samples: int = 0) -> None:
        self.counts["calls"] += 1
        self.counts["ray_slots"] += rays
        self.counts["samples"] += samples

    # -- placement and chunking ------------------------------------------------------------
    def _put(self, tree, sharded: bool = True):
        """Arrays as the jit'd functions take them (global arrays on the mesh)."""
        if self.mesh is None:
            return tree
        return distributed.put(tree, self._rays_sh if sharded else self._rep)

    def _pieces(self, n: int, chunk: Optional[int] = None):
        """Yields ``(start, m, size)``: consecutive pieces of ``n`` rays, ``m`` real rays each,
        padded to a call of ``size`` rays (:func:`bucket_size`) of at most ``chunk`` (default:
        the renderer's)."""
        chunk = self.chunk if chunk is None else chunk
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            yield start, m, bucket_size(m, chunk, min(self.min_chunk, chunk), self._n_dev)

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

    def _render_early_stop(self, flat: Rays, bg: np.ndarray) -> dict[str, np.ndarray]:
        """Front-to-back segments with early ray termination (one block of rays): the samples
        of every ray first, then per segment one call per piece of the rays still alive
        (transmittance above ``early_stop``, samples left) that composites the segment on the
        device; the host keeps the running sums and picks the next segment's rays."""
        n = int(flat.origins.shape[0])
        pieces = []
        for s, m, size in self._pieces(n):   # dispatched together, fetched after
            pieces.append((m, self._samples_fn(self.params, self.buffers,
                                               self._put(self._take(flat, s, m, size)))))
            self._count(0)
        # last[i]: the index of ray i's last valid sample (-1: none).
        t, deltas, valid, last = (np.concatenate([np.asarray(o[j])[:m] for m, o in pieces])
                                  for j in range(4))
        n_s = t.shape[1]
        rgb = np.zeros((n, 3), np.float32)
        wt = np.zeros((n,), np.float32)
        acc = np.zeros((n,), np.float32)
        trans = np.ones((n,), np.float32)
        for k0, k1 in segment_bounds(n_s, (self.segment,)):
            alive = np.flatnonzero((last >= k0) & (trans > self.early_stop))
            if alive.size == 0:
                break
            seg = [x[:, k0:k1] for x in (t, deltas, valid)]
            if k1 - k0 < self.segment:  # the last, short segment: padded with empty samples
                pad = ((0, 0), (0, self.segment - (k1 - k0)))
                seg = [np.pad(x, pad, mode="edge") if j == 0 else np.pad(x, pad)
                       for j, x in enumerate(seg)]
            calls = []
            for s, m, size in self._pieces(int(alive.size), self.segment_chunk):
                args = self._take((flat, *seg, trans), s, m, size, alive)
                calls.append((s, m, self._segment_fn(self.params, self.buffers,
                                                     *self._put(args))))
                self._count(0, m * self.segment)
            for s, m, out in calls:
                ids = alive[s:s + m]
                c, a, w_t, tr = (np.asarray(o)[:m] for o in out)
                rgb[ids] += c
                acc[ids] += a
                wt[ids] += w_t
                trans[ids] = tr
        hit = acc > _ACC_EPS
        t_lo, t_hi = t[:, 0], t[:, -1]
        depth = np.clip(np.where(hit, wt / np.where(hit, acc, 1.0), t_hi), t_lo, t_hi)
        active = last >= 0
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
