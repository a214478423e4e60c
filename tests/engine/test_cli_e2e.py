"""End to end on real data: train a tiny NeRF on lego, resume, render, evaluate (CLI)."""

import json

import numpy as np
import pytest

from conftest import requires_shared, shared_datasets
from nerfkit.cli import main

TINY = ["--model.depth", "2", "--model.width", "32", "--model.view-width", "16",
        "--model.coarse-samples", "8", "--model.fine-samples", "8", "--model.batch-size", "256",
        "--checkpoint-every", "5", "--log-every", "1"]


@requires_shared
@pytest.mark.slow
def test_train_resume_render_eval(tmp_path, capsys):
    lego = str(shared_datasets() / "nerf_synthetic" / "lego")
    run = tmp_path / "lego-nerf"
    assert main(["train", "nerf", "--data", lego, "--downscale", "16", "--max-steps", "6",
                 "--output", str(run), *TINY]) == 0
    assert (run / "config.json").exists() and (run / "scene.json").exists()
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 6

    # An existing run is never overwritten without --overwrite.
    assert main(["train", "nerf", "--data", lego, "--downscale", "16", "--max-steps", "6",
                 "--output", str(run), *TINY]) == 2
    assert "already exists" in capsys.readouterr().err

    assert main(["train", "nerf", "--data", lego, "--downscale", "16", "--max-steps", "10",
                 "--output", str(run), "--resume", *TINY]) == 0
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(l["step"] for l in lines) == 10

    out = tmp_path / "renders"
    assert main(["render", str(run), "--split", "test", "--output", str(out)]) == 0
    pngs = sorted((out / "test").glob("*.png"))
    assert len(pngs) == 200 and (out / "test" / "r_0.png").exists()

    assert main(["render", str(run), "--camera-path", "orbit", "--frames", "4",
                 "--output", str(tmp_path / "orbit")]) == 0
    assert (tmp_path / "orbit" / "video.mp4").stat().st_size > 0
    assert len(list((tmp_path / "orbit" / "frames").glob("*.png"))) == 4

    assert main(["eval", str(run), "--split", "test"]) == 0
    ev = json.loads((run / "eval" / "test.json").read_text())
    assert ev["num_views"] == 200 and len(ev["views"]) == 200
    assert 5.0 < ev["psnr"] < 40.0 and 0.0 < ev["ssim"] <= 1.0
    assert ev["step"] == 10
    # LPIPS by default: a barely trained model is far from the images (0 would be identical);
    # on 200 50x50 views it costs seconds, not minutes.
    assert 0.05 < ev["lpips"] < 1.5 and all(0.0 < v["lpips"] < 1.5 for v in ev["views"])
    assert ev["lpips_seconds"] < 30.0


@requires_shared
@pytest.mark.slow
def test_resume_matches_uninterrupted(tmp_path):
    """4 + 4 resumed steps give bit-for-bit the parameters of 8 uninterrupted steps."""
    from nerfkit.engine.run import load_run
    lego = str(shared_datasets() / "nerf_synthetic" / "lego")
    common = ["--data", lego, "--downscale", "16", *TINY, "--no-final-eval",
              "--model.lr-final", "5e-4"]  # constant rate: the schedule depends on max-steps
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "nerf", "--max-steps", "8", "--output", str(a), *common]) == 0
    assert main(["train", "nerf", "--max-steps", "4", "--output", str(b), *common]) == 0
    assert main(["train", "nerf", "--max-steps", "8", "--output", str(b), "--resume",
                 *common]) == 0
    ra, rb = load_run(a), load_run(b)
    assert ra.step == rb.step == 8
    import jax
    for x, y in zip(jax.tree_util.tree_leaves(ra.params), jax.tree_util.tree_leaves(rb.params)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_missing_data_is_clear_error(tmp_path, capsys):
    code = main(["train", "nerf", "--data", str(tmp_path / "nope"), "--max-steps", "1",
                 "--output", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "nope" in err and "Traceback" not in err


def test_render_needs_a_run(tmp_path, capsys):
    assert main(["render", str(tmp_path / "missing"), "--split", "test"]) == 2
    assert "missing" in capsys.readouterr().err
