"""Training ray batches drawn on device from all training pixels.

The training images, alphas, poses and intrinsics live on the device as one pytree
(:class:`PixelData`); :func:`sample_batch` draws ``B`` random pixels across all images inside the
jit'd train step, builds their rays and composites the targets onto the background. Nothing is
copied from the host per step.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core.cameras import camera_rays, ndc_rays
from nerfkit.core.rays import Batch, Rays, make_rays
from nerfkit.data.scene import Scene


class PixelData(NamedTuple):
    """Device-resident training pixels.

    Attributes:
      rgb: ``[N, H, W, 3]`` straight colours. alpha: ``[N, H, W, 1]`` or ``None`` (opaque).
      c2w: ``[N, 3, 4]``; intrinsics: ``[N, 4]`` (fx, fy, cx, cy); times: ``[N]`` or ``None``.
    """

    rgb: jax.Array
    alpha: Optional[jax.Array]
    c2w: jax.Array
    intrinsics: jax.Array
    times: Optional[jax.Array]


class RayGeometry(NamedTuple):
    """Static (hashable) ray-generation settings of a scene."""

    near: float
    far: float
    ndc: Optional[tuple[float, int, int, float]] = None  # (focal, width, height, near_plane)


class PixelSource:
    """The default training source: uniformly random pixels of all training images.

    A *source* is what the trainer draws batches from: ``data`` is a pytree of device arrays
    (passed into the jit'd step as an argument, never baked in as a constant) and
    ``sample(data, key, batch_size) -> Batch`` is a pure, jit-able function of it; the object
    itself only holds static settings. Families with other supervision (a distillation teacher,
    2D signals) provide their own source through
    :meth:`~nerfkit.models.base.ModelConfig.data_source`.
    """

    def __init__(self, scene: Scene, background: str = "white", jitter: bool = False):
        self.geom = ray_geometry(scene)
        self.background = background
        self.jitter = jitter
        self.data = pixel_data(scene)

    def sample(self, data: PixelData, key: jax.Array, batch_size: int) -> Batch:
        return sample_batch(data, self.geom, key, batch_size, self.background, self.jitter)


def ray_geometry(scene: Scene) -> RayGeometry:
    ndc = None
    if scene.ndc:
        m = scene.metadata["ndc"]
        ndc = (float(m["focal"]), int(m["width"]), int(m["height"]), float(m.get("near_plane", 1.0)))
    return RayGeometry(float(scene.near), float(scene.far), ndc)


def pixel_data(scene: Scene) -> PixelData:
    """Moves a scene's training pixels to the default device."""
    cams = scene.cameras
    intr = np.stack([cams.fx, cams.fy, cams.cx, cams.cy], axis=-1).astype(np.float32)
    return PixelData(
        rgb=jnp.asarray(scene.images, jnp.float32),
        alpha=None if scene.alphas is None else jnp.asarray(scene.alphas, jnp.float32),
        c2w=jnp.asarray(cams.c2w, jnp.float32),
        intrinsics=jnp.asarray(intr),
        times=None if scene.times is None else jnp.asarray(scene.times, jnp.float32),
    )


def build_rays(geom: RayGeometry, c2w, u, v, intrinsics, time=None) -> Rays:
    """Rays through pixel coordinates ``u, v [...]`` of cameras ``c2w [..., 3, 4]``,
    ``intrinsics [..., 4]``; applies the NDC warp for forward-facing scenes."""
    fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
    rays = camera_rays(c2w, u, v, fx, fy, cx, cy, geom.near, geom.far, time)
    if geom.ndc is None:
        return rays
    focal, w, h, near_plane = geom.ndc
    o, d = ndc_rays(rays.origins, rays.directions, focal, w, h, near_plane)
    return make_rays(o, d, geom.near, geom.far, rays.time)


def sample_batch(data: PixelData, geom: RayGeometry, key: jax.Array, batch_size: int,
                 background: str = "white", jitter: bool = False) -> Batch:
    """Draws ``batch_size`` pixels uniformly over all training pixels (jit-friendly).

    ``background`` is ``"white"``, ``"black"`` or ``"random"`` (uniform colour per ray, as
    Instant-NGP does for RGBA scenes so that the model cannot paint the background into the
    volume). ``jitter`` samples a random position inside each pixel instead of its centre.
    """
    n, h, w, _ = data.rgb.shape
    k_idx, k_jit, k_bg = jax.random.split(key, 3)
    flat = jax.random.randint(k_idx, (batch_size,), 0, n * h * w)
    img, rem = jnp.divmod(flat, h * w)
    row, col = jnp.divmod(rem, w)
    rgb = data.rgb[img, row, col]
    offset = (jax.random.uniform(k_jit, (batch_size, 2)) if jitter
              else jnp.full((batch_size, 2), 0.5))
    u = col.astype(jnp.float32) + offset[:, 0]
    v = row.astype(jnp.float32) + offset[:, 1]
    time = None if data.times is None else data.times[img]
    rays = build_rays(geom, data.c2w[img], u, v, data.intrinsics[img], time)
    bg = background_colors(k_bg, background, batch_size)
    if data.alpha is not None:
        a = data.alpha[img, row, col]
        rgb = rgb * a + bg * (1.0 - a)
    return Batch(rays, rgb, bg)


def background_colors(key: jax.Array, kind: str, n: int) -> jax.Array:
    """``[n, 3]`` background colours: ``white``, ``black`` or ``random`` (uniform per ray)."""
    if kind == "white":
        return jnp.ones((n, 3), jnp.float32)
    if kind == "black":
        return jnp.zeros((n, 3), jnp.float32)
    if kind == "random":
        return jax.random.uniform(key, (n, 3))
    raise ValueError(f"unknown background {kind!r}: expected white, black or random")


def camera_image_rays(geom: RayGeometry, c2w, intrinsics, width: int, height: int,
                      time: Optional[float] = None) -> Rays:
    """All pixel-centre rays of one camera (``c2w [3,4]``, ``intrinsics [4]``), batch ``[H, W]``."""
    v, u = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5,
                        jnp.arange(width, dtype=jnp.float32) + 0.5, indexing="ij")
    c2w = jnp.broadcast_to(jnp.asarray(c2w, jnp.float32), (height, width, 3, 4))
    intr = jnp.broadcast_to(jnp.asarray(intrinsics, jnp.float32), (height, width, 4))
    t = None if time is None else jnp.full((height, width), time, jnp.float32)
    return build_rays(geom, c2w, u, v, intr, t)
