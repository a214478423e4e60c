"""Geometry out of a trained radiance field: meshes (marching cubes), point clouds, cameras.

Marching cubes is scikit-image's (Lewiner et al. 2003), files are written by trimesh (PLY, GLB,
OBJ by extension); nerfkit only samples its fields.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nerfkit.engine.evaluate import evenly_spaced_views
from nerfkit.errors import NerfkitError
from nerfkit.fileio import atomic_path


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise NerfkitError(f"mesh and point-cloud export need '{module}': "
                           "pip install 'nerfkit[export]'") from e


def _model_fn(run, name: str):
    graphdef = run.graphdef

    def fn(params, buffers, *args):
        return getattr(nnx.merge(graphdef, params, buffers), name)(*args)

    return jax.jit(fn)


def density_grid(run, resolution: int = 256, aabb=None, chunk: int = 1 << 16) -> np.ndarray:
    """Densities ``[R, R, R]`` at the vertices of a regular grid over ``aabb`` (default: the
    scene's box), indexed ``[ix, iy, iz]``."""
    aabb = np.asarray(run.info.aabb if aabb is None else aabb, np.float32)
    axes = [np.linspace(aabb[0, i], aabb[1, i], resolution, dtype=np.float32) for i in range(3)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    fn = _model_fn(run, "density")
    out = np.empty(len(pts), np.float32)
    for s in range(0, len(pts), chunk):
        piece = pts[s:s + chunk]
        m = len(piece)
        piece = np.pad(piece, ((0, chunk - m), (0, 0)), mode="edge")
        out[s:s + m] = np.asarray(fn(run.params, run.buffers, jnp.asarray(piece)))[:m]
    return out.reshape(resolution, resolution, resolution)


def extract_mesh(run, resolution: int = 256, threshold: float = 10.0, aabb=None,
                 chunk: int = 1 << 16):
    """Marching cubes on the density field at ``threshold``; vertex colours are the field's
    radiance seen from outside along the surface normal. Returns a ``trimesh.Trimesh``."""
    trimesh = _require("trimesh")
    _require("skimage")
    from skimage import measure

    aabb = np.asarray(run.info.aabb if aabb is None else aabb, np.float32)
    grid = density_grid(run, resolution, aabb, chunk)
    if not (grid.min() < threshold < grid.max()):
        raise NerfkitError(
            f"mesh: density threshold {threshold} is outside the field's range "
            f"[{grid.min():.3g}, {grid.max():.3g}] over the box; pass --threshold")
    spacing = (aabb[1] - aabb[0]) / (resolution - 1)
    verts, faces, normals, _ = measure.marching_cubes(grid, level=threshold,
                                                      spacing=tuple(spacing.tolist()))
    verts = verts + aabb[0]
    # skimage's normals point towards decreasing values (out of the dense region).
    dirs = -normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-8)
    fn = _model_fn(run, "radiance")
    colors = np.empty((len(verts), 3), np.float32)
    for s in range(0, len(verts), chunk):
        v, d = verts[s:s + chunk], dirs[s:s + chunk]
        m = len(v)
        v = np.pad(v, ((0, chunk - m), (0, 0)), mode="edge").astype(np.float32)
        d = np.pad(d, ((0, chunk - m), (0, 0)), mode="edge").astype(np.float32)
        # Sample the colour slightly outside the surface, where the field is seen from.
        _, rgb = fn(run.params, run.buffers, jnp.asarray(v - 0.5 * spacing.min() * d),
                    jnp.asarray(d))
        colors[s:s + m] = np.asarray(rgb)[:m]
    rgba = np.concatenate([np.clip(colors, 0, 1), np.ones((len(colors), 1), np.float32)], -1)
    return trimesh.Trimesh(vertices=verts, faces=faces[:, ::-1],
                           vertex_colors=(rgba * 255).round().astype(np.uint8), process=False)


def extract_pointcloud(run, split: str = "train", max_views: int = 20, min_acc: float = 0.5,
                       stride: int = 1):
    """Points at the expected depth of rendered pixels whose opacity exceeds ``min_acc``, with
    their rendered colours, from up to ``max_views`` evenly spaced views of ``split``.
    Returns a ``trimesh.PointCloud``."""
    trimesh = _require("trimesh")
    from nerfkit.data.raysource import camera_image_rays

    if run.geom.ndc is not None:
        raise NerfkitError("pointcloud: NDC (forward-facing) runs are not supported yet")
    scene = run.load_split(split)
    views = evenly_spaced_views(len(scene), max_views)
    renderer = run.renderer()
    cams = scene.cameras
    pts, cols = [], []
    for i in views:
        intr = np.array([cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i]], np.float32)
        t = None if scene.times is None else float(scene.times[i])
        d = None if cams.distortion is None else cams.distortion[i]
        rays = camera_image_rays(run.geom, cams.c2w[i], intr, cams.width, cams.height, t,
                                 distortion=d)
        rays = jax.tree_util.tree_map(lambda x: x[::stride, ::stride], rays)
        out = renderer.render_rays(rays, scene.background)
        keep = out["acc"][..., 0] > min_acc
        o = np.asarray(rays.origins)[keep]
        d = np.asarray(rays.directions)[keep]
        pts.append(o + out["depth"][keep] * d)
        cols.append(np.clip(out["rgb"][keep], 0, 1))
    p = np.concatenate(pts) if pts else np.zeros((0, 3), np.float32)
    c = np.concatenate(cols) if cols else np.zeros((0, 3), np.float32)
    rgba = np.concatenate([c, np.ones((len(c), 1))], -1)
    return trimesh.PointCloud(p, colors=(rgba * 255).round().astype(np.uint8))


FRAMES = ("capture", "model")


def model_to_capture(run) -> Optional[np.ndarray]:
    """``[4, 4]`` similarity from the run's model coordinates back to its capture's own
    coordinates (the inverse of ``scene.json``'s ``transforms.world_transform``: for
    ``process-data`` output, COLMAP's world), or ``None`` when the run has none (Blender, LLFF:
    the model is trained in the dataset's coordinates)."""
    t = run.scene_json.get("transforms", {}).get("world_transform")
    return None if t is None else np.linalg.inv(np.asarray(t, np.float64))


def to_frame(run, obj, frame: str = "capture"):
    """A trimesh mesh or point cloud in model coordinates, moved to ``frame`` (``"capture"``:
    see :func:`model_to_capture`; ``"model"``: unchanged). Returns ``obj`` (moved in place)."""
    if frame not in FRAMES:
        raise NerfkitError(f"frame must be one of {FRAMES}, got {frame!r}")
    t = model_to_capture(run) if frame == "capture" else None
    if t is not None:
        obj.apply_transform(t)  # a rotation and a positive scale: faces keep their orientation
    return obj


def export_cameras(run, out: os.PathLike, splits=("train", "test"), frame: str = "capture"
                   ) -> Path:
    """Writes the run's cameras (c2w, intrinsics, image size, names) as JSON, in ``frame``
    coordinates (see :func:`to_frame`)."""
    from nerfkit.data.poses import apply_transform_to_poses
    from nerfkit.fileio import write_json_atomic
    if frame not in FRAMES:
        raise NerfkitError(f"frame must be one of {FRAMES}, got {frame!r}")
    t = model_to_capture(run) if frame == "capture" else None
    data = {"format": "nerfkit-cameras/v1", "convention": "OpenGL camera-to-world (3x4)",
            "frame": "model" if t is None else "capture"}
    for split in splits:
        try:
            scene = run.load_split(split)
        except NerfkitError:
            continue
        c = scene.cameras
        c2w = np.asarray(c.c2w, np.float64) if t is None else apply_transform_to_poses(t, c.c2w)
        data[split] = [{"name": scene.names[i], "c2w": c2w[i].tolist(),
                        "fx": float(c.fx[i]), "fy": float(c.fy[i]), "cx": float(c.cx[i]),
                        "cy": float(c.cy[i]), "width": c.width, "height": c.height,
                        **({} if scene.times is None else {"time": float(scene.times[i])})}
                       for i in range(len(scene))]
    write_json_atomic(out, data)
    return Path(out)


def save_geometry(obj, out: os.PathLike) -> Path:
    """Writes a trimesh object atomically; the format follows the extension (.ply, .glb, .obj)."""
    with atomic_path(out) as tmp:
        obj.export(tmp)
    return Path(out)
