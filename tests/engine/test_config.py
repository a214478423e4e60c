"""Run configs survive a JSON round trip, and bad configs give clear errors."""

import json

import pytest

from nerfkit.engine.config import (TrainConfig, from_dict, load_train_config,
                                   save_train_config, to_dict)
from nerfkit.errors import ConfigError
from nerfkit.models.nerf import NeRFConfig


def test_roundtrip(tmp_path):
    cfg = TrainConfig(model=NeRFConfig(depth=3, width=17), data="x", max_steps=5,
                      output=tmp_path / "run")
    save_train_config(tmp_path, cfg)
    back = load_train_config(tmp_path)
    assert back == cfg
    assert isinstance(back.model, NeRFConfig) and back.model.width == 17


def test_missing_keys_take_defaults():
    d = to_dict(TrainConfig(model=NeRFConfig()))
    del d["seed"], d["model"]["width"]
    cfg = from_dict(TrainConfig, d)
    assert cfg.seed == 0 and cfg.model.width == 256


def test_unknown_key_is_clear_error():
    d = to_dict(TrainConfig(model=NeRFConfig()))
    d["model"]["widht"] = 3
    with pytest.raises(ConfigError, match="widht"):
        from_dict(TrainConfig, d)


def test_wrong_type_is_clear_error():
    d = to_dict(TrainConfig(model=NeRFConfig()))
    d["model"]["width"] = "wide"
    with pytest.raises(ConfigError, match="width.*expected int"):
        from_dict(TrainConfig, d)


def test_unknown_family(tmp_path):
    d = {"train": to_dict(TrainConfig(model=NeRFConfig()))}
    d["train"]["model"]["family"] = "nope"
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="unknown model family 'nope'"):
        load_train_config(tmp_path)


def test_malformed_config_json(tmp_path):
    (tmp_path / "config.json").write_text('{"train": ')
    with pytest.raises(ConfigError, match="config.json: malformed JSON at line 1"):
        load_train_config(tmp_path)


def test_learning_rate_warmup_in_steps():
    """``lr_warmup_steps``: linear from ``lr_warmup_start`` x the scheduled rate, by step, whatever
    the progress fraction (R2L's 1e-4 -> 5e-4 over 200 steps)."""
    from nerfkit.models.r2l import R2LConfig
    cfg = R2LConfig()
    assert (cfg.lr_warmup_steps, cfg.lr_warmup_start) == (200, 0.2)
    assert cfg.learning_rate(0.0, 0) == pytest.approx(1e-4)
    assert cfg.learning_rate(0.0, 100) == pytest.approx(3e-4)
    assert cfg.learning_rate(0.0, 200) == pytest.approx(5e-4)
    assert cfg.learning_rate(0.0) == pytest.approx(5e-4)  # no step given: no warm-up
    sched = 5e-4 ** 0.5 * 5e-5 ** 0.5  # half-way through a short run, still warming up
    assert cfg.learning_rate(0.5, 50) == pytest.approx(sched * (0.2 + 0.8 * 50 / 200))
    assert NeRFConfig().learning_rate(0.0, 0) == pytest.approx(5e-4)  # off by default


def test_learning_rate_schedule_is_log_linear():
    cfg = NeRFConfig(lr_init=5e-4, lr_final=5e-5)
    assert cfg.learning_rate(0.0) == pytest.approx(5e-4)
    assert cfg.learning_rate(1.0) == pytest.approx(5e-5)
    assert cfg.learning_rate(0.5) == pytest.approx((5e-4 * 5e-5) ** 0.5)
