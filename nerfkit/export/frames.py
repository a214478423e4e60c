"""Rendering a run's dataset views or a camera path to PNG frames and an MP4 video."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from nerfkit.data.io import write_image_atomic
from nerfkit.errors import NerfkitError
from nerfkit.fileio import atomic_path, ffmpeg_subprocess
from nerfkit.export.camera_paths import (CameraPath, load_camera_path, orbit_path,
                                         spiral_path)


def _depth_image(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    d = (np.asarray(depth)[..., :1] - near) / max(far - near, 1e-8)
    return np.repeat(np.clip(1.0 - d, 0.0, 1.0), 3, axis=-1)


def _views(renderer, scene, progress):
    """``(i, render)`` for every view of ``scene``, small views packed several per call."""
    group = renderer.views_per_call(scene)
    for g in range(0, len(scene), group):
        idx = list(range(g, min(g + group, len(scene))))
        for i, out in zip(idx, renderer.render_views(scene, idx)):
            yield i, out
            progress.advance()


def render_split(run, split: str, output: Path, depth: bool = False,
                 chunk: Optional[int] = None, fps: int = 25, console=None) -> int:
    """Renders every view of ``split``; writes ``output/<split>/<name>.png`` (for a video, also
    the reconstructed clip ``output/<split>.mp4`` at ``fps``). Returns the count. Progress
    (:class:`~nerfkit.engine.progress.RenderProgress`) goes to ``console`` (default: stderr)."""
    from nerfkit.engine.progress import RenderProgress
    scene = run.load_split(split)
    renderer = run.renderer(chunk)
    out_dir = Path(output) / split
    out_dir.mkdir(parents=True, exist_ok=True)
    video = scene.metadata.get("format") == "video"
    frames = []
    with RenderProgress(f"render {split}", len(scene), console) as prog:
        _write_views(_views(renderer, scene, prog), scene, out_dir, frames, video, depth, run)
    if frames:
        write_video(Path(output) / f"{split}.mp4", frames, fps)
    return len(scene)


def _write_views(views, scene, out_dir, frames, video, depth, run) -> None:
    for i, out in views:
        rgb = np.clip(out["rgb"], 0, 1)
        write_image_atomic(out_dir / f"{scene.names[i]}.png", rgb)
        if video:
            frames.append((rgb * 255 + 0.5).astype(np.uint8))
        if depth:
            write_image_atomic(out_dir / f"{scene.names[i]}_depth.png",
                               _depth_image(out["depth"], run.geom.near, run.geom.far))


def resolve_camera_path(run, spec: str, frames: int) -> CameraPath:
    """``orbit``, ``spiral`` or a JSON file -> :class:`CameraPath`. The orbit of an unbounded
    scene circles the origin (the centre of the capture's content) at the cameras' radius and
    height; other scenes circle the cameras' focus point."""
    c2w = np.asarray(run.scene_json["train_cameras"]["c2w"], np.float32)
    if spec == "orbit":
        return orbit_path(c2w, frames,
                          np.zeros(3) if getattr(run.info, "unbounded", False) else None)
    if spec == "spiral":
        return spiral_path(c2w, frames)
    return load_camera_path(spec, frames)


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Writes uint8 frames ``[H, W, 3]`` as H.264 MP4 (imageio-ffmpeg), atomically."""
    import imageio.v2 as imageio
    h, w = frames[0].shape[:2]
    # H.264 with yuv420p needs even sizes; pad by edge replication.
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    with atomic_path(path) as tmp, ffmpeg_subprocess():  # no partial video on any failure
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8,
                                macro_block_size=1, ffmpeg_log_level="error") as wr:
            for f in frames:
                wr.append_data(np.pad(f, pad, mode="edge"))


def render_camera_path(run, spec: str, output: Path, frames: int = 120, fps: int = 30,
                       depth: bool = False, chunk: Optional[int] = None,
                       console=None) -> Path:
    """Renders a camera path to ``output/frames/NNNN.png`` and ``output/video.mp4`` (progress to
    ``console``, default stderr)."""
    from nerfkit.engine.progress import RenderProgress
    path = resolve_camera_path(run, spec, frames)
    cams = run.scene_json["train_cameras"]
    width = int(path.width or cams["width"])
    height = int(path.height or cams["height"])
    base_intr = np.asarray(cams["intrinsics"][0], np.float32)
    scale = width / float(cams["width"])
    renderer = run.renderer(chunk)
    bg = np.ones(3, np.float32) if run.info.white_background else np.zeros(3, np.float32)
    out_dir = Path(output)
    frames_dir = out_dir / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    images = []
    with RenderProgress("render path", len(path.c2w), console) as prog:
        for i, c2w in enumerate(path.c2w):
            images.append(_render_path_frame(run, renderer, path, i, c2w, width, height,
                                             base_intr, scale, bg, frames_dir, depth))
            prog.advance()
    if not images:
        raise NerfkitError("camera path has no frames")
    video = out_dir / "video.mp4"
    write_video(video, images, path.fps or fps)
    return video


def _render_path_frame(run, renderer, path, i, c2w, width, height, base_intr, scale, bg,
                       frames_dir, depth) -> np.ndarray:
    """Renders and writes frame ``i`` of a camera path; returns it as uint8 ``[H, W, 3]``."""
    if path.fov_y is not None:
        f = 0.5 * height / math.tan(0.5 * math.radians(float(path.fov_y[i])))
        intr = np.array([f, f, width / 2, height / 2], np.float32)
    else:
        intr = np.array([base_intr[0] * scale, base_intr[1] * scale, width / 2, height / 2],
                        np.float32)
    t = None if path.times is None else float(path.times[i])
    if t is None and run.info.has_time:
        t = i / max(len(path.c2w) - 1, 1)
    out = renderer.render_camera(c2w, intr, width, height, bg, t)
    rgb = np.clip(out["rgb"], 0, 1)
    write_image_atomic(frames_dir / f"{i:04d}.png", rgb)
    if depth:
        write_image_atomic(frames_dir / f"{i:04d}_depth.png",
                           _depth_image(out["depth"], run.geom.near, run.geom.far))
    return (rgb * 255 + 0.5).astype(np.uint8)
