"""Rendering full images in fixed-size chunks (bounded memory at any resolution) and evaluation."""

from __future__ import annotations

from typing import Any, Optional

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


class Renderer:
    """Renders rays with a trained model, ``chunk`` rays per jit'd call.

    The last chunk is padded to full size so that one compiled function serves every image.
    With a device ``mesh`` (:func:`nerfkit.engine.distributed.data_mesh`) the parameters are
    replicated on it and each chunk is split across its devices (``chunk`` is rounded up to a
    multiple of their number); every process of a multi-process run must render the same rays,
    and each gets the whole result.
    """

    def __init__(self, graphdef: nnx.GraphDef, params: Any, buffers: Any, geom: RayGeometry,
                 chunk: int = 4096, mesh: Optional[Mesh] = None):
        self.geom = geom
        n_dev = distributed.mesh_size(mesh)
        self.chunk = -(-int(chunk) // n_dev) * n_dev
        self.mesh = mesh
        if mesh is not None:
            self._rep = distributed.replicated(mesh)
            self._rays_sh = distributed.batch_sharding(mesh)
            params, buffers = distributed.put((params, buffers), self._rep)

        def jit(fn, n_args):  # on a mesh: rays (3rd argument) split, the rest replicated
            if mesh is None:
                return jax.jit(fn)

            def traced(*args):
                with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
                    return fn(*args)
            specs = (self._rep, self._rep, self._rays_sh, self._rep)[:n_args]
            return jax.jit(traced, in_shardings=specs, out_shardings=self._rep)

        self.params = params
        self.buffers = buffers

        def _render(params, buffers, rays: Rays, background):
            model = nnx.merge(graphdef, params, buffers)
            out = model.render_rays(rays, None, train=False, background=background)
            return {k: out[k] for k in ("rgb", "depth", "acc")}

        self._fn = jit(_render, 4)
        # Families that know which rays meet nothing (e.g. an occupancy grid) let the renderer
        # skip them: they get the background, zero opacity and depth = far.
        model = nnx.merge(graphdef, params, buffers)
        self._mask_fn = None
        if type(model).active_rays is not Model.active_rays:
            mask = lambda params, buffers, rays: nnx.merge(graphdef, params, buffers).active_rays(rays)
            self._mask_fn = jit(mask, 3)

    def _place(self, rays: Rays, background=None):
        """Rays (and a background) as the jit'd functions take them (global arrays on the mesh)."""
        if self.mesh is None:
            return rays if background is None else (rays, background)
        rays = distributed.put(rays, self._rays_sh)
        return rays if background is None else (rays, distributed.put(background, self._rep))

    def _chunks(self, flat: Rays, n: int):
        """Yields ``(m, piece)``: consecutive chunks of ``flat`` padded to ``self.chunk`` rays."""
        for start in range(0, n, self.chunk):
            piece = jax.tree_util.tree_map(lambda x: x[start:start + self.chunk], flat)
            m = piece.origins.shape[0]
            if m < self.chunk:
                piece = jax.tree_util.tree_map(
                    lambda x: np.pad(x, [(0, self.chunk - m)] + [(0, 0)] * (x.ndim - 1),
                                     mode="edge"), piece)
            yield m, piece

    def render_rays(self, rays: Rays, background: np.ndarray) -> dict[str, np.ndarray]:
        """Renders rays of any batch shape ``[...]``; returns numpy ``rgb [...,3]``, ``depth``,
        ``acc [...,1]``. ``background`` is ``[3]``."""
        shape = rays.batch_shape
        # Slicing, padding and gathering the active rays happen in numpy: as eager JAX ops they
        # would compile anew for every image size and every count of active rays (a live viewer
        # meets a new count at each camera move); only the jit'd chunk function sees JAX.
        flat = jax.tree_util.tree_map(np.asarray, rays.reshape(-1))
        n = int(np.prod(shape))
        bg = jnp.broadcast_to(jnp.asarray(background, jnp.float32), (self.chunk, 3))
        active = None
        if self._mask_fn is not None:
            active = np.concatenate([
                np.asarray(self._mask_fn(self.params, self.buffers, self._place(p)))[:m]
                for m, p in self._chunks(flat, n)])
            idx = np.flatnonzero(active)
            flat_all, flat = flat, jax.tree_util.tree_map(lambda x: x[idx], flat)
            n_all, n = n, int(idx.size)
        outs: list[dict[str, np.ndarray]] = []
        for m, piece in self._chunks(flat, n):
            out = self._fn(self.params, self.buffers, *self._place(piece, bg))
            outs.append({k: np.asarray(v)[:m] for k, v in out.items()})
        if active is None:
            return {k: np.concatenate([o[k] for o in outs]).reshape(*shape, -1) for k in outs[0]}
        full = {"rgb": np.broadcast_to(np.asarray(background, np.float32), (n_all, 3)).copy(),
                "depth": np.asarray(flat_all.far, np.float32).reshape(n_all, 1).copy(),
                "acc": np.zeros((n_all, 1), np.float32)}
        for k in full:
            if outs:
                full[k][idx] = np.concatenate([o[k] for o in outs]).reshape(n, -1)
        return {k: v.reshape(*shape, -1) for k, v in full.items()}

    def render_camera(self, c2w, intrinsics, width: int, height: int,
                      background: np.ndarray, time: Optional[float] = None,
                      distortion: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
        """Renders one ``height x width`` image from ``c2w [3,4]``, ``intrinsics [4]`` and optional
        lens ``distortion [6]`` (model ``self.geom.camera_model``; ``None``: pinhole)."""
        rays = camera_image_rays(self.geom, c2w, intrinsics, width, height, time,
                                 distortion=distortion)
        return self.render_rays(rays, background)

    def render_view(self, scene: Scene, index: int) -> dict[str, np.ndarray]:
        """Renders view ``index`` of ``scene`` onto the scene's evaluation background."""
        cams = scene.cameras
        intr = np.array([cams.fx[index], cams.fy[index], cams.cx[index], cams.cy[index]])
        t = None if scene.times is None else float(scene.times[index])
        d = None if cams.distortion is None else cams.distortion[index]
        return self.render_camera(cams.c2w[index], intr, cams.width, cams.height,
                                  scene.background, t, d)
