"""LLFF parser: real fern at factor 8 and small generated fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import requires_shared, shared_datasets
from nerfkit.data import load_scene
from nerfkit.data.io import write_image_atomic
from nerfkit.data.llff import average_pose, load_llff, spiral_path


def _fern():
    return shared_datasets() / "nerf_llff_data" / "fern"


def _assert_rotations_orthonormal(c2w, atol=1e-5):
    rot = np.asarray(c2w, np.float64)[:, :3, :3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", rot, rot),
                               np.broadcast_to(np.eye(3), rot.shape), atol=atol)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=atol)


@requires_shared
def test_fern_splits_and_intrinsics():
    pb = np.load(_fern() / "poses_bounds.npy")
    test = load_llff(_fern(), "test")
    train = load_llff(_fern(), "train")
    full = load_llff(_fern(), "all")
    assert (len(test), len(train), len(full)) == (3, 17, 20)
    assert test.names == ["image000", "image008", "image016"]
    assert test.metadata["indices"] == [0, 8, 16]
    assert "image000" not in train.names and len(set(train.names) | set(test.names)) == 20
    assert full.images.shape == (20, 378, 504, 3) and full.images.dtype == np.float32
    assert full.alphas is None and full.images.min() >= 0 and full.images.max() <= 1

    focal = pb[0, 14] * 504 / pb[0, 9]            # hwf focal scaled by loaded width / full width
    np.testing.assert_allclose(full.cameras.fx, focal, rtol=1e-5)
    np.testing.assert_allclose(full.cameras.fy, focal, rtol=1e-5)
    np.testing.assert_allclose(full.cameras.cx, 252.0)
    np.testing.assert_allclose(full.cameras.cy, 189.0)

    # NDC defaults
    assert full.ndc and (full.near, full.far) == (0.0, 1.0)
    # The box holds every pixel's NDC ray of every camera (all pixels, t on a grid): the
    # other cameras see past the reference camera's [-1, 1] frustum.
    from nerfkit.data.raysource import camera_image_rays, ray_geometry
    geom, cams = ray_geometry(full), full.cameras
    lo, hi = np.inf, -np.inf
    for i in range(len(full)):
        r = camera_image_rays(geom, cams.c2w[i], [cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i]],
                              cams.width, cams.height)
        t = np.linspace(0.0, 1.0, 11)[:, None, None, None]
        pts = np.asarray(r.origins) + t * np.asarray(r.directions)
        lo, hi = np.minimum(lo, pts.min((0, 1, 2))), np.maximum(hi, pts.max((0, 1, 2)))
    assert np.all(full.aabb[0] <= lo + 1e-5) and np.all(full.aabb[1] >= hi - 1e-5)
    assert np.all(full.aabb[0, :2] < -1.2) and np.all(full.aabb[1, :2] > 1.2)  # fern: wider
    np.testing.assert_allclose(full.aabb[:, 2], [-1, 1])
    assert np.all(full.aabb[1, :2] - full.aabb[0, :2] < 1.1 * (hi - lo)[:2])  # and not loose
    assert full.metadata["ndc"] == {"focal": pytest.approx(focal, rel=1e-5), "width": 504,
                                    "height": 378, "near_plane": 1.0}
    # bd_factor rescaling puts the closest bound at 1 / 0.75
    assert full.metadata["bounds"].min() == pytest.approx(1 / 0.75, rel=1e-5)
    # The same cameras in every split
    np.testing.assert_allclose(test.cameras.c2w, full.cameras.c2w[[0, 8, 16]])


@requires_shared
def test_fern_poses_are_forward_facing_and_recentred():
    scene = load_llff(_fern(), "all")
    c2w = np.asarray(scene.cameras.c2w, np.float64)
    _assert_rotations_orthonormal(c2w)
    view = -c2w[:, :, 2]                          # OpenGL: the camera looks down -z
    mean_view = view.mean(axis=0) / np.linalg.norm(view.mean(axis=0))
    assert np.min(view @ mean_view) > 0.95        # all looking the same way
    # Recentred: average pose is the identity, so cameras look down world -z from the origin
    np.testing.assert_allclose(average_pose(c2w), np.eye(4)[:3], atol=1e-5)
    np.testing.assert_allclose(mean_view, [0, 0, -1], atol=0.02)
    # Camera centres lie roughly in a plane facing the scene: spread in x/y >> spread in z
    spread = c2w[:, :3, 3].std(axis=0)
    assert spread[2] < 0.5 * min(spread[0], spread[1])
    # The scene content (at the bounds' depths) is in front: every camera's near point has z < 0
    near_pts = c2w[:, :3, 3] + view * scene.metadata["bounds"][:, :1]
    assert np.all(near_pts[:, 2] < -1.0)          # beyond the NDC near plane z = -1

    spiral = scene.metadata["render_poses_spiral"]
    assert spiral.shape == (120, 3, 4) and spiral.dtype == np.float32
    _assert_rotations_orthonormal(spiral)
    assert np.min(-spiral[:, :, 2] @ mean_view) > 0.95
    np.testing.assert_allclose(spiral_path(c2w, scene.metadata["bounds"]), spiral, atol=1e-5)
    np.testing.assert_allclose(spiral_path(scene), spiral, atol=1e-5)


@requires_shared
def test_fern_without_ndc_and_load_scene_defaults():
    scene = load_llff(_fern(), "all", ndc=False)
    b = scene.metadata["bounds"]
    assert not scene.ndc and "ndc" not in scene.metadata
    assert scene.near == pytest.approx(0.9 * b.min()) and scene.far == pytest.approx(b.max())
    centres = np.asarray(scene.cameras.c2w)[:, :3, 3]
    assert np.all(centres >= scene.aabb[0]) and np.all(centres <= scene.aabb[1])
    assert scene.aabb[0, 2] < -b.max() * 0.9     # the box reaches out to the far bound

    via = load_scene(_fern(), "test")             # downscale None -> images_8
    assert via.images.shape == (3, 378, 504, 3) and via.metadata["format"] == "llff"
    via4 = load_scene(_fern(), "test", downscale=16, holdout=10)   # falls back to images_8 / 2
    assert via4.images.shape == (2, 189, 252, 3) and via4.names == ["image000", "image010"]
    np.testing.assert_allclose(via4.cameras.fx, via.cameras.fx[:2] / 2, rtol=1e-6)


def _write_llff(root, c2w_gl, bounds, h=12, w=16, focal=20.0, folder="images", scale=1):
    """LLFF dataset from OpenGL poses: columns written as [down, right, back] = [-y, x, z]."""
    rows = []
    for m, bd in zip(c2w_gl, bounds):
        llff = np.stack([-m[:3, 1], m[:3, 0], m[:3, 2], m[:3, 3], [h, w, focal]], axis=1)
        rows.append(np.concatenate([llff.reshape(-1), bd]))
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / "poses_bounds.npy", np.asarray(rows))
    rng = np.random.default_rng(0)
    for i in range(len(c2w_gl)):
        img = rng.integers(0, 256, (h // scale, w // scale, 3), dtype=np.uint8)
        write_image_atomic(root / folder / f"img{i:02d}.png", img)
    return root


def _look(pos, target=(0.0, 0.0, -5.0)):
    back = np.asarray(pos, float) - target
    back /= np.linalg.norm(back)
    right = np.cross([0, 1.0, 0], back)
    right /= np.linalg.norm(right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, np.cross(back, right), back, pos
    return m


def test_llff_axis_conversion_and_scaling(tmp_path):
    poses = np.stack([_look([x, y, 0.0]) for x, y in [(0, 0), (0.5, 0), (0, 0.5), (-0.4, 0.3)]])
    bounds = np.array([[2.0, 9.0], [2.5, 8.0], [3.0, 10.0], [2.2, 7.0]])
    root = _write_llff(tmp_path / "ll", poses, bounds)

    raw = load_llff(root, "all", factor=1, recenter=False, bd_factor=None, holdout=0)
    np.testing.assert_allclose(raw.cameras.c2w, poses[:, :3], atol=1e-6)
    np.testing.assert_allclose(raw.metadata["bounds"], bounds, rtol=1e-6)

    scaled = load_llff(root, "all", factor=1, recenter=False, bd_factor=0.5, holdout=0)
    s = 1 / (2.0 * 0.5)
    np.testing.assert_allclose(scaled.cameras.c2w[:, :, 3], poses[:, :3, 3] * s, atol=1e-6)
    np.testing.assert_allclose(scaled.cameras.c2w[:, :, :3], poses[:, :3, :3], atol=1e-6)
    assert scaled.metadata["scale"] == pytest.approx(s)

    rec = load_llff(root, "all", factor=1, holdout=0)
    np.testing.assert_allclose(average_pose(np.asarray(rec.cameras.c2w, np.float64)),
                               np.eye(4)[:3], atol=1e-5)
    # Recentring is rigid: relative poses (and distances between cameras) are unchanged
    a = np.asarray(rec.cameras.c2w, np.float64)
    d_rec = np.linalg.norm(a[0, :, 3] - a[1, :, 3])
    d_raw = np.linalg.norm(poses[0, :3, 3] - poses[1, :3, 3]) / (2.0 * 0.75)
    assert d_rec == pytest.approx(d_raw, rel=1e-5)
    # world_from_llff maps the scaled input poses onto the output ones
    w = rec.metadata["world_from_llff"].astype(np.float64)
    np.testing.assert_allclose((w @ poses[2])[:3, 3], a[2, :, 3], atol=1e-5)


def test_llff_fallback_to_full_images_with_downscale(tmp_path):
    poses = np.stack([_look([0.1 * i, 0, 0]) for i in range(3)])
    root = _write_llff(tmp_path / "ll", poses, np.tile([[2.0, 6.0]], (3, 1)), h=12, w=16,
                       focal=20.0)
    scene = load_llff(root, "train", factor=2, holdout=2)
    assert scene.names == ["img01"] and scene.images.shape == (1, 6, 8, 3)
    assert scene.metadata["image_folder"] == "images"
    np.testing.assert_allclose(scene.cameras.fx, 10.0)
    np.testing.assert_allclose(scene.cameras.cx, 4.0)
