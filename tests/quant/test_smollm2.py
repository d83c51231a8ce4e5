"""The real model end to end (slow): `lmstack quantize` SmolLM2-135M to int8, reload the directory with
`lmstack generate`, and the answer is still right."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmstack.cli import main as cli
from lmstack.model import load_model
from lmstack.quant import kernel_report


@pytest.mark.slow
def test_quantize_then_generate_smollm2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "smol-int8"
    assert cli(["quantize", "--model=smollm2-135m", "--method=rtn", "--bits=8", f"--out_dir={out}",
                "--eval_tokens=0"]) == 0  # fmt: skip
    model, _ = load_model(out)
    assert kernel_report(model) == {"int8pack_mm": 211}  # 30 blocks x 7 linears + the LM head
    capsys.readouterr()
    args = ["generate", "The capital of France is", f"--model={out}", "--sampling.temperature=0",
            "--sampling.max_new_tokens=6"]  # fmt: skip
    assert cli(args) == 0
    assert "Paris" in capsys.readouterr().out
