"""LLFF forward-facing scenes (``poses_bounds.npy`` + ``images_{factor}/``), as NeRF prepares them.

``poses_bounds.npy`` is ``[N, 17]``: per image a ``3x5`` matrix flattened row-major (rotation
columns in [down, right, back] order, camera position, and ``[height, width, focal]`` of the
full-resolution images) followed by the near and far depth bounds of the content that camera sees.
Rows correspond to the image files sorted by name.

The processing follows Mildenhall et al., "NeRF" (ECCV 2020), ``load_llff.py``: rotate to the
OpenGL [right, up, back] convention, scale the world so the nearest bound is ``1 / bd_factor``,
and recentre on the average pose, so the cameras look down ``-z`` from near the origin and NDC
rays (near plane ``z = -1``) cover the content.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from nerfkit.core.cameras import make_cameras
from nerfkit.data.io import (check_downscale, list_images, load_images_parallel,
                             read_image_downscaled)
from nerfkit.data.scene import Scene
from nerfkit.errors import ConfigError, DataError

SPLITS = ("train", "test", "val", "all")


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def view_matrix(z: np.ndarray, up: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``[3, 4]`` camera-to-world with backward axis ``z``, up roughly ``up``, centre ``pos``."""
    z = _normalize(z)
    x = _normalize(np.cross(up, z))
    y = _normalize(np.cross(z, x))
    return np.stack([x, y, z, pos], axis=1)


def average_pose(poses: np.ndarray) -> np.ndarray:
    """``[3, 4]`` average of ``[N, 3, 4]`` OpenGL poses: mean centre, summed back/up axes."""
    center = poses[:, :3, 3].mean(axis=0)
    return view_matrix(poses[:, :3, 2].sum(axis=0), poses[:, :3, 1].sum(axis=0), center)


def recenter_poses(poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expresses ``[N, 3, 4]`` poses in the frame of their average pose.

    Returns ``(recentred [N, 3, 4], world_from_old [4, 4])``: the rigid transform applied to every
    pose (``new = world_from_old @ old``), so other world-space data can follow.
    """
    avg = np.eye(4)
    avg[:3, :4] = average_pose(poses)
    world_from_old = np.linalg.inv(avg)
    bottom = np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(poses), 1, 4))
    full = np.concatenate([poses[:, :3, :4], bottom], axis=1)
    return (world_from_old @ full)[:, :3, :4], world_from_old


def spiral_path(poses: Any, bounds: Optional[np.ndarray] = None, n_frames: int = 120,
                n_rotations: float = 2.0, z_rate: float = 0.5,
                radius_percentile: float = 90.0) -> np.ndarray:
    """NeRF's forward-facing spiral camera path (``render_path_spiral``).

    Args:
      poses: ``[N, 3, 4]`` camera-to-world poses (after rescaling and recentring), or a
        :class:`Scene` (its ``metadata['bounds']`` is then used when ``bounds`` is ``None``).
      bounds: ``[N, 2]`` (or ``[2]``) near/far content depths in the same units.
      n_frames: number of poses; n_rotations: turns of the spiral; z_rate: its z oscillation rate.
    Returns:
      ``[n_frames, 3, 4]`` float32 poses spiralling around the average pose at radii given by the
      ``radius_percentile`` of the camera offsets, all looking at a point at the focus depth
      ``1 / (0.25 / close + 0.75 / far)`` (``close = 0.9 min bound``, ``far = 5 max bound``).
    """
    if isinstance(poses, Scene):
        if bounds is None:
            bounds = poses.metadata.get("bounds")
        poses = poses.cameras.c2w
    poses = np.asarray(poses, np.float64)[:, :3, :4]
    if bounds is None:
        raise ValueError("spiral_path needs the scene's near/far bounds")
    bounds = np.asarray(bounds, np.float64)
    c2w = average_pose(poses)
    up = _normalize(poses[:, :3, 1].sum(axis=0))
    close_depth, inf_depth = bounds.min() * 0.9, bounds.max() * 5.0
    dt = 0.75
    focus = 1.0 / ((1.0 - dt) / close_depth + dt / inf_depth)
    offsets = poses[:, :3, 3] - c2w[:, 3]
    # NeRF takes percentiles of |camera positions| after recentring (the average centre is then
    # the origin); using offsets from the average centre makes this hold for any input frame.
    rads = np.append(np.percentile(np.abs(offsets @ c2w[:, :3]), radius_percentile, axis=0), 1.0)
    out = []
    for theta in np.linspace(0.0, 2.0 * np.pi * n_rotations, n_frames + 1)[:-1]:
        c = c2w @ (np.array([np.cos(theta), -np.sin(theta), -np.sin(theta * z_rate), 1.0]) * rads)
        z = _normalize(c - c2w @ np.array([0.0, 0.0, -focus, 1.0]))
        out.append(view_matrix(z, up, c))
    return np.asarray(out, np.float32)


def _frustum_aabb(c2w: np.ndarray, fx: float, fy: float, cx: float, cy: float, width: int,
                  height: int, depth: float) -> np.ndarray:
    """``[2, 3]`` box around every camera centre and its view frustum out to z-depth ``depth``."""
    u = np.array([0.0, width, 0.0, width])
    v = np.array([0.0, 0.0, height, height])
    corners = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones(4)], axis=-1) * depth  # [4, 3]
    world = np.einsum("nij,kj->nki", c2w[:, :3, :3], corners) + c2w[:, None, :3, 3]
    pts = np.concatenate([world.reshape(-1, 3), c2w[:, :3, 3]], axis=0)
    return np.stack([pts.min(axis=0), pts.max(axis=0)]).astype(np.float32)


def _image_folder(root: Path, factor: int) -> tuple[Path, int]:
    """The folder to read and the extra downscale still to apply to its images."""
    preferred = root / (f"images_{factor}" if factor > 1 else "images")
    if preferred.is_dir():
        return preferred, 1
    # Fall back to the largest available pre-scaled folder whose factor divides ``factor``.
    for k in sorted((k for k in range(1, factor) if factor % k == 0), reverse=True):
        folder = root / (f"images_{k}" if k > 1 else "images")
        if folder.is_dir():
            return folder, factor // k
    present = sorted((p.name for p in root.iterdir()
                      if p.is_dir() and re.fullmatch(r"images(_\d+)?", p.name)),
                     key=lambda name: int(name[7:] or 1))
    hint = " (nor a folder to downscale from)" if factor > 1 else ""
    factors = [name[7:] or "1" for name in present]
    raise DataError(root, f"image folder {preferred.name}/ not found{hint}; image folders present: "
                          f"{', '.join(present) or 'none'}"
                          + (f" (use a downscale factor that is a multiple of "
                             f"{' or '.join(factors)})" if factors else ""))


def _split_indices(n: int, split: str, holdout: int, root: Path) -> np.ndarray:
    if split not in SPLITS:
        raise DataError(root, f"unknown split {split!r} for an LLFF dataset; available splits: "
                              f"{', '.join(SPLITS)}")
    idx = np.arange(n)
    if split == "all":
        return idx
    test = idx % holdout == 0 if holdout > 0 else np.zeros(n, bool)
    chosen = idx[test] if split in ("test", "val") else idx[~test]
    if chosen.size == 0:
        raise DataError(root, f"split {split!r} is empty ({n} images, holdout={holdout})")
    return chosen


def ndc_aabb(c2w: np.ndarray, focal: float, cx: float, cy: float, width: int, height: int,
             near_plane: float = 1.0, margin: float = 0.02) -> np.ndarray:
    """The box ``[2, 3]`` in NDC that holds every ray of every camera ``c2w [N, 3, 4]``.

    NDC is defined by one camera (the recentred average pose); the others see past its frustum,
    so their border rays leave ``[-1, 1]`` in x and y (on fern 10-20% of a training image's
    pixels at the far plane: scenery the field could not hold, which capped training PSNR near
    21 dB). NDC rays are straight, so each ray's x and y extremes are at ``t = 0`` and ``t = 1``;
    the box takes them over the border pixels of every camera (a pinhole projection sends the
    inside of the image inside its border), widened by ``margin`` of its size, and ``z`` spans
    ``[-1, 1]``.
    """
    from nerfkit.core.cameras import camera_rays, ndc_rays
    u = np.concatenate([np.arange(width) + 0.5, np.full(height, width - 0.5),
                        np.arange(width) + 0.5, np.full(height, 0.5)])
    v = np.concatenate([np.full(width, 0.5), np.arange(height) + 0.5,
                        np.full(width, height - 0.5), np.arange(height) + 0.5])
    c2w = np.asarray(c2w, np.float32)[:, None]                          # [N, 1, 3, 4]
    rays = camera_rays(c2w, u[None].astype(np.float32), v[None].astype(np.float32), focal, focal,
                       cx, cy, 0.0, 1.0)
    o_ndc, d_ndc = (np.asarray(a, np.float64) for a in ndc_rays(
        rays.origins, rays.directions, focal, width, height, near_plane))
    pts = np.concatenate([o_ndc, o_ndc + d_ndc]).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), -1)]
    lo, hi = pts.min(0), pts.max(0)
    pad = margin * (hi - lo)
    lo, hi = np.minimum(lo - pad, -1.0), np.maximum(hi + pad, 1.0)
    lo[2], hi[2] = -1.0, 1.0
    return np.stack([lo, hi]).astype(np.float32)


def load_llff(root: str | os.PathLike, split: str = "train", factor: int = 8, holdout: int = 8,
              ndc: bool = True, recenter: bool = True, bd_factor: Optional[float] = 0.75) -> Scene:
    """Loads one split of an LLFF forward-facing scene.

    Args:
      root: folder holding ``poses_bounds.npy`` and ``images_{factor}/`` (or ``images/``, which is
        then area-downscaled by ``factor`` in memory, cropping sizes that are not divisible).
      split: ``"train"`` (every image but each ``holdout``-th), ``"test"`` (images
        ``i % holdout == 0``; ``"val"`` is the same), or ``"all"``.
      factor: image downscale factor relative to the full-resolution images.
      holdout: test-view spacing; ``0`` puts every view in ``train``.
      ndc: forward-facing NDC parametrisation (NeRF's LLFF default).
      recenter: express poses in the frame of the average pose.
      bd_factor: scale the world so the smallest near bound becomes ``1 / bd_factor``
        (``None``: no rescaling).
    Returns:
      :class:`Scene` with RGB ``images [N, H, W, 3]`` sorted by file name, OpenGL poses, focal
      scaled to the loaded image size. With ``ndc``: ``near, far = 0, 1``, ``aabb`` the NDC box that
      holds every camera's rays (:func:`ndc_aabb`; ``z`` in ``[-1, 1]``, ``x, y`` wider than
      ``[-1, 1]``) and ``metadata['ndc'] = {focal, width, height, near_plane}`` (the arguments of
      :func:`nerfkit.core.cameras.ndc_rays`). Without: ``near = 0.9 * min bound``,
      ``far = max bound`` and ``aabb`` the box around the camera centres and their frustums out to
      ``far``. ``metadata`` also holds ``bounds [N, 2]`` (scaled), ``scale``, ``world_from_llff``
      ``[4, 4]`` (the recentring), ``render_poses_spiral [120, 3, 4]`` (:func:`spiral_path` of all
      views) and ``indices`` (the split's view indices).
    Raises:
      DataError: naming the offending file, for anything wrong with the dataset.
    """
    factor = check_downscale(factor)
    if isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)) or holdout < 0:
        raise ConfigError(f"holdout must be an integer >= 0, got {holdout!r}")
    if bd_factor is not None and not bd_factor > 0:
        raise ConfigError(f"bd_factor must be > 0 or None, got {bd_factor!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found" if not root.exists() else "not a folder")
    pb_path = root / "poses_bounds.npy"
    if not pb_path.is_file():
        raise DataError(pb_path, "not found (an LLFF dataset needs poses_bounds.npy)")
    try:
        pb = np.load(pb_path, allow_pickle=False)
    except Exception as e:  # ValueError, OSError, EOFError, UnpicklingError
        raise DataError(pb_path, f"cannot read .npy array (corrupt or not a numpy file): {e}") \
            from None
    if pb.ndim != 2 or pb.shape[1] != 17 or pb.shape[0] == 0:
        raise DataError(pb_path, f"wrong shape {list(pb.shape)}: expected [N, 17] (a flattened 3x5 "
                                 f"pose + near, far bounds per image)")
    if not np.issubdtype(pb.dtype, np.number):
        raise DataError(pb_path, f"expected a numeric array, got dtype {pb.dtype}")
    pb = pb.astype(np.float64)
    bad = np.where(~np.all(np.isfinite(pb), axis=1))[0]
    if bad.size:
        raise DataError(pb_path, f"pose/bounds of row(s) {bad[:10].tolist()} contain NaN or Inf")
    n = pb.shape[0]
    poses = pb[:, :15].reshape(n, 3, 5)
    bounds = pb[:, 15:17].copy()
    if np.any(bounds[:, 0] <= 0) or np.any(bounds[:, 1] <= bounds[:, 0]):
        rows = np.where((bounds[:, 0] <= 0) | (bounds[:, 1] <= bounds[:, 0]))[0]
        raise DataError(pb_path, f"bounds of row(s) {rows[:10].tolist()} are not 0 < near < far")
    hwf = poses[0, :, 4]
    if np.any(hwf <= 0):
        raise DataError(pb_path, f"height, width, focal must be positive, got {hwf.tolist()}")
    rot = poses[:, :, :3]
    err = np.max(np.abs(np.einsum("nji,njk->nik", rot, rot) - np.eye(3)), axis=(1, 2))
    if np.any(err > 1e-3):
        rows = np.where(err > 1e-3)[0]
        raise DataError(pb_path, f"pose(s) of row(s) {rows[:10].tolist()} are not rigid (rotation "
                                 f"not orthonormal, max |R^T R - I| = {err.max():.3g})")

    folder, extra = _image_folder(root, factor)
    files = list_images(folder)
    if len(files) != n:
        raise DataError(folder, f"mismatch between poses and images: {len(files)} images in "
                                f"{folder.name}/ but {n} poses in poses_bounds.npy")
    indices = _split_indices(n, split, int(holdout), root)

    def load(p: Path):
        img, src = read_image_downscaled(p, extra)
        return img[..., :3], src

    sel_files = [files[i] for i in indices]
    loaded = load_images_parallel(sel_files, load)
    src_h, src_w = loaded[0][1]
    for p, (_, (h, w)) in zip(sel_files, loaded):
        if (h, w) != (src_h, src_w):
            raise DataError(p, f"image size {w}x{h} differs from the first image "
                               f"{sel_files[0].name} ({src_w}x{src_h})")
    images = np.stack([img for img, _ in loaded])
    del loaded
    height, width = images.shape[1:3]

    # Intrinsics for the images actually loaded: poses_bounds.npy describes the full-resolution
    # ones. One focal for both axes (NDC needs it); a cropped fallback downscale keeps the pixel
    # pitch and the full-image principal point.
    h_full, w_full, focal_full = hwf
    if abs(src_h / h_full - src_w / w_full) > 0.02 * src_w / w_full:
        raise DataError(sel_files[0], f"image size {src_w}x{src_h} does not match the aspect ratio "
                                      f"of the {int(w_full)}x{int(h_full)} images that "
                                      f"poses_bounds.npy describes")
    sx = src_w / w_full / extra
    fx = fy = focal_full * sx
    cx, cy = 0.5 * src_w / extra, 0.5 * src_h / extra

    # [down, right, back] -> [right, up, back]
    c2w = np.concatenate([poses[:, :, 1:2], -poses[:, :, 0:1], poses[:, :, 2:4]], axis=2)
    scale = 1.0 if bd_factor is None else 1.0 / (bounds.min() * bd_factor)
    c2w[:, :, 3] *= scale
    bounds *= scale
    world_from_llff = np.diag([scale, scale, scale, 1.0])
    if recenter:
        c2w, recentre = recenter_poses(c2w)
        world_from_llff = recentre @ world_from_llff
    spiral = spiral_path(c2w, bounds)

    sel = c2w[indices]
    cameras = make_cameras(sel, fx, fy, width, height, cx=cx, cy=cy)
    metadata = {
        "format": "llff",
        "path": str(root),
        "split": split,
        "downscale": factor,
        "image_folder": folder.name,
        "indices": indices.tolist(),
        "bounds": bounds[indices].astype(np.float32),
        "scale": float(scale),
        "world_from_llff": world_from_llff.astype(np.float32),
        "render_poses_spiral": spiral,
    }
    if ndc:
        near, far = 0.0, 1.0
        aabb = ndc_aabb(c2w, fx, cx, cy, width, height)
        metadata["ndc"] = {"focal": float(fx), "width": int(width), "height": int(height),
                           "near_plane": 1.0}
    else:
        near, far = 0.9 * float(bounds.min()), float(bounds.max())
        aabb = _frustum_aabb(c2w, fx, fy, cx, cy, width, height, far)
    return Scene(images=images, cameras=cameras, names=[p.stem for p in sel_files], near=near,
                 far=far, alphas=None, ndc=bool(ndc), aabb=aabb, white_background=False,
                 times=None, metadata=metadata)
