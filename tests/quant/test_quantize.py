"""`lmstack quantize`: the recipe end to end on a tiny model, resume after an interruption, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmstack.cli import main as cli
from lmstack.model import load_model
from lmstack.quant.quantize import QuantizeConfig, quantize
from lmstack.quant.swap import quantized_layers


def _cfg(model_dir: Path, calib: Path, out: Path, **kw) -> QuantizeConfig:
    base = dict(model=str(model_dir), out_dir=str(out), calib=str(calib), calib_samples=8, calib_seq_len=32,
                batch_size=4, eval_tokens=0, group_size=32, threads=1)  # fmt: skip
    return QuantizeConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_cli_quantize_then_generate(
    tmp_path: Path, tiny_model_dir: Path, calib_file: Path, method: str, capsys
) -> None:
    out = tmp_path / method
    args = ["quantize", f"--model={tiny_model_dir}", f"--out_dir={out}", f"--method={method}", "--bits=4",
            "--group_size=32", f"--calib={calib_file}", "--calib_samples=8", "--calib_seq_len=32",
            "--eval_tokens=0"]  # fmt: skip
    assert cli(args) == 0
    assert "15 layers quantized" in capsys.readouterr().out
    report = json.loads((out / "quantize.json").read_text())
    assert report["config"]["method"] == method and report["layers"] == 15
    assert (
        cli(["generate", "the king", f"--model={out}", "--sampling.temperature=0", "--sampling.max_new_tokens=5"]) == 0
    )


@pytest.mark.parametrize("head,fp_target", [(True, False), (False, False), (True, True)],
                         ids=["head", "tied-head-kept", "fp-target"])  # fmt: skip
def test_resume_equals_an_uninterrupted_run(
    tmp_path: Path, tiny_model_dir: Path, calib_file: Path, head: bool, fp_target: bool
) -> None:
    # head=False keeps the LM head tied to the embedding: the partial state must still save (it once failed on the
    # shared storage, losing the interrupted run); fp_target replays the float model's blocks on resume
    kw = dict(method="gptq", head=head, fp_target=fp_target)
    full = quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "full", **kw))
    assert not full.get("interrupted")
    stopped = quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "part", stop_after_blocks=1, **kw))
    assert stopped == {"interrupted": True} and (tmp_path / "part.partial" / "state.json").is_file()
    assert not (tmp_path / "part").exists()
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "part", resume=True, **kw))
    assert not (tmp_path / "part.partial").exists()
    a = quantized_layers(load_model(tmp_path / "full")[0])
    b = quantized_layers(load_model(tmp_path / "part")[0])
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name].q, b[name].q) and torch.equal(a[name].scales, b[name].scales), name


def test_fp_target_changes_what_follows_the_first_stage(tmp_path: Path, tiny_model_dir: Path, calib_file: Path) -> None:
    """--fp_target: block 0's q/k/v see the float model's own inputs (same integers as plain GPTQ); every later
    layer aims at the float model's outputs, so its integers differ."""
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "a", method="gptq"))
    plain = quantized_layers(load_model(tmp_path / "a")[0])
    aimed = quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "b", method="gptq", fp_target=True))
    assert aimed["config"]["fp_target"] is True
    other = quantized_layers(load_model(tmp_path / "b")[0])
    for name in plain:
        first = name.startswith("blocks.0.attn.") and name.split(".")[-1] in ("q_proj", "k_proj", "v_proj")
        assert torch.equal(plain[name].q, other[name].q) == first, name


def test_resume_with_other_settings_is_refused(tmp_path: Path, tiny_model_dir: Path, calib_file: Path) -> None:
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="awq", stop_after_blocks=1))
    with pytest.raises(ValueError, match="--bits"):
        quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="awq", bits=8, group_size=-1, resume=True))
    with pytest.raises(FileNotFoundError, match="no partial state"):
        quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "other", method="awq", resume=True))


@pytest.mark.parametrize(
    "args,match",
    [
        (["--method=magic"], "--method='magic'"),
        (["--bits=3"], "--bits=3"),
        (["--group_size=48"], "in_features=64 is not divisible by --group_size=48"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, tiny_model_dir: Path, args: list, match: str, capsys) -> None:
    assert cli(["quantize", f"--model={tiny_model_dir}", f"--out_dir={tmp_path / 'q'}", *args]) == 2
    assert match in capsys.readouterr().err


def test_foreign_out_dir_needs_overwrite_and_keeps_its_files(
    tmp_path: Path, tiny_model_dir: Path, calib_file: Path
) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="--overwrite"):
        quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="rtn"))
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="rtn", overwrite=True))
    assert (tmp_path / "q" / "config.json").is_file() and (tmp_path / "q" / "notes.txt").read_text() == "mine"
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="gptq"))  # an lmstack save: replaced freely
    assert load_model(tmp_path / "q")[0] is not None


def test_already_quantized_model_is_refused(tmp_path: Path, tiny_model_dir: Path, calib_file: Path) -> None:
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="rtn"))
    with pytest.raises(ValueError, match="already quantized"):
        quantize(_cfg(tmp_path / "q", calib_file, tmp_path / "qq", method="rtn"))


def test_a_partial_directory_it_did_not_write_is_kept(tmp_path: Path, tiny_model_dir: Path, calib_file: Path) -> None:
    mine = tmp_path / "q.partial"
    mine.mkdir()
    (mine / "notes.txt").write_text("a user's file that happens to sit here")
    quantize(_cfg(tiny_model_dir, calib_file, tmp_path / "q", method="rtn"))
    assert (mine / "notes.txt").read_text().startswith("a user's file")
