"""Blender / NeRF-Synthetic / D-NeRF parser: real data (lego at downscale 8) and small fixtures."""

from __future__ import annotations

import json
import math

import numpy as np
from skimage.measure import block_reduce

from conftest import requires_shared, shared_datasets
from nerfkit.data import load_scene
from nerfkit.data.blender import load_blender
from nerfkit.data.io import downscale_area, write_image_atomic


def _write_dataset(root, images, angle=0.7, extra=None, split="train"):
    """Blender-layout dataset with the given ``[H, W, C]`` uint8 images and simple poses."""
    (root / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, img in enumerate(images):
        write_image_atomic(root / split / f"r_{i}.png", img)
        pose = np.eye(4)
        pose[:3, 3] = [0.0, 0.0, 4.0 + i]
        frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
    meta = {"camera_angle_x": angle, "frames": frames, **(extra or {})}
    (root / f"transforms_{split}.json").write_text(json.dumps(meta))
    return root


@requires_shared
def test_lego_test_split_downscale_8():
    root = shared_datasets() / "nerf_synthetic" / "lego"
    scene = load_blender(root, "test", downscale=8)
    meta = json.loads((root / "transforms_test.json").read_text())

    assert len(scene) == 200
    assert scene.images.shape == (200, 100, 100, 3) and scene.images.dtype == np.float32
    assert scene.alphas.shape == (200, 100, 100, 1)
    assert scene.names[:3] == ["r_0", "r_1", "r_2"]
    assert (scene.cameras.width, scene.cameras.height) == (100, 100)
    focal = 0.5 * 800 / math.tan(0.5 * meta["camera_angle_x"]) / 8
    np.testing.assert_allclose(scene.cameras.fx, focal, rtol=1e-6)
    np.testing.assert_allclose(scene.cameras.fy, focal, rtol=1e-6)
    np.testing.assert_allclose(scene.cameras.cx, 50.0)
    np.testing.assert_allclose(scene.cameras.cy, 50.0)
    np.testing.assert_allclose(scene.cameras.c2w[7],
                               np.asarray(meta["frames"][7]["transform_matrix"])[:3], atol=1e-6)
    assert (scene.near, scene.far) == (2.0, 6.0) and not scene.ndc and scene.times is None
    np.testing.assert_allclose(scene.aabb, [[-1.5] * 3, [1.5] * 3])
    assert scene.white_background

    # Corners are empty background: alpha 0 there, and the composite is white.
    assert np.all(scene.alphas[:, :2, :2] == 0.0)
    comp = scene.composited()
    np.testing.assert_allclose(comp[:, :2, :2], 1.0)
    assert comp.min() >= 0.0 and comp.max() <= 1.0
    # The object is opaque somewhere in every view.
    assert np.all(scene.alphas.reshape(200, -1).max(axis=1) == 1.0)


@requires_shared
def test_lego_downscale_matches_independent_box_filter():
    import imageio.v3 as iio

    root = shared_datasets() / "nerf_synthetic" / "lego"
    raw = iio.imread(root / "train" / "r_3.png").astype(np.float64) / 255.0
    alpha = raw[..., 3:]
    a = block_reduce(alpha, (8, 8, 1), np.mean)
    prem = block_reduce(raw[..., :3] * alpha, (8, 8, 1), np.mean)
    expected_rgb = np.where(a > 0, prem / np.where(a > 0, a, 1.0), 0.0)

    scene = load_blender(root, "train", downscale=8, white_background=False)
    assert len(scene) == 100
    np.testing.assert_allclose(scene.alphas[3], a, atol=1e-5)
    np.testing.assert_allclose(scene.images[3], expected_rgb, atol=1e-4)
    # Black-background composite equals the premultiplied average.
    np.testing.assert_allclose(scene.composited()[3], prem, atol=1e-5)


@requires_shared
def test_dnerf_times():
    scene = load_blender(shared_datasets() / "dnerf" / "lego", "train", downscale=16)
    assert len(scene) == 50 and scene.images.shape[1:] == (50, 50, 3)
    assert scene.times.shape == (50,) and scene.times.dtype == np.float32
    assert scene.times[0] == 0.0 and 0.0 <= scene.times.min() and scene.times.max() <= 1.0
    assert scene.metadata["dynamic"]


def test_rgba_downscale_premultiplied_reference(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (12, 8, 4), dtype=np.uint8)
    img[:4, :4, 3] = 0          # a fully transparent block (its colours must not matter)
    img[4:8, :4, 3] = 255       # a fully opaque block
    root = _write_dataset(tmp_path / "ds", [img])
    scene = load_blender(root, "train", downscale=4)

    f = img.astype(np.float64) / 255.0
    exp_rgb = np.zeros((3, 2, 3))
    exp_a = np.zeros((3, 2))
    for by in range(3):               # an explicit loop over blocks and pixels
        for bx in range(2):
            s_a, s_c = 0.0, np.zeros(3)
            for y in range(by * 4, by * 4 + 4):
                for x in range(bx * 4, bx * 4 + 4):
                    s_a += f[y, x, 3]
                    s_c += f[y, x, :3] * f[y, x, 3]
            exp_a[by, bx] = s_a / 16
            exp_rgb[by, bx] = s_c / s_a if s_a > 0 else 0.0
    np.testing.assert_allclose(scene.alphas[0, ..., 0], exp_a, atol=1e-6)
    np.testing.assert_allclose(scene.images[0], exp_rgb, atol=1e-5)
    assert np.all(scene.images[0, 0, 0] == 0.0)                    # transparent block
    np.testing.assert_allclose(scene.images[0, 1, 0], f[4:8, :4, :3].mean(axis=(0, 1)), atol=1e-6)


def test_downscale_crops_remainder_and_keeps_principal_point(tmp_path):
    img = np.random.default_rng(1).integers(0, 256, (11, 14, 3), dtype=np.uint8)
    angle = 0.9
    root = _write_dataset(tmp_path / "ds", [img, img], angle=angle)
    scene = load_blender(root, "train", downscale=3)
    assert scene.images.shape == (2, 3, 4, 3) and scene.alphas is None
    focal = 0.5 * 14 / math.tan(0.5 * angle)
    np.testing.assert_allclose(scene.cameras.fx, focal / 3, rtol=1e-6)
    np.testing.assert_allclose(scene.cameras.cx, 14 / 6, rtol=1e-6)   # full-res centre, /3
    np.testing.assert_allclose(scene.cameras.cy, 11 / 6, rtol=1e-6)
    expected = block_reduce(img[:9, :12].astype(np.float64) / 255, (3, 3, 1), np.mean)
    np.testing.assert_allclose(scene.images[0], expected, atol=1e-6)
    assert scene.metadata["cropped"]
    np.testing.assert_allclose(downscale_area(img.astype(np.float32) / 255, 3), expected,
                               atol=1e-6)


def test_json_overrides_and_extensions(tmp_path):
    img = np.full((4, 4, 3), 128, np.uint8)
    root = _write_dataset(tmp_path / "ds", [img], extra={
        "near": 0.5, "far": 3.0, "aabb": [[-1, -2, -3], [1, 2, 3]]})
    # file_path given with an extension is used as is
    meta = json.loads((root / "transforms_train.json").read_text())
    meta["frames"][0]["file_path"] = "./train/r_0.png"
    (root / "transforms_train.json").write_text(json.dumps(meta))
    scene = load_scene(root, "train")
    assert (scene.near, scene.far) == (0.5, 3.0)
    np.testing.assert_allclose(scene.aabb, [[-1, -2, -3], [1, 2, 3]])
    assert scene.names == ["r_0"] and scene.metadata["format"] == "blender"
    np.testing.assert_allclose(scene.images, 128 / 255, atol=1e-7)
