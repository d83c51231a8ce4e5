"""The real model: `lmstack quantize` SmolLM2-135M to int8, reload the directory with `lmstack generate`, and the
answer is still right (slow); float-zero int4 rebuilds the shipped Q4_1 file's blocks."""

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


def test_float_zero_int4_rebuilds_smollm2s_q4_1_blocks_byte_for_byte() -> None:
    """The shipped SmolLM2 is a Q4_1 GGUF: RTN with float zero points at group 32 finds the file's own grid, and
    our Q4_1 encoder writes the file's blocks again, byte for byte (so the int4 model is lossless; docs/quant.md).
    q/k rows are skipped: GGUF permutes them for interleaved rotary."""
    import numpy as np
    from gguf import GGUFReader

    from lmstack.model.local_models import source_path
    from lmstack.quant.gguf_blocks import quantize
    from lmstack.quant.rtn import QuantSpec, quantize_rtn

    tensors = {t.name: t for t in GGUFReader(source_path("smollm2-135m")).tensors}
    model, _ = load_model("smollm2-135m", dtype="float32")
    pairs = [("blocks.0.attn.v_proj", "blk.0.attn_v.weight"), ("blocks.11.attn.o_proj", "blk.11.attn_output.weight"),
             ("blocks.29.ffn.down_proj", "blk.29.ffn_down.weight"),
             ("blocks.5.ffn.up_proj", "blk.5.ffn_up.weight")]  # fmt: skip
    for ours, theirs in pairs:
        w = model.get_submodule(ours).weight.detach()
        qw = quantize_rtn(w, QuantSpec(4, 32, sym=False, float_zero=True))
        rebuilt = quantize(qw.dequantize().numpy(), "Q4_1")
        assert np.array_equal(rebuilt, np.asarray(tensors[theirs].data).reshape(rebuilt.shape)), ours
        integer = quantize_rtn(w, QuantSpec(4, 32, sym=False))
        assert not np.array_equal(quantize(integer.dequantize().numpy(), "Q4_1"), rebuilt), ours
