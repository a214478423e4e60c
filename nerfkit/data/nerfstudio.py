"""nerfstudio / instant-ngp captures: one ``transforms.json`` beside the images.

Format (nerfstudio's ``NerfstudioDataParser``, ``nerfstudio/data/dataparsers/
nerfstudio_dataparser.py``; instant-ngp's ``scripts/colmap2nerf.py`` writes the same keys)::

    {"camera_model": "OPENCV",                      # PINHOLE | OPENCV | OPENCV_FISHEYE
     "fl_x": 1100.0, "fl_y": 1100.0, "cx": 400.0, "cy": 266.5, "w": 800, "h": 533,
     "k1": 0.01, "k2": 0.0, "k3": 0.0, "k4": 0.0, "p1": 0.0, "p2": 0.0,
     "frames": [{"file_path": "images/frame_00001.jpg",
                 "transform_matrix": 4x4 camera-to-world (OpenGL), ...}, ...],
     optional: "camera_angle_x"/"camera_angle_y" (instead of fl_x/fl_y), "train_filenames",
     "val_filenames", "test_filenames", "applied_transform" (3x4), "applied_scale",
     "ply_file_path", "orientation_override", "aabb_scale", "is_fisheye" (instant-ngp)}

Intrinsics and distortion may be global or per frame (a frame's own value wins); they are given at
full resolution, and ``w``/``h`` default to the image file's size. Distortion follows nerfstudio:
``[k1, k2, k3, k4, p1, p2]``, radial-tangential for PINHOLE/OPENCV (PINHOLE must have none) and
the Kannala-Brandt fisheye for OPENCV_FISHEYE (``p1 = p2 = 0``). Without a ``camera_model`` the
camera is OPENCV if any coefficient is non-zero, else PINHOLE; instant-ngp's ``is_fisheye: true``
without coefficients is the equidistant OPENCV_FISHEYE.

Frames are sorted by file path (as nerfstudio does). Splits come from ``{split}_filenames`` where
present (``val`` and ``test`` stand in for each other when only one is given), else every 8th
image is held out (LLFF / mip-NeRF 360 convention): ``test`` = ``val`` = frames ``i % 8 == 0``.

Poses are oriented, centred and scaled over *all* frames with
:func:`nerfkit.data.poses.orient_and_center_poses` (``orientation_override`` may ask for
``"none"``), so every split shares one model space. As nerfstudio's parser does with its
``dataparser_transform``, ``metadata["world_transform"]`` maps the *original* capture frame to the
model: ``T_model_from_file @ applied_transform`` (``applied_transform``: what ``ns-process-data``
applied to COLMAP's world to write the file). ``metadata["file_transform"]`` maps the file's own
frame (its ``transform_matrix`` and its ``ply_file_path`` points) to the model.

Every key is accounted for: the ones above are used; ``colmap_im_id`` and ``sharpness`` (frame)
are kept in ``metadata``; anything else gives one warning per key naming the file (e.g.
``mask_path``, ``depth_file_path``, instant-ngp's ``scale``/``offset``). Values nerfkit cannot use
(another camera model, ``orientation_override: pca``, non-numeric intrinsics...) are a
:class:`~nerfkit.errors.DataError`.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from nerfkit.core.cameras import make_cameras
from nerfkit.data.io import (check_downscale, check_rigid_pose, image_size, load_images_parallel,
                             read_image, read_image_downscaled, read_json, resample_image,
                             stack_images)
from nerfkit.data.poses import orient_and_center_poses
from nerfkit.data.scene import Scene
from nerfkit.errors import ConfigError, DataError

TRANSFORMS = "transforms.json"
CAMERA_MODELS = ("PINHOLE", "OPENCV", "OPENCV_FISHEYE")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h") + DISTORTION_KEYS
SPLITS = ("train", "val", "test", "all")

#: Real captures: near/far in model units (cameras lie in [-1, 1]^3 after scaling) and the inner,
#: uncontracted region.
CAPTURE_NEAR = 0.05
CAPTURE_FAR = 1000.0
CAPTURE_AABB = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))

_TOP_KEYS = set(INTRINSIC_KEYS) | {
    "frames", "camera_model", "camera_angle_x", "camera_angle_y", "train_filenames",
    "val_filenames", "test_filenames", "aabb_scale", "applied_transform", "applied_scale",
    "ply_file_path", "orientation_override", "is_fisheye"}
_FRAME_KEYS = set(INTRINSIC_KEYS) | {"file_path", "transform_matrix", "colmap_im_id",
                                     "sharpness", "camera_angle_x", "camera_angle_y"}
_IGNORED_WHY = {
    "scale": "nerfkit orients, centres and scales the poses itself",
    "offset": "nerfkit orients, centres and scales the poses itself",
    "mask_path": "masks are not supported yet",
    "depth_file_path": "depth maps are not supported yet",
    "enable_depth_loading": "depth maps are not supported yet",
    "integer_depth_scale": "depth maps are not supported yet",
}


def check_holdout(holdout: Any) -> int:
    """``holdout`` as an int; :class:`ConfigError` unless it is an integer >= 0."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)) or holdout < 0:
        raise ConfigError(f"holdout must be an integer >= 0, got {holdout!r}")
    return int(holdout)


def _warn_ignored(path: Path, key: str, count: Optional[int] = None) -> None:
    where = "" if count is None else f" (in {count} frame{'s' if count != 1 else ''})"
    why = _IGNORED_WHY.get(key, "nerfkit does not use it")
    warnings.warn(f"{path}: key {key!r}{where} is ignored: {why}", stacklevel=3)


def _number(path: Path, where: str, key: str, value: Any, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, f"{where}{key!r} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise DataError(path, f"{where}{key!r} must be > 0, got {value!r}")
    return float(value)


def _size(path: Path, where: str, key: str, value: Any) -> int:
    v = _number(path, where, key, value, positive=True)
    if v != int(v):
        raise DataError(path, f"{where}{key!r} must be a whole number of pixels, got {value!r}")
    return int(v)


def load_nerfstudio(root: str | os.PathLike, split: str = "train", downscale: int = 1,
                    holdout: int = 8, orientation: Optional[str] = None,
                    center: str = "poses") -> Scene:
    """Loads one split of a nerfstudio / instant-ngp capture (see the module docstring).

    Args:
      root: the folder holding ``transforms.json`` (or the file itself).
      split: ``"train"``, ``"val"``, ``"test"`` or ``"all"``.
      downscale: integer image downscale; ``images_{downscale}/<file name>`` (nerfstudio's
        layout) is read when it holds every image of the split, else the images are
        area-downscaled in memory.
      holdout: test-view spacing when the file has no split lists (0: every frame in train).
      orientation: ``"up"`` or ``"none"``; default the file's ``orientation_override``, else
        ``"up"``.
      center: ``"poses"`` or ``"none"``.
    Returns:
      :class:`Scene` from :func:`build_capture_scene`; ``metadata`` also holds ``aabb_scale``,
      ``applied_transform`` (``[4, 4]`` list), ``ply_file_path`` (absolute), ``colmap_im_ids``
      and ``sharpness`` when the file has them.
    Raises:
      DataError: naming the file, for anything wrong with the capture.
    """
    downscale = check_downscale(downscale)
    holdout = check_holdout(holdout)
    root = Path(root)
    if root.is_file() and root.suffix == ".json":
        json_path, root = root, root.parent
    else:
        json_path = root / TRANSFORMS
    if not json_path.is_file():
        raise DataError(json_path, "not found (a nerfstudio capture needs transforms.json)")
    meta = read_json(json_path)
    for key in sorted(set(meta) - _TOP_KEYS):
        _warn_ignored(json_path, key)

    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(json_path, "missing key 'frames'" if "frames" not in meta else
                        "'frames' must be a non-empty list")
    for i, fr in enumerate(frames):
        if not isinstance(fr, dict):
            raise DataError(json_path, f"frame {i} must be an object, got {type(fr).__name__}")
        if not isinstance(fr.get("file_path"), str) or not fr["file_path"]:
            raise DataError(json_path, f"frame {i}: missing key 'file_path'")
    unknown_frame_keys: dict[str, int] = {}
    for fr in frames:
        for key in set(fr) - _FRAME_KEYS:
            unknown_frame_keys[key] = unknown_frame_keys.get(key, 0) + 1
    for key in sorted(unknown_frame_keys):
        _warn_ignored(json_path, key, unknown_frame_keys[key])

    order = sorted(range(len(frames)), key=lambda i: frames[i]["file_path"])
    frames = [frames[i] for i in order]
    rel = [os.path.normpath(fr["file_path"]) for fr in frames]
    seen: dict[str, int] = {}
    for i, r in enumerate(rel):
        if r in seen:
            raise DataError(json_path, f"frames {seen[r]} and {i} both use {r!r}")
        seen[r] = i

    model = meta.get("camera_model")
    if model is not None and model not in CAMERA_MODELS:
        raise DataError(json_path, f"unsupported camera_model {model!r} (nerfkit renders "
                                   f"{', '.join(CAMERA_MODELS)})")
    fisheye = meta.get("is_fisheye", False)
    if not isinstance(fisheye, bool):
        raise DataError(json_path, f"'is_fisheye' must be true or false, got {fisheye!r}")

    poses, fx, fy, cx, cy, sizes, dist = [], [], [], [], [], [], []
    for i, fr in enumerate(frames):
        where = f"frame {fr['file_path']}: "
        if "transform_matrix" not in fr:
            raise DataError(json_path, f"{where}missing key 'transform_matrix'")
        poses.append(check_rigid_pose(fr["transform_matrix"], json_path, where.rstrip(": ")))

        def get(key, positive=False):
            for src, w in ((fr, where), (meta, "")):
                if key in src:
                    return _number(json_path, w, key, src[key], positive)
            return None

        w = h = None
        for key in ("w", "h"):
            src = fr if key in fr else meta
            if key in src:
                v = _size(json_path, where if src is fr else "", key, src[key])
                w, h = (v, h) if key == "w" else (w, v)
        sizes.append((w, h))
        fl_x, fl_y = get("fl_x", True), get("fl_y", True)
        ax, ay = get("camera_angle_x", True), get("camera_angle_y", True)
        fx.append(fl_x if fl_x is not None else (None if ax is None else ("angle", ax)))
        fy.append(fl_y if fl_y is not None else (None if ay is None else ("angle", ay)))
        cx.append(get("cx"))
        cy.append(get("cy"))
        dist.append([get(k) or 0.0 for k in DISTORTION_KEYS])
        if fx[-1] is None:
            raise DataError(json_path, f"{where}no focal length: expected 'fl_x' or "
                                       f"'camera_angle_x' (globally or in the frame)")
    dist = np.asarray(dist, np.float64)

    if model is None:
        if fisheye:
            if np.any(dist != 0):
                raise DataError(json_path, "'is_fisheye' with distortion coefficients is "
                                           "instant-ngp's own lens model, not supported; give "
                                           "camera_model OPENCV_FISHEYE with k1-k4")
            model = "OPENCV_FISHEYE"
        else:
            model = "OPENCV" if np.any(dist != 0) else "PINHOLE"
    elif fisheye and model != "OPENCV_FISHEYE":
        raise DataError(json_path, f"'is_fisheye' is true but camera_model is {model}")
    if model == "PINHOLE" and np.any(dist != 0):
        k = DISTORTION_KEYS[int(np.argwhere(np.any(dist != 0, axis=0))[0, 0])]
        raise DataError(json_path, f"camera_model PINHOLE but {k!r} is non-zero: set "
                                   f"camera_model to OPENCV (or OPENCV_FISHEYE)")
    if model == "OPENCV_FISHEYE" and np.any(dist[:, 4:] != 0):
        raise DataError(json_path, "camera_model OPENCV_FISHEYE takes k1-k4 only: 'p1'/'p2' "
                                   "must be 0")

    # Sizes missing from the file come from the image files (upright, as they will be read).
    paths = [root / r for r in rel]
    for i, (w, h) in enumerate(sizes):
        if w is None or h is None:
            hh, ww = image_size(_existing(paths[i], json_path))
            sizes[i] = (w or ww, h or hh)

    def focal(v, extent):
        if isinstance(v, tuple):
            return 0.5 * extent / math.tan(0.5 * v[1])
        return v

    fxs = np.array([focal(v, s[0]) for v, s in zip(fx, sizes)])
    fys = np.array([fxs[i] if v is None else focal(v, sizes[i][1]) for i, v in enumerate(fy)])
    cxs = np.array([0.5 * s[0] if v is None else v for v, s in zip(cx, sizes)])
    cys = np.array([0.5 * s[1] if v is None else v for v, s in zip(cy, sizes)])

    split_lists = None
    lists = {s: meta[f"{s}_filenames"] for s in ("train", "val", "test")
             if f"{s}_filenames" in meta}
    if lists:
        split_lists = {}
        for s, names in lists.items():
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DataError(json_path, f"'{s}_filenames' must be a list of file paths")
            norm = [os.path.normpath(n) for n in names]
            missing = [n for n in norm if n not in seen]
            if missing:
                raise DataError(json_path, f"'{s}_filenames' lists {len(missing)} file(s) that "
                                           f"no frame has, e.g. {missing[0]!r}")
            split_lists[s] = set(norm)

    orient = orientation
    if orient is None:
        orient = meta.get("orientation_override", "up")
        if orient not in ("up", "none"):
            raise DataError(json_path, f"unsupported orientation_override {orient!r} (nerfkit "
                                       f"supports 'up' and 'none')")

    capture_to_file = np.eye(4)
    extra: dict[str, Any] = {"transforms_file": str(json_path)}
    if "applied_transform" in meta:
        a = check_rigid_pose(meta["applied_transform"], json_path, "applied_transform")
        capture_to_file[:3, :4] = a
        extra["applied_transform"] = capture_to_file.tolist()
    if "applied_scale" in meta:
        s = _number(json_path, "", "applied_scale", meta["applied_scale"], positive=True)
        if s != 1.0:
            raise DataError(json_path, f"unsupported applied_scale {s} (only 1 is supported)")
    if "aabb_scale" in meta:
        extra["aabb_scale"] = _number(json_path, "", "aabb_scale", meta["aabb_scale"], True)
    if "ply_file_path" in meta:
        ply = meta["ply_file_path"]
        if not isinstance(ply, str) or not ply:
            raise DataError(json_path, f"'ply_file_path' must be a path, got {ply!r}")
        if not (root / ply).is_file():
            warnings.warn(f"{json_path}: ply_file_path {ply!r} not found; no sparse points",
                          stacklevel=2)
        else:
            extra["ply_file_path"] = str((root / ply).absolute())
    if any("colmap_im_id" in fr for fr in frames):
        extra["colmap_im_ids"] = [fr.get("colmap_im_id") for fr in frames]
    if any("sharpness" in fr for fr in frames):
        extra["sharpness"] = [fr.get("sharpness") for fr in frames]

    prescaled = [root / f"images_{downscale}" / Path(r).name for r in rel] \
        if downscale > 1 else None
    return build_capture_scene(
        fmt="nerfstudio", root=root, source=json_path, split=split, downscale=downscale,
        holdout=holdout, image_paths=paths, rel_names=rel, c2w=np.asarray(poses), fx=fxs,
        fy=fys, cx=cxs, cy=cys, sizes=sizes, distortion=dist, models=[model] * len(frames),
        split_lists=split_lists, prescaled_paths=prescaled, orientation=orient, center=center,
        capture_to_file=capture_to_file, metadata=extra)


def _existing(path: Path, source: Path) -> Path:
    if not path.is_file():
        raise DataError(path, f"image file not found (listed in {source.name})"
                        if not path.exists() else f"expected an image file (listed in "
                                                  f"{source.name}), found a folder")
    return path


def _split_indices(n: int, split: str, holdout: int, rel_names: Sequence[str],
                   split_lists: Optional[dict], source: Path) -> np.ndarray:
    if split not in SPLITS:
        raise DataError(source, f"unknown split {split!r}; available splits: {', '.join(SPLITS)}")
    idx = np.arange(n)
    if split == "all":
        return idx
    if split_lists:
        key = split
        if key not in split_lists and key in ("val", "test"):
            key = "test" if key == "val" else "val"
        if key not in split_lists:
            raise DataError(source, f"the file lists {', '.join(sorted(split_lists))} "
                                    f"file names but none for split {split!r}")
        chosen = idx[[r in split_lists[key] for r in rel_names]]
    else:
        test = idx % holdout == 0 if holdout > 0 else np.zeros(n, bool)
        chosen = idx[test] if split in ("test", "val") else idx[~test]
    if chosen.size == 0:
        raise DataError(source, f"split {split!r} is empty ({n} images"
                                + (")" if split_lists else f", holdout={holdout})"))
    return chosen


def build_capture_scene(*, fmt: str, root: Path, source: Path, split: str, downscale: int,
                        holdout: int, image_paths: Sequence[Path], rel_names: Sequence[str],
                        c2w: np.ndarray, fx: np.ndarray, fy: np.ndarray, cx: np.ndarray,
                        cy: np.ndarray, sizes: Sequence[tuple], distortion: np.ndarray,
                        models: Sequence[str], split_lists: Optional[dict] = None,
                        prescaled_paths: Optional[Sequence[Path]] = None,
                        orientation: str = "up", center: str = "poses",
                        capture_to_file: Optional[np.ndarray] = None,
                        metadata: Optional[dict] = None) -> Scene:
    """The shared tail of the real-capture loaders (:func:`load_nerfstudio`,
    :func:`nerfkit.data.colmap.load_colmap`): normalise poses, pick the split, load the images,
    check them, scale the intrinsics.

    Args (``N`` = every frame of the capture, in name order):
      c2w: ``[N, 3, 4]`` OpenGL camera-to-world poses in the file's frame.
      fx, fy, cx, cy: ``[N]`` full-resolution intrinsics in pixels; sizes: ``N`` ``(w, h)``.
      distortion: ``[N, 6]`` (k1, k2, k3, k4, p1, p2); models: ``N`` camera model names.
      prescaled_paths: ``N`` paths of pre-downscaled copies (used when all of the split exist).
      capture_to_file: ``[4, 4]`` mapping the original capture frame to the file's frame.
    Returns:
      :class:`Scene` with ``unbounded=True``, ``near``/``far`` :data:`CAPTURE_NEAR` /
      :data:`CAPTURE_FAR`, ``aabb`` :data:`CAPTURE_AABB`, black background, RGB ``images``
      (``alphas`` when the files have alpha), per-camera intrinsics for the loaded size, and
      ``metadata``: ``format``, ``path``, ``split``, ``downscale``, ``indices``, ``image_folder``,
      ``full_resolution`` ``(w, h)``, ``camera_model`` (str), ``distortion`` (``[n, 6]``
      float32 numpy, nerfstudio order), ``world_transform`` (``[4, 4]`` list: model = T @
      capture, scale included), ``file_transform`` (``[4, 4]`` list: model = F @ file frame),
      ``scene_scale`` (model units per capture unit) and the caller's ``metadata``.
    """
    n = len(image_paths)
    sizes = [(int(s[0]), int(s[1])) for s in sizes]
    # Cameras of several sizes (e.g. two phones): every image is resampled to the most common
    # size, and its intrinsics scaled by the same factors, exact for pinhole and OpenCV models
    # (their distortion acts on normalised coordinates), pixel centres at +0.5 as in COLMAP.
    counts = {sz: sizes.count(sz) for sz in dict.fromkeys(sizes)}
    full_w, full_h = max(counts, key=counts.get)          # the first of the most common
    odd = [i for i in range(n) if sizes[i] != (full_w, full_h)]
    if odd:
        k = odd[0]
        warnings.warn(f"{source}: {len(odd)} of {n} images are not {full_w}x{full_h} (e.g. "
                      f"{rel_names[k]}, {sizes[k][0]}x{sizes[k][1]}); they are resampled to the "
                      f"common size, their intrinsics scaled to match", stacklevel=3)
    kinds = set(models)
    if "OPENCV_FISHEYE" in kinds and len(kinds) > 1:
        raise DataError(source, f"mixed camera models {sorted(kinds)}: fisheye and perspective "
                                f"cameras in one capture are not supported")
    model = "OPENCV_FISHEYE" if "OPENCV_FISHEYE" in kinds else \
        ("OPENCV" if "OPENCV" in kinds else "PINHOLE")

    try:
        norm = orient_and_center_poses(c2w, orientation, center)
    except ValueError as e:
        raise DataError(source, f"cannot normalise the camera poses: {e}") from None
    idx = _split_indices(n, split, holdout, rel_names, split_lists, source)

    use_prescaled = prescaled_paths is not None and all(
        Path(prescaled_paths[i]).is_file() for i in idx)
    if prescaled_paths is not None and not use_prescaled:
        folder = Path(prescaled_paths[idx[0]]).parent
        if folder.is_dir():
            warnings.warn(f"{folder}: does not hold every image of the split; downscaling the "
                          f"full-resolution images by {downscale} in memory instead", stacklevel=3)
    is_odd = [sizes[i] != (full_w, full_h) for i in idx]
    # Resampled images start from their full-resolution file (one exact scale per axis).
    files = [Path(prescaled_paths[i]) if use_prescaled and not o else Path(image_paths[i])
             for i, o in zip(idx, is_odd)]
    for p in files:
        _existing(p, source)
    extra_factor = 1 if use_prescaled else downscale

    odd_files = {p for p, o in zip(files, is_odd) if o}

    def load(p: Path):
        if p in odd_files:                      # resampled below, from full resolution
            return read_image(p), None
        return read_image_downscaled(p, extra_factor)

    loaded = load_images_parallel(files, load)
    for p, i, o, (img, got) in zip(files, idx, is_odd, loaded):
        w_i, h_i = sizes[i]
        if o:
            h, w = img.shape[:2]
            if (w, h) != (w_i, h_i):
                raise DataError(p, f"image is {w}x{h} but {source.name} says {w_i}x{h_i}")
        elif use_prescaled:
            h, w = got
            if abs(w - full_w / downscale) > 1 or abs(h - full_h / downscale) > 1:
                raise DataError(p, f"image is {w}x{h}, expected about {full_w / downscale:g}x"
                                   f"{full_h / downscale:g} (1/{downscale} of {full_w}x{full_h})")
        elif (got[1], got[0]) != (full_w, full_h):
            raise DataError(p, f"image is {got[1]}x{got[0]} but {source.name} says "
                               f"{full_w}x{full_h}")
    common = [img.shape[:2] for (img, _), o in zip(loaded, is_odd) if not o]
    height, width = common[0] if common else (full_h // downscale, full_w // downscale)
    for p, o, (img, _) in zip(files, is_odd, loaded):
        if not o and img.shape[:2] != (height, width):   # images_N/ copies rounded differently
            raise DataError(p, f"image is {img.shape[1]}x{img.shape[0]} but the other images "
                               f"of its size in {p.parent.name}/ are {width}x{height}")
    # images_N/ hold size (H // N, W // N) or a rounded one; either way the intrinsics scale by
    # exactly 1/N, as nerfstudio's dataparser and process-data do. A resampled image's full
    # extent maps onto the common one: its intrinsics scale by width / w_i and height / h_i.
    sx = np.array([width / sizes[i][0] if o else 1.0 / downscale for i, o in zip(idx, is_odd)])
    sy = np.array([height / sizes[i][1] if o else 1.0 / downscale for i, o in zip(idx, is_odd)])
    images, alphas = stack_images([resample_image(img, height, width) if o else img
                                   for (img, _), o in zip(loaded, is_odd)])
    del loaded
    # Distortion coefficients act on normalised coordinates: the same at every resolution.
    dist = np.asarray(distortion, np.float32)[idx]
    distorted = model != "PINHOLE" and bool(np.any(dist != 0))
    cameras = make_cameras(norm.poses[idx], fx[idx] * sx, fy[idx] * sy, width, height,
                           cx=cx[idx] * sx, cy=cy[idx] * sy,
                           distortion=dist if distorted else None,
                           camera_model=model if distorted else None)
    c2f = np.eye(4) if capture_to_file is None else np.asarray(capture_to_file, np.float64)
    meta = {
        "format": fmt,
        "path": str(root),
        "split": split,
        "downscale": downscale,
        "indices": idx.tolist(),
        "image_folder": str(files[0].parent),
        "full_resolution": (int(full_w), int(full_h)),
        "camera_model": model,
        "distortion": np.asarray(distortion, np.float32)[idx],
        "world_transform": (norm.transform @ c2f).tolist(),
        "file_transform": norm.transform.tolist(),
        "scene_scale": float(norm.scale),
        **(metadata or {}),
    }
    return Scene(images=images, cameras=cameras, names=[Path(r).stem for r in
                                                        (rel_names[i] for i in idx)],
                 near=CAPTURE_NEAR, far=CAPTURE_FAR, alphas=alphas, ndc=False,
                 aabb=np.array(CAPTURE_AABB, np.float32), white_background=False, times=None,
                 unbounded=True, metadata=meta)
