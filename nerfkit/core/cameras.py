"""Cameras (pinhole, OpenCV radial-tangential, OpenCV fisheye) and ray generation
(Blender/OpenGL convention), and LLFF NDC rays.

Conventions:
  * Camera-to-world matrices ``c2w`` are ``[3, 4]`` (rotation | translation) in the OpenGL/Blender
    convention: the camera looks down its local ``-z`` axis, ``+y`` is up, ``+x`` is right.
  * Pixel ``(col, row) = (u, v)`` covers ``[u, u+1) x [v, v+1)``; its centre is ``(u+0.5, v+0.5)``.
  * Ray directions have unit depth along the optical axis (camera-space ``z = -1``), so the ray
    parameter ``t`` is the z-depth; ``viewdirs`` are the normalised directions.
  * Lens distortion (:mod:`nerfkit.core.distortion`): per-camera ``[6]`` parameters
    ``(k1, k2, k3, k4, p1, p2)`` (nerfstudio's order) and one static camera model per set of
    cameras. A pixel is undistorted in OpenCV's frame (``y`` down), ``(u, v) -> ((u-cx)/fx,
    (v-cy)/fy) -> undistort -> (x, y)``, and its direction is ``(x, -y, -1)``. ``None``
    distortion is the pinhole camera, computed exactly as before.

NDC follows Mildenhall et al., "NeRF: Representing Scenes as Neural Radiance Fields for View
Synthesis" (ECCV 2020), Appendix C.
"""

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core import distortion as dist
from nerfkit.core.rays import Rays, make_rays


class Cameras(NamedTuple):
    """A set of ``N`` cameras sharing one image size and camera model, with per-camera intrinsics.

    Attributes:
      c2w: ``[N, 3, 4]`` camera-to-world matrices (OpenGL convention).
      fx, fy: ``[N]`` focal lengths in pixels.
      cx, cy: ``[N]`` principal point in pixels (``W/2``, ``H/2`` for a centred sensor).
      width, height: image size in pixels (Python ints, static under jit).
      distortion: ``[N, 6]`` ``(k1, k2, k3, k4, p1, p2)`` (dimensionless, resolution independent)
        or ``None`` for pinhole cameras.
      camera_model: ``"PINHOLE"``, ``"OPENCV"`` or ``"OPENCV_FISHEYE"`` (a Python string);
        ``PINHOLE`` exactly when ``distortion`` is ``None`` (as :func:`make_cameras` builds them).
    """

    c2w: jax.Array
    fx: jax.Array
    fy: jax.Array
    cx: jax.Array
    cy: jax.Array
    width: int
    height: int
    distortion: Optional[np.ndarray] = None
    camera_model: str = dist.PINHOLE

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def __getitem__(self, idx) -> "Cameras":
        """Selects cameras by int, slice, index array or boolean mask; always keeps the N axis."""
        if not isinstance(idx, slice):
            idx = np.atleast_1d(np.asarray(idx))
        return Cameras(self.c2w[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx],
                       self.width, self.height,
                       None if self.distortion is None else self.distortion[idx],
                       self.camera_model)

    def scaled(self, factor: float) -> "Cameras":
        """Cameras for images resized by ``factor`` (e.g. 0.25 for a 4x downscale); distortion
        acts on normalised coordinates and is unchanged."""
        return Cameras(self.c2w, self.fx * factor, self.fy * factor, self.cx * factor,
                       self.cy * factor, int(round(self.width * factor)),
                       int(round(self.height * factor)), self.distortion, self.camera_model)


def make_cameras(c2w, focal_x, focal_y, width: int, height: int, cx=None, cy=None,
                 distortion=None, camera_model: Optional[str] = None) -> Cameras:
    """Builds :class:`Cameras` from ``[N,3,4]`` (or ``[N,4,4]``) poses and scalar/``[N]``
    intrinsics.

    Args:
      c2w: ``[N, 3, 4]`` or ``[N, 4, 4]`` camera-to-world matrices (OpenGL convention).
      focal_x, focal_y, cx, cy: pixels, scalars or ``[N]`` (``cx, cy`` default to the centre).
      width, height: image size in pixels.
      distortion: ``[6]`` or ``[N, 6]`` ``(k1, k2, k3, k4, p1, p2)``, or ``None``.
      camera_model: ``"PINHOLE"``, ``"OPENCV"`` or ``"OPENCV_FISHEYE"``. ``None`` means
        ``OPENCV`` when ``distortion`` is given, else ``PINHOLE``. A distortion model without
        ``distortion`` gets zeros; ``PINHOLE`` with all-zero ``distortion`` drops it.
    Raises:
      ValueError: an unknown model, a badly shaped ``distortion``, or ``PINHOLE`` with non-zero
        distortion.
    """
    c2w = np.asarray(c2w, np.float32)[:, :3, :4]
    n = c2w.shape[0]
    full = lambda v, d: np.broadcast_to(np.asarray(d if v is None else v, np.float32), (n,)).copy()
    if camera_model is None:
        camera_model = dist.PINHOLE if distortion is None else dist.OPENCV
    dist.check_camera_model(camera_model)
    if distortion is not None:
        d = np.asarray(distortion, np.float32)
        if d.ndim not in (1, 2) or d.shape[-1] != dist.NUM_PARAMS:
            raise ValueError(f"distortion must be [{dist.NUM_PARAMS}] or [N, {dist.NUM_PARAMS}] "
                             f"(k1, k2, k3, k4, p1, p2), got shape {d.shape}")
        distortion = np.broadcast_to(d, (n, dist.NUM_PARAMS)).copy()
    if camera_model == dist.PINHOLE:
        if distortion is not None and np.any(distortion != 0):
            raise ValueError("non-zero distortion given for a PINHOLE camera model")
        distortion = None
    elif distortion is None:
        distortion = np.zeros((n, dist.NUM_PARAMS), np.float32)
    return Cameras(c2w, full(focal_x, 0), full(focal_y, 0), full(cx, width / 2.0),
                   full(cy, height / 2.0), int(width), int(height), distortion, camera_model)


def _resolve_model(distortion, camera_model: Optional[str]) -> Optional[str]:
    """The distortion model to apply (``None``: pinhole). ``camera_model=None`` means ``OPENCV``
    when ``distortion`` is given."""
    if distortion is None:
        if camera_model is not None:
            dist.check_camera_model(camera_model)
        return None
    if camera_model is None:
        return dist.OPENCV
    if dist.check_camera_model(camera_model) == dist.PINHOLE:
        raise ValueError("distortion given for a PINHOLE camera model")
    return camera_model


def pixel_directions(u: jax.Array, v: jax.Array, fx, fy, cx, cy, distortion=None,
                     camera_model: Optional[str] = None) -> jax.Array:
    """Camera-space directions ``[..., 3]`` through continuous pixel coordinates ``u, v [...]``.

    The direction has ``z = -1`` (OpenGL), ``+x`` right and ``+y`` up (image rows grow downward).

    Args:
      u, v: ``[...]`` pixel coordinates; fx, fy, cx, cy: pixels, broadcastable against ``u``.
      distortion: ``None`` (pinhole) or ``[..., 6]`` ``(k1, k2, k3, k4, p1, p2)`` broadcastable
        against ``u``: the pixel is undistorted (fixed-count Newton, see
        :mod:`nerfkit.core.distortion`) before the direction is formed.
      camera_model: ``"OPENCV"`` (the default when ``distortion`` is given) or
        ``"OPENCV_FISHEYE"``; a static Python string.
    """
    model = _resolve_model(distortion, camera_model)
    if model is None:
        x = (u - cx) / fx
        y = -(v - cy) / fy
    else:
        xy = dist.undistort_pixels(u, v, fx, fy, cx, cy, jnp.asarray(distortion), model)
        x, y = xy[..., 0], -xy[..., 1]
    return jnp.stack([x, y, -jnp.ones_like(x)], axis=-1)


def camera_rays(
    c2w: jax.Array,
    u: jax.Array,
    v: jax.Array,
    fx,
    fy,
    cx,
    cy,
    near: float,
    far: float,
    time: Optional[jax.Array] = None,
    distortion: Optional[jax.Array] = None,
    camera_model: Optional[str] = None,
    camera_index: Optional[jax.Array] = None,
) -> Rays:
    """World-space rays through pixel coordinates.

    Args:
      c2w: ``[..., 3, 4]`` camera-to-world matrices, broadcastable against ``u``.
      u, v: ``[...]`` continuous pixel coordinates (``+0.5`` for centres, jitter for training).
      fx, fy, cx, cy: intrinsics broadcastable against ``u``.
      near, far: integration bounds along ``t``.
      time: optional per-ray time, a scalar or any shape broadcastable to the batch shape.
      distortion, camera_model: lens distortion ``[..., 6]`` (``None``: pinhole) and its model,
        as :func:`pixel_directions`.
      camera_index: optional training-image index per ray, a scalar or broadcastable to the
        batch shape (stored as ``int32 [..., 1]``).
    Returns:
      :class:`Rays` with the broadcast batch shape of ``c2w[..., 0, 0]`` and ``u`` (``u.shape``
      when ``c2w`` is a single camera).
    """
    d_cam = pixel_directions(u, v, fx, fy, cx, cy, distortion, camera_model)
    rot = c2w[..., :3, :3]
    directions = jnp.einsum("...ij,...j->...i", rot, d_cam)
    origins = jnp.broadcast_to(c2w[..., :3, 3], directions.shape)
    t = None
    if time is not None:
        # Broadcast first: a scalar time used to fail in make_rays' reshape.
        t = jnp.broadcast_to(jnp.asarray(time, directions.dtype), directions.shape[:-1])[..., None]
    idx = None
    if camera_index is not None:
        idx = jnp.broadcast_to(jnp.asarray(camera_index, jnp.int32),
                               directions.shape[:-1])[..., None]
    return make_rays(origins, directions, near, far, t, idx)


def image_rays(cameras: Cameras, index: int, near: float, far: float,
               time: Optional[float] = None, camera_index: Optional[int] = None) -> Rays:
    """All pixel-centre rays of camera ``index`` (distortion included), batch shape ``[H, W]``.

    ``camera_index`` (the training-image index to record in the rays) defaults to ``None``:
    ``index`` is only a training index when ``cameras`` are the training cameras."""
    v, u = jnp.meshgrid(jnp.arange(cameras.height, dtype=jnp.float32) + 0.5,
                        jnp.arange(cameras.width, dtype=jnp.float32) + 0.5, indexing="ij")
    c2w = jnp.asarray(cameras.c2w[index])
    tt = None if time is None else jnp.full(u.shape, time, jnp.float32)
    d = None if cameras.distortion is None else jnp.asarray(cameras.distortion[index])
    return camera_rays(c2w, u, v, cameras.fx[index], cameras.fy[index], cameras.cx[index],
                       cameras.cy[index], near, far, tt, d,
                       None if d is None else cameras.camera_model, camera_index)


def ndc_rays(origins: jax.Array, directions: jax.Array, focal: float, width: int, height: int,
             near_plane: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Maps world rays to normalised device coordinates (forward-facing scenes).

    The frustum ``z in (-inf, -near_plane]`` maps to the cube ``[-1, 1]^3``; rays are first moved
    to the near plane. NeRF paper, Appendix C, eqs. (25)-(26).

    Args:
      origins, directions: ``[..., 3]`` world-space rays (camera looks down ``-z``).
      focal: focal length in pixels; width, height: image size in pixels.
      near_plane: the world-space depth mapped to NDC ``z = -1``.
    Returns:
      ``(origins_ndc, directions_ndc)``, each ``[..., 3]``; NDC ``t`` runs over ``[0, 1]``.
    """
    t = -(near_plane + origins[..., 2]) / directions[..., 2]
    o = origins + t[..., None] * directions
    ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
    dx, dy, dz = directions[..., 0], directions[..., 1], directions[..., 2]
    ax = -2.0 * focal / width
    ay = -2.0 * focal / height
    o0 = ax * ox / oz
    o1 = ay * oy / oz
    o2 = 1.0 + 2.0 * near_plane / oz
    d0 = ax * (dx / dz - ox / oz)
    d1 = ay * (dy / dz - oy / oz)
    d2 = -2.0 * near_plane / oz
    return jnp.stack([o0, o1, o2], -1), jnp.stack([d0, d1, d2], -1)
