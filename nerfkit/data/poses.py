"""Orienting, centring and scaling captured camera poses into the model's space.

Structure-from-motion poses come in an arbitrary frame (COLMAP's first camera, any scale). As
nerfstudio's ``auto_orient_and_center_poses`` (``nerfstudio/cameras/camera_utils.py``; method
``"up"``, centre ``"poses"``) followed by its data parser's ``auto_scale_poses``, this module

1. rotates the world so that the mean of the cameras' up vectors (their ``+y`` axes, OpenGL
   convention) becomes ``+z``,
2. translates it so that the mean camera position is the origin,
3. scales it uniformly so that the largest absolute camera coordinate is 1 (every camera then
   lies in the cube ``[-1, 1]^3``).

The result is one similarity transform ``T`` (``4 x 4``, scale included): a capture point ``p``
(homogeneous ``[4]``) is ``T @ p`` in model coordinates, and a camera-to-world pose ``P`` becomes
``T @ P`` with its rotation columns renormalised (divided by the scale), so rotations stay
orthonormal. Render paths, meshes and point clouds made in model space map back with
``inv(T)``.
"""

from typing import NamedTuple

import numpy as np


class Normalization(NamedTuple):
    """Result of :func:`orient_and_center_poses`.

    Attributes:
      poses: ``[N, 3, 4]`` float64 camera-to-world poses in model coordinates (OpenGL, orthonormal
        rotations).
      transform: ``[4, 4]`` float64 similarity mapping capture coordinates to model coordinates:
        ``model = transform @ [x, y, z, 1]``; equals ``diag(s, s, s, 1) @ rigid``.
      rigid: ``[4, 4]`` float64 the rotation and translation alone (before the scale).
      scale: the uniform scale ``s`` (model units per capture unit).
    """

    poses: np.ndarray
    transform: np.ndarray
    rigid: np.ndarray
    scale: float


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[3, 3]`` proper rotation taking the direction of ``a [3]`` to that of ``b [3]``.

    The shortest-arc rotation (axis ``a x b``, Rodrigues' formula); for opposite vectors a
    half-turn about an axis perpendicular to ``a``.
    """
    a = np.asarray(a, np.float64) / np.linalg.norm(a)
    b = np.asarray(b, np.float64) / np.linalg.norm(b)
    v = np.cross(a, b)
    c = float(np.dot(a, b))
    s = float(np.linalg.norm(v))
    if s < 1e-12:
        if c > 0:
            return np.eye(3)
        # Half-turn about any axis perpendicular to a.
        helper = np.eye(3)[int(np.argmin(np.abs(a)))]
        axis = np.cross(a, helper)
        axis /= np.linalg.norm(axis)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    k = v / s
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * kx + (1.0 - c) * (kx @ kx)


def orient_and_center_poses(poses: np.ndarray, method: str = "up", center: str = "poses",
                            auto_scale: bool = True) -> Normalization:
    """Orients, centres and scales camera-to-world poses (see the module docstring).

    Args:
      poses: ``[N, 3, 4]`` or ``[N, 4, 4]`` camera-to-world matrices (OpenGL: camera ``+y`` up,
        looking down ``-z``), capture units.
      method: ``"up"`` (mean camera up vector -> ``+z``) or ``"none"`` (no rotation).
      center: ``"poses"`` (mean camera position -> origin) or ``"none"``.
      auto_scale: scale so that ``max |camera coordinate| = 1`` (else scale 1).
    Returns:
      :class:`Normalization` (new poses, the ``[4, 4]`` capture-to-model transform, its rigid
      part and the scale).
    Raises:
      ValueError: unknown ``method``/``center``, no poses, cameras whose up vectors cancel out,
        or cameras that all sit at one point (nothing to scale by).
    """
    p = np.asarray(poses, np.float64)
    if p.ndim != 3 or p.shape[1:] not in ((3, 4), (4, 4)) or p.shape[0] == 0:
        raise ValueError(f"poses must be [N, 3, 4] or [N, 4, 4] with N >= 1, got {p.shape}")
    p = p[:, :3, :4]
    if method == "up":
        up = p[:, :3, 1].mean(axis=0)
        norm = float(np.linalg.norm(up))
        if not norm > 1e-8:
            raise ValueError("the cameras' up vectors cancel out: no mean up direction")
        rot = rotation_between(up / norm, np.array([0.0, 0.0, 1.0]))
    elif method == "none":
        rot = np.eye(3)
    else:
        raise ValueError(f"unknown orientation method {method!r} (expected 'up' or 'none')")
    if center == "poses":
        origin = p[:, :3, 3].mean(axis=0)
    elif center == "none":
        origin = np.zeros(3)
    else:
        raise ValueError(f"unknown centre method {center!r} (expected 'poses' or 'none')")
    rigid = np.eye(4)
    rigid[:3, :3] = rot
    rigid[:3, 3] = -rot @ origin
    bottom = np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(p), 1, 4))
    moved = (rigid @ np.concatenate([p, bottom], axis=1))[:, :3, :4]
    scale = 1.0
    if auto_scale:
        extent = float(np.max(np.abs(moved[:, :3, 3])))
        if not extent > 0:
            raise ValueError("every camera sits at the same position: cannot scale the scene")
        scale = 1.0 / extent
    moved[:, :3, 3] *= scale
    transform = np.diag([scale, scale, scale, 1.0]) @ rigid
    return Normalization(moved, transform, rigid, scale)


def apply_transform_to_poses(transform: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Applies a similarity ``transform [4, 4]`` to camera-to-world ``poses [N, 3|4, 4]``.

    Positions map as points; rotations are ``R_T @ R`` with ``R_T`` the transform's rotation
    (its ``3 x 3`` block divided by its uniform scale). Returns ``[N, 3, 4]`` float64.
    """
    t = np.asarray(transform, np.float64)
    p = np.asarray(poses, np.float64)[:, :3, :4]
    lin = t[:3, :3]
    s = float(np.cbrt(np.linalg.det(lin)))
    out = np.empty_like(p)
    out[:, :, :3] = (lin / s) @ p[:, :, :3]
    out[:, :, 3] = p[:, :, 3] @ lin.T + t[:3, 3]
    return out


def transform_points(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points [..., 3]`` mapped by a ``[4, 4]`` (or ``[3, 4]``) affine ``transform``."""
    t = np.asarray(transform, np.float64)
    return np.asarray(points, np.float64) @ t[:3, :3].T + t[:3, 3]
