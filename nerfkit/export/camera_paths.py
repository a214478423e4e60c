"""Camera paths: orbit and spiral presets, and a JSON keyframe format interpolated smoothly.

Camera-path JSON (``nerfkit-camera-path/v1``)::

    {
      "format": "nerfkit-camera-path/v1",
      "width": 400, "height": 400,          # optional; default: the training image size
      "frames": 120,                        # output frames, spread evenly over the keyframes
      "fps": 30,                            # optional
      "loop": false,                        # optional; true closes the path back to the start
      "keyframes": [
        {"c2w": [[...], [...], [...]],      # 3x4 or 4x4 camera-to-world, OpenGL convention
         "fov_y": 40.0,                      # optional vertical field of view in degrees
         "time": 0.0},                       # optional, dynamic scenes, in [0, 1]
        ...
      ]
    }

Positions follow a centripetal Catmull-Rom spline through the keyframes, orientations a
spherical-linear interpolation of their quaternions, field of view and time a linear one.

nerfstudio's ``camera_path.json`` (what its viewer's render panel saves and ``ns-render
camera-path`` reads, ``nerfstudio/cameras/camera_paths.py: get_path_from_json``) is read too, and
written by nerfkit's live viewer (:func:`nerfstudio_camera_path`)::

    {"render_width": 640, "render_height": 480, "fps": 30, "seconds": 4.0,
     "camera_type": "perspective",
     "camera_path": [{"camera_to_world": [16 floats, row-major 4x4, OpenGL convention],
                      "fov": 50.0,            # vertical field of view, degrees
                      "aspect": 1.333,        # width / height
                      "render_time": 0.0}, ...],   # optional (all frames or none), in [0, 1]
     "keyframes": [...]}                      # the editor's keyframes; not needed to render

Its ``camera_path`` holds every output frame (no interpolation here). Coordinates: poses are in
the *run's scene coordinates* (what ``c2w`` in ``RUN/scene.json`` uses). A file written by
nerfstudio holds poses in nerfstudio's dataparser coordinates; for data read from a
``transforms.json`` nerfkit orients, centres and scales the poses the same way nerfstudio's
default parser does, but nothing checks that the two agree (``scene.json``'s
``transforms.world_transform`` maps the capture's coordinates to the run's).
"""

import json
import math
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from nerfkit.errors import DataError


class CameraPath(NamedTuple):
    """``c2w [F, 3, 4]``, per-frame vertical FOV in degrees ``[F]`` (or ``None`` to keep the
    training intrinsics), times ``[F]`` or ``None``, optional output size."""

    c2w: np.ndarray
    fov_y: Optional[np.ndarray] = None
    times: Optional[np.ndarray] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[int] = None


def look_at(eye, target, up) -> np.ndarray:
    """``[3, 4]`` camera-to-world matrix of a camera at ``eye`` looking at ``target`` (OpenGL)."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-8:  # looking along `up`: pick any perpendicular
        right = np.cross(np.array([1.0, 0.0, 0.0]) if abs(back[0]) < 0.9 else
                         np.array([0.0, 1.0, 0.0]), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    return np.stack([right, cam_up, back, eye], axis=1)


def _focus_point(c2w: np.ndarray) -> np.ndarray:
    """The point closest (least squares) to all optical axes of ``c2w [N,3,4]``."""
    origins = c2w[:, :3, 3]
    dirs = -c2w[:, :3, 2]
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    eye = np.eye(3)
    a = np.zeros((3, 3))
    b = np.zeros(3)
    for o, d in zip(origins, dirs):
        p = eye - np.outer(d, d)
        a += p
        b += p @ o
    return np.linalg.lstsq(a, b, rcond=None)[0]


def orbit_path(train_c2w: np.ndarray, frames: int, target=None) -> CameraPath:
    """A full circle around ``target`` (default: the training cameras' focus point), at the
    cameras' mean distance from it and mean height along their mean up direction, looking at it
    (360-degree scenes such as NeRF-Synthetic; unbounded captures pass the origin, the centre of
    the scene the loaders centred the poses on)."""
    c2w = np.asarray(train_c2w, np.float64)
    target = _focus_point(c2w) if target is None else np.asarray(target, np.float64)
    up = c2w[:, :3, 1].mean(0)
    up /= np.linalg.norm(up)
    rel = c2w[:, :3, 3] - target
    radius = float(np.linalg.norm(rel, axis=-1).mean())
    height = float((rel @ up).mean())
    ring = math.sqrt(max(radius ** 2 - height ** 2, 1e-6))
    a = rel[0] - (rel[0] @ up) * up
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    poses = []
    for i in range(frames):
        th = 2 * math.pi * i / frames
        eye = target + height * up + ring * (math.cos(th) * a + math.sin(th) * b)
        poses.append(look_at(eye, target, up))
    return CameraPath(np.stack(poses).astype(np.float32))


def spiral_path(train_c2w: np.ndarray, frames: int, rotations: float = 2.0,
                focus_depth: Optional[float] = None) -> CameraPath:
    """A spiral in front of forward-facing training cameras (LLFF), looking at a focus point.

    The spiral's radii are the 90th percentiles of the camera offsets from their mean in the mean
    camera's frame; the cameras look at a point ``focus_depth`` in front of the mean camera
    (default: where the optical axes come closest, clamped to a sensible range).
    """
    c2w = np.asarray(train_c2w, np.float64)
    center = c2w[:, :3, 3].mean(0)
    fwd = -c2w[:, :3, 2].mean(0)
    fwd /= np.linalg.norm(fwd)
    up = c2w[:, :3, 1].mean(0)
    up /= np.linalg.norm(up)
    avg = look_at(center, center + fwd, up)
    offsets = (c2w[:, :3, 3] - center) @ avg[:, :3]
    radii = np.percentile(np.abs(offsets), 90, axis=0)
    if focus_depth is None:
        focus_depth = float(np.clip((_focus_point(c2w) - center) @ fwd, 1.0, 100.0))
    target = center + focus_depth * fwd
    poses = []
    for i in range(frames):
        th = 2 * math.pi * rotations * i / frames
        local = np.array([math.cos(th), -math.sin(th), -math.sin(0.5 * th)]) * radii
        eye = center + avg[:, :3] @ local
        poses.append(look_at(eye, target, up))
    return CameraPath(np.stack(poses).astype(np.float32))


def _quat_from_matrix(r: np.ndarray) -> np.ndarray:
    w = math.sqrt(max(0.0, 1.0 + r[0, 0] + r[1, 1] + r[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + r[0, 0] - r[1, 1] - r[2, 2])) / 2, r[2, 1] - r[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] + r[1, 1] - r[2, 2])) / 2, r[0, 2] - r[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - r[0, 0] - r[1, 1] + r[2, 2])) / 2, r[1, 0] - r[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def _matrix_from_quat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    dot = float(q0 @ q1)
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    th = math.acos(dot)
    return (math.sin((1 - t) * th) * q0 + math.sin(t * th) * q1) / math.sin(th)


def _catmull_rom(p0, p1, p2, p3, t: float, alpha: float = 0.5) -> np.ndarray:
    """Centripetal Catmull-Rom point between ``p1`` and ``p2`` at ``t`` in ``[0, 1]``."""
    def tj(ti, a, b):
        return ti + max(float(np.linalg.norm(b - a)), 1e-9) ** alpha
    t0 = 0.0
    t1 = tj(t0, p0, p1)
    t2 = tj(t1, p1, p2)
    t3 = tj(t2, p2, p3)
    u = t1 + t * (t2 - t1)
    a1 = (t1 - u) / (t1 - t0) * p0 + (u - t0) / (t1 - t0) * p1
    a2 = (t2 - u) / (t2 - t1) * p1 + (u - t1) / (t2 - t1) * p2
    a3 = (t3 - u) / (t3 - t2) * p2 + (u - t2) / (t3 - t2) * p3
    b1 = (t2 - u) / (t2 - t0) * a1 + (u - t0) / (t2 - t0) * a2
    b2 = (t3 - u) / (t3 - t1) * a2 + (u - t1) / (t3 - t1) * a3
    return (t2 - u) / (t2 - t1) * b1 + (u - t1) / (t2 - t1) * b2


def interpolate_keyframes(c2w: np.ndarray, frames: int, fov_y=None, times=None,
                          loop: bool = False) -> CameraPath:
    """Smoothly interpolates ``K`` keyframes ``c2w [K,3,4]`` into ``frames`` poses."""
    c2w = np.asarray(c2w, np.float64)[:, :3, :4]
    k = len(c2w)
    if k == 1:
        return CameraPath(np.repeat(c2w, frames, 0).astype(np.float32),
                          None if fov_y is None else np.full(frames, fov_y[0]),
                          None if times is None else np.full(frames, times[0]))
    pos = c2w[:, :, 3]
    quats = [_quat_from_matrix(m[:, :3]) for m in c2w]
    segments = k if loop else k - 1
    out_c2w, out_fov, out_t = [], [], []
    for f in range(frames):
        s = f * segments / (frames if loop else max(frames - 1, 1))
        i = min(int(s), segments - 1)
        t = s - i
        idx = [(i - 1) % k if loop else max(i - 1, 0), i % k, (i + 1) % k,
               (i + 2) % k if loop else min(i + 2, k - 1)]
        p = [pos[j] for j in idx]
        if not loop:  # reflect end points so the spline is defined on the first/last segment
            if i == 0:
                p[0] = 2 * p[1] - p[2]
            if i + 2 > k - 1:
                p[3] = 2 * p[2] - p[1]
        eye = _catmull_rom(*p, t) if not np.allclose(p[1], p[2]) else p[1]
        rot = _matrix_from_quat(_slerp(quats[idx[1]], quats[idx[2]], t))
        out_c2w.append(np.concatenate([rot, eye[:, None]], 1))
        if fov_y is not None:
            out_fov.append((1 - t) * fov_y[idx[1]] + t * fov_y[idx[2]])
        if times is not None:
            out_t.append((1 - t) * times[idx[1]] + t * times[idx[2]])
    return CameraPath(np.stack(out_c2w).astype(np.float32),
                      None if fov_y is None else np.asarray(out_fov, np.float32),
                      None if times is None else np.asarray(out_t, np.float32))


def nerfstudio_camera_path(path: CameraPath, width: int, height: int, fps: float,
                           keyframes: Optional[list] = None) -> dict:
    """nerfstudio's ``camera_path.json`` content of ``path`` (``c2w [F,3,4]`` OpenGL,
    ``fov_y [F]`` degrees, required; ``times [F]`` optional) rendered at ``width x height``.
    ``keyframes`` (any JSON-able list) is stored as the editor's keyframes."""
    if path.fov_y is None:
        raise ValueError("a nerfstudio camera path needs a field of view per frame")
    frames = []
    for i, c2w in enumerate(np.asarray(path.c2w, np.float64)):
        m = np.eye(4)
        m[:3, :4] = c2w[:3, :4]
        fr = {"camera_to_world": [float(v) for v in m.reshape(-1)],
              "fov": float(path.fov_y[i]), "aspect": float(width) / float(height)}
        if path.times is not None:
            fr["render_time"] = float(path.times[i])
        frames.append(fr)
    return {"camera_type": "perspective", "render_width": int(width),
            "render_height": int(height), "fps": float(fps), "seconds": len(frames) / float(fps),
            "is_cycle": False, "smoothness_value": 0.5, "keyframes": keyframes or [],
            "camera_path": frames}


def _load_nerfstudio(path: Path, spec: dict) -> CameraPath:
    """A nerfstudio ``camera_path.json`` (see the module docstring) -> :class:`CameraPath`."""
    frames = spec["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise DataError(path, "'camera_path' must be a non-empty list of frames")
    if spec.get("camera_type", "perspective") != "perspective":
        raise DataError(path, f"camera_type {spec.get('camera_type')!r}: only 'perspective' "
                              "paths can be rendered")
    try:
        width, height = int(spec["render_width"]), int(spec["render_height"])
    except (KeyError, TypeError, ValueError):
        raise DataError(path, "nerfstudio camera path needs integer 'render_width' and "
                              "'render_height'") from None
    mats, fovs, times = [], [], []
    for i, fr in enumerate(frames):
        m = np.asarray(fr.get("camera_to_world") if isinstance(fr, dict) else None, np.float64)
        if m.size != 16 or not np.all(np.isfinite(m)):
            raise DataError(path, f"camera_path[{i}]: 'camera_to_world' must be 16 finite numbers")
        fov = fr.get("fov")
        if not isinstance(fov, (int, float)) or not 0 < fov < 180:
            raise DataError(path, f"camera_path[{i}]: 'fov' must be degrees in (0, 180)")
        mats.append(m.reshape(4, 4)[:3])
        fovs.append(float(fov))
        times.append(fr.get("render_time"))
    tms = None if any(t is None for t in times) else np.asarray(times, np.float32)
    fps = spec.get("fps")
    return CameraPath(np.stack(mats).astype(np.float32), np.asarray(fovs, np.float32), tms,
                      width, height, None if fps is None else int(round(float(fps))))


def load_camera_path(path: str | Path, default_frames: int = 120) -> CameraPath:
    """Reads a ``nerfkit-camera-path/v1`` JSON file or nerfstudio's ``camera_path.json`` (told
    apart by its ``camera_path`` list; see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "camera path file not found (or use 'orbit' / 'spiral')")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}")
    if isinstance(spec, dict) and "camera_path" in spec:
        return _load_nerfstudio(path, spec)
    kfs = spec.get("keyframes") if isinstance(spec, dict) else None
    if not kfs:
        raise DataError(path, "missing or empty 'keyframes' list")
    mats, fovs, times = [], [], []
    for i, kf in enumerate(kfs):
        if "c2w" not in kf:
            raise DataError(path, f"keyframe {i} has no 'c2w'")
        m = np.asarray(kf["c2w"], np.float64)
        if m.shape not in ((3, 4), (4, 4)) or not np.all(np.isfinite(m)):
            raise DataError(path, f"keyframe {i}: 'c2w' must be a finite 3x4 or 4x4 matrix")
        mats.append(m[:3])
        fovs.append(kf.get("fov_y"))
        times.append(kf.get("time"))
    fov = None if any(f is None for f in fovs) else np.asarray(fovs, np.float64)
    tms = None if any(t is None for t in times) else np.asarray(times, np.float64)
    frames = int(spec.get("frames", default_frames))
    cp = interpolate_keyframes(np.stack(mats), frames, fov, tms, bool(spec.get("loop", False)))
    return cp._replace(width=spec.get("width"), height=spec.get("height"), fps=spec.get("fps"))
