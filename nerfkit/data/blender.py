"""NeRF-Synthetic ("Blender") layout, also D-NeRF's (per-frame ``time``) and nerfkit's own scene.

Layout::

    root/transforms_{split}.json   {"camera_angle_x": float, "frames": [{"file_path": "./train/r_0",
                                     "transform_matrix": 4x4 camera-to-world, ["time": 0..1]}, ...],
                                    optional "near", "far", "aabb": [[x,y,z],[x,y,z]]}
    root/train/r_0.png ...         RGBA (or RGB) images

Poses are OpenGL camera-to-world matrices (camera looks down -z, +y up), the convention of
:mod:`nerfkit.core.cameras`. ``file_path`` may omit the extension (``.png`` is then appended).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from nerfkit.core.cameras import make_cameras
from nerfkit.data.io import (IMAGE_EXTENSIONS, check_downscale, check_rigid_pose,
                             load_images_parallel, read_image_downscaled, read_json,
                             stack_images)
from nerfkit.data.scene import Scene
from nerfkit.errors import DataError

DEFAULT_NEAR = 2.0
DEFAULT_FAR = 6.0
DEFAULT_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))


def available_splits(root: Path) -> list[str]:
    """Split names ``s`` for which ``root/transforms_{s}.json`` exists, sorted."""
    return sorted(p.name[len("transforms_"):-len(".json")] for p in root.glob("transforms_*.json"))


def load_blender(root: str | os.PathLike, split: str = "train", downscale: int = 1,
                 white_background: bool = True) -> Scene:
    """Loads one split of a Blender-layout dataset.

    Args:
      root: the dataset folder (holding ``transforms_{split}.json``).
      split: ``"train"``, ``"test"``, ``"val"``, ... (any ``transforms_{split}.json``).
      downscale: integer factor; images are area-averaged (premultiplied for RGBA, see
        :func:`~nerfkit.data.io.downscale_area`). Sizes not divisible by it are cropped at the
        bottom/right; the principal point stays where the full-resolution one was.
      white_background: recorded in :attr:`Scene.white_background` (the background RGBA images
        are composited onto at evaluation; NeRF-Synthetic convention is white).
    Returns:
      :class:`Scene` with straight RGB ``images [N,H,W,3]``, ``alphas [N,H,W,1]`` when the images
      have alpha, ``times [N]`` when frames carry ``time``; ``near``/``far``/``aabb`` from the JSON
      keys if present, else 2, 6 and ``[-1.5, 1.5]^3``. Intrinsics:
      ``focal = 0.5 W / tan(0.5 camera_angle_x)`` at full resolution, divided by ``downscale``.
    Raises:
      DataError: naming the offending file, for anything wrong with the dataset.
    """
    downscale = check_downscale(downscale)
    root = Path(root)
    if not root.exists():
        raise DataError(root, "dataset folder not found")
    if not root.is_dir():
        raise DataError(root, "dataset path is not a folder")
    json_path = root / f"transforms_{split}.json"
    if not json_path.is_file():
        splits = available_splits(root)
        if not splits:
            raise DataError(json_path, "not found, and there is no transforms_*.json in the folder "
                                       "(not a Blender-layout dataset)")
        raise DataError(json_path, f"unknown split {split!r}: no such file; available splits: "
                                   f"{', '.join(splits)}")
    meta = read_json(json_path)

    frames = meta.get("frames", None)
    if "frames" not in meta:
        raise DataError(json_path, "missing key 'frames'")
    if not isinstance(frames, list):
        raise DataError(json_path, f"'frames' must be a list, got {type(frames).__name__}")
    if not frames:
        raise DataError(json_path, "'frames' is empty: the split has no images")
    angle = _camera_angle(meta, json_path)
    near, far, aabb = _bounds(meta, json_path)

    poses, image_paths, names, times = [], [], [], []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise DataError(json_path, f"frame {i} must be an object, got {type(frame).__name__}")
        file_path = frame.get("file_path")
        if not isinstance(file_path, str) or not file_path:
            raise DataError(json_path, f"frame {i}: missing key 'file_path'")
        where = f"frame {i} ({file_path})"
        if "transform_matrix" not in frame:
            raise DataError(json_path, f"{where}: missing key 'transform_matrix'")
        poses.append(check_rigid_pose(frame["transform_matrix"], json_path, where))
        rel = Path(file_path)
        if rel.suffix.lower() not in IMAGE_EXTENSIONS:
            rel = rel.with_name(rel.name + ".png")
        image_paths.append(root / rel)
        names.append(rel.stem)
        if "time" in frame:
            t = frame["time"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) \
                    or not -1e-6 <= t <= 1 + 1e-6:
                raise DataError(json_path, f"{where}: 'time' must be a number in [0, 1], got {t!r}")
            times.append(min(max(float(t), 0.0), 1.0))
    if times and len(times) != len(frames):
        raise DataError(json_path, f"only {len(times)} of {len(frames)} frames have a 'time' key "
                                   "(a dynamic scene needs it on every frame)")

    def load(p: Path):
        return read_image_downscaled(p, downscale)

    loaded = load_images_parallel(image_paths, load)
    h0, w0 = loaded[0][1]
    for p, (_, (h, w)) in zip(image_paths, loaded):
        if (h, w) != (h0, w0):
            raise DataError(p, f"image size {w}x{h} differs from the first image "
                               f"{image_paths[0].name} ({w0}x{h0})")
    images, alphas = stack_images([img for img, _ in loaded])
    del loaded

    height, width = images.shape[1:3]
    focal = 0.5 * w0 / math.tan(0.5 * angle) / downscale
    cameras = make_cameras(np.stack(poses), focal, focal, width, height,
                           cx=0.5 * w0 / downscale, cy=0.5 * h0 / downscale)
    metadata = {
        "format": "blender",
        "path": str(root),
        "split": split,
        "downscale": downscale,
        "camera_angle_x": angle,
        "full_resolution": (int(w0), int(h0)),
        "cropped": (w0 % downscale != 0) or (h0 % downscale != 0),
        "dynamic": bool(times),
    }
    return Scene(images=images, cameras=cameras, names=names, near=near, far=far, alphas=alphas,
                 ndc=False, aabb=aabb, white_background=bool(white_background),
                 times=np.asarray(times, np.float32) if times else None, metadata=metadata)


def _camera_angle(meta: dict, path: Path) -> float:
    if "camera_angle_x" not in meta:
        raise DataError(path, "missing key 'camera_angle_x' (horizontal field of view in radians)")
    angle = meta["camera_angle_x"]
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not math.isfinite(angle) \
            or not 0.0 < angle < math.pi:
        raise DataError(path, f"'camera_angle_x' must be a number in (0, pi) radians, "
                              f"got {angle!r}")
    return float(angle)


def _bounds(meta: dict, path: Path) -> tuple[float, float, np.ndarray]:
    near, far = meta.get("near", DEFAULT_NEAR), meta.get("far", DEFAULT_FAR)
    for key, v in (("near", near), ("far", far)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise DataError(path, f"{key!r} must be a finite number >= 0, got {v!r}")
    if not near < far:
        raise DataError(path, f"'near' ({near}) must be smaller than 'far' ({far})")
    try:
        aabb = np.asarray(meta.get("aabb", DEFAULT_AABB), dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(path, "'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]]") from None
    if aabb.shape != (2, 3) or not np.all(np.isfinite(aabb)) or not np.all(aabb[0] < aabb[1]):
        raise DataError(path, f"'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with "
                              f"min < max, got {meta.get('aabb')!r}")
    return float(near), float(far), aabb
