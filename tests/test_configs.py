"""Every experiment file in ``configs/`` loads through ``nerfkit train --config``'s reader, says
what it is, and names data that exists; command-line flags override the file's values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tyro
from conftest import requires_shared

from nerfkit import cli
from nerfkit.engine.config import presets, to_dict

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in (ROOT / "configs").iterdir() if p.suffix in (".json", ".yaml", ".yml"))


def test_there_is_an_experiment_per_readme_benchmark():
    names = {p.stem for p in FILES}
    assert {"lego-ngp", "fern-ngp", "lego-r2l", "lego-nerdf", "image-kodim05", "video-bikes",
            "dnerf-lego", "bonsai-ngp"} <= names
    readme = (ROOT / "configs" / "README.md").read_text()
    for p in FILES:  # each listed (and linked) in configs/README.md
        assert f"]({p.name})" in readme, p.name


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_experiment_file_loads_and_its_values_win_over_the_preset(path):
    raw = json.loads(path.read_text())
    assert raw["method"] in presets() and len(raw.get("description", "")) > 20
    method, cfg = cli.load_experiment(path)
    assert method == raw["method"]
    values = to_dict(cfg)
    for key, value in raw.items():
        if key in ("method", "description"):
            continue
        if key == "model":
            for k, v in value.items():
                assert values["model"][k] == v, (key, k)
        else:
            assert values[key] == value, key
    # Whatever the file leaves out is the preset's.
    preset = to_dict(presets()[method][1])
    for key in set(preset) - set(raw) - {"model"}:
        assert values[key] == preset[key], key


@requires_shared
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_experiment_data_exists(path):
    raw = json.loads(path.read_text())
    if not raw["data"].startswith("../shared/"):  # made by a step the description names
        pytest.skip(f"{raw['data']} is produced by a preparation step ({path.name})")
    assert (ROOT / raw["data"]).exists(), raw["data"]


def _parse_train(argv: list[str]):
    rest, experiment = cli._pop_experiment(argv)
    return tyro.cli(cli._command_type(experiment), args=rest)


def test_command_line_flags_override_the_file():
    path = ROOT / "configs" / "lego-ngp.json"
    cfg = _parse_train(["train", "--config", str(path)])
    assert cfg.max_minutes == 10 and cfg.downscale == 4 and cfg.eval_minutes == (2, 5, 10)
    cfg = _parse_train(["train", "ngp", "--config", str(path), "--max-minutes", "2",
                        "--model.batch-size", "512", "--output", "runs/x"])
    assert cfg.max_minutes == 2 and str(cfg.output) == "runs/x"
    assert cfg.model.batch_size == 512
    assert cfg.downscale == 4 and cfg.data.endswith("nerf_synthetic/lego")  # still the file's
    # Model values of a file survive flags that change other model fields.
    cfg = _parse_train(["train", "--config", str(ROOT / "configs" / "lego-r2l.json"),
                        "--model.lr-init", "1e-3"])
    assert cfg.model.teacher == "runs/lego-ngp" and cfg.model.lr_init == 1e-3


def test_a_file_for_another_method_and_bad_values_are_named_errors(tmp_path):
    from nerfkit.errors import NerfkitError
    with pytest.raises(NerfkitError, match="lego-ngp.json.*'ngp', not 'nerf'"):
        cli._pop_experiment(["train", "nerf", "--config", str(ROOT / "configs" / "lego-ngp.json")])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": "ngp", "max_minutse": 3}))
    with pytest.raises(NerfkitError, match="bad.json.*max_minutse"):
        cli.load_experiment(bad)
