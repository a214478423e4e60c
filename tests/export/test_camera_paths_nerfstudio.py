"""nerfstudio's camera_path.json (as its viewer saves it and ``ns-render camera-path`` reads it,
nerfstudio/cameras/camera_paths.py: get_path_from_json) read by ``load_camera_path``, and
written by ``nerfstudio_camera_path``."""

import json
import math

import numpy as np
import pytest

from nerfkit.errors import DataError
from nerfkit.export.camera_paths import CameraPath, load_camera_path, nerfstudio_camera_path


def _frame(c2w4, fov, t=None):
    fr = {"camera_to_world": np.asarray(c2w4).reshape(-1).tolist(), "fov": fov, "aspect": 1.5}
    if t is not None:
        fr["render_time"] = t
    return fr


def _pose(angle, tx):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s, tx], [0, 1, 0, 0.5], [-s, 0, c, 3.0], [0, 0, 0, 1.0]])


def test_reads_nerfstudio_file(tmp_path):
    poses = [_pose(0.0, 0.0), _pose(0.3, 1.0), _pose(0.6, 2.0)]
    spec = {"camera_type": "perspective", "render_height": 480, "render_width": 720,
            "fps": 24, "seconds": 0.125, "smoothness_value": 0.5, "is_cycle": False,
            "keyframes": [], "crop": None,
            "camera_path": [_frame(p, 50.0 + i, t=i / 2) for i, p in enumerate(poses)]}
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps(spec))
    cp = load_camera_path(path)
    assert (cp.width, cp.height, cp.fps) == (720, 480, 24)
    np.testing.assert_allclose(cp.c2w, np.stack(poses)[:, :3], atol=1e-6)  # row-major 4x4
    np.testing.assert_allclose(cp.fov_y, [50.0, 51.0, 52.0])
    np.testing.assert_allclose(cp.times, [0.0, 0.5, 1.0])
    # Without render_time on every frame there are no times (nerfstudio: "iff ALL cameras").
    del spec["camera_path"][1]["render_time"]
    path.write_text(json.dumps(spec))
    assert load_camera_path(path).times is None


def test_writer_round_trip(tmp_path):
    c2w = np.stack([_pose(a, a) for a in (0.1, 0.2)])[:, :3].astype(np.float32)
    spec = nerfstudio_camera_path(CameraPath(c2w, np.array([30.0, 60.0]), np.array([0.2, 0.4])),
                                  64, 48, 10)
    assert spec["seconds"] == pytest.approx(0.2) and spec["camera_type"] == "perspective"
    assert spec["camera_path"][0]["aspect"] == pytest.approx(64 / 48)
    np.testing.assert_allclose(np.reshape(spec["camera_path"][1]["camera_to_world"], (4, 4)),
                               _pose(0.2, 0.2), atol=1e-6)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(spec))
    cp = load_camera_path(path)
    np.testing.assert_allclose(cp.c2w, c2w, atol=1e-6)
    np.testing.assert_allclose(cp.fov_y, [30.0, 60.0])
    np.testing.assert_allclose(cp.times, [0.2, 0.4])
    assert (cp.width, cp.height, cp.fps) == (64, 48, 10)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("render_width"), "render_width"),
    (lambda s: s["camera_path"][0].update(fov=0), "'fov'"),
    (lambda s: s["camera_path"][0].update(camera_to_world=[1, 2, 3]), "camera_to_world"),
    (lambda s: s.update(camera_type="equirectangular"), "perspective"),
    (lambda s: s.update(camera_path=[]), "non-empty"),
])
def test_bad_nerfstudio_files(tmp_path, change, message):
    spec = {"render_height": 10, "render_width": 10, "camera_path": [_frame(np.eye(4), 40.0)]}
    change(spec)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(DataError, match=message) as e:
        load_camera_path(path)
    assert str(path) in str(e.value)
