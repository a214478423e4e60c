"""COLMAP reader and loader, against pycolmap (the reference writer and projector) and OpenCV."""

import warnings
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pycolmap
import pytest

from nerfkit.data import detect_format, load_scene
from nerfkit.data.colmap import (SUPPORTED_MODELS, camera_intrinsics, colmap_to_c2w_opengl,
                                 load_colmap, read_cameras_binary, read_images_binary,
                                 read_model, read_points3D_binary)
from nerfkit.data.poses import transform_points
from nerfkit.errors import DataError

W, H = 16, 12
MODEL_PARAMS = {  # realistic small distortions, in each model's COLMAP parameter order
    "SIMPLE_PINHOLE": [14.0, 8.0, 6.0],
    "PINHOLE": [14.0, 13.0, 8.1, 5.9],
    "SIMPLE_RADIAL": [14.0, 8.0, 6.0, 0.05],
    "RADIAL": [14.0, 8.0, 6.0, 0.05, -0.01],
    "OPENCV": [14.0, 13.5, 8.2, 6.1, 0.04, -0.01, 0.002, -0.001],
    "OPENCV_FISHEYE": [14.0, 13.5, 8.2, 6.1, 0.03, -0.01, 0.004, -0.001],
    "SIMPLE_RADIAL_FISHEYE": [14.0, 8.0, 6.0, 0.03],
    "RADIAL_FISHEYE": [14.0, 8.0, 6.0, 0.03, -0.01],
}


def _rig(rng):
    q = rng.normal(size=4)
    return pycolmap.Rigid3d(pycolmap.Rotation3d(q / np.linalg.norm(q)), rng.normal(size=3))


def _reconstruction(models, n_images=10, seed=0, sizes=None, n_points=6):
    rng = np.random.default_rng(seed)
    rec = pycolmap.Reconstruction()
    for cid, name in enumerate(models, start=1):
        cam = pycolmap.Camera.create_from_model_name(cid, name, 10.0, *(sizes or {}).get(cid, (W, H)))
        cam.params = np.asarray(MODEL_PARAMS.get(name, cam.params), np.float64) \
            if name in MODEL_PARAMS else cam.params
        rec.add_camera_with_trivial_rig(cam)
    for iid in range(1, n_images + 1):
        im = pycolmap.Image(name=f"img_{(iid * 7) % n_images:02d}.png",
                            camera_id=1 + (iid % len(models)), image_id=iid)
        im.points2D = pycolmap.Point2DList(
            [pycolmap.Point2D(rng.uniform(0, 10, size=2)) for _ in range(3)])
        rec.add_image_with_trivial_frame(im, _rig(rng))
    for j in range(min(n_points, 3 * n_images // 2)):
        track = pycolmap.Track()   # observation m = 2j, 2j + 1: image m % n, keypoint m // n
        for m in (2 * j, 2 * j + 1):
            track.add_element(m % n_images + 1, m // n_images)
        rec.add_point3D(rng.normal(size=3), track, rng.integers(0, 256, 3).astype(np.uint8))
    return rec


def _write(rec, folder: Path, binary=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (rec.write_binary if binary else rec.write_text)(str(folder))
    return folder


@pytest.mark.parametrize("binary", [True, False])
def test_reader_matches_pycolmap(tmp_path, binary):
    rec = _reconstruction(list(MODEL_PARAMS) + ["FULL_OPENCV", "FOV"], n_images=12)
    model = read_model(_write(rec, tmp_path / "m", binary))
    assert model.binary is binary
    assert set(model.cameras) == set(rec.cameras)
    for cid, ref in rec.cameras.items():
        cam = model.cameras[cid]
        assert (cam.model, cam.width, cam.height) == (ref.model_name, ref.width, ref.height)
        np.testing.assert_allclose(cam.params, ref.params, rtol=1e-15 if binary else 1e-12)
    assert set(model.images) == set(rec.images)
    for iid, ref in rec.images.items():
        im = model.images[iid]
        assert (im.name, im.camera_id) == (ref.name, ref.camera_id)
        pose = ref.cam_from_world()
        x, y, z, w = pose.rotation.quat
        np.testing.assert_allclose(im.qvec, [w, x, y, z], atol=1e-14)
        np.testing.assert_allclose(im.tvec, pose.translation, atol=1e-14)
        np.testing.assert_allclose(im.xys, [p.xy for p in ref.points2D], atol=1e-12)
        np.testing.assert_array_equal(
            im.point3D_ids, [p.point3D_id if p.has_point3D() else -1 for p in ref.points2D])
    pts = model.points
    assert sorted(pts.ids.tolist()) == sorted(rec.points3D)
    for k, pid in enumerate(pts.ids):
        ref = rec.points3D[int(pid)]
        np.testing.assert_allclose(pts.xyz[k], ref.xyz, atol=1e-12)
        np.testing.assert_array_equal(pts.rgb[k], ref.color)
        els = [(e.image_id, e.point2D_idx) for e in ref.track.elements]
        assert list(zip(pts.track_image_ids[k].tolist(), pts.track_point2D_idxs[k].tolist())) == els


def test_pose_convention_against_pycolmap():
    rec = _reconstruction(["PINHOLE"], n_images=5)
    rng = np.random.default_rng(1)
    for im in rec.images.values():
        pose = im.cam_from_world()
        x, y, z, w = pose.rotation.quat
        c2w = colmap_to_c2w_opengl(np.array([w, x, y, z]), pose.translation)
        np.testing.assert_allclose(c2w[:, 3], im.projection_center(), atol=1e-12)
        np.testing.assert_allclose(-c2w[:, 2], im.viewing_direction(), atol=1e-12)  # -z forward
        pts = rng.normal(size=(4, 3))
        cv = (pose.matrix()[:, :3] @ pts.T).T + pose.matrix()[:, 3]     # OpenCV camera frame
        gl = cv * [1.0, -1.0, -1.0]                                     # x right, y up, z back
        np.testing.assert_allclose(gl @ c2w[:, :3].T + c2w[:, 3], pts, atol=1e-12)


@pytest.mark.parametrize("name", list(MODEL_PARAMS))
def test_camera_models_project_like_colmap(name):
    """Each supported COLMAP model, mapped to PINHOLE / OPENCV / OPENCV_FISHEYE with nerfstudio's
    (k1, k2, k3, k4, p1, p2), projects points as COLMAP does: OpenCV's projectPoints (or
    fisheye.projectPoints) with the mapped parameters agrees with pycolmap's img_from_cam."""
    cam = pycolmap.Camera.create_from_model_name(1, name, 10.0, W, H)
    cam.params = np.asarray(MODEL_PARAMS[name], np.float64)
    model, k, d = camera_intrinsics(read_cameras_from(cam), Path("cameras.bin"))
    assert model == SUPPORTED_MODELS[name]
    rng = np.random.default_rng(2)
    pts = np.concatenate([rng.uniform(-0.5, 0.5, size=(20, 2)), np.ones((20, 1))], axis=1)
    pts *= rng.uniform(1, 3, size=(20, 1))
    ref = cam.img_from_cam(pts)
    kmat = np.array([[k[0], 0, k[2]], [0, k[1], k[3]], [0, 0, 1]])
    if model == "OPENCV_FISHEYE":
        assert np.all(d[4:] == 0)
        got, _ = cv2.fisheye.projectPoints(pts[:, None, :], np.zeros(3), np.zeros(3), kmat,
                                           d[:4].reshape(4, 1))
    else:
        k1, k2, k3, k4, p1, p2 = d
        assert k4 == 0
        got, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), kmat,
                                   np.array([k1, k2, p1, p2, k3]))
        if model == "PINHOLE":
            assert np.all(d == 0)
    np.testing.assert_allclose(got.reshape(-1, 2), ref, atol=1e-9)


def read_cameras_from(cam):
    from nerfkit.data.colmap import ColmapCamera
    return ColmapCamera(cam.camera_id, cam.model_name, cam.width, cam.height,
                        np.asarray(cam.params))


def _capture(root: Path, models=("OPENCV", "SIMPLE_RADIAL"), n=10, binary=True, sizes=None,
             image_sizes=None, seed=0):
    rec = _reconstruction(list(models), n_images=n, seed=seed, sizes=sizes)
    _write(rec, root / "sparse" / "0", binary)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for im in rec.images.values():
        w, h = (image_sizes or {}).get(im.name, (rec.cameras[im.camera_id].width,
                                                 rec.cameras[im.camera_id].height))
        iio.imwrite(root / "images" / im.name, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return rec


@pytest.mark.parametrize("binary", [True, False])
def test_load_colmap_scene(tmp_path, binary):
    rec = _capture(tmp_path / "cap", binary=binary)
    root = tmp_path / "cap"
    assert detect_format(root) == "colmap"
    train, test = load_scene(root, "train"), load_scene(root, "test")
    allv = load_colmap(root, "all")
    names = sorted(im.name for im in rec.images.values())
    assert allv.names == [Path(n).stem for n in names]
    assert test.names == [Path(names[i]).stem for i in range(0, 10, 8)]
    assert len(train) == 8 and len(test) == 2
    for s in (train, test, allv):
        assert s.unbounded and s.near == 0.05 and s.far == 1000.0 and not s.white_background
        np.testing.assert_allclose(s.aabb, [[-1, -1, -1], [1, 1, 1]])
        assert s.images.shape[1:] == (H, W, 3)
    by_name = {im.name: im for im in rec.images.values()}
    t = np.asarray(allv.metadata["world_transform"])
    assert np.isclose(np.abs(np.asarray(allv.cameras.c2w)[:, :, 3]).max(), 1.0, atol=1e-6)
    for k, name in enumerate(names):
        im = by_name[name]
        cam = rec.cameras[im.camera_id]
        np.testing.assert_allclose(transform_points(t, im.projection_center()),
                                   allv.cameras.c2w[k][:, 3], atol=1e-5)
        # a point in front of camera k, seen in the model's camera frame, projects to the same
        # pixel through the loaded pinhole intrinsics as through COLMAP's (undistorted) projection
        world = im.projection_center() + 2.0 * im.viewing_direction()
        local = (np.linalg.inv(np.vstack([allv.cameras.c2w[k], [0, 0, 0, 1]]))
                 @ np.append(transform_points(t, world), 1.0))[:3]
        u = allv.cameras.fx[k] * local[0] / -local[2] + allv.cameras.cx[k]
        v = -allv.cameras.fy[k] * local[1] / -local[2] + allv.cameras.cy[k]
        params = np.asarray(cam.params).copy()
        pin = pycolmap.Camera.create_from_model_name(1, "PINHOLE", 1.0, W, H)
        f = params[:2] if cam.model_name == "OPENCV" else params[[0, 0]]
        c = params[2:4] if cam.model_name == "OPENCV" else params[1:3]
        pin.params = np.concatenate([f, c])
        ref = pin.img_from_cam((im.cam_from_world().matrix()
                                @ np.append(world, 1.0))[None])[0]
        np.testing.assert_allclose([u, v], ref, atol=1e-3)
    assert allv.metadata["camera_model"] == "OPENCV"
    dist = allv.metadata["distortion"]
    for k, name in enumerate(names):
        cam = rec.cameras[by_name[name].camera_id]
        p = MODEL_PARAMS[cam.model_name]
        want = [p[4], p[5], 0, 0, p[6], p[7]] if cam.model_name == "OPENCV" else [p[3], 0, 0, 0, 0, 0]
        np.testing.assert_allclose(dist[k], want, rtol=1e-6)
    assert allv.metadata["points3D_xyz"].shape == (len(rec.points3D), 3)
    np.testing.assert_allclose(allv.metadata["points3D_xyz"],
                               transform_points(t, [rec.points3D[i].xyz for i in
                                                    sorted(rec.points3D)]), atol=1e-5)


def test_downscale_prefers_images_n_folder(tmp_path):
    root = tmp_path / "cap"
    rec = _capture(root, models=("PINHOLE",), n=3)
    full = load_colmap(root, "all")
    mem = load_colmap(root, "all", downscale=2)
    assert mem.images.shape[1:3] == (H // 2, W // 2)
    np.testing.assert_allclose(mem.images[0], full.images[0].reshape(6, 2, 8, 2, 3).mean((1, 3)),
                               atol=1e-6)
    np.testing.assert_allclose(mem.cameras.fx, full.cameras.fx / 2)
    (root / "images_2").mkdir()
    for im in rec.images.values():   # a 7x5 copy (ffmpeg-style rounding of 8x6)
        iio.imwrite(root / "images_2" / im.name, np.full((5, 7, 3), 200, np.uint8))
    pre = load_colmap(root, "all", downscale=2)
    assert pre.images.shape[1:3] == (5, 7) and np.allclose(pre.images, 200 / 255)
    # Intrinsics scale by exactly 1/2, as nerfstudio's dataparser does (downscale_factor) and as
    # process-data's images_N (cropped to (H // N, W // N), then box-filtered) need.
    np.testing.assert_allclose(pre.cameras.fx, full.cameras.fx / 2, rtol=1e-6)
    np.testing.assert_allclose(pre.cameras.cy, full.cameras.cy / 2, rtol=1e-6)


def test_truncated_and_malformed_binary_files(tmp_path):
    rec = _reconstruction(["OPENCV", "PINHOLE"], n_images=4)
    folder = _write(rec, tmp_path / "m")
    readers = {"cameras.bin": read_cameras_binary, "images.bin": read_images_binary,
               "points3D.bin": read_points3D_binary}
    for fname, reader in readers.items():
        data = (folder / fname).read_bytes()
        for cut in sorted({0, 1, 7, 8, 9, len(data) // 3, len(data) // 2, len(data) - 1}):
            bad = tmp_path / f"cut_{cut}_{fname}"
            bad.write_bytes(data[:cut])
            with pytest.raises(DataError) as info:
                reader(bad)
            msg = str(info.value)
            assert str(bad) in msg and "\n" not in msg and "truncated" in msg
        extra = tmp_path / f"extra_{fname}"
        extra.write_bytes(data + b"\x00\x01")
        with pytest.raises(DataError, match="unexpected bytes"):
            reader(extra)
    # a huge count in the header is an error, not an allocation
    huge = tmp_path / "huge_cameras.bin"
    huge.write_bytes((2**62).to_bytes(8, "little") + (folder / "cameras.bin").read_bytes()[8:])
    with pytest.raises(DataError, match="header says"):
        read_cameras_binary(huge)
    # an unknown camera model id
    data = bytearray((folder / "cameras.bin").read_bytes())
    data[12:16] = (99).to_bytes(4, "little")
    (tmp_path / "unknown.bin").write_bytes(bytes(data))
    with pytest.raises(DataError, match="unknown camera model id 99") as info:
        read_cameras_binary(tmp_path / "unknown.bin")
    assert "unknown.bin" in str(info.value)


def test_malformed_text_files(tmp_path):
    rec = _reconstruction(["OPENCV"], n_images=2)
    folder = _write(rec, tmp_path / "m", binary=False)
    cams = folder / "cameras.txt"
    cams.write_text("1 WEIRD_MODEL 16 12 1 2 3\n")
    with pytest.raises(DataError, match="line 1: unknown camera model 'WEIRD_MODEL'") as info:
        read_model(folder)
    assert str(cams) in str(info.value)
    cams.write_text("1 PINHOLE 16 12 1 2 3\n")
    with pytest.raises(DataError, match="takes 4 parameters, got 3"):
        read_model(folder)
    cams.write_text("1 PINHOLE 16 12 1 2 x 4\n")
    with pytest.raises(DataError, match="malformed camera parameters"):
        read_model(folder)
    cams.write_text("2 PINHOLE 16 12 10 10 8 6\n")
    with pytest.raises(DataError, match="refers to camera 1"):
        read_model(folder)


def test_unsupported_model_and_mixed_sizes(tmp_path):
    _capture(tmp_path / "a", models=("FULL_OPENCV",), n=2)
    with pytest.raises(DataError, match="unsupported camera model FULL_OPENCV") as info:
        load_scene(tmp_path / "a")
    assert "cameras.bin" in str(info.value) and "\n" not in str(info.value)
    # two cameras of different sizes: the odd one's images are resampled, intrinsics scaled
    rec = _capture(tmp_path / "b", models=("PINHOLE", "PINHOLE"), n=4, sizes={2: (20, 12)})
    with pytest.warns(UserWarning, match="are not 16x12"):
        s = load_scene(tmp_path / "b", "all")
    assert s.images.shape[1:3] == (H, W)
    for k, name in enumerate(sorted(im.name for im in rec.images.values())):
        im = next(i for i in rec.images.values() if i.name == name)
        cam = rec.cameras[im.camera_id]
        sx, sy = W / cam.width, H / cam.height
        np.testing.assert_allclose([s.cameras.fx[k], s.cameras.cx[k]],
                                   [cam.params[0] * sx, cam.params[2] * sx], rtol=1e-6)
        np.testing.assert_allclose([s.cameras.fy[k], s.cameras.cy[k]],
                                   [cam.params[1] * sy, cam.params[3] * sy], rtol=1e-6)
    # an image file whose size differs from its camera
    rec = _capture(tmp_path / "c", models=("PINHOLE",), n=2, image_sizes={"img_00.png": (8, 6)})
    with pytest.raises(DataError, match="says 16x12") as info:
        load_scene(tmp_path / "c", "all")
    assert "img_00.png" in str(info.value)
    del rec


def test_missing_image_and_detect(tmp_path):
    root = tmp_path / "cap"
    _capture(root, models=("PINHOLE",), n=3)
    (root / "images" / "img_01.png").unlink()
    with pytest.raises(DataError, match="image file not found") as info:
        load_scene(root, "all")
    assert "img_01.png" in str(info.value)
    # a model directly in sparse/ (no 0/) is found too
    root2 = tmp_path / "cap2"
    _capture(root2, models=("PINHOLE",), n=3)
    (root2 / "sparse" / "0").rename(tmp_path / "tmpmodel")
    (root2 / "sparse").rmdir()
    (tmp_path / "tmpmodel").rename(root2 / "sparse")
    assert detect_format(root2) == "colmap"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_scene(root2, "all")) == 3
