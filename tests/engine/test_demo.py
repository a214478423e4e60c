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
