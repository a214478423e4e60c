"""Camera conventions between nerfkit and the viser viewer, and the viewer's render cameras.

nerfkit's ``c2w [3, 4]`` is OpenGL-style (:mod:`nerfkit.core.cameras`): the camera looks down
its local ``-z``, ``+y`` is up. viser (https://github.com/nerfstudio-project/viser, ``CameraHandle``)
describes a camera by ``position`` and a unit quaternion ``wxyz`` (scalar first) of
``R_world_camera`` in OpenCV's convention: ``+z`` forward, ``+y`` down, ``+x`` right; its ``fov``
is the vertical field of view in radians. The two rotations differ by a half turn about the
camera's ``x`` axis: ``R_cv = R_gl @ diag(1, -1, -1)``.
"""

from __future__ import annotations

import math

import numpy as np

#: ``R_cv = R_gl @ FLIP_YZ`` (and back: it is its own inverse).
FLIP_YZ = np.diag([1.0, -1.0, -1.0])


def quat_to_matrix(wxyz) -> np.ndarray:
    """``[3, 3]`` rotation of a (not necessarily normalised) quaternion ``(w, x, y, z)``."""
    w, x, y, z = np.asarray(wxyz, np.float64) / np.linalg.norm(wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(r) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` with ``w >= 0`` of a ``[3, 3]`` rotation (Shepperd's
    method: the largest of the four diagonal combinations picks the stable branch)."""
    r = np.asarray(r, np.float64)
    tr = np.trace(r)
    cands = [tr, r[0, 0], r[1, 1], r[2, 2]]
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif i == 1:
        s = 2.0 * math.sqrt(max(1.0 + r[0, 0] - r[1, 1] - r[2, 2], 1e-12))
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif i == 2:
        s = 2.0 * math.sqrt(max(1.0 + r[1, 1] - r[0, 0] - r[2, 2], 1e-12))
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * math.sqrt(max(1.0 + r[2, 2] - r[0, 0] - r[1, 1], 1e-12))
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def c2w_from_viser(wxyz, position) -> np.ndarray:
    """nerfkit's OpenGL ``c2w [3, 4]`` of a viser camera (OpenCV ``wxyz [4]``, ``position [3]``)."""
    rot = quat_to_matrix(wxyz) @ FLIP_YZ
    return np.concatenate([rot, np.asarray(position, np.float64).reshape(3, 1)], 1)


def viser_from_c2w(c2w) -> tuple[np.ndarray, np.ndarray]:
    """``(wxyz [4], position [3])`` of viser's camera for nerfkit's OpenGL ``c2w [3|4, 4]``."""
    c2w = np.asarray(c2w, np.float64)
    return matrix_to_quat(c2w[:3, :3] @ FLIP_YZ), c2w[:3, 3].copy()


def view_size(aspect: float, max_side: int) -> tuple[int, int]:
    """``(width, height)`` in pixels of a render with ``aspect = width / height`` whose longer
    side is ``max_side``."""
    if aspect >= 1.0:
        return int(max_side), max(1, int(round(max_side / aspect)))
    return max(1, int(round(max_side * aspect))), int(max_side)


def view_intrinsics(fov_y: float, width: int, height: int) -> np.ndarray:
    """Pinhole ``[fx, fy, cx, cy]`` (pixels, square pixels, centred) of a ``width x height``
    image whose vertical field of view is ``fov_y`` radians (viser's and three.js' ``fov``)."""
    f = 0.5 * height / math.tan(0.5 * fov_y)
    return np.array([f, f, width / 2.0, height / 2.0], np.float32)


def fov_y_of(intrinsics, height: int) -> float:
    """Vertical field of view (radians) of pinhole ``intrinsics [4]`` for an image ``height``
    pixels tall."""
    return 2.0 * math.atan(0.5 * height / float(intrinsics[1]))
