from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from lmstack.common.config import ConfigError, config_to_dict, field_help, format_help, load_config, section


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


@dataclass
class ShapeConfig:
    width: int = 8  # hidden width
    heads: int = 2  # attention heads
    head_dim: int | None = None  # per-head width; None = width // heads
    vocab: int = 10  # vocabulary size

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not divisible by heads={self.heads}")
        if self.head_dim is None:
            self.head_dim = self.width // self.heads


@dataclass
class RunConfig:
    steps: int = 10  # optimizer steps
    shape: ShapeConfig = section(ShapeConfig, fixed=("vocab",), width=16)  # the network's shape
    tags: dict[int, float] = field(default_factory=dict)  # id -> weight


def test_section_flags_yaml_and_derived_fields(tmp_path):
    cfg = load_config(RunConfig, [])
    assert (cfg.shape.width, cfg.shape.head_dim) == (16, 8)  # the section's default overrides the class's
    f = tmp_path / "c.yaml"
    f.write_text("shape:\n  heads: 4\nsteps: 3\n")
    cfg = load_config(RunConfig, [str(f), "--shape.width=32"])
    # YAML and flags merge inside the section; head_dim is derived from the merged values, not the default's
    assert (cfg.steps, cfg.shape.width, cfg.shape.heads, cfg.shape.head_dim) == (3, 32, 4, 8)
    assert config_to_dict(cfg)["shape"] == {"width": 32, "heads": 4, "head_dim": 8, "vocab": 10}


def test_section_errors_name_the_dotted_flag(tmp_path):
    with pytest.raises(ConfigError, match=r"did you mean 'shape\.width'"):
        load_config(RunConfig, ["--shape.widht=3"])
    with pytest.raises(ConfigError, match=r"--shape\.heads: got 'x'"):
        load_config(RunConfig, ["--shape.heads=x"])
    with pytest.raises(ConfigError, match=r"--shape: width=16 is not divisible by heads=3"):
        load_config(RunConfig, ["--shape.heads=3"])
    with pytest.raises(ConfigError, match=r"--shape\.vocab is set by the program"):
        load_config(RunConfig, ["--shape.vocab=3"])
    with pytest.raises(ConfigError, match="is a section"):
        load_config(RunConfig, ["--shape=3"])
    f = tmp_path / "c.yaml"
    f.write_text("shape:\n  heds: 4\n")
    with pytest.raises(ConfigError, match=r"shape\.heds.*c\.yaml"):
        load_config(RunConfig, [str(f)])


def test_section_help_lists_dotted_flags():
    text = format_help(RunConfig, "prog")
    assert "--shape.width" in text and "default=16" in text and "hidden width" in text
    assert "--shape.vocab" not in text  # fixed: set by the program


def test_typed_mapping_from_json_or_file(tmp_path):
    assert load_config(RunConfig, ['--tags={"3": 1.5}']).tags == {3: 1.5}  # JSON keys become ints
    f = tmp_path / "t.json"
    f.write_text('{"7": -2}')
    assert load_config(RunConfig, [f"--tags={f}"]).tags == {7: -2.0}
    with pytest.raises(ConfigError, match="--tags"):
        load_config(RunConfig, ["--tags=nothing-here.json"])
