"""Every registered preset trains, renders, checkpoints and resumes (nerfstudio's ``test_train``
idea): a new family or preset is covered by registering it.

Each preset trains 2 steps on tiny data with its model shrunk (``SHRINK``; a family without an
entry keeps its sizes, with small batches), renders one test view, and resumes from its last
checkpoint for one more step. The data follow the preset: an image, a video's frames, a dynamic
(D-NeRF-style) scene, or the generated default scene; students (families with a ``teacher``)
distil from a tiny NeRF teacher trained here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from nerfkit.engine.config import presets

SIZE = 16  # pixels

#: Model fields that make each family small enough for a few seconds on a CPU.
SHRINK = {
    "ngp": dict(levels=4, log2_table_size=10, max_resolution=64, hidden=16, geo_features=7,
                sh_degree=2, occupancy_resolution=16, march_steps=32, num_samples=8,
                eval_samples=8),
    "nerf": dict(depth=2, width=16, skip=1, view_width=8, pos_freqs=2, dir_freqs=1, time_freqs=2,
                 coarse_samples=8, fine_samples=8),
    "r2l": dict(depth=4, width=16, points=4, pos_freqs=2),
    "nerdf": dict(depth=2, width=16, skip=1, points=4, pos_freqs=2, num_basis=6, samples=8),
    "signal": dict(width=16, depth=2, pos_freqs=2, time_freqs=2),
}
#: For every family: small batches and render calls.
COMMON = dict(batch_size=64, render_chunk=SIZE * SIZE, microbatch=None)


def tiny_model(model):
    fields = {f.name for f in dataclasses.fields(model)}
    changes = {k: v for k, v in {**COMMON, **SHRINK.get(model.family, {})}.items() if k in fields}
    return dataclasses.replace(model, **changes)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Tiny datasets: ``static`` (the generated scene), ``dynamic`` (the same with a per-frame
    ``time``, as D-NeRF's ``transforms_*.json``), ``image`` (a PNG), ``video`` (a frame folder)."""
    from nerfkit.data.synthetic import generate_default_scene
    root = tmp_path_factory.mktemp("smoke")
    static = generate_default_scene(root / "static", num_train=4, num_test=1, resolution=SIZE)
    dynamic = generate_default_scene(root / "dynamic", num_train=4, num_test=2, resolution=SIZE)
    for split in ("train", "test"):
        path = dynamic / f"transforms_{split}.json"
        meta = json.loads(path.read_text())
        n = len(meta["frames"])
        for i, frame in enumerate(meta["frames"]):
            frame["time"] = i / max(n - 1, 1)
        path.write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    image = root / "image.png"
    iio.imwrite(image, (rng.random((SIZE, SIZE + 4, 3)) * 255).astype(np.uint8))
    video = root / "frames"
    video.mkdir()
    for i in range(3):
        iio.imwrite(video / f"{i:04d}.png", (rng.random((SIZE, SIZE, 3)) * 255).astype(np.uint8))
    return {"static": static, "dynamic": dynamic, "image": image, "video": video}


#: Which data each preset trains on (every other preset: the static scene).
DATA = {"image": "image", "video": "video", "dnerf": "dynamic"}


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:
    """A tiny NeRF trained one step: the teacher of the student presets."""
    from nerfkit.engine.trainer import train
    from nerfkit.models.nerf import NeRFConfig
    out = tmp_path_factory.mktemp("teacher") / "run"
    _, base = presets()["nerf"]
    train(dataclasses.replace(base, model=tiny_model(NeRFConfig()), data=str(data["static"]),
                              max_steps=1, output=out, final_eval=False))
    return out


def _metric_lines(run: Path) -> list[str]:
    return (run / "metrics.jsonl").read_text().splitlines()


@pytest.mark.parametrize("name", list(presets()))
def test_preset_trains_renders_checkpoints_and_resumes(name, data, tmp_path, request):
    from nerfkit.engine.run import load_run
    from nerfkit.engine.trainer import train
    from nerfkit.models.student import StudentConfig
    _, base = presets()[name]
    model = tiny_model(base.model)
    if isinstance(model, StudentConfig):
        model = dataclasses.replace(model, teacher=str(request.getfixturevalue("teacher")))
    out = tmp_path / name
    cfg = dataclasses.replace(base, model=model, data=str(data[DATA.get(name, "static")]),
                              downscale=None, max_minutes=None, max_steps=2, output=out,
                              log_every=1, eval_every=0, eval_minutes=(), final_eval=False,
                              checkpoint_every=10**6)
    summary = train(cfg)
    assert summary["step"] == 2 and np.isfinite(summary["loss"])

    run = load_run(out)  # the checkpoint written at the end, the config and scene description
    assert run.step == 2 and run.cfg.model == model
    test = run.load_split("test")
    view = run.renderer().render_view(test, 0)
    assert view["rgb"].shape == (test.height, test.width, 3)
    assert np.all(np.isfinite(view["rgb"])) and np.all(np.isfinite(view["depth"]))

    before = _metric_lines(out)
    summary = train(dataclasses.replace(cfg, max_steps=3, resume=True))
    assert summary["step"] == 3 and load_run(out).step == 3
    after = _metric_lines(out)
    # Resumed from step 2: the log of steps 1-2 is kept as it was, and step 3 follows it.
    assert after[:len(before)] == before
    assert [json.loads(line)["step"] for line in after[len(before):]] == [3, 3]
