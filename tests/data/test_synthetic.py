"""The generated default scene: the ray tracer, the dataset it writes and its cache."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from nerfkit.data import load_scene
from nerfkit.data import synthetic
from nerfkit.data.blender import load_blender
from nerfkit.data.synthetic import camera_poses, generate_default_scene, trace


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    return generate_default_scene(tmp_path_factory.mktemp("small"), num_train=6, num_test=3,
                                  resolution=48, seed=3)


def test_small_scene_loads_with_alpha_regions(small_scene):
    scene = load_blender(small_scene, "train")
    assert len(scene) == 6 and scene.images.shape == (6, 48, 48, 3)
    assert scene.alphas is not None
    a = scene.alphas
    assert np.any(a == 0.0) and np.any(a == 1.0)
    assert np.any((a > 0) & (a < 1))                       # anti-aliased silhouettes
    assert np.all(a[:, 0] == 0) and np.all(a[:, -1] == 0)  # content stays inside the frame
    assert np.all(a[:, :, 0] == 0) and np.all(a[:, :, -1] == 0)
    assert 0.1 < a.mean() < 0.5
    assert np.all(scene.images[a[..., 0] == 0] == 0)       # straight colour, black where empty
    assert (scene.near, scene.far) == (2.0, 6.0)
    np.testing.assert_allclose(scene.aabb, [[-1, -1, -1], [1, 1, 1]])
    # Opaque pixels are lit: not all dark, not all saturated, several distinct colours
    opaque = scene.images[a[..., 0] == 1]
    assert 0.15 < opaque.mean() < 0.85 and len(np.unique(np.round(opaque, 1), axis=0)) > 10
    test = load_blender(small_scene, "test")
    assert len(test) == 3 and test.names == ["r_0", "r_1", "r_2"]


def test_generation_is_deterministic(small_scene, tmp_path):
    again = generate_default_scene(tmp_path / "again", num_train=6, num_test=3, resolution=48,
                                   seed=3)
    for rel in ["transforms_train.json", "transforms_test.json", "train/r_5.png", "test/r_2.png"]:
        assert (again / rel).read_bytes() == (small_scene / rel).read_bytes(), rel
    other = generate_default_scene(tmp_path / "other", num_train=6, num_test=3, resolution=48,
                                   seed=4)
    assert (other / "train/r_0.png").read_bytes() != (small_scene / "train/r_0.png").read_bytes()
    assert (other / "test/r_0.png").read_bytes() == (small_scene / "test/r_0.png").read_bytes()


def test_cameras_on_upper_hemisphere_looking_at_origin():
    train, test = camera_poses(50, 10, seed=0)
    for poses in (train, test):
        pos = poses[:, :3, 3]
        np.testing.assert_allclose(np.linalg.norm(pos, axis=1), 4.0, rtol=1e-9)
        assert np.all(pos[:, 2] > 0)
        forward = -poses[:, :3, 2]                               # OpenGL: look down -z
        np.testing.assert_allclose(forward, -pos / 4.0, atol=1e-9)
        rot = poses[:, :3, :3]
        np.testing.assert_allclose(np.einsum("nji,njk->nik", rot, rot),
                                   np.broadcast_to(np.eye(3), rot.shape), atol=1e-9)
        assert np.all(poses[:, :3, 1] @ [0, 0, 1] > 0)          # upright (camera y has +z)


def test_trace_hits_and_misses():
    origins = np.array([[0.0, 0.0, 4.0], [0.0, 0.0, 4.0], [-0.3, -0.3, 4.0]])
    dirs = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    rgb, hit = trace(origins, dirs)
    assert hit.tolist() == [False, False, True]
    assert np.all(rgb[:2] == 0) and np.all(rgb[2] > 0)
    # The top of the checker sphere faces the light: brighter than ambient alone
    assert rgb[2].max() > synthetic.AMBIENT + 0.2


def test_default_scene_path_caches_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("NERFKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    small = functools.partial(generate_default_scene, num_train=2, num_test=1, resolution=16)

    def counting(out_dir):
        calls.append(out_dir)
        return small(out_dir)

    monkeypatch.setattr(synthetic, "generate_default_scene", counting)
    path = synthetic.default_scene_path()
    assert path == tmp_path / "cache" / "default_scene"
    assert calls and calls[0] != path                  # generated elsewhere, then renamed
    assert synthetic.default_scene_path() == path and len(calls) == 1   # cached
    assert sorted(p.name for p in path.parent.iterdir()) == ["default_scene"]  # no temp left
    # A stale version is replaced
    (path / synthetic._STAMP).write_text("0")
    assert synthetic.default_scene_path() == path and len(calls) == 2
    assert sorted(p.name for p in path.parent.iterdir()) == ["default_scene"]
    assert len(load_scene(None, "train")) == 2


def test_default_scene_full_size(tmp_path, monkeypatch):
    monkeypatch.setenv("NERFKIT_CACHE", str(tmp_path))
    train = load_scene(None, "train")
    test = load_scene(None, "test")
    assert train.images.shape == (100, 128, 128, 3) and len(test) == 20
    assert train.metadata["default_scene"] and train.metadata["format"] == "blender"
    meta = json.loads((tmp_path / "default_scene" / "transforms_train.json").read_text())
    assert meta["camera_angle_x"] == pytest.approx(synthetic.CAMERA_ANGLE_X)
    assert meta["generator"]["version"] == synthetic.SCENE_VERSION
