"""Pose normalisation (nerfkit.data.poses): the properties nerfstudio's auto-orient + auto-scale
promise, checked on random poses, and the capture -> model transform checked point by point."""

import numpy as np
import pytest

from nerfkit.data.poses import (apply_transform_to_poses, orient_and_center_poses,
                                rotation_between, transform_points)


def _random_rotations(rng, n):
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q


def _random_poses(rng, n=20, tilt=0.6):
    """Cameras whose up vectors spread around a random world direction (a real capture's)."""
    up_world = rng.normal(size=3)
    base = rotation_between(np.array([0.0, 1.0, 0.0]), up_world)
    rots = []
    for _ in range(n):
        yaw = rng.uniform(0, 2 * np.pi)
        small = rng.normal(size=3) * tilt
        a = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
        rots.append(base @ rotation_between([0, 1, 0], [small[0], 1, small[2]]) @ a)
    pos = rng.normal(size=(n, 3)) * 7.0 + rng.normal(size=3) * 30.0
    return np.concatenate([np.asarray(rots), pos[:, :, None]], axis=2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orient_center_scale_properties(seed):
    rng = np.random.default_rng(seed)
    poses = _random_poses(rng)
    res = orient_and_center_poses(poses)
    new = res.poses
    mean_up = new[:, :3, 1].mean(axis=0)
    np.testing.assert_allclose(mean_up / np.linalg.norm(mean_up), [0, 0, 1], atol=1e-12)
    # the rotation keeps the length of the mean up vector
    np.testing.assert_allclose(np.linalg.norm(mean_up),
                               np.linalg.norm(poses[:, :3, 1].mean(axis=0)), rtol=1e-12)
    np.testing.assert_allclose(new[:, :3, 3].mean(axis=0), 0.0, atol=1e-12)
    assert np.isclose(np.abs(new[:, :3, 3]).max(), 1.0, rtol=1e-12)
    rot = new[:, :3, :3]
    np.testing.assert_allclose(np.einsum("nji,njk->nik", rot, rot),
                               np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-12)
    # the scale: largest |camera coordinate| after centring and rotating, inverted
    assert np.isclose(res.scale, 1.0 / np.abs(
        (poses[:, :3, 3] - poses[:, :3, 3].mean(0)) @ res.rigid[:3, :3].T).max())
    np.testing.assert_allclose(res.transform, np.diag([res.scale] * 3 + [1.0]) @ res.rigid)


def test_transform_maps_capture_points_and_cameras():
    rng = np.random.default_rng(5)
    poses = _random_poses(rng, 12)
    res = orient_and_center_poses(poses)
    t = res.transform
    # camera centres map to the new camera centres
    np.testing.assert_allclose(transform_points(t, poses[:, :3, 3]), res.poses[:, :3, 3],
                               atol=1e-12)
    # a point at camera-space p (capture units) is, in model space, the new camera's s * p
    p_cam = rng.normal(size=(12, 3)) * 3.0
    world = np.einsum("nij,nj->ni", poses[:, :3, :3], p_cam) + poses[:, :3, 3]
    model = np.einsum("nij,nj->ni", res.poses[:, :3, :3], res.scale * p_cam) + res.poses[:, :3, 3]
    np.testing.assert_allclose(transform_points(t, world), model, atol=1e-10)
    # distances scale by s; angles are kept
    d0 = np.linalg.norm(world[1] - world[0])
    np.testing.assert_allclose(np.linalg.norm(model[1] - model[0]), res.scale * d0, rtol=1e-12)
    np.testing.assert_allclose(apply_transform_to_poses(t, poses), res.poses, atol=1e-12)
    # and back: inv(T) recovers the capture coordinates
    np.testing.assert_allclose(transform_points(np.linalg.inv(t), model), world, atol=1e-9)


def test_methods_none():
    rng = np.random.default_rng(3)
    poses = _random_poses(rng, 6)
    res = orient_and_center_poses(poses, method="none", center="none", auto_scale=False)
    np.testing.assert_allclose(res.transform, np.eye(4))
    np.testing.assert_allclose(res.poses, poses)
    res = orient_and_center_poses(poses, method="none")
    np.testing.assert_allclose(res.rigid[:3, :3], np.eye(3))
    np.testing.assert_allclose(res.poses[:, :3, :3], poses[:, :3, :3])
    with pytest.raises(ValueError, match="pca"):
        orient_and_center_poses(poses, method="pca")


def test_rotation_between_closed_form():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=3), rng.normal(size=3)
        r = rotation_between(a, b)
        np.testing.assert_allclose(r @ (a / np.linalg.norm(a)), b / np.linalg.norm(b), atol=1e-12)
        np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(r), 1.0)
        # shortest arc: the rotation angle is the angle between a and b
        cos = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
        assert np.isclose((np.trace(r) - 1) / 2, cos)
    np.testing.assert_allclose(rotation_between([0, 0, 2], [0, 0, 1]), np.eye(3))
    r = rotation_between([0, 0, 1], [0, 0, -1])
    np.testing.assert_allclose(r @ [0, 0, 1], [0, 0, -1], atol=1e-12)
    assert np.isclose(np.linalg.det(r), 1.0)


def test_degenerate_inputs():
    p = np.tile(np.eye(4)[:3], (3, 1, 1))
    with pytest.raises(ValueError, match="same position"):
        orient_and_center_poses(p)
    p2 = np.stack([np.eye(4)[:3], np.diag([1.0, -1.0, -1.0, 1.0])[:3]])
    p2[1, 0, 3] = 1.0
    with pytest.raises(ValueError, match="cancel"):
        orient_and_center_poses(p2)
    with pytest.raises(ValueError, match=r"\[N, 3, 4\]"):
        orient_and_center_poses(np.zeros((0, 3, 4)))
