"""Saving and loading models never destroys a user's files and names what is wrong (issue 9)."""

from __future__ import annotations

import json
import os

import pytest

from lmstack.cli import main
from lmstack.model import ModelConfig, Transformer, load_model


@pytest.fixture
def model(tiny_model_kwargs) -> Transformer:
    return Transformer(ModelConfig(**tiny_model_kwargs))


def _files(path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def test_regression_save_into_a_foreign_directory_is_refused(model, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty and holds no lmstack model.*--overwrite"):
        model.save_pretrained(target)
    assert _files(target) == ["notes.txt"]
    model.save_pretrained(target, overwrite=True)  # asked for: the model's files are added, nothing else touched
    assert (target / "notes.txt").read_text() == "keep me"
    assert {"config.json", "model.safetensors", "generation_config.json"} <= set(_files(target))
    model.save_pretrained(target)  # now a previous lmstack save: replacing it needs no flag
    assert not [n for n in _files(target) if n.startswith(".")]  # no temporary files left


def test_resave_switching_layout_leaves_one_model(model, tmp_path):
    model.save_pretrained(tmp_path / "m", max_shard_bytes=20_000)
    assert "model.safetensors.index.json" in _files(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")  # single file now: the old shards and index would contradict it
    assert [n for n in _files(tmp_path / "m") if "safetensors" in n] == ["model.safetensors"]
    Transformer.from_pretrained(tmp_path / "m")


def test_regression_convert_never_deletes_the_source_or_other_files(model, tmp_path):
    work = tmp_path / "work"
    model.save_pretrained(work / "src")
    (work / "data.txt").write_text("unrelated")
    # the source sits inside --to: this used to replace the whole directory, source included, with exit 0
    assert main(["convert", "--from", str(work / "src"), "--to", str(work)]) == 2
    assert _files(work) == ["data.txt", "src"]
    assert main(["convert", "--from", str(work / "src"), "--to", str(work), "--overwrite"]) == 0
    assert {"data.txt", "src", "config.json", "model.safetensors"} <= set(_files(work))
    Transformer.from_pretrained(work / "src")
    Transformer.from_pretrained(work)


def test_convert_to_dot(model, tmp_path, monkeypatch, capsys):
    model.save_pretrained(tmp_path / "src")
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path / "out")
    assert main(["convert", "--from", str(tmp_path / "src"), "--to", "."]) == 0  # empty cwd: works
    assert {"config.json", "model.safetensors"} <= set(_files(tmp_path / "out"))
    monkeypatch.chdir(tmp_path)  # a non-empty cwd that is not a model: a clean error, nothing left behind
    assert main(["convert", "--from", str(tmp_path / "src"), "--to", "."]) == 2
    assert "--to .: the directory is not empty" in capsys.readouterr().err
    assert _files(tmp_path) == ["out", "src"]


@pytest.mark.parametrize(
    "field, value",
    [("norm_eps", 0.0), ("norm_eps", -1e-5), ("d_ff", -4), ("head_dim", 0), ("rope_theta", 0.0)],
)
def test_regression_config_values_that_give_nan_or_torch_errors(tiny_model_kwargs, field, value):
    with pytest.raises(ValueError, match=f"ModelConfig.{field} must be positive"):
        ModelConfig(**{**tiny_model_kwargs, field: value})


def test_broken_model_files_are_named(model, tmp_path):
    d = tmp_path / "m"
    model.save_pretrained(d)
    (d / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="generation_config.json: not valid JSON"):
        Transformer.from_pretrained(d)
    (d / "generation_config.json").write_text("{}")
    config = (d / "config.json").read_text()
    (d / "config.json").write_text(config[:40])
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        Transformer.from_pretrained(d)
    (d / "config.json").write_text(json.dumps({**json.loads(config), "rms_norm_eps": 0}))
    with pytest.raises(ValueError, match="config.json: ModelConfig.norm_eps must be positive"):
        Transformer.from_pretrained(d)
    (d / "config.json").write_text(config)
    weights = d / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        Transformer.from_pretrained(d)


def test_unknown_dtype_and_model_spec(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="dtype='float8'"):
        load_model(tmp_path / "m", dtype="float8")
    with pytest.raises(FileNotFoundError, match="not a model directory, .gguf file or local model name"):
        load_model(tmp_path / "nothing-here")
    assert main(["generate", "x", f"--model={tmp_path / 'm'}", "--dtype=float8"]) == 2
    assert "--dtype='float8'" in capsys.readouterr().err


def test_help_into_a_closed_pipe_is_quiet():
    import subprocess
    import sys

    # `lmstack pretrain --help | head -1`: the reader leaves early; no BrokenPipeError traceback
    cmd = f"{sys.executable} -m lmstack.cli pretrain --help"
    proc = subprocess.run(f"{cmd} | head -1", shell=True, capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("usage: lmstack pretrain") and "Traceback" not in proc.stderr, proc.stderr
    # a reader that is gone before anything is written: the write fails for sure; exit 141 like a Unix tool
    proc = subprocess.run(f"{cmd} | true; echo $" + "{PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.stdout.strip() == "141" and proc.stderr == "", proc.stderr
