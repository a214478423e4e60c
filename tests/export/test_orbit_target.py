"""The orbit camera path around a given target (unbounded captures orbit the origin)."""

import numpy as np

from nerfkit.export.camera_paths import look_at, orbit_path


def test_orbit_around_origin_keeps_radius_height_and_looks_at_it():
    rng = np.random.default_rng(0)
    up = np.array([0.0, 0.0, 1.0])
    # Cameras on a tilted-free ring of radius ~0.8 at height ~0.3, looking at assorted points
    # (their focus point is not the origin).
    eyes = []
    c2w = []
    for a in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        e = np.array([0.8 * np.cos(a), 0.8 * np.sin(a), 0.3]) + rng.normal(0, 0.02, 3)
        eyes.append(e)
        c2w.append(look_at(e, np.array([0.3, 0.2, 0.0]) + rng.normal(0, 0.05, 3), up))
    eyes, c2w = np.array(eyes), np.array(c2w)
    path = orbit_path(c2w, 8, target=np.zeros(3))
    pos = path.c2w[:, :3, 3].astype(np.float64)
    radius = np.linalg.norm(eyes, axis=-1).mean()
    np.testing.assert_allclose(np.linalg.norm(pos, axis=-1), radius, rtol=1e-5)
    # Height along the cameras' mean up vector (about +z here).
    mean_up = c2w[:, :3, 1].mean(0)
    mean_up /= np.linalg.norm(mean_up)
    np.testing.assert_allclose(pos @ mean_up, (eyes @ mean_up).mean(), atol=1e-5)
    # Each camera looks down its -z axis straight at the origin.
    fwd = -path.c2w[:, :3, 2]
    np.testing.assert_allclose(fwd, -pos / np.linalg.norm(pos, axis=-1, keepdims=True),
                               atol=1e-5)
    # Without a target it circles the focus point instead (not the origin).
    other = orbit_path(c2w, 8)
    assert not np.allclose(-other.c2w[:, :3, 2],
                           -other.c2w[:, :3, 3] / np.linalg.norm(other.c2w[:, :3, 3], axis=-1,
                                                                  keepdims=True), atol=1e-2)
