"""Video in: ``N`` evenly spaced frames, optionally the sharpest one of each window.

Frames are decoded with imageio's FFMPEG plugin (imageio-ffmpeg) in one streaming pass; the frame
count comes first from ``imageio_ffmpeg.count_frames_and_secs`` (an exact decode count). Frame ``k``
of ``N`` is index ``round(k (T - 1) / (N - 1))`` (``np.linspace(0, T - 1, N)``, as nerfstudio's
``convert_video_to_images`` spaces them). With ``sharpest``, the ``T`` frames are split into ``N``
contiguous windows (``[floor(k T / N), floor((k + 1) T / N))``) and each window contributes its
frame with the largest variance of the Laplacian of the luminance (Pech-Pacheco et al. 2000, the
blur measure nerfstudio and instant-ngp's ``colmap2nerf.py`` use for the same purpose).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from nerfkit.errors import DataError
from nerfkit.fileio import ffmpeg_subprocess


def evenly_spaced_indices(total: int, n: int) -> np.ndarray:
    """``min(n, total)`` distinct frame indices spread from 0 to ``total - 1``, ``[n]`` int64."""
    n = min(int(n), int(total))
    if n <= 0:
        return np.zeros((0,), np.int64)
    if n == 1:
        return np.zeros((1,), np.int64)
    return np.round(np.linspace(0, total - 1, n)).astype(np.int64)


def window_bounds(total: int, n: int) -> np.ndarray:
    """``[min(n, total) + 1]`` window edges: window ``k`` is ``[edges[k], edges[k + 1])``."""
    n = min(int(n), int(total))
    return (np.arange(n + 1, dtype=np.int64) * int(total)) // max(n, 1)


def laplacian_variance(image: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of an image's luminance (higher = sharper).

    Args:
      image: ``[H, W, C]`` or ``[H, W]``, uint8 or float (any range; only relative values matter
        between frames of one video).
    """
    img = np.asarray(image, np.float64)
    if img.ndim == 3:
        c = img.shape[-1]
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114]) if c >= 3 else img[..., 0]
    if img.shape[0] < 3 or img.shape[1] < 3:
        return 0.0
    lap = (img[:-2, 1:-1] + img[2:, 1:-1] + img[1:-1, :-2] + img[1:-1, 2:]
           - 4.0 * img[1:-1, 1:-1])
    return float(lap.var())


def select_frames(frames, total: int, n: int, sharpest: bool = False,
                  progress: Optional[Callable[[int], None]] = None
                  ) -> list[tuple[int, np.ndarray]]:
    """Picks frames from an iterator of ``[H, W, C]`` arrays in decode order.

    Args:
      frames: iterable of frames (index = position in the iteration).
      total: the number of frames ``T`` the iterable yields (extra frames are ignored; fewer
        leave the windows past the end empty).
      n: number of frames wanted.
      sharpest: pick each window's sharpest frame (:func:`laplacian_variance`) instead of the
        evenly spaced index.
      progress: called with the number of frames read so far.
    Returns:
      ``[(index, frame)]`` in index order, at most ``min(n, T)`` entries.
    """
    if sharpest:
        edges = window_bounds(total, n)
        best: dict[int, tuple[float, int, np.ndarray]] = {}
        for i, frame in enumerate(frames):
            if i >= total:
                break
            w = int(np.searchsorted(edges, i, side="right") - 1)
            s = laplacian_variance(frame)
            if w not in best or s > best[w][0]:
                best[w] = (s, i, np.array(frame))
            if progress is not None:
                progress(i + 1)
        return [(best[w][1], best[w][2]) for w in sorted(best)]
    wanted = set(int(i) for i in evenly_spaced_indices(total, n))
    last = max(wanted) if wanted else -1
    out = []
    for i, frame in enumerate(frames):
        if i > last:
            break
        if i in wanted:
            out.append((i, np.array(frame)))
        if progress is not None:
            progress(i + 1)
    return out


def count_frames(path: Path) -> int:
    """Number of decodable frames of a video file (:class:`DataError` naming it if none)."""
    import imageio_ffmpeg

    if not path.exists():
        raise DataError(path, "video file not found")
    if not path.is_file():
        raise DataError(path, "expected a video file (for a folder of photos use "
                              "`nerfkit process-data images`)")
    try:
        total, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    except Exception as e:  # RuntimeError / OSError from ffmpeg on unreadable input
        detail = str(e).strip().splitlines()
        raise DataError(path, "cannot read video (not a video, truncated or unsupported codec)"
                              + (f": {detail[-1][:200]}" if detail else "")) from e
    if total <= 0:
        raise DataError(path, "video has no decodable frames")
    return int(total)


def extract_frames(path: str | os.PathLike, out_dir: str | os.PathLike, num_frames: int,
                   sharpest: bool = False,
                   progress: Optional[Callable[[int, int], None]] = None
                   ) -> tuple[list[str], list[int]]:
    """Writes ``num_frames`` frames of a video as ``out_dir/frame_00001.png`` ... (8-bit PNG).

    Args:
      path: a video file imageio-ffmpeg can decode.
      out_dir: destination folder (created).
      num_frames: frames wanted (fewer if the video is shorter).
      sharpest: pick the sharpest frame of each window (module docstring).
      progress: ``(frames read, total frames)`` while decoding.
    Returns:
      ``(names, indices)``: the file names written and the source frame index of each.
    Raises:
      DataError: naming ``path``: missing, not a video, unreadable, no frames; ``num_frames`` < 1.
    """
    import imageio.v3 as iio

    from nerfkit.data.io import write_image_atomic

    path, out_dir = Path(path), Path(out_dir)
    if num_frames < 1:
        raise DataError(path, f"--num-frames must be at least 1, got {num_frames}")
    total = count_frames(path)
    try:
        with ffmpeg_subprocess():
            it = iio.imiter(path, plugin="FFMPEG")
            picked = select_frames(it, total, num_frames, sharpest,
                                   None if progress is None else (lambda k: progress(k, total)))
    except DataError:
        raise
    except Exception as e:
        detail = str(e).strip().splitlines()
        raise DataError(path, "cannot decode video" + (f": {detail[-1][:200]}" if detail else "")
                        ) from e
    if not picked:
        raise DataError(path, "video has no decodable frames")
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for k, (_, frame) in enumerate(picked):
        name = f"frame_{k + 1:05d}.png"
        arr = np.asarray(frame)
        if arr.ndim == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
        write_image_atomic(out_dir / name, arr)
        names.append(name)
    return names, [i for i, _ in picked]
