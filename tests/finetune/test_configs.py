"""Every shipped fine-tuning config loads with its command's config class (unknown keys would be errors)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstack.cli import resolve
from lmstack.common.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
COMMAND = {"sft": "sft", "lora": "lora", "qlora": "qlora", "prompt": "prompt-tune", "prefix": "prefix-tune"}


@pytest.mark.parametrize("path", sorted(p for p in CONFIGS.glob("*.yaml") if p.name.split("_")[0] in COMMAND))
def test_config_loads(path):
    cls, _ = resolve(COMMAND[path.name.split("_")[0]])
    cfg = load_config(cls, [str(path)])
    assert cfg.out_dir.startswith("runs/")
