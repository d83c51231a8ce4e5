from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from lmstack.common.config import ConfigError, field_help, format_help, load_config


@dataclass
class DemoConfig:
    lr: float = 3e-4  # peak learning rate
    # optimizer steps
    steps: int = 10
    name: str = "run"  # run name
    schedule: Literal["cosine", "constant"] = "cosine"  # LR schedule
    compile: bool = False  # use torch.compile
    files: list[str] = field(default_factory=list)  # input files
    text: str = field(default="", metadata={"positional": True})  # text to process

    def __post_init__(self) -> None:
        if self.steps <= 0:
            raise ValueError(f"--steps must be positive, got {self.steps}")


def test_defaults_file_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.01\nsteps: 5\n")
    cfg = load_config(DemoConfig, [str(f), "--steps=7", "--compile"])
    assert (cfg.lr, cfg.steps, cfg.compile, cfg.name) == (0.01, 7, True, "run")


def test_json_file_and_space_separated_flags(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"name": "x"}')
    cfg = load_config(DemoConfig, [str(f), "--lr", "1e-3", "--files", "a.txt", "b.txt", "--compile", "false"])
    assert (cfg.name, cfg.lr, cfg.files, cfg.compile) == ("x", 1e-3, ["a.txt", "b.txt"], False)


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config(DemoConfig, ["--stpes=3"])
    f = tmp_path / "c.yaml"
    f.write_text("learning_rate: 1\n")
    with pytest.raises(ConfigError, match=r"c\.yaml"):
        load_config(DemoConfig, [str(f)])


def test_bad_values_name_the_flag():
    with pytest.raises(ConfigError, match="--steps"):
        load_config(DemoConfig, ["--steps=abc"])
    with pytest.raises(ConfigError, match="--steps must be positive"):
        load_config(DemoConfig, ["--steps=0"])
    with pytest.raises(ConfigError, match="--schedule"):
        load_config(DemoConfig, ["--schedule=linear"])
    with pytest.raises(ConfigError, match="--lr"):
        load_config(DemoConfig, ["--lr=fast"])


def test_positional_argument():
    assert load_config(DemoConfig, ["hello there"]).text == "hello there"


def test_malformed_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("lr: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(DemoConfig, [str(f)])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(DemoConfig, [str(tmp_path / "missing.yaml")])


def test_help_comes_from_field_comments():
    helps = field_help(DemoConfig)
    assert helps["lr"] == "peak learning rate"
    assert helps["steps"] == "optimizer steps"
    text = format_help(DemoConfig, "prog")
    assert "--schedule" in text and "LR schedule" in text


@dataclass
class AliasConfig:
    src: str = field(default="", metadata={"flag": "from"})  # where to read
    dst: str = field(default="", metadata={"flag": "to"})  # where to write


def test_flag_alias_for_keywords():
    cfg = load_config(AliasConfig, ["--from", "a.gguf", "--to=out"])
    assert (cfg.src, cfg.dst) == ("a.gguf", "out")
    assert "--from" in format_help(AliasConfig, "prog")
