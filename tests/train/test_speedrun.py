"""The speedrun end to end on a tiny config (the whole pipeline in seconds), and every shipped config loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmstack.common.config import ConfigError, load_config
from lmstack.train.speedrun import SpeedrunConfig, main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["speedrun_cpu.yaml", "speedrun_gpu.yaml", "tiny.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(SpeedrunConfig, [str(CONFIGS / name)])
    assert cfg.corpus == "shakespeare"


def test_bad_speedrun_value_names_the_flag():
    with pytest.raises(ConfigError, match="--vocab_size"):
        load_config(SpeedrunConfig, [str(CONFIGS / "tiny.yaml"), "--vocab_size=100"])
    with pytest.raises(ConfigError, match="--batch_size"):
        load_config(SpeedrunConfig, [str(CONFIGS / "tiny.yaml"), "--batch_size=-1"])


def test_tiny_speedrun_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config(SpeedrunConfig, [str(CONFIGS / "tiny.yaml"), f"--out_dir={out}"])
    assert main(cfg) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("val_bpb", "val_loss", "params", "tokens_seen", "tokens_per_s", "wall_s", "train_s"):
        assert isinstance(report[key], (int, float)) and report[key] > 0, key
    assert report["tokens_seen"] == 30 * 8 * 64
    assert 1.0 < report["val_bpb"] < 8.0  # a 2-layer model after 30 steps: far from random (~8.2), far from good
    assert report["tokenizer"]["vocab_size"] == 300 and len(report["samples"]) == 2
    assert report["data"]["val_documents"] == 5  # shakespeare's fixed split: files 0, 10, 20, 30, 40
    md = (out / "report.md").read_text()
    assert "val_bpb" in md and "![loss curve](loss.png)" in md
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "val_bpb=" in capsys.readouterr().out
    # a second run refuses to clobber the first without --overwrite
    with pytest.raises(ValueError, match="--overwrite"):
        main(cfg)
