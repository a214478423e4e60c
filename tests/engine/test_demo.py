"""The README's main job (`nerfkit demo`) runs end to end on the generated default scene."""

import json

from nerfkit.cli import main


def test_demo_trains_renders_and_reports_psnr(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NERFKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--max-minutes", "0.15", "--frames", "3"]) == 0
    printed = capsys.readouterr().out
    assert "test PSNR" in printed
    ev = json.loads((out / "eval" / "test.json").read_text())
    assert ev["num_views"] == 20
    assert len(list((out / "renders" / "test").glob("r_*.png"))) == 20
    assert (out / "renders" / "video.mp4").stat().st_size > 0


def test_eval_minutes_marks_evaluate_every_test_view(tmp_path, monkeypatch):
    monkeypatch.setenv("NERFKIT_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    tiny = ["--model.depth", "2", "--model.width", "16", "--model.view-width", "8",
            "--model.coarse-samples", "8", "--model.fine-samples", "0",
            "--model.batch-size", "128"]
    assert main(["train", "nerf", "--downscale", "4", "--max-steps", "3", "--eval-minutes",
                 "1e-6", "--final-eval", "--output", str(run), *tiny]) == 0
    mark = json.loads((run / "eval" / "test_1e-06min.json").read_text())
    final = json.loads((run / "eval" / "test.json").read_text())
    assert mark["num_views"] == final["num_views"] == 20
    assert mark["step"] == 1 and final["step"] == 3 and mark["minutes"] == 1e-6
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(l.get("eval_minutes") == 1e-6 for l in lines)
