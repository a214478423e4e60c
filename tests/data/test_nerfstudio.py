"""nerfstudio / instant-ngp transforms.json loader, and the image-level fixes every loader gets
(EXIF orientation, grayscale and CMYK JPEGs)."""

import json
import math
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image, ImageOps

from nerfkit.data import detect_format, load_scene
from nerfkit.data.io import image_size, read_image
from nerfkit.data.nerfstudio import load_nerfstudio
from nerfkit.data.poses import transform_points
from nerfkit.errors import DataError

W, H = 16, 12


def _poses(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a = 2 * np.pi * i / n
        pos = np.array([3 * np.cos(a), 3 * np.sin(a), 0.5 + 0.1 * rng.normal()])
        fwd = -pos / np.linalg.norm(pos)           # looking at the origin, z up
        right = np.cross(fwd, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        m = np.eye(4)
        m[:3, :3] = np.stack([right, up, -fwd], axis=1)
        m[:3, 3] = pos
        out.append(m)
    return np.asarray(out)


def _capture(root: Path, n=10, meta=None, frame_extra=None, shuffle=True, size=(W, H)):
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    poses = _poses(n)
    frames = []
    for i in range(n):
        name = f"images/frame_{i:05d}.png"
        iio.imwrite(root / name, rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        fr = {"file_path": name, "transform_matrix": poses[i].tolist()}
        fr.update((frame_extra or {}).get(i, {}))
        frames.append(fr)
    if shuffle:
        frames = [frames[i] for i in np.random.default_rng(2).permutation(n)]
    data = {"camera_model": "OPENCV", "fl_x": 14.0, "fl_y": 13.0, "cx": 8.2, "cy": 5.9,
            "w": size[0], "h": size[1], "k1": 0.01, "k2": -0.002, "p1": 0.001, "p2": 0.0005,
            "frames": frames}
    data.update(meta or {})
    for k in [k for k, v in data.items() if v is None]:
        del data[k]
    (root / "transforms.json").write_text(json.dumps(data))
    return poses


def test_global_intrinsics_split_and_normalisation(tmp_path):
    root = tmp_path / "cap"
    poses = _capture(root)
    assert detect_format(root) == "nerfstudio"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = load_scene(root, "train")
        test = load_scene(root / "transforms.json", "test")
        allv = load_nerfstudio(root, "all")
    assert allv.names == [f"frame_{i:05d}" for i in range(10)]          # sorted by file name
    assert test.names == ["frame_00000", "frame_00008"]
    assert len(train) == 8 and "frame_00008" not in train.names
    np.testing.assert_allclose(train.cameras.fx, 14.0)
    np.testing.assert_allclose(train.cameras.cy, 5.9)
    assert allv.metadata["camera_model"] == "OPENCV"
    np.testing.assert_allclose(allv.metadata["distortion"],
                               np.tile([0.01, -0.002, 0, 0, 0.001, 0.0005], (10, 1)), rtol=1e-6)
    assert allv.unbounded and allv.near == 0.05 and allv.far == 1000.0
    np.testing.assert_allclose(allv.aabb, [[-1] * 3, [1] * 3])
    t = np.asarray(allv.metadata["world_transform"])
    np.testing.assert_allclose(transform_points(t, poses[:, :3, 3]), allv.cameras.c2w[:, :, 3],
                               atol=1e-5)
    assert np.isclose(allv.metadata["scene_scale"], np.linalg.norm(t[:3, 0]))
    np.testing.assert_allclose(np.abs(allv.cameras.c2w[:, :, 3]).max(), 1.0, rtol=1e-6)
    # cameras looking at the origin: still looking at it after the similarity transform
    origin = transform_points(t, np.zeros(3))
    for c in np.asarray(allv.cameras.c2w):
        to = origin - c[:, 3]
        np.testing.assert_allclose(-c[:, 2], to / np.linalg.norm(to), atol=1e-5)
    # train and test share one model space
    np.testing.assert_allclose(test.cameras.c2w, allv.cameras.c2w[[0, 8]], atol=1e-6)


def test_per_frame_intrinsics_and_camera_angle(tmp_path):
    root = tmp_path / "cap"
    extra = {i: {"fl_x": 10.0 + i, "cy": 6.0 + 0.1 * i} for i in range(6)}
    _capture(root, n=6, meta={"fl_y": None}, frame_extra=extra)
    s = load_nerfstudio(root, "all", holdout=0)
    np.testing.assert_allclose(s.cameras.fx, 10.0 + np.arange(6))
    np.testing.assert_allclose(s.cameras.fy, 10.0 + np.arange(6))   # fl_y defaults to fl_x
    np.testing.assert_allclose(s.cameras.cy, 6.0 + 0.1 * np.arange(6), rtol=1e-6)
    np.testing.assert_allclose(s.cameras.cx, 8.2)
    # instant-ngp style: camera_angle_x only, no w/h (taken from the images), no camera_model
    root2 = tmp_path / "ngp"
    _capture(root2, n=3, meta={"fl_x": None, "fl_y": None, "w": None, "h": None, "cx": None,
                               "cy": None, "camera_model": None, "camera_angle_x": 0.9,
                               "aabb_scale": 16})
    s2 = load_nerfstudio(root2, "all")
    np.testing.assert_allclose(s2.cameras.fx, 0.5 * W / math.tan(0.45), rtol=1e-6)
    np.testing.assert_allclose(s2.cameras.cx, W / 2)
    assert s2.metadata["camera_model"] == "OPENCV"       # non-zero k1: OPENCV
    assert s2.metadata["aabb_scale"] == 16


def test_mixed_sizes_are_resampled_with_their_intrinsics(tmp_path):
    # Frame 2 comes from a camera with twice the resolution (32x24, intrinsics doubled): it is
    # resampled to the common 16x12 and its intrinsics scaled by 1/2, so it ends up with the
    # intrinsics of the others and (a smooth image) the same pixels as a 16x12 capture of it.
    root = tmp_path / "cap"
    _capture(root, n=4, frame_extra={2: {"w": 2 * W, "h": 2 * H, "fl_x": 28.0, "fl_y": 26.0,
                                         "cx": 16.4, "cy": 11.8}})
    yy, xx = np.mgrid[0:2 * H, 0:2 * W] + 0.5          # pixel centres of the 32x24 image
    smooth = lambda y, x: np.stack([x / (2 * W), y / (2 * H), 0.5 + 0.0 * x], -1)
    iio.imwrite(root / "images" / "frame_00002.png",
                np.round(255 * smooth(yy, xx)).astype(np.uint8))
    with pytest.warns(UserWarning, match=r"1 of 4 images are not 16x12 \(e.g. images/"
                                         r"frame_00002.png, 32x24\)"):
        s = load_nerfstudio(root, "all")
    assert s.images.shape[1:3] == (H, W)
    k = s.names.index("frame_00002")
    for j in range(4):
        np.testing.assert_allclose([s.cameras.fx[j], s.cameras.fy[j], s.cameras.cx[j],
                                    s.cameras.cy[j]], [14.0, 13.0, 8.2, 5.9], rtol=1e-6)
    # The 16x12 pixel centres (i + 0.5) sit at 2 (i + 0.5) on the 32x24 grid.
    yc, xc = np.mgrid[0:H, 0:W] + 0.5
    want = smooth(2 * yc, 2 * xc)
    inner = (slice(1, -1), slice(1, -1))                # the filter's border clamps
    np.testing.assert_allclose(s.images[k][inner], want[inner], atol=2.5 / 255)
    root2 = tmp_path / "cap2"
    _capture(root2, n=4)
    iio.imwrite(root2 / "images" / "frame_00002.png", np.zeros((12, 20, 3), np.uint8))
    with pytest.raises(DataError, match="says 16x12") as info:
        load_nerfstudio(root2, "all")
    assert "frame_00002.png" in str(info.value)


def test_camera_models(tmp_path):
    _capture(tmp_path / "f", n=3, meta={"camera_model": "OPENCV_FISHEYE", "p1": None,
                                        "p2": None, "k3": 0.003, "k4": -0.001})
    s = load_nerfstudio(tmp_path / "f", "all")
    assert s.metadata["camera_model"] == "OPENCV_FISHEYE"
    np.testing.assert_allclose(s.metadata["distortion"][0], [0.01, -0.002, 0.003, -0.001, 0, 0],
                               rtol=1e-6)
    # ... and it reaches the cameras, so that rays are undistorted (core/distortion.py).
    assert s.cameras.camera_model == "OPENCV_FISHEYE"
    np.testing.assert_allclose(s.cameras.distortion, s.metadata["distortion"])
    _capture(tmp_path / "p", n=3, meta={"camera_model": "PINHOLE", "k1": None, "k2": None,
                                        "p1": None, "p2": None})
    s = load_nerfstudio(tmp_path / "p", "all")
    assert s.metadata["camera_model"] == "PINHOLE" and not s.metadata["distortion"].any()
    assert s.cameras.distortion is None
    for meta, msg in [({"camera_model": "EQUIRECTANGULAR"}, "unsupported camera_model"),
                      ({"camera_model": "PINHOLE"}, "PINHOLE but 'k1' is non-zero"),
                      ({"camera_model": "OPENCV_FISHEYE"}, "'p1'/'p2' must be 0"),
                      ({"orientation_override": "pca"}, "unsupported orientation_override"),
                      ({"applied_scale": 2.0}, "unsupported applied_scale"),
                      ({"fl_x": "big"}, "'fl_x' must be a finite number")]:
        root = tmp_path / f"bad{len(msg)}"
        _capture(root, n=2, meta=meta)
        with pytest.raises(DataError, match=msg) as info:
            load_nerfstudio(root, "all")
        assert "transforms.json" in str(info.value) and "\n" not in str(info.value)


def test_split_lists(tmp_path):
    root = tmp_path / "cap"
    names = [f"images/frame_{i:05d}.png" for i in range(6)]
    _capture(root, n=6, meta={"train_filenames": names[:4], "test_filenames": names[4:]})
    assert load_nerfstudio(root, "train").names == [f"frame_{i:05d}" for i in range(4)]
    assert load_nerfstudio(root, "val").names == ["frame_00004", "frame_00005"]  # val <- test
    _capture(root, n=6, meta={"train_filenames": names[:4]})
    with pytest.raises(DataError, match="none for split 'test'"):
        load_nerfstudio(root, "test")
    _capture(root, n=6, meta={"train_filenames": ["images/nope.png"]})
    with pytest.raises(DataError, match="no frame has"):
        load_nerfstudio(root, "train")


def test_applied_transform_and_orientation_override(tmp_path):
    root = tmp_path / "cap"
    a = np.eye(4)[:3][[0, 2, 1]]
    a[2] *= -1                                        # ns-process-data's applied transform
    poses = _capture(root, n=5, meta={"applied_transform": a.tolist(), "ply_file_path": "p.ply"})
    (root / "p.ply").write_text("ply\n")
    s = load_nerfstudio(root, "all")
    t, f = np.asarray(s.metadata["world_transform"]), np.asarray(s.metadata["file_transform"])
    a4 = np.vstack([a, [0, 0, 0, 1]])
    np.testing.assert_allclose(t, f @ a4, atol=1e-12)
    # a capture (pre-applied) point p appears in the file as A p: both routes agree
    orig_centres = transform_points(np.linalg.inv(a4), poses[:, :3, 3])
    np.testing.assert_allclose(transform_points(t, orig_centres), s.cameras.c2w[:, :, 3],
                               atol=1e-5)
    assert s.metadata["ply_file_path"] == str((root / "p.ply").absolute())
    _capture(root, n=5, meta={"orientation_override": "none"})
    s = load_nerfstudio(root, "all")
    np.testing.assert_allclose(np.asarray(s.metadata["world_transform"])[:3, :3],
                               np.eye(3) * s.metadata["scene_scale"], atol=1e-12)


def test_unknown_keys_warn_once_each(tmp_path):
    root = tmp_path / "cap"
    _capture(root, n=3, meta={"scale": 0.33, "mystery": 1},
             frame_extra={0: {"mask_path": "m0.png"}, 1: {"mask_path": "m1.png"},
                          2: {"colmap_im_id": 7, "sharpness": 30.0}})
    with pytest.warns(UserWarning) as rec:
        s = load_nerfstudio(root, "all")
    msgs = [str(w.message) for w in rec]
    assert len(msgs) == 3 and all(m.startswith(str(root / "transforms.json")) for m in msgs)
    assert any("'mask_path' (in 2 frames)" in m for m in msgs)
    assert any("'scale'" in m and "scales the poses itself" in m for m in msgs)
    assert any("'mystery'" in m for m in msgs)
    assert s.metadata["colmap_im_ids"] == [None, None, 7]


def test_missing_and_undecodable_images(tmp_path):
    root = tmp_path / "cap"
    _capture(root, n=3)
    (root / "images" / "frame_00001.png").unlink()
    with pytest.raises(DataError, match="image file not found") as info:
        load_nerfstudio(root, "all")
    assert "frame_00001.png" in str(info.value) and "transforms.json" in str(info.value)
    (root / "images" / "frame_00001.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="cannot decode image") as info:
        load_nerfstudio(root, "all")
    assert "frame_00001.png" in str(info.value) and "\n" not in str(info.value)


def test_downscale_prefers_images_n(tmp_path):
    root = tmp_path / "cap"
    _capture(root, n=3)
    full = load_nerfstudio(root, "all")
    mem = load_nerfstudio(root, "all", downscale=2)
    np.testing.assert_allclose(mem.images[1], full.images[1].reshape(6, 2, 8, 2, 3).mean((1, 3)),
                               atol=1e-6)
    np.testing.assert_allclose(mem.cameras.cx, full.cameras.cx / 2)
    (root / "images_2").mkdir()
    for i in range(3):
        iio.imwrite(root / "images_2" / f"frame_{i:05d}.png", np.full((6, 8, 3), 10, np.uint8))
    pre = load_scene(root, "all", downscale=2)
    assert np.allclose(pre.images, 10 / 255) and pre.metadata["image_folder"].endswith("images_2")
    np.testing.assert_allclose(pre.cameras.fy, full.cameras.fy / 2)


# ---------------------------------------------------------------- image-level fixes (io.py)

@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_loads_upright(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    got = read_image(path)
    assert got.shape[:2] == upright.shape[:2] == ((16, 12) if orientation >= 5 else (12, 16))
    np.testing.assert_array_equal(np.round(got * 255).astype(np.uint8), upright)
    assert image_size(path) == upright.shape[:2]
    if orientation == 6:   # "rotate 90 CW to view": the stored top row becomes the right column
        with Image.open(path) as im:
            decoded = np.asarray(im.convert("RGB"))
        np.testing.assert_array_equal(upright, np.rot90(decoded, k=-1))


def test_grayscale_and_cmyk_jpegs(tmp_path):
    Image.fromarray(np.full((6, 8), 77, np.uint8), "L").save(tmp_path / "g.jpg", quality=100)
    g = read_image(tmp_path / "g.jpg")
    assert g.shape == (6, 8, 3)
    np.testing.assert_allclose(g, 77 / 255, atol=2 / 255)
    # CMYK (0, 255, 255, 0) is pure red; (0, 0, 0, 255) black; (255, 0, 255, 0) green
    cmyk = np.zeros((8, 24, 4), np.uint8)
    cmyk[:, :8] = (0, 255, 255, 0)
    cmyk[:, 8:16] = (0, 0, 0, 255)
    cmyk[:, 16:] = (255, 0, 255, 0)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.jpg", quality=100)
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
    c = read_image(tmp_path / "c.jpg")
    assert c.shape == (8, 24, 3)
    np.testing.assert_allclose(c[2:6, 2:6], np.broadcast_to([1, 0, 0], (4, 4, 3)), atol=0.03)
    np.testing.assert_allclose(c[2:6, 10:14], 0.0, atol=0.03)
    np.testing.assert_allclose(c[2:6, 18:22], np.broadcast_to([0, 1, 0], (4, 4, 3)), atol=0.03)


def test_exif_rotated_capture_loads_upright(tmp_path):
    """A phone photo stored landscape with orientation 6 is a 12x16 portrait image: its
    transforms.json (written from the upright image) says w=12, h=16."""
    root = tmp_path / "cap"
    _capture(root, n=2, size=(12, 16))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.zeros((12, 16, 3), np.uint8)
    stored[0, :] = 255                                # top row of the stored image
    Image.fromarray(stored).save(root / "images" / "frame_00001.jpg", quality=95, exif=exif)
    meta = json.loads((root / "transforms.json").read_text())
    for fr in meta["frames"]:
        fr["file_path"] = fr["file_path"].replace("frame_00001.png", "frame_00001.jpg")
    (root / "transforms.json").write_text(json.dumps(meta))
    s = load_nerfstudio(root, "all")
    assert s.images.shape[1:3] == (16, 12)
    assert s.images[1][:, -1].mean() > 0.9 and s.images[1][:, :-2].mean() < 0.1  # right column


def test_photos_without_poses_say_process_data(tmp_path):
    photos = tmp_path / "shoot"
    photos.mkdir()
    for i in range(2):
        iio.imwrite(photos / f"{i}.jpg", np.zeros((8, 8, 3), np.uint8))
    for target in (photos, tmp_path):
        if target == tmp_path:
            photos.rename(tmp_path / "images")
        with pytest.raises(DataError, match="process-data images") as info:
            load_scene(target, "train")
        assert "\n" not in str(info.value)
    assert detect_format(tmp_path / "images", as_video=True) == "video"

