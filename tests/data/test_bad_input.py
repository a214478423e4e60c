"""A corpus of broken datasets, each generated in tmp_path: every case is a DataError whose
message names the offending file and says what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nerfkit.data import load_scene
from nerfkit.data.blender import load_blender
from nerfkit.data.io import write_image_atomic
from nerfkit.data.llff import load_llff
from nerfkit.errors import ConfigError, DataError

_RGBA = np.dstack([np.full((8, 8, 3), 200, np.uint8), np.full((8, 8, 1), 255, np.uint8)])


def _blender(root: Path, n: int = 3) -> Path:
    (root / "train").mkdir(parents=True)
    frames = []
    for i in range(n):
        write_image_atomic(root / "train" / f"r_{i}.png", _RGBA)
        pose = np.eye(4)
        pose[2, 3] = 4.0
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": pose.tolist()})
    _dump(root / "transforms_train.json", {"camera_angle_x": 0.69, "frames": frames})
    (root / "transforms_test.json").write_text((root / "transforms_train.json").read_text())
    return root


def _dump(path: Path, meta) -> None:
    path.write_text(json.dumps(meta, indent=2))


def _edit(root: Path, fn) -> None:
    path = root / "transforms_train.json"
    meta = json.loads(path.read_text())
    fn(meta)
    _dump(path, meta)


def _set_pose(i, value):
    def fn(meta):
        meta["frames"][i]["transform_matrix"] = value
    return fn


def _pose(**changes):
    m = np.eye(4)
    m[2, 3] = 4.0
    for key, v in changes.items():
        r, c = int(key[1]), int(key[2])
        m[r, c] = v
    return m.tolist()


def _break_png(root: Path, data: bytes | None = None, truncate: bool = False):
    p = root / "train" / "r_1.png"
    if truncate:
        write_image_atomic(p, np.random.default_rng(0).integers(0, 255, (64, 64, 4), np.uint8))
        raw = p.read_bytes()
        p.write_bytes(raw[: len(raw) // 2])
    else:
        p.write_bytes(data)


# (case id, mutate(root) -> None, split, file name expected in the message, phrase expected)
BLENDER_CASES = [
    ("missing_json", lambda r: (r / "transforms_train.json").unlink(), "train",
     "transforms_train.json", "unknown split 'train'"),
    ("unknown_split", lambda r: None, "val", "transforms_val.json",
     "available splits: test, train"),
    ("malformed_json", lambda r: (r / "transforms_train.json").write_text(
        '{\n  "camera_angle_x": 0.69,\n  "frames": [\n    {"file_path": "./train/r_0",}\n  ]\n}'),
     "train", "transforms_train.json", "malformed JSON at line 4, column"),
    ("json_not_object", lambda r: (r / "transforms_train.json").write_text("[1, 2]"), "train",
     "transforms_train.json", "top level must be a JSON object"),
    ("missing_camera_angle", lambda r: _edit(r, lambda m: m.pop("camera_angle_x")), "train",
     "transforms_train.json", "missing key 'camera_angle_x'"),
    ("bad_camera_angle", lambda r: _edit(r, lambda m: m.update(camera_angle_x="wide")), "train",
     "transforms_train.json", "'camera_angle_x' must be a number"),
    ("missing_frames", lambda r: _edit(r, lambda m: m.pop("frames")), "train",
     "transforms_train.json", "missing key 'frames'"),
    ("empty_frames", lambda r: _edit(r, lambda m: m.update(frames=[])), "train",
     "transforms_train.json", "'frames' is empty"),
    ("missing_transform", lambda r: _edit(r, lambda m: m["frames"][1].pop("transform_matrix")),
     "train", "transforms_train.json", "frame 1 (./train/r_1): missing key 'transform_matrix'"),
    ("missing_file_path", lambda r: _edit(r, lambda m: m["frames"][2].pop("file_path")),
     "train", "transforms_train.json", "frame 2: missing key 'file_path'"),
    ("pose_shape", lambda r: _edit(r, _set_pose(0, np.eye(3).tolist())), "train",
     "transforms_train.json", "transform_matrix must be 4x4, got shape 3x3"),
    ("pose_not_numeric", lambda r: _edit(r, _set_pose(0, [["a"] * 4] * 4)), "train",
     "transforms_train.json", "not a numeric matrix"),
    ("pose_nan", lambda r: _edit(r, lambda m: m["frames"][1]["transform_matrix"][0].__setitem__(
        3, float("nan"))), "train", "transforms_train.json", "NaN or Inf"),
    ("pose_scaled", lambda r: _edit(r, _set_pose(1, (np.diag([2.0, 2, 2, 1])).tolist())),
     "train", "transforms_train.json", "not a rigid transform (rotation not orthonormal"),
    ("pose_sheared", lambda r: _edit(r, _set_pose(2, _pose(m01=0.3))), "train",
     "transforms_train.json", "rotation not orthonormal"),
    ("pose_reflection", lambda r: _edit(r, _set_pose(0, np.diag([1.0, 1, -1, 1]).tolist())),
     "train", "transforms_train.json", "reflection"),
    ("pose_last_row", lambda r: _edit(r, _set_pose(0, _pose(m32=1.0))), "train",
     "transforms_train.json", "last row"),
    ("bad_time", lambda r: _edit(r, lambda m: [f.update(time=2.0) for f in m["frames"]]),
     "train", "transforms_train.json", "'time' must be a number in [0, 1]"),
    ("partial_time", lambda r: _edit(r, lambda m: m["frames"][0].update(time=0.5)), "train",
     "transforms_train.json", "only 1 of 3 frames have a 'time'"),
    ("bad_near_far", lambda r: _edit(r, lambda m: m.update(near=5.0, far=1.0)), "train",
     "transforms_train.json", "must be smaller than 'far'"),
    ("bad_aabb", lambda r: _edit(r, lambda m: m.update(aabb=[1, 2, 3])), "train",
     "transforms_train.json", "'aabb' must be"),
    ("missing_image", lambda r: (r / "train" / "r_1.png").unlink(), "train", "r_1.png",
     "image file not found"),
    ("garbage_image", lambda r: _break_png(r, b"this is not a png at all"), "train", "r_1.png",
     "cannot decode image"),
    ("truncated_image", lambda r: _break_png(r, truncate=True), "train", "r_1.png",
     "truncated"),
    ("empty_image", lambda r: _break_png(r, b""), "train", "r_1.png", "empty (0 bytes)"),
    ("corrupt_png_body", lambda r: _break_png(
        r, (r / "train" / "r_0.png").read_bytes()[:40] + b"\x00" * 200), "train", "r_1.png",
     "cannot decode image"),
    ("size_mismatch", lambda r: write_image_atomic(r / "train" / "r_2.png", _RGBA[:6]), "train",
     "r_2.png", "image size 8x6 differs from the first image r_0.png (8x8)"),
]


@pytest.mark.parametrize("case", BLENDER_CASES, ids=[c[0] for c in BLENDER_CASES])
def test_blender_bad_input(tmp_path, case):
    _, mutate, split, fname, phrase = case
    root = _blender(tmp_path / "ds")
    mutate(root)
    with pytest.raises(DataError) as info:
        load_blender(root, split)
    msg = str(info.value)
    assert fname in msg and phrase in msg, msg
    assert info.value.path is not None and Path(info.value.path).name == fname


def test_blender_missing_root_and_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found") as info:
        load_blender(tmp_path / "nowhere", "train")
    assert "nowhere" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a Blender-layout dataset") as info:
        load_blender(tmp_path / "empty", "train")
    assert "transforms_train.json" in str(info.value)


def test_load_scene_unknown_format_and_bad_options(tmp_path):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hi")
    with pytest.raises(DataError) as info:
        load_scene(tmp_path / "stuff", "train")
    msg = str(info.value)
    assert "stuff" in msg and "unrecognised dataset format" in msg
    assert "transforms_{split}.json" in msg and "poses_bounds.npy" in msg
    with pytest.raises(DataError, match="dataset path not found"):
        load_scene(tmp_path / "missing", "train")
    root = _blender(tmp_path / "ds")
    with pytest.raises(ConfigError, match="holdout"):
        load_scene(root, "train", holdout=8)
    with pytest.raises(ConfigError, match="downscale"):
        load_scene(root, "train", downscale=0)


# ------------------------------------------------------------------------------------------ LLFF

def _llff(root: Path, n: int = 4, folder: str = "images_8") -> Path:
    root.mkdir(parents=True)
    rows = []
    for i in range(n):
        llff = np.zeros((3, 5))
        llff[:, :3] = [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]   # [down, right, back] for an identity
        llff[:, 3] = [0.1 * i, 0, 0]
        llff[:, 4] = [48, 64, 50]
        rows.append(np.concatenate([llff.reshape(-1), [2.0, 8.0]]))
    np.save(root / "poses_bounds.npy", np.asarray(rows))
    for i in range(n):
        write_image_atomic(root / folder / f"image{i:03d}.png", np.zeros((6, 8, 3), np.uint8))
    return root


def _pb_edit(root: Path, fn):
    pb = np.load(root / "poses_bounds.npy")
    np.save(root / "poses_bounds.npy", fn(pb))


def _nan_row(pb):
    pb[2, 3] = np.nan
    return pb


def _bad_rot(pb):
    pb[1, 0] = 3.0
    return pb


def _bad_bounds(pb):
    pb[3, 15:] = [5.0, 1.0]
    return pb


LLFF_CASES = [
    ("missing_npy", lambda r: (r / "poses_bounds.npy").unlink(), "train", "poses_bounds.npy",
     "not found"),
    ("shape_15", lambda r: _pb_edit(r, lambda pb: pb[:, :15]), "train", "poses_bounds.npy",
     "wrong shape [4, 15]: expected [N, 17]"),
    ("shape_1d", lambda r: _pb_edit(r, lambda pb: pb.reshape(-1)), "train", "poses_bounds.npy",
     "expected [N, 17]"),
    ("corrupt_npy", lambda r: (r / "poses_bounds.npy").write_bytes(b"\x93NUMPY garbage"), "train",
     "poses_bounds.npy", "cannot read .npy array"),
    ("nan_pose", lambda r: _pb_edit(r, _nan_row), "train", "poses_bounds.npy",
     "row(s) [2] contain NaN or Inf"),
    ("non_rigid", lambda r: _pb_edit(r, _bad_rot), "train", "poses_bounds.npy",
     "not rigid"),
    ("bad_bounds", lambda r: _pb_edit(r, _bad_bounds), "train", "poses_bounds.npy",
     "not 0 < near < far"),
    ("count_mismatch", lambda r: (r / "images_8" / "image003.png").unlink(), "train",
     "images_8", "mismatch between poses and images: 3 images in images_8/ but 4 poses"),
    ("missing_folder", lambda r: [p.unlink() for p in (r / "images_8").iterdir()]
     and (r / "images_8").rmdir(), "train", "ll", "image folder images_8/ not found"),
    ("unknown_split", lambda r: None, "validation", "ll",
     "unknown split 'validation' for an LLFF dataset; available splits: train, test, val, all"),
    ("corrupt_image", lambda r: (r / "images_8" / "image001.png").write_bytes(b"junk"), "all",
     "image001.png", "cannot decode image"),
    ("size_mismatch", lambda r: write_image_atomic(r / "images_8" / "image002.png",
                                                   np.zeros((5, 8, 3), np.uint8)), "all",
     "image002.png", "differs from the first image"),
    ("aspect_mismatch", lambda r: [write_image_atomic(p, np.zeros((8, 8, 3), np.uint8))
                                   for p in (r / "images_8").iterdir()], "all", "image000.png",
     "does not match the aspect ratio"),
]


@pytest.mark.parametrize("case", LLFF_CASES, ids=[c[0] for c in LLFF_CASES])
def test_llff_bad_input(tmp_path, case):
    _, mutate, split, fname, phrase = case
    root = _llff(tmp_path / "ll")
    mutate(root)
    with pytest.raises(DataError) as info:
        load_llff(root, split)
    msg = str(info.value)
    assert fname in msg and phrase in msg, msg


def test_llff_good_fixture_loads(tmp_path):
    scene = load_llff(_llff(tmp_path / "ll"), "all")   # the corpus starts from valid data
    assert scene.images.shape == (4, 6, 8, 3)
    np.testing.assert_allclose(scene.cameras.fx, 50 * 8 / 64)
