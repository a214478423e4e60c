"""Training ray batches drawn on device from all training pixels.

The training images, alphas, poses, intrinsics and lens distortion live on the device as one pytree
(:class:`PixelData`); :func:`sample_batch` draws ``B`` random pixels across all images inside the
jit'd train step, builds their rays (undistorting the pixels of OpenCV / fisheye cameras, see
:mod:`nerfkit.core.distortion`; the camera model is static, in :class:`RayGeometry`) and composites
the targets onto the background. Each ray records the training image it comes from
(``Rays.camera_index``). Nothing is copied from the host per step.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core import distortion as dist
from nerfkit.core.cameras import camera_rays, ndc_rays
from nerfkit.core.rays import DataSource  # noqa: F401 (the protocol PixelSource follows)
from nerfkit.core.rays import Batch, Rays, make_rays
from nerfkit.data.scene import Scene


class PixelData(NamedTuple):
    """Device-resident training pixels.

    Attributes:
      rgb: ``[N, H, W, 3]`` straight colours. alpha: ``[N, H, W, 1]`` or ``None`` (opaque).
      c2w: ``[N, 3, 4]``; intrinsics: ``[N, 4]`` (fx, fy, cx, cy); times: ``[N]`` or ``None``.
      distortion: ``[N, 6]`` ``(k1, k2, k3, k4, p1, p2)``, or ``None`` for pinhole scenes (which
        then trace exactly the pinhole ray code).
    """

    rgb: jax.Array
    alpha: Optional[jax.Array]
    c2w: jax.Array
    intrinsics: jax.Array
    times: Optional[jax.Array]
    distortion: Optional[jax.Array] = None


class RayGeometry(NamedTuple):
    """Static (hashable) ray-generation settings of a scene."""

    near: float
    far: float
    ndc: Optional[tuple[float, int, int, float]] = None  # (focal, width, height, near_plane)
    camera_model: str = dist.PINHOLE  # PINHOLE, OPENCV or OPENCV_FISHEYE


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
    cams = scene.cameras
    model = dist.PINHOLE if cams.distortion is None else cams.camera_model
    return RayGeometry(float(scene.near), float(scene.far), ndc, dist.check_camera_model(model))


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
        distortion=(None if cams.distortion is None
                    else jnp.asarray(cams.distortion, jnp.float32)),
    )


def build_rays(geom: RayGeometry, c2w, u, v, intrinsics, time=None, distortion=None,
               camera_index=None) -> Rays:
    """Rays through pixel coordinates ``u, v [...]`` of cameras ``c2w [..., 3, 4]``,
    ``intrinsics [..., 4]`` (fx, fy, cx, cy in pixels) and optional ``distortion [..., 6]``
    (model ``geom.camera_model``; ``None``: pinhole); applies the NDC warp for forward-facing
    scenes. ``time`` and ``camera_index`` (``[...]``) are passed to the rays."""
    fx, fy, cx, cy = (intrinsics[..., i] for i in range(4))
    model = None if distortion is None else geom.camera_model
    rays = camera_rays(c2w, u, v, fx, fy, cx, cy, geom.near, geom.far, time, distortion, model,
                       camera_index)
    if geom.ndc is None:
        return rays
    focal, w, h, near_plane = geom.ndc
    o, d = ndc_rays(rays.origins, rays.directions, focal, w, h, near_plane)
    return make_rays(o, d, geom.near, geom.far, rays.time, rays.camera_index)


def sample_batch(data: PixelData, geom: RayGeometry, key: jax.Array, batch_size: int,
                 background: str = "white", jitter: bool = False) -> Batch:
    """Draws ``batch_size`` pixels uniformly over all training pixels (jit-friendly).

    ``background`` is ``"white"``, ``"black"`` or ``"random"`` (uniform colour per ray, as
    Instant-NGP does for RGBA scenes so that the model cannot paint the background into the
    volume). ``jitter`` samples a random position inside each pixel instead of its centre.
    The rays' ``camera_index`` is the index of the image each pixel was drawn from.
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
    distortion = None if data.distortion is None else data.distortion[img]
    rays = build_rays(geom, data.c2w[img], u, v, data.intrinsics[img], time, distortion, img)
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
                      time: Optional[float] = None, camera_index: Optional[int] = None,
                      distortion=None) -> Rays:
    """All pixel-centre rays of one camera (``c2w [3,4]``, ``intrinsics [4]``, optional
    ``distortion [6]`` of model ``geom.camera_model``), batch ``[H, W]``; ``camera_index`` is the
    training image they belong to, if any."""
    v, u = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32) + 0.5,
                        jnp.arange(width, dtype=jnp.float32) + 0.5, indexing="ij")
    c2w = jnp.broadcast_to(jnp.asarray(c2w, jnp.float32), (height, width, 3, 4))
    intr = jnp.broadcast_to(jnp.asarray(intrinsics, jnp.float32), (height, width, 4))
    t = None if time is None else jnp.full((height, width), time, jnp.float32)
    d = None
    if distortion is not None:
        d = jnp.broadcast_to(jnp.asarray(distortion, jnp.float32),
                             (height, width, dist.NUM_PARAMS))
    idx = None if camera_index is None else jnp.full((height, width), camera_index, jnp.int32)
    return build_rays(geom, c2w, u, v, intr, t, d, idx)
