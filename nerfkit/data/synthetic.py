"""nerfkit's own default scene: a tiny vectorised numpy ray tracer writing a Blender-layout dataset.

The scene (world z up, everything inside ``[-1, 1]^3``):

* a large sphere with a red/white checker texture (12 x 6 cells in longitude/latitude),
* a blue box, rotated 30 degrees about z, with white edges,
* a capped vertical cylinder with green/yellow horizontal stripes,
* a small plain gold sphere,

shaded Lambertian (albedo x (ambient + diffuse x max(0, n.l))) under one directional light, with
hard shadows, on a transparent background, 2x2 supersampled (so silhouettes have fractional
alpha). Cameras sit on the upper hemisphere at radius 4 and look at the origin: training views at
seeded random directions (uniform in solid angle, elevation 3 to 72 degrees), test views on a
circle at 30 degrees elevation. Output: ``transforms_{train,test}.json`` (``camera_angle_x``,
``near`` 2, ``far`` 6, ``aabb`` ``[-1, 1]^3``) and ``{train,test}/r_{i}.png`` (RGBA, straight
alpha), which :func:`nerfkit.data.blender.load_blender` reads. Deterministic for a given seed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from nerfkit.data.io import write_image_atomic

#: Bump when the scene's content or layout changes, so cached copies are regenerated.
SCENE_VERSION = 1
CAMERA_ANGLE_X = 0.6911112070083618  # radians (39.6 degrees), as NeRF-Synthetic
CAMERA_RADIUS = 4.0
NEAR, FAR = 2.0, 6.0
AABB = ((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
LIGHT_DIR = np.array([0.4, 0.5, 1.0]) / np.linalg.norm([0.4, 0.5, 1.0])
AMBIENT, DIFFUSE = 0.25, 0.75
SUPERSAMPLE = 2
_EPS = 1e-4

# Shapes.
_SPHERE_C, _SPHERE_R = np.array([-0.3, -0.3, 0.0]), 0.5
_GOLD_C, _GOLD_R = np.array([-0.2, 0.55, 0.45]), 0.25
_BOX_C, _BOX_H = np.array([0.4, 0.35, -0.3]), np.array([0.3, 0.3, 0.3])
_BOX_ANGLE = math.radians(30.0)
_BOX_R = np.array([[math.cos(_BOX_ANGLE), -math.sin(_BOX_ANGLE), 0.0],
                   [math.sin(_BOX_ANGLE), math.cos(_BOX_ANGLE), 0.0],
                   [0.0, 0.0, 1.0]])  # local -> world
_CYL_C, _CYL_R, _CYL_Z = np.array([0.45, -0.45]), 0.22, (-0.6, 0.5)
_BOUND_R = 1.15  # a sphere about the origin enclosing every shape (farthest point: 1.095)


# ---------------------------------------------------------------------------------- intersections
# Rays are structure-of-arrays: o = (ox, oy, oz), d = (dx, dy, dz), each [R] (d unit length).
# Each function returns the nearest hit distance t [R] beyond _EPS (inf where missed).

def _sphere_t(o, d, center, radius):
    ocx, ocy, ocz = o[0] - center[0], o[1] - center[1], o[2] - center[2]
    b = ocx * d[0] + ocy * d[1] + ocz * d[2]
    c = ocx * ocx + ocy * ocy + ocz * ocz - radius * radius
    disc = b * b - c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t0, t1 = -b - sq, -b + sq
    t = np.where(t0 > _EPS, t0, np.where(t1 > _EPS, t1, np.inf))
    return np.where(disc > 0, t, np.inf)


def _box_local(o, d):
    """Rays in the box frame (R^T (x - c)) as structure-of-arrays."""
    r = _BOX_R
    ox, oy, oz = o[0] - _BOX_C[0], o[1] - _BOX_C[1], o[2] - _BOX_C[2]
    lo = tuple(r[0, k] * ox + r[1, k] * oy + r[2, k] * oz for k in range(3))
    ld = tuple(r[0, k] * d[0] + r[1, k] * d[1] + r[2, k] * d[2] for k in range(3))
    return lo, ld


def _box_t(o, d):
    lo, ld = _box_local(o, d)
    tmin = tmax = None
    for k in range(3):
        dk = np.where(np.abs(ld[k]) < 1e-12, 1e-12, ld[k])
        t1, t2 = (-_BOX_H[k] - lo[k]) / dk, (_BOX_H[k] - lo[k]) / dk
        near, far = np.minimum(t1, t2), np.maximum(t1, t2)
        tmin = near if tmin is None else np.maximum(tmin, near)
        tmax = far if tmax is None else np.minimum(tmax, far)
    t = np.where(tmin > _EPS, tmin, tmax)
    return np.where((tmax >= tmin) & (t > _EPS), t, np.inf)


def _cylinder_t(o, d):
    ox, oy = o[0] - _CYL_C[0], o[1] - _CYL_C[1]
    dx, dy = d[0], d[1]
    a = np.maximum(dx * dx + dy * dy, 1e-12)
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - _CYL_R ** 2
    disc = b * b - a * c
    sq = np.sqrt(np.maximum(disc, 0.0))
    t_best = np.full(ox.shape, np.inf, ox.dtype)
    for t in ((-b - sq) / a, (-b + sq) / a):
        z = o[2] + t * d[2]
        ok = (disc > 0) & (t > _EPS) & (z >= _CYL_Z[0]) & (z <= _CYL_Z[1])
        t_best = np.where(ok & (t < t_best), t, t_best)
    dz = np.where(np.abs(d[2]) < 1e-12, 1e-12, d[2])
    for zc in _CYL_Z:
        t = (zc - o[2]) / dz
        x, y = ox + t * dx, oy + t * dy
        ok = (t > _EPS) & (x * x + y * y <= _CYL_R ** 2)
        t_best = np.where(ok & (t < t_best), t, t_best)
    return t_best


def _all_t(o, d):
    """``[4, R]`` hit distances for (checker sphere, box, cylinder, gold sphere)."""
    return np.stack([_sphere_t(o, d, _SPHERE_C, _SPHERE_R), _box_t(o, d), _cylinder_t(o, d),
                     _sphere_t(o, d, _GOLD_C, _GOLD_R)])


# ------------------------------------------------------------------------------ normals, albedo

def _shade_sphere_checker(p):
    n = (p - _SPHERE_C) / _SPHERE_R
    lon = np.arctan2(n[:, 1], n[:, 0])
    lat = np.arccos(np.clip(n[:, 2], -1.0, 1.0))
    cell = (np.floor((lon + np.pi) / (2 * np.pi) * 12) + np.floor(lat / np.pi * 6)) % 2
    albedo = np.where(cell[:, None] > 0, [0.85, 0.12, 0.1], [0.95, 0.93, 0.88])
    return n, albedo


def _shade_box(p):
    lp = (p - _BOX_C) @ _BOX_R  # world -> local
    rel = np.abs(lp) / _BOX_H
    axis = np.argmax(rel, axis=1)
    n_local = np.zeros_like(lp)
    n_local[np.arange(len(lp)), axis] = np.sign(lp[np.arange(len(lp)), axis])
    n = n_local @ _BOX_R.T
    # White edges: on each face, near the boundary of either in-face coordinate.
    rel_masked = rel.copy()
    rel_masked[np.arange(len(lp)), axis] = 0.0
    edge = rel_masked.max(axis=1) > 0.86
    albedo = np.where(edge[:, None], [0.95, 0.95, 0.95], [0.15, 0.35, 0.85])
    return n, albedo


def _shade_cylinder(p):
    x, y, z = p[:, 0] - _CYL_C[0], p[:, 1] - _CYL_C[1], p[:, 2]
    r = np.sqrt(x * x + y * y)
    on_cap = np.minimum(np.abs(z - _CYL_Z[0]), np.abs(z - _CYL_Z[1])) < np.abs(r - _CYL_R)
    cap_n = np.where(np.abs(z - _CYL_Z[1]) < np.abs(z - _CYL_Z[0]), 1.0, -1.0)
    side_n = np.stack([x, y, np.zeros_like(x)], -1) / np.maximum(r, 1e-12)[:, None]
    n = np.where(on_cap[:, None], np.stack([np.zeros_like(x), np.zeros_like(x), cap_n], -1),
                 side_n)
    stripe = np.floor((z - _CYL_Z[0]) / 0.11) % 2
    albedo = np.where(on_cap[:, None] | (stripe[:, None] > 0), [0.95, 0.78, 0.15],
                      [0.15, 0.65, 0.3])
    return n, albedo


def _shade_gold(p):
    return (p - _GOLD_C) / _GOLD_R, np.broadcast_to([0.9, 0.7, 0.25], p.shape)


_SHADERS = (_shade_sphere_checker, _shade_box, _shade_cylinder, _shade_gold)


def trace(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Traces rays through the default scene.

    Args:
      origins, directions: ``[R, 3]`` world-space rays (directions need not be unit length).
    Returns:
      ``(rgb [R, 3], hit [R])``: shaded colour in ``[0, 1]`` (0 where missed) and coverage.
    """
    o = np.asarray(origins, np.float64)
    d = np.asarray(directions, np.float64)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    rgb = np.zeros(o.shape, np.float64)
    hit = np.zeros(len(o), bool)
    # Cull rays that miss the scene's bounding sphere, then trace the rest as structure-of-arrays.
    soa = lambda x, i=slice(None): tuple(np.ascontiguousarray(x[i, k]) for k in range(3))
    cand = np.nonzero(np.isfinite(_sphere_t(soa(o), soa(d), np.zeros(3), _BOUND_R)))[0]
    if cand.size == 0:
        return rgb, hit
    oc, dc = soa(o, cand), soa(d, cand)
    ts = _all_t(oc, dc)
    which = np.argmin(ts, axis=0)
    t = np.take_along_axis(ts, which[None], 0)[0]
    h = np.isfinite(t)
    idx, which, t = cand[h], which[h], t[h]
    hit[idx] = True
    if idx.size == 0:
        return rgb, hit
    p = o[idx] + t[:, None] * d[idx]
    normals = np.zeros_like(p)
    albedo = np.zeros_like(p)
    for k, shade in enumerate(_SHADERS):
        m = which == k
        if np.any(m):
            normals[m], albedo[m] = shade(p[m])
    ndotl = normals @ LIGHT_DIR
    lit = np.nonzero(ndotl > 0)[0]
    visible = np.zeros(len(p), bool)
    if lit.size:
        so = p[lit] + normals[lit] * 1e-3
        sd = np.broadcast_to(LIGHT_DIR, so.shape)
        visible[lit] = ~np.isfinite(_all_t(soa(so), soa(sd)).min(axis=0))
    rgb[idx] = albedo * (AMBIENT + DIFFUSE * np.where(visible, ndotl, 0.0))[:, None]
    return np.clip(rgb, 0.0, 1.0), hit


def look_at_origin(position: np.ndarray) -> np.ndarray:
    """``[4, 4]`` OpenGL camera-to-world at ``position`` looking at the origin, world z up."""
    back = position / np.linalg.norm(position)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, up, back, position
    return m


def camera_poses(num_train: int, num_test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``([num_train, 4, 4], [num_test, 4, 4])`` camera-to-world matrices of the default scene."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 0.95, num_train)  # uniform in solid angle over the band
    phi = rng.uniform(0.0, 2.0 * np.pi, num_train)
    s = np.sqrt(1.0 - z * z)
    train_dirs = np.stack([s * np.cos(phi), s * np.sin(phi), z], -1)
    elev = math.radians(30.0)
    phi = np.linspace(0.0, 2.0 * np.pi, num_test, endpoint=False) + 0.1
    test_dirs = np.stack([math.cos(elev) * np.cos(phi), math.cos(elev) * np.sin(phi),
                          np.full(num_test, math.sin(elev))], -1)
    make = lambda dirs: np.stack([look_at_origin(CAMERA_RADIUS * v) for v in dirs]) \
        if len(dirs) else np.zeros((0, 4, 4))
    return make(train_dirs), make(test_dirs)


def render_view(c2w: np.ndarray, resolution: int, camera_angle_x: float = CAMERA_ANGLE_X,
                supersample: int = SUPERSAMPLE) -> np.ndarray:
    """Renders one ``[resolution, resolution, 4]`` straight-alpha RGBA float image."""
    res, s = int(resolution), int(supersample)
    focal = 0.5 * res / math.tan(0.5 * camera_angle_x)
    sub = (np.arange(s) + 0.5) / s
    u = (np.arange(res)[:, None] + sub[None, :]).reshape(-1)  # [res * s] sub-pixel coordinates
    v, uu = np.meshgrid(u, u, indexing="ij")
    dirs_cam = np.stack([(uu - 0.5 * res) / focal, -(v - 0.5 * res) / focal,
                         -np.ones_like(uu)], -1).reshape(-1, 3)
    dirs = dirs_cam @ c2w[:3, :3].T
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
    rgb, hit = trace(origins, dirs)
    cov = hit.astype(np.float64).reshape(res, s, res, s).mean(axis=(1, 3))
    prem = rgb.reshape(res, s, res, s, 3).mean(axis=(1, 3))  # rgb is 0 where missed
    straight = np.where(cov[..., None] > 0, prem / np.maximum(cov[..., None], 1e-12), 0.0)
    return np.concatenate([straight, cov[..., None]], -1).astype(np.float32)


def generate_default_scene(out_dir: str | os.PathLike, num_train: int = 100, num_test: int = 20,
                           resolution: int = 128, seed: int = 0) -> Path:
    """Renders the default scene into ``out_dir`` as a Blender-layout dataset; returns the path.

    Writes ``transforms_train.json``, ``transforms_test.json``, ``train/r_{i}.png`` and
    ``test/r_{i}.png`` (RGBA). Existing files of the same names are overwritten. A few seconds
    for the defaults on one CPU core.
    """
    if num_train < 1 or num_test < 1 or resolution < 8:
        raise ValueError("need num_train >= 1, num_test >= 1 and resolution >= 8")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = camera_poses(num_train, num_test, seed)
    jobs = []
    for split, poses in (("train", train), ("test", test)):
        (out / split).mkdir(exist_ok=True)
        frames = [{"file_path": f"./{split}/r_{i}", "transform_matrix": np.round(m, 9).tolist()}
                  for i, m in enumerate(poses)]
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "near": NEAR, "far": FAR,
                "aabb": [list(AABB[0]), list(AABB[1])],
                "generator": {"name": "nerfkit.data.synthetic", "version": SCENE_VERSION,
                              "seed": seed, "resolution": resolution},
                "frames": frames}
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
        jobs += [(out / split / f"r_{i}.png", m) for i, m in enumerate(poses)]

    def job(item):
        path, c2w = item
        write_image_atomic(path, render_view(c2w, resolution))

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(job, jobs))
    return out


_STAMP = "nerfkit_scene_version"


def default_scene_path() -> Path:
    """Folder of the generated default scene, generating it on first use.

    The folder is ``$NERFKIT_CACHE/default_scene`` if ``NERFKIT_CACHE`` is set, else
    ``~/.cache/nerfkit/default_scene``. Generation goes to a temporary sibling folder that is
    renamed into place once complete (so concurrent processes never see a partial scene); a copy
    from an older :data:`SCENE_VERSION` is replaced.
    """
    base = Path(os.environ.get("NERFKIT_CACHE") or Path.home() / ".cache" / "nerfkit")
    final = base / "default_scene"
    if _is_current(final):
        return final
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".default_scene.", dir=base))
    try:
        generate_default_scene(tmp)
        (tmp / _STAMP).write_text(str(SCENE_VERSION))
        if final.exists() and not _is_current(final):  # stale version or an interrupted copy
            old = base / f".default_scene.old.{uuid.uuid4().hex}"
            try:
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_current(final):  # another process won the race with a good copy: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _is_current(folder: Path) -> bool:
    try:
        return (folder / _STAMP).read_text().strip() == str(SCENE_VERSION)
    except OSError:
        return False
