"""Pseudo cameras for distillation: random rays drawn from the distribution of the training cameras.

A teacher radiance field can label any ray, so a student (R2L, NeRDF) learns from rays of cameras
that were never photographed, as in Wang et al., "R2L: Distilling Neural Radiance Field to Neural
Light Field for Efficient Novel View Synthesis" (ECCV 2022): random poses "around" the
training cameras. Every ray of a batch gets its own random camera (more diverse than whole pseudo
images, and free under jit). Two modes:

* ``"sphere"`` (360-degree scenes whose cameras look at the origin, e.g. Blender/NeRF-Synthetic):
  the camera centre is uniform in solid angle on the band of the sphere spanned by the training
  cameras: radius uniform in ``[min, max]`` of the training radii, elevation (above the plane
  orthogonal to the *up* axis, see :func:`camera_frame`) in
  ``[min, max]`` of the training elevations, azimuth over the full circle unless the training
  azimuths leave a gap wider than 90 degrees (then over the smallest arc holding them all). The
  camera looks at the origin with no roll.
* ``"box"`` (forward-facing scenes, e.g. LLFF in NDC): as R2L's LLFF pseudo poses, the camera centre
  is uniform in the axis-aligned bounding box of the training camera centres and its viewing axis
  (``c2w[:, 2]``) uniform in the bounding box of the training viewing axes (then normalised); its
  up vector is the scene's up axis.

The pixel is uniform over the image of a randomly chosen training camera (its intrinsics), and the
ray is built like a training ray (:func:`~nerfkit.data.raysource.build_rays`, NDC warp included).
"""

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from nerfkit.core.rays import Rays
from nerfkit.data.raysource import RayGeometry, build_rays
from nerfkit.errors import ConfigError

#: Azimuth gaps (radians) up to this wide still count as a full circle of training cameras.
MAX_AZIMUTH_GAP = math.pi / 2

MODES = ("auto", "sphere", "box")


class PseudoCameraData(NamedTuple):
    """Device arrays describing the training camera distribution (a pytree; built on the host by
    :func:`pseudo_camera_data`).

    Attributes:
      basis: ``[3, 3]`` rows ``(e1, e2, up)``, a right-handed orthonormal frame with ``up`` the
        scene's up axis (:func:`camera_frame`); azimuth is measured from ``e1`` towards ``e2``.
      radius: ``[2]`` min, max distance of the training camera centres from the origin.
      sin_elevation: ``[2]`` min, max sine of their elevation above the ``e1, e2`` plane.
      azimuth: ``[2]`` start and length (radians) of the azimuth arc to sample.
      origin_box, axis_box: ``[2, 3]`` (min, max) of the training camera centres and of their
        viewing axes ``c2w[:, :3, 2]`` (the camera looks down ``-axis``).
      intrinsics: ``[N, 4]`` (fx, fy, cx, cy) of the training cameras; size: ``[2]`` (width, height).
      times: ``[N]`` training times of dynamic scenes, else ``None``.
    """

    basis: jax.Array
    radius: jax.Array
    sin_elevation: jax.Array
    azimuth: jax.Array
    origin_box: jax.Array
    axis_box: jax.Array
    intrinsics: jax.Array
    size: jax.Array
    times: Optional[jax.Array] = None


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def camera_frame(c2w: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rows ``(e1, e2, up)``, a right-handed orthonormal frame.

    ``up`` is the direction most orthogonal to all the cameras' right vectors (``c2w[:, :3, 0]``;
    the eigenvector of their scatter matrix with the smallest eigenvalue), signed towards the mean
    camera up vector: exact for cameras without roll, whatever their azimuths (the mean up vector
    of cameras looking down at an object is tilted unless they surround it evenly). With fewer
    than two distinct right vectors it falls back to the mean up vector.
    """
    c2w = np.asarray(c2w, np.float64)
    mean_up = c2w[:, :3, 1].mean(0)
    right = c2w[:, :3, 0]
    evals, evecs = np.linalg.eigh(right.T @ right)
    up = evecs[:, 0]
    if evals[1] < 1e-6 * max(evals[2], 1e-12):              # all right vectors parallel
        up = mean_up
    up = _normalize(up * (1.0 if np.dot(up, mean_up) >= 0 else -1.0))
    if not np.all(np.isfinite(up)) or np.linalg.norm(up) < 0.5:
        up = np.array([0.0, 0.0, 1.0])
    # Any vector not parallel to ``up`` gives a valid e1.
    ref = np.eye(3)[int(np.argmin(np.abs(up)))]
    e1 = _normalize(ref - up * np.dot(ref, up))
    e2 = np.cross(up, e1)
    return np.stack([e1, e2, up])


def pseudo_camera_data(c2w, intrinsics, width: int, height: int,
                       times=None) -> PseudoCameraData:
    """Statistics of ``N`` training cameras (``c2w [N, 3, 4]``, ``intrinsics [N, 4]``) for
    :func:`sample_pseudo_rays`."""
    c2w = np.asarray(c2w, np.float64)
    basis = camera_frame(c2w)
    centres = c2w[:, :3, 3]
    radius = np.linalg.norm(centres, axis=-1)
    local = centres @ basis.T                                    # coordinates in (e1, e2, up)
    sin_el = np.clip(local[:, 2] / np.maximum(radius, 1e-12), -1.0, 1.0)
    az = np.sort(np.arctan2(local[:, 1], local[:, 0]))
    gaps = np.diff(np.concatenate([az, az[:1] + 2 * np.pi]))
    i = int(np.argmax(gaps))
    if gaps[i] <= MAX_AZIMUTH_GAP:
        azimuth = (0.0, 2 * np.pi)
    else:                                  # the arc from the camera after the gap round to before it
        start = az[(i + 1) % len(az)]
        azimuth = (float(start), float(2 * np.pi - gaps[i]))
    axes = c2w[:, :3, 2]
    f32 = lambda x: jnp.asarray(np.asarray(x, np.float64), jnp.float32)
    return PseudoCameraData(
        basis=f32(basis),
        radius=f32([radius.min(), radius.max()]),
        sin_elevation=f32([sin_el.min(), sin_el.max()]),
        azimuth=f32(azimuth),
        origin_box=f32([centres.min(0), centres.max(0)]),
        axis_box=f32([axes.min(0), axes.max(0)]),
        intrinsics=f32(intrinsics),
        size=f32([width, height]),
        times=None if times is None else f32(times),
    )


def look_at(centre: jax.Array, axis: jax.Array, up: jax.Array) -> jax.Array:
    """``[..., 3, 4]`` OpenGL camera-to-world matrices of cameras at ``centre [..., 3]`` whose
    local ``+z`` is ``axis [..., 3]`` (so they look down ``-axis``), with ``+y`` towards ``up``."""
    z = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
    x = jnp.cross(up, z)
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    y = jnp.cross(z, x)
    return jnp.stack([x, y, z, centre], axis=-1)


def sample_sphere_poses(data: PseudoCameraData, key: jax.Array, n: int) -> jax.Array:
    """``[n, 3, 4]`` cameras on the training band of the sphere, looking at the origin."""
    k_r, k_z, k_a = jax.random.split(key, 3)
    r = jax.random.uniform(k_r, (n,), minval=data.radius[0], maxval=data.radius[1])
    # Uniform in solid angle: the sine of the elevation is uniform.
    s = jax.random.uniform(k_z, (n,), minval=data.sin_elevation[0], maxval=data.sin_elevation[1])
    a = data.azimuth[0] + data.azimuth[1] * jax.random.uniform(k_a, (n,))
    c = jnp.sqrt(jnp.maximum(1.0 - s * s, 0.0))
    e1, e2, up = data.basis[0], data.basis[1], data.basis[2]
    radial = (c * jnp.cos(a))[:, None] * e1 + (c * jnp.sin(a))[:, None] * e2 + s[:, None] * up
    # The azimuthal tangent is the camera's right vector; it stays defined at the poles.
    right = -jnp.sin(a)[:, None] * e1 + jnp.cos(a)[:, None] * e2
    y = jnp.cross(radial, right)
    return jnp.stack([right, y, radial, r[:, None] * radial], axis=-1)


def sample_box_poses(data: PseudoCameraData, key: jax.Array, n: int) -> jax.Array:
    """``[n, 3, 4]`` cameras with centres in the training centres' box and viewing axes in the
    training axes' box (R2L's forward-facing pseudo poses)."""
    k_o, k_d = jax.random.split(key)
    lo, hi = data.origin_box[0], data.origin_box[1]
    centre = lo + (hi - lo) * jax.random.uniform(k_o, (n, 3))
    lo, hi = data.axis_box[0], data.axis_box[1]
    axis = lo + (hi - lo) * jax.random.uniform(k_d, (n, 3))
    up = jnp.broadcast_to(data.basis[2], (n, 3))
    return look_at(centre, axis, up)


def resolve_mode(mode: str, ndc: bool) -> str:
    """``"auto"`` -> ``"box"`` for forward-facing (NDC) scenes, else ``"sphere"``."""
    if mode not in MODES:
        raise ConfigError(f"pseudo_poses must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "box" if ndc else "sphere"
    return mode


def sample_pseudo_rays(data: PseudoCameraData, geom: RayGeometry, key: jax.Array, n: int,
                       mode: str) -> Rays:
    """``n`` rays, each through a uniformly random pixel of its own random pseudo camera.

    Args:
      data: the training camera distribution (:func:`pseudo_camera_data`).
      geom: ray geometry of the scene (near/far, NDC warp).
      key: PRNG key; n: number of rays (static); mode: ``"sphere"`` or ``"box"`` (static).
    Returns:
      :class:`~nerfkit.core.rays.Rays` with batch shape ``[n]`` (times drawn from the training
      times for dynamic scenes).
    """
    k_pose, k_cam, k_pix, k_t = jax.random.split(key, 4)
    if mode == "sphere":
        c2w = sample_sphere_poses(data, k_pose, n)
    elif mode == "box":
        c2w = sample_box_poses(data, k_pose, n)
    else:
        raise ConfigError(f"unknown pseudo pose mode {mode!r}: expected 'sphere' or 'box'")
    cam = jax.random.randint(k_cam, (n,), 0, data.intrinsics.shape[0])
    uv = jax.random.uniform(k_pix, (n, 2)) * data.size
    time = None
    if data.times is not None:
        time = data.times[jax.random.randint(k_t, (n,), 0, data.times.shape[0])]
    return build_rays(geom, c2w, uv[:, 0], uv[:, 1], data.intrinsics[cam], time)
