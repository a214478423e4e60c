"""COLMAP model -> nerfstudio ``transforms.json`` and ``sparse_pc.ply`` (numpy only).

Follows nerfstudio's ``process_data/colmap_utils.py`` (``parse_colmap_camera_params``,
``colmap_to_json``, ``create_ply_from_colmap``), the format its ``nerfstudio-data`` parser reads:

* intrinsics ``w h fl_x fl_y cx cy`` in pixels and distortion ``k1 k2 p1 p2`` (``camera_model``
  ``"OPENCV"``; SIMPLE_PINHOLE / PINHOLE / SIMPLE_RADIAL / RADIAL map onto it with zeros) or
  ``k1 k2 k3 k4`` (``"OPENCV_FISHEYE"``; SIMPLE_RADIAL_FISHEYE / RADIAL_FISHEYE map onto it),
  at the top level when every registered image shares one camera, else in every frame;
* per frame ``file_path`` (``"images/NAME"``), ``transform_matrix`` and ``colmap_im_id``;
  ``transform_matrix`` is the 4x4 camera-to-world matrix in the OpenGL camera convention (x right,
  y up, camera looks down -z: COLMAP's OpenCV camera with its y and z axes negated), in a world
  frame whose axes are COLMAP's permuted as ``(x, y, z) -> (x, z, -y)``;
* ``applied_transform``: that world permutation as a 3x4 matrix (world' = A @ [X; 1]);
* ``ply_file_path``: ``sparse_pc.ply``, the sparse points (float x y z, uchar red green blue) in
  the same transformed world frame.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from nerfkit.fileio import write_bytes_atomic, write_text_atomic

#: nerfstudio's world permutation: COLMAP world (x, y, z) -> (x, z, -y).
APPLIED_TRANSFORM = np.array([[1.0, 0.0, 0.0, 0.0],
                              [0.0, 0.0, 1.0, 0.0],
                              [0.0, -1.0, 0.0, 0.0]])

#: COLMAP camera models ``transforms.json`` can express, and the parameter names of each.
SUPPORTED_MODELS = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
    "OPENCV_FISHEYE": ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4"),
    "SIMPLE_RADIAL_FISHEYE": ("f", "cx", "cy", "k1"),
    "RADIAL_FISHEYE": ("f", "cx", "cy", "k1", "k2"),
}


def camera_fields(model: str, width: int, height: int, params: list[float]) -> dict[str, Any]:
    """nerfstudio's intrinsics fields for one COLMAP camera.

    Args:
      model: COLMAP model name (a key of :data:`SUPPORTED_MODELS`).
      width, height: image size in pixels.
      params: COLMAP's parameter vector for ``model`` (pixels for focal lengths and principal
        point, unitless distortion).
    Returns:
      ``{"w", "h", "fl_x", "fl_y", "cx", "cy", k1 k2 p1 p2 | k1 k2 k3 k4, "camera_model"}``.
    Raises:
      ValueError: a model not in :data:`SUPPORTED_MODELS`.
    """
    if model not in SUPPORTED_MODELS:
        raise ValueError(f"camera model {model} cannot be written to transforms.json "
                         f"(supported: {', '.join(SUPPORTED_MODELS)})")
    p = dict(zip(SUPPORTED_MODELS[model], (float(x) for x in params)))
    fx = p.get("fx", p.get("f"))
    fy = p.get("fy", p.get("f"))
    out: dict[str, Any] = {"w": int(width), "h": int(height), "fl_x": fx, "fl_y": fy,
                           "cx": p["cx"], "cy": p["cy"]}
    if "FISHEYE" in model:
        out.update(k1=p.get("k1", 0.0), k2=p.get("k2", 0.0), k3=p.get("k3", 0.0),
                   k4=p.get("k4", 0.0), camera_model="OPENCV_FISHEYE")
    else:
        out.update(k1=p.get("k1", 0.0), k2=p.get("k2", 0.0), p1=p.get("p1", 0.0),
                   p2=p.get("p2", 0.0), camera_model="OPENCV")
    return out


def camera_to_world_gl(cam_from_world: np.ndarray) -> np.ndarray:
    """COLMAP world-to-camera ``[3, 4]`` (OpenCV camera) -> nerfstudio ``transform_matrix`` [4, 4].

    Inverts the rigid transform, flips the camera's y and z axes (OpenCV -> OpenGL) and applies
    :data:`APPLIED_TRANSFORM` to the world frame.
    """
    m = np.asarray(cam_from_world, np.float64)
    r, t = m[:3, :3], m[:3, 3]
    c2w = np.eye(4)
    c2w[:3, :3] = r.T
    c2w[:3, 3] = -r.T @ t
    c2w[:3, 1:3] *= -1.0
    out = np.eye(4)
    out[:3] = APPLIED_TRANSFORM[:, :3] @ c2w[:3]
    return out


def build_transforms(export: dict[str, Any], ply_name: str = "sparse_pc.ply",
                     image_prefix: str = "images") -> dict[str, Any]:
    """The ``transforms.json`` content for a COLMAP model exported by ``colmap_worker``.

    Args:
      export: ``{"cameras": {id: {"model", "width", "height", "params"}}, "images": [{"image_id",
        "name", "camera_id", "cam_from_world" [3, 4]}]}`` (registered images only).
      ply_name: value of ``ply_file_path``.
      image_prefix: folder of ``file_path`` (``"images"`` -> ``"images/NAME"``).
    """
    images = sorted(export["images"], key=lambda im: im["name"])
    cams = {int(k): v for k, v in export["cameras"].items()}
    used = sorted({int(im["camera_id"]) for im in images})
    single = len(used) == 1
    out: dict[str, Any] = {}
    if single:
        c = cams[used[0]]
        out.update(camera_fields(c["model"], c["width"], c["height"], c["params"]))
    frames = []
    for im in images:
        frame: dict[str, Any] = {
            "file_path": f"{image_prefix}/{im['name']}",
            "transform_matrix": camera_to_world_gl(np.asarray(im["cam_from_world"])).tolist(),
            "colmap_im_id": int(im["image_id"]),
        }
        if not single:
            c = cams[int(im["camera_id"])]
            frame.update(camera_fields(c["model"], c["width"], c["height"], c["params"]))
        frames.append(frame)
    out["frames"] = frames
    out["applied_transform"] = APPLIED_TRANSFORM.tolist()
    out["ply_file_path"] = ply_name
    return out


def write_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """Writes a binary little-endian PLY point cloud atomically.

    Args:
      path: destination file.
      xyz: ``[N, 3]`` positions (written as float32).
      rgb: ``[N, 3]`` uint8 colours.
    """
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb, np.uint8).reshape(-1, 3)
    rec = np.empty(len(xyz), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                    ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rec["x"], rec["y"], rec["z"] = xyz.T
    rec["red"], rec["green"], rec["blue"] = rgb.T
    header = ("ply\nformat binary_little_endian 1.0\n"
              f"element vertex {len(xyz)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              "end_header\n")
    return write_bytes_atomic(path, header.encode("ascii") + rec.tobytes())


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``json.dump(obj, indent=4)`` to ``path`` atomically (nerfstudio's indentation)."""
    return write_text_atomic(path, json.dumps(obj, indent=4) + "\n")
