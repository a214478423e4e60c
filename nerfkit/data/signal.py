"""2D signals as scenes: a single image, or a video (a video file or a folder of frames).

A signal becomes an ordinary :class:`~nerfkit.data.scene.Scene` so that ray batching, rendering
and evaluation need nothing new: every frame is seen by an identity-pose camera whose intrinsics
(``fx = cx = W / 2``, ``fy = cy = H / 2``) send the centre of pixel ``(col, row)`` along the ray
direction ``(x, y, -1)`` with ``x = (col + 0.5) / (W / 2) - 1`` (right) and
``y = 1 - (row + 0.5) / (H / 2)`` (up), both in ``[-1, 1]``. Coordinate fields
(:mod:`nerfkit.models.signal`) read ``(x, y)`` from the direction and the frame time ``t`` in
``[0, 1]`` (frame ``k`` of ``N`` at ``k / (N - 1)``) from the ray.

Fitting a signal has no held-out data: every split (``train``, ``test``, ``all``) is the whole
signal, and evaluation measures the reconstruction.

Videos are decoded with imageio's FFMPEG plugin (imageio-ffmpeg); ``max_frames`` keeps the first
frames only (decoding stops there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from nerfkit.core.cameras import make_cameras
from nerfkit.data.io import IMAGE_EXTENSIONS, downscale_area, list_images, read_image_downscaled
from nerfkit.data.scene import Scene
from nerfkit.fileio import ffmpeg_subprocess
from nerfkit.errors import DataError

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
SPLITS = ("train", "test", "val", "all")


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def is_frame_folder(path: Path) -> bool:
    """A folder holding image files directly (and no other dataset's marker files)."""
    return path.is_dir() and any(p.is_file() and is_image_file(p) and not p.name.startswith(".")
                                 for p in path.iterdir())


def signal_scene(frames: np.ndarray, names: list[str], path: Path, split: str, fmt: str,
                 timed: bool, **metadata) -> Scene:
    """A :class:`Scene` of frames ``[N, H, W, C]`` (``C`` 3 or 4) seen by the signal cameras (see
    the module docstring); ``timed`` gives frame ``k`` the time ``k / (N - 1)``."""
    n, h, w = frames.shape[:3]
    c2w = np.broadcast_to(np.eye(4, dtype=np.float32)[:3], (n, 3, 4))
    cams = make_cameras(c2w, w / 2.0, h / 2.0, w, h, w / 2.0, h / 2.0)
    times = None
    if timed:
        times = (np.arange(n, dtype=np.float32) / max(n - 1, 1)).astype(np.float32)
    alphas = frames[..., 3:4] if frames.shape[-1] == 4 else None
    return Scene(images=np.ascontiguousarray(frames[..., :3]), cameras=cams, names=names,
                 near=0.0, far=1.0, alphas=alphas,
                 aabb=np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], np.float32),
                 white_background=False, times=times,
                 metadata={"format": fmt, "path": str(path), "split": split,
                           "signal": True, **metadata})


def _check_split(path: Path, split: str) -> None:
    if split not in SPLITS:
        raise DataError(path, f"unknown split {split!r} for a signal (image or video); every split "
                              f"({', '.join(SPLITS)}) is the whole signal")


def load_image_signal(root: str | os.PathLike, split: str = "train", downscale: int = 1) -> Scene:
    """One image file as a one-frame scene (no time)."""
    path = Path(root)
    _check_split(path, split)
    img, _ = read_image_downscaled(path, downscale)
    return signal_scene(img[None], [path.stem], path, split, "image", timed=False,
                        downscale=downscale)


def read_video_frames(path: str | os.PathLike, max_frames: Optional[int] = None) -> np.ndarray:
    """Decodes a video file to uint8 ``[N, H, W, 3]`` (the first ``max_frames`` frames).

    Raises:
      DataError: naming ``path``, if it is missing, cannot be decoded or has no frames.
    """
    import imageio.v3 as iio
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "video file not found" if not path.exists()
                        else "expected a video file, found a folder")
    if path.stat().st_size == 0:
        raise DataError(path, "video file is empty (0 bytes)")
    frames = []
    try:
        with ffmpeg_subprocess():
            for frame in iio.imiter(path, plugin="FFMPEG"):
                frames.append(np.asarray(frame))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except Exception as e:  # ffmpeg reports corrupt/unsupported input as OSError, RuntimeError...
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[-1] if lines else type(e).__name__
        raise DataError(path, f"cannot decode video (truncated, corrupt or unsupported format): "
                              f"{detail[:200]}") from e
    if not frames:
        raise DataError(path, "video has no decodable frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DataError(path, f"video frames change size ({sorted(shapes)})")
    video = np.stack(frames)
    if video.ndim == 3:
        video = video[..., None]
    if video.shape[-1] == 1:
        video = np.repeat(video, 3, axis=-1)
    return video[..., :3]


def load_video(root: str | os.PathLike, split: str = "train", downscale: int = 1,
               max_frames: Optional[int] = None) -> Scene:
    """A video file or a folder of frames (sorted by name) as a scene with per-frame times.

    ``max_frames`` keeps the first frames; ``downscale`` is an integer area downscale.
    """
    path = Path(root)
    _check_split(path, split)
    if max_frames is not None and max_frames < 1:
        raise DataError(path, f"--max-frames must be >= 1, got {max_frames}")
    if path.is_dir():
        files = list_images(path)[:max_frames]
        if not files:
            raise DataError(path, "frame folder holds no image files")
        frames, names = [], []
        for f in files:
            img, _ = read_image_downscaled(f, downscale)
            if frames and img.shape != frames[0].shape:
                raise DataError(f, f"frame of size {img.shape[1]}x{img.shape[0]} differs from "
                                   f"the first frame's {frames[0].shape[1]}x{frames[0].shape[0]}")
            frames.append(img)
            names.append(f.stem)
        video = np.stack(frames)
    else:
        raw = read_video_frames(path, max_frames)
        if downscale > 1 and (raw.shape[1] < downscale or raw.shape[2] < downscale):
            raise DataError(path, f"video of size {raw.shape[2]}x{raw.shape[1]} is smaller than "
                                  f"the downscale factor {downscale}")
        video = np.stack([downscale_area(f.astype(np.float32) / 255.0, downscale) for f in raw])
        names = [f"{i:04d}" for i in range(len(video))]
    return signal_scene(video.astype(np.float32), names, path, split, "video", timed=True,
                        downscale=downscale, num_frames=len(video))
