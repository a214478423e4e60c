"""``--logger``: metrics.jsonl always, TensorBoard event files read back from disk."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

pytest.importorskip("tensorboardX")

from tensorboardX.proto import event_pb2  # noqa: E402

from nerfkit.cli import main  # noqa: E402
from nerfkit.engine.logger import RunLogger, scalar_tags, side_by_side  # noqa: E402

TINY = ["--model.depth", "2", "--model.width", "32", "--model.view-width", "16",
        "--model.coarse-samples", "8", "--model.fine-samples", "8", "--model.batch-size", "128"]


def read_events(folder: Path) -> list:
    """Every ``Event`` in the TFRecord files below ``folder``: each record is a little-endian
    uint64 length, its masked CRC32C (4 bytes), the serialized Event, and the data's CRC (4)."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            ev = event_pb2.Event()
            ev.ParseFromString(data[pos + 12:pos + 12 + n])
            events.append(ev)
            pos += 12 + n + 4
        assert pos == len(data), f"{path}: truncated record"
    return events


def test_scalar_tags_and_side_by_side():
    assert scalar_tags({"step": 3, "time": 1.5, "loss": 0.25, "psnr": 12.0, "lr": 1e-3,
                        "rays_per_s": 1000.0}) == {
        "train/loss": 0.25, "train/psnr": 12.0, "train/lr": 1e-3, "train/rays_per_s": 1000.0}
    assert scalar_tags({"step": 3, "time": 2.0, "eval_minutes": 5, "eval_psnr": 20.0,
                        "eval_ssim": float("nan")}) == {"eval_marks/psnr": 20.0}
    img = side_by_side(np.zeros((2, 3, 3)), np.full((2, 3, 3), 2.0))
    assert img.dtype == np.uint8 and img.shape == (2, 6, 3)
    assert img[:, :3].max() == 0 and img[:, 3:].min() == 255


def test_disabled_and_unknown_loggers(tmp_path):
    with RunLogger(tmp_path, "tensorboard", enabled=False) as lg:  # processes other than 0
        lg.log({"step": 1, "time": 0.0, "loss": 1.0})
        assert not lg.wants_images
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="jsonl, tensorboard, none"):
        RunLogger(tmp_path, "wandb")


@pytest.mark.slow  # ~10 s: two compilations of a tiny NeRF's step, two renders
def test_train_with_tensorboard_logger(tmp_path, monkeypatch):
    from nerfkit.data import load_scene
    # Every --eval-every evaluation, whatever it costs next to 4 tiny steps (the trainer skips
    # periodic evaluations beyond ~10% of the training time).
    monkeypatch.setattr("nerfkit.engine.trainer.PERIODIC_EVAL_BUDGET", float("inf"))
    from nerfkit.data.synthetic import generate_default_scene
    data = generate_default_scene(tmp_path / "scene", num_train=2, num_test=2, resolution=16)
    run = tmp_path / "run"
    assert main(["train", "nerf", "--data", str(data), "--max-steps", "4", "--log-every", "1",
                 "--eval-every", "2", "--eval-views", "2", "--no-final-eval",
                 "--logger", "tensorboard", "--output", str(run), *TINY]) == 0

    # metrics.jsonl is still the run's record.
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    train_lines = [l for l in lines if "loss" in l and not l.get("final")]
    eval_lines = [l for l in lines if "eval_psnr" in l]
    assert [l["step"] for l in train_lines] == [1, 2, 3, 4]
    assert [l["step"] for l in eval_lines] == [2, 4]

    events = read_events(run / "tensorboard")
    scalars: dict[str, dict[int, float]] = {}
    images: dict[tuple[str, int], np.ndarray] = {}
    for ev in events:
        for v in ev.summary.value:
            if v.HasField("image"):
                images[(v.tag, ev.step)] = iio.imread(io.BytesIO(v.image.encoded_image_string))
            else:
                scalars.setdefault(v.tag, {})[ev.step] = v.simple_value
    for key, tag in (("loss", "train/loss"), ("psnr", "train/psnr"), ("lr", "train/lr"),
                     ("rays_per_s", "train/rays_per_s")):
        assert sorted(scalars[tag]) == [1, 2, 3, 4], tag
        np.testing.assert_allclose([scalars[tag][l["step"]] for l in train_lines],
                                   [l[key] for l in train_lines], rtol=1e-6)
    np.testing.assert_allclose([scalars["eval/psnr"][s] for s in (2, 4)],
                               [l["eval_psnr"] for l in eval_lines], rtol=1e-6)
    assert sorted(scalars["eval/ssim"]) == [2, 4]

    # Each periodic evaluation shows both test views: render (left) beside ground truth (right).
    gt = load_scene(data, "test").composited()
    for step, line in zip((2, 4), eval_lines):
        psnrs = []
        for i, name in enumerate(("r_0", "r_1")):
            img = images[(f"eval_views/{name}", step)]
            assert img.shape == (16, 32, 3)
            right = img[:, 16:].astype(np.float32) / 255.0
            np.testing.assert_allclose(right, gt[i], atol=1 / 255 + 1e-6)
            left = img[:, :16].astype(np.float32) / 255.0
            psnrs.append(-10.0 * np.log10(np.mean((left - gt[i]) ** 2)))
        # 8-bit images: the PSNR of what TensorBoard shows is the evaluation's, to quantisation.
        assert abs(np.mean(psnrs) - line["eval_psnr"]) < 0.1, (psnrs, line["eval_psnr"])


def test_jsonl_logger_writes_no_event_files(tmp_path):
    with RunLogger(tmp_path, "jsonl") as lg:
        lg.log({"step": 1, "time": 0.1, "loss": 1.0})
        lg.images(1, {"r_0": np.zeros((4, 8, 3), np.uint8)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "time": 0.1,
                                                                   "loss": 1.0}
