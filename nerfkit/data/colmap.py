"""COLMAP sparse models: a small numpy reader of the documented formats, and a scene loader.

Formats (Schönberger & Frahm, "Structure-from-Motion Revisited", CVPR 2016; the file layouts of
https://colmap.github.io/format.html and ``src/colmap/scene/reconstruction_io.cc`` in
https://github.com/colmap/colmap), all little-endian:

* ``cameras.bin``: ``uint64 n``; per camera ``int32 camera_id, int32 model_id, uint64 width,
  uint64 height, float64 params[k(model)]``. ``cameras.txt``: ``CAMERA_ID MODEL WIDTH HEIGHT
  PARAMS...`` per line.
* ``images.bin``: ``uint64 n``; per registered image ``int32 image_id, float64 qw qx qy qz,
  float64 tx ty tz, int32 camera_id, char name[] (NUL-terminated), uint64 num_points2D`` then
  ``(float64 x, float64 y, int64 point3D_id)`` each. ``images.txt``: two lines per image,
  ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` and ``X Y POINT3D_ID ...`` (possibly empty).
* ``points3D.bin``: ``uint64 n``; per point ``uint64 point3D_id, float64 x y z, uint8 r g b,
  float64 error, uint64 track_length`` then ``(int32 image_id, int32 point2D_idx)`` each.
  ``points3D.txt``: ``POINT3D_ID X Y Z R G B ERROR IMAGE_ID POINT2D_IDX ...``.

``(qw, qx, qy, qz, tx, ty, tz)`` is the *world-to-camera* pose in COLMAP's (OpenCV) camera frame:
``x_cam = R(q) x_world + t``, camera looking down ``+z`` with ``+y`` down. COLMAP places the centre
of the top-left pixel at ``(0.5, 0.5)``, as :mod:`nerfkit.core.cameras` does. Newer COLMAP (3.12+,
pycolmap 4) also writes ``rigs`` and ``frames`` files; every image's own pose stays in
``images.*``, so they are not needed here.

:func:`load_colmap` turns a folder ``images/`` + ``sparse/0/`` (the layout COLMAP's and
nerfstudio's tools write) into a :class:`~nerfkit.data.scene.Scene` the way nerfstudio's COLMAP
data parser does (``nerfstudio/data/dataparsers/colmap_dataparser.py``,
``process_data/colmap_utils.py``): camera models mapped to PINHOLE / OPENCV / OPENCV_FISHEYE,
poses converted to OpenGL camera-to-world and normalised by :mod:`nerfkit.data.poses`.
"""

import math
import os
import struct
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from nerfkit.data.scene import Scene
from nerfkit.errors import DataError

#: COLMAP camera models: id -> (name, number of parameters), as in ``models.h``.
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5),
    4: ("OPENCV", 8), 5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4), 9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
CAMERA_MODEL_IDS = {name: i for i, (name, _) in CAMERA_MODELS.items()}
NUM_PARAMS = {name: k for name, k in CAMERA_MODELS.values()}

#: The COLMAP models nerfkit renders, and the nerfstudio model each becomes.
SUPPORTED_MODELS = {
    "SIMPLE_PINHOLE": "PINHOLE", "PINHOLE": "PINHOLE", "SIMPLE_RADIAL": "OPENCV",
    "RADIAL": "OPENCV", "OPENCV": "OPENCV", "OPENCV_FISHEYE": "OPENCV_FISHEYE",
    "SIMPLE_RADIAL_FISHEYE": "OPENCV_FISHEYE", "RADIAL_FISHEYE": "OPENCV_FISHEYE",
}


class ColmapCamera(NamedTuple):
    """One COLMAP camera: ``model`` name, image ``width``/``height`` in pixels, ``params [k]``
    float64 in the model's documented order (e.g. OPENCV: fx, fy, cx, cy, k1, k2, p1, p2)."""

    camera_id: int
    model: str
    width: int
    height: int
    params: np.ndarray


class ColmapImage(NamedTuple):
    """One registered image: world-to-camera ``qvec [4]`` (w, x, y, z) and ``tvec [3]`` (OpenCV
    camera frame), ``name`` relative to the image folder, keypoints ``xys [P, 2]`` (pixels) and
    their ``point3D_ids [P]`` (int64, -1 where untriangulated)."""

    image_id: int
    qvec: np.ndarray
    tvec: np.ndarray
    camera_id: int
    name: str
    xys: np.ndarray
    point3D_ids: np.ndarray


class ColmapPoints(NamedTuple):
    """The sparse points: ``ids [M]`` int64, ``xyz [M, 3]`` float64, ``rgb [M, 3]`` uint8,
    ``errors [M]`` float64 (mean reprojection error in pixels, -1 if unknown) and each point's
    track as ``track_image_ids[i]``, ``track_point2D_idxs[i]`` (int arrays)."""

    ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    errors: np.ndarray
    track_image_ids: list
    track_point2D_idxs: list


class ColmapModel(NamedTuple):
    """A sparse model: cameras and images by id, and the points (``None`` if the model folder has
    no points3D file)."""

    cameras: dict
    images: dict
    points: Optional[ColmapPoints]
    path: Path
    binary: bool


# ------------------------------------------------------------------------------------ binary

class _Bin:
    """Bounds-checked little-endian cursor over a file's bytes; every overrun is a DataError."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as e:
            raise DataError(path, f"cannot read file: {e.strerror or e}") from None
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.data):
            raise DataError(self.path, f"truncated or malformed file: {what} needs {n} bytes at "
                                       f"offset {self.pos}, only {len(self.data) - self.pos} left")

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        self.need(size, what)
        out = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return out

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        dt = np.dtype(dtype).newbyteorder("<")
        self.need(count * dt.itemsize, what)
        out = np.frombuffer(self.data, dt, count, self.pos)
        self.pos += count * dt.itemsize
        return out

    def count(self, what: str, min_record: int) -> int:
        (n,) = self.unpack("Q", f"the number of {what}")
        if n * min_record > len(self.data) - self.pos:
            raise DataError(self.path, f"truncated or malformed file: header says {n} {what} but "
                                       f"only {len(self.data) - self.pos} bytes follow")
        return int(n)

    def string(self, what: str) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise DataError(self.path, f"truncated or malformed file: {what} has no terminating "
                                       f"NUL at offset {self.pos}")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(self.path, f"malformed file: {what} is not UTF-8 text") from None

    def done(self) -> None:
        if self.pos != len(self.data):
            raise DataError(self.path, f"malformed file: {len(self.data) - self.pos} unexpected "
                                       f"bytes after the last record")


def read_cameras_binary(path: str | os.PathLike) -> dict[int, ColmapCamera]:
    """``cameras.bin`` -> ``{camera_id: ColmapCamera}``; :class:`DataError` naming the file on a
    truncated or malformed file or an unknown model id."""
    f = _Bin(Path(path))
    out = {}
    for i in range(f.count("cameras", 24)):
        cid, model_id, w, h = f.unpack("iiQQ", f"camera {i}")
        if model_id not in CAMERA_MODELS:
            raise DataError(f.path, f"camera {cid}: unknown camera model id {model_id} (known: "
                                    f"0-{max(CAMERA_MODELS)})")
        name, k = CAMERA_MODELS[model_id]
        params = f.array("f8", k, f"camera {cid} parameters").astype(np.float64)
        out[int(cid)] = _camera(f.path, int(cid), name, int(w), int(h), params)
    f.done()
    return out


def read_images_binary(path: str | os.PathLike) -> dict[int, ColmapImage]:
    """``images.bin`` -> ``{image_id: ColmapImage}`` (see :class:`ColmapImage`)."""
    f = _Bin(Path(path))
    out = {}
    for i in range(f.count("images", 73)):
        vals = f.unpack("i7di", f"image {i}")
        iid, q, t, cid = int(vals[0]), np.array(vals[1:5]), np.array(vals[5:8]), int(vals[8])
        name = f.string(f"image {iid} name")
        (n,) = f.unpack("Q", f"image {iid} keypoint count")
        if n * 24 > len(f.data) - f.pos:
            raise DataError(f.path, f"truncated or malformed file: image {iid} claims {n} "
                                    f"keypoints but only {len(f.data) - f.pos} bytes follow")
        rec = f.array([("xy", "<f8", 2), ("id", "<i8")], int(n), f"image {iid} keypoints")
        out[iid] = _image(f.path, iid, q, t, cid, name, rec["xy"].astype(np.float64),
                          rec["id"].astype(np.int64))
    f.done()
    return out


def read_points3D_binary(path: str | os.PathLike) -> ColmapPoints:
    """``points3D.bin`` -> :class:`ColmapPoints`."""
    f = _Bin(Path(path))
    n = f.count("points", 51)
    ids = np.empty(n, np.int64)
    xyz = np.empty((n, 3))
    rgb = np.empty((n, 3), np.uint8)
    err = np.empty(n)
    t_img, t_idx = [], []
    for i in range(n):
        vals = f.unpack("Q3d3BdQ", f"point {i}")
        ids[i], xyz[i], rgb[i], err[i] = vals[0], vals[1:4], vals[4:7], vals[7]
        length = int(vals[8])
        if length * 8 > len(f.data) - f.pos:
            raise DataError(f.path, f"truncated or malformed file: point {vals[0]} claims a track "
                                    f"of {length} but only {len(f.data) - f.pos} bytes follow")
        track = f.array("i4", 2 * length, f"point {vals[0]} track").reshape(length, 2)
        t_img.append(track[:, 0].astype(np.int64))
        t_idx.append(track[:, 1].astype(np.int64))
    f.done()
    return ColmapPoints(ids, xyz, rgb, err, t_img, t_idx)


# -------------------------------------------------------------------------------------- text

def _text_lines(path: Path):
    """``(line_number, stripped_line)`` of a text file, comments (``#``) kept for the caller."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, f"malformed file: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DataError(path, f"cannot read file: {e.strerror or e}") from None
    return [(k + 1, line.strip()) for k, line in enumerate(text.splitlines())]


def _numbers(path: Path, lineno: int, tokens: list[str], kind, what: str) -> list:
    try:
        vals = [kind(t) for t in tokens]
    except ValueError:
        raise DataError(path, f"line {lineno}: malformed {what}: {' '.join(tokens)[:80]!r}") \
            from None
    if kind is float and not all(math.isfinite(v) for v in vals):
        raise DataError(path, f"line {lineno}: {what} contains NaN or Inf")
    return vals


def read_cameras_text(path: str | os.PathLike) -> dict[int, ColmapCamera]:
    """``cameras.txt`` -> ``{camera_id: ColmapCamera}``."""
    path = Path(path)
    out = {}
    for lineno, line in _text_lines(path):
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 4:
            raise DataError(path, f"line {lineno}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...")
        model = tok[1]
        if model not in NUM_PARAMS:
            raise DataError(path, f"line {lineno}: unknown camera model {model!r}")
        cid, w, h = _numbers(path, lineno, [tok[0], tok[2], tok[3]], int, "camera id / size")
        if len(tok) - 4 != NUM_PARAMS[model]:
            raise DataError(path, f"line {lineno}: camera model {model} takes "
                                  f"{NUM_PARAMS[model]} parameters, got {len(tok) - 4}")
        params = np.array(_numbers(path, lineno, tok[4:], float, "camera parameters"))
        out[cid] = _camera(path, cid, model, w, h, params)
    return out


def read_images_text(path: str | os.PathLike) -> dict[int, ColmapImage]:
    """``images.txt`` -> ``{image_id: ColmapImage}``. As COLMAP's reader: blank and ``#`` lines
    are skipped before an image line; the line right after it holds its keypoints."""
    path = Path(path)
    lines = _text_lines(path)
    out = {}
    k = 0
    while k < len(lines):
        lineno, line = lines[k]
        k += 1
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 10:
            raise DataError(path, f"line {lineno}: expected IMAGE_ID QW QX QY QZ TX TY TZ "
                                  f"CAMERA_ID NAME")
        iid, cid = _numbers(path, lineno, [tok[0], tok[8]], int, "image / camera id")
        pose = _numbers(path, lineno, tok[1:8], float, "pose")
        name = line.split(None, 9)[9]  # names may contain spaces
        pts = lines[k][1].split() if k < len(lines) else []
        k += 1
        if len(pts) % 3:
            raise DataError(path, f"line {lineno + 1}: keypoints must be X Y POINT3D_ID triples, "
                                  f"got {len(pts)} values")
        xy = np.array(_numbers(path, lineno + 1, pts[0::3] + pts[1::3], float, "keypoints"),
                      np.float64).reshape(2, -1).T
        ids = np.array(_numbers(path, lineno + 1, pts[2::3], int, "point ids"), np.int64)
        out[iid] = _image(path, iid, np.array(pose[:4]), np.array(pose[4:]), cid, name,
                          np.ascontiguousarray(xy), ids)
    return out


def read_points3D_text(path: str | os.PathLike) -> ColmapPoints:
    """``points3D.txt`` -> :class:`ColmapPoints`."""
    path = Path(path)
    ids, xyz, rgb, err, t_img, t_idx = [], [], [], [], [], []
    for lineno, line in _text_lines(path):
        if not line or line.startswith("#"):
            continue
        tok = line.split()
        if len(tok) < 8 or (len(tok) - 8) % 2:
            raise DataError(path, f"line {lineno}: expected POINT3D_ID X Y Z R G B ERROR "
                                  f"(IMAGE_ID POINT2D_IDX)...")
        ids.append(_numbers(path, lineno, tok[:1], int, "point id")[0])
        xyz.append(_numbers(path, lineno, tok[1:4], float, "position"))
        colour = _numbers(path, lineno, tok[4:7], int, "colour")
        if not all(0 <= c <= 255 for c in colour):
            raise DataError(path, f"line {lineno}: colour must be 0-255, got {colour}")
        rgb.append(colour)
        err.append(_numbers(path, lineno, tok[7:8], float, "error")[0])
        track = np.array(_numbers(path, lineno, tok[8:], int, "track"), np.int64).reshape(-1, 2)
        t_img.append(track[:, 0])
        t_idx.append(track[:, 1])
    return ColmapPoints(np.array(ids, np.int64), np.array(xyz, np.float64).reshape(-1, 3),
                        np.array(rgb, np.uint8).reshape(-1, 3), np.array(err, np.float64),
                        t_img, t_idx)


def _camera(path: Path, cid: int, model: str, w: int, h: int, params: np.ndarray) -> ColmapCamera:
    if w <= 0 or h <= 0 or w > 1 << 20 or h > 1 << 20:
        raise DataError(path, f"camera {cid}: implausible image size {w}x{h}")
    if not np.all(np.isfinite(params)):
        raise DataError(path, f"camera {cid}: parameters contain NaN or Inf")
    return ColmapCamera(cid, model, w, h, params)


def _image(path: Path, iid: int, q: np.ndarray, t: np.ndarray, cid: int, name: str,
           xys: np.ndarray, ids: np.ndarray) -> ColmapImage:
    if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
        raise DataError(path, f"image {iid} ({name}): pose contains NaN or Inf")
    norm = float(np.linalg.norm(q))
    if abs(norm - 1.0) > 1e-3:
        raise DataError(path, f"image {iid} ({name}): rotation quaternion is not unit length "
                              f"(|q| = {norm:.6g})")
    if not name:
        raise DataError(path, f"image {iid}: empty image name")
    return ColmapImage(iid, q / norm, t, cid, name, xys, ids)


def find_model_folder(root: str | os.PathLike) -> Optional[Path]:
    """The sparse model folder of a dataset ``root``: ``root`` itself if it holds a model, else
    ``root/sparse/0``, ``root/sparse``, ``root/colmap/sparse/0``; ``None`` if there is none."""
    root = Path(root)
    for cand in (root, root / "sparse" / "0", root / "sparse", root / "colmap" / "sparse" / "0"):
        if any((cand / f"cameras.{ext}").is_file() and (cand / f"images.{ext}").is_file()
               for ext in ("bin", "txt")):
            return cand
    return None


def read_model(folder: str | os.PathLike) -> ColmapModel:
    """Reads a COLMAP sparse model folder (binary ``*.bin`` preferred, as COLMAP does, else text).

    Raises:
      DataError: naming the folder if it holds no model, or the file that is truncated or
        malformed, or ``images`` referring to a camera that does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "COLMAP model folder not found" if not folder.exists()
                        else "not a folder")
    for ext, binary in (("bin", True), ("txt", False)):
        cams, imgs = folder / f"cameras.{ext}", folder / f"images.{ext}"
        if cams.is_file() and imgs.is_file():
            break
    else:
        raise DataError(folder, "no COLMAP model here: expected cameras.bin + images.bin (or "
                                "cameras.txt + images.txt)")
    pts = folder / f"points3D.{ext}"
    if binary:
        cameras, images = read_cameras_binary(cams), read_images_binary(imgs)
        points = read_points3D_binary(pts) if pts.is_file() else None
    else:
        cameras, images = read_cameras_text(cams), read_images_text(imgs)
        points = read_points3D_text(pts) if pts.is_file() else None
    for im in images.values():
        if im.camera_id not in cameras:
            raise DataError(imgs, f"image {im.image_id} ({im.name}) refers to camera "
                                  f"{im.camera_id}, which {cams.name} does not define")
    return ColmapModel(cameras, images, points, folder, binary)


# ------------------------------------------------------------------------------------- poses

def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    """``[3, 3]`` rotation of a unit quaternion ``q = (w, x, y, z)`` (Hamilton, as COLMAP/Eigen)."""
    w, x, y, z = np.asarray(q, np.float64)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def colmap_to_c2w_opengl(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    """``[3, 4]`` OpenGL camera-to-world (x right, y up, looking down -z) from COLMAP's
    world-to-camera ``qvec (w, x, y, z)``, ``tvec`` (OpenCV camera: y down, looking down +z)."""
    r = qvec_to_rotmat(qvec)
    c2w = np.empty((3, 4))
    c2w[:, :3] = r.T
    c2w[:, 3] = -r.T @ np.asarray(tvec, np.float64)
    c2w[:, 1:3] *= -1.0  # OpenCV (y down, +z forward) -> OpenGL (y up, -z forward)
    return c2w


def camera_intrinsics(cam: ColmapCamera, source: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """A COLMAP camera as ``(model, [fx, fy, cx, cy], distortion [6])`` with ``model`` one of
    PINHOLE / OPENCV / OPENCV_FISHEYE and distortion in nerfstudio order (k1, k2, k3, k4, p1, p2).

    Raises:
      DataError: naming ``source`` for camera models nerfkit does not render.
    """
    if cam.model not in SUPPORTED_MODELS:
        raise DataError(source, f"camera {cam.camera_id}: unsupported camera model {cam.model} "
                                f"(nerfkit renders {', '.join(SUPPORTED_MODELS)}); undistort the "
                                f"images first (COLMAP image_undistorter) or re-run SfM with "
                                f"one of those models")
    p = cam.params
    dist = np.zeros(6)
    if cam.model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "SIMPLE_RADIAL_FISHEYE",
                     "RADIAL_FISHEYE"):
        k = np.array([p[0], p[0], p[1], p[2]])
        dist[: len(p) - 3] = p[3:]            # k1 (and k2)
    else:
        k = np.array(p[:4])
        if cam.model == "OPENCV":
            dist[0], dist[1], dist[4], dist[5] = p[4:8]   # k1 k2 p1 p2
        elif cam.model == "OPENCV_FISHEYE":
            dist[:4] = p[4:8]                             # k1 k2 k3 k4
    if np.any(k[:2] <= 0):
        raise DataError(source, f"camera {cam.camera_id}: focal length must be positive, got "
                                f"{k[:2].tolist()}")
    return SUPPORTED_MODELS[cam.model], k, dist


def load_colmap(root: str | os.PathLike, split: str = "train", downscale: int = 1,
                holdout: int = 8, images_dir: Optional[str | os.PathLike] = None,
                model_dir: Optional[str | os.PathLike] = None, orientation: str = "up",
                center: str = "poses") -> Scene:
    """Loads one split of a COLMAP capture (``root/images/`` + ``root/sparse/0/``) as a real,
    unbounded :class:`~nerfkit.data.scene.Scene`.

    Args:
      root: the dataset folder.
      split: ``"train"`` (all but every ``holdout``-th image, in image-name order), ``"test"``
        / ``"val"`` (images ``i % holdout == 0``) or ``"all"``.
      downscale: integer image downscale: ``images_{downscale}/`` (beside ``images/``, the
        mip-NeRF 360 layout) is read when it holds every image of the split (intrinsics scaled
        to its size), else the images are area-downscaled in memory.
      holdout: test-view spacing (8: the LLFF / mip-NeRF 360 convention); 0 puts all in train.
      images_dir: the image folder (default ``root/images``).
      model_dir: the sparse model folder (default: :func:`find_model_folder` of ``root``).
      orientation, center: see :func:`nerfkit.data.poses.orient_and_center_poses`.
    Returns:
      The scene (see :func:`nerfkit.data.nerfstudio.build_capture_scene` for what it holds);
      ``metadata`` also has ``colmap_model`` (the folder), ``colmap_image_ids`` and, when the
      model has points, ``points3D_xyz [M, 3]`` float32 in model coordinates and
      ``points3D_rgb [M, 3]`` uint8.
    Raises:
      DataError: naming the offending file.
    """
    from nerfkit.data.io import check_downscale
    from nerfkit.data.nerfstudio import build_capture_scene, check_holdout
    from nerfkit.data.poses import transform_points

    downscale = check_downscale(downscale)
    holdout = check_holdout(holdout)
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder not found" if not root.exists() else "not a folder")
    folder = Path(model_dir) if model_dir is not None else find_model_folder(root)
    if folder is None:
        raise DataError(root, "no COLMAP sparse model found (expected sparse/0/cameras.bin and "
                              "images.bin, or the .txt files)")
    model = read_model(folder)
    if not model.images:
        raise DataError(folder / ("images.bin" if model.binary else "images.txt"),
                        "the model has no registered images")
    image_root = Path(images_dir) if images_dir is not None else root / "images"
    cams_file = folder / ("cameras.bin" if model.binary else "cameras.txt")
    ordered = sorted(model.images.values(), key=lambda im: im.name)
    c2w, intr, dist, models, sizes = [], [], [], [], []
    for im in ordered:
        cam = model.cameras[im.camera_id]
        m, k, d = camera_intrinsics(cam, cams_file)
        c2w.append(colmap_to_c2w_opengl(im.qvec, im.tvec))
        intr.append(k)
        dist.append(d)
        models.append(m)
        sizes.append((cam.width, cam.height))
    intr = np.asarray(intr)
    extra = {"colmap_model": str(folder),
             "colmap_image_ids": [int(im.image_id) for im in ordered]}
    scene = build_capture_scene(
        fmt="colmap", root=root, source=cams_file, split=split, downscale=downscale,
        holdout=holdout, image_paths=[image_root / im.name for im in ordered],
        rel_names=[im.name for im in ordered], c2w=np.asarray(c2w), fx=intr[:, 0],
        fy=intr[:, 1], cx=intr[:, 2], cy=intr[:, 3], sizes=sizes, distortion=np.asarray(dist),
        models=models, split_lists=None,
        prescaled_paths=None if downscale == 1 else
        [image_root.parent / f"{image_root.name}_{downscale}" / im.name for im in ordered],
        orientation=orientation, center=center, capture_to_file=np.eye(4), metadata=extra)
    if model.points is not None and len(model.points.ids):
        t = np.asarray(scene.metadata["world_transform"])
        scene.metadata["points3D_xyz"] = transform_points(t, model.points.xyz).astype(np.float32)
        scene.metadata["points3D_rgb"] = model.points.rgb
    return scene
