"""SmoothQuant W8A8: smoothing is exact in float, it lowers the error of int8 activations on outlier channels,
the int_mm kernel equals its reference, and the recipe's checkpoint reloads into int_mm layers."""

from __future__ import annotations

from pathlib import Path

import torch

from lmstack.model import load_model
from lmstack.quant import QuantLinear, kernel_report
from lmstack.quant.awq import fold_target
from lmstack.quant.layerwise import block_inputs, collect, run_block, stages
from lmstack.quant.linear import quantize_per_token
from lmstack.quant.quantize import QuantizeConfig, quantize
from lmstack.quant.rtn import QuantSpec, quantize_rtn
from lmstack.quant.smoothquant import smooth_stage, smoothing_factors
from tests.quant.conftest import tiny_llama


def test_int_mm_equals_its_reference() -> None:
    qw = quantize_rtn(torch.randn(64, 128), QuantSpec(8, -1, True))
    fused, ref = QuantLinear(qw, act_quant=True), QuantLinear(qw, act_quant=True, kernel="dequant")
    assert fused.path == "int_mm" and ref.path == "dequant"
    x = torch.randn(2, 3, 128)
    torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-4)  # int32 accumulation vs float: same sums


def test_smoothing_is_exact_in_float() -> None:
    model = tiny_llama()
    tokens = torch.randint(0, 300, (4, 24), generator=torch.Generator().manual_seed(0))
    batches = block_inputs(model, tokens)
    block = model.blocks[0]
    before = run_block(block, batches)[0].x
    groups = list(stages(block))
    stats = collect(block, batches, groups)
    for stage in groups:
        smooth_stage([block.get_submodule(n) for n in stage], stats[stage[0]], fold_target(block, stage), 0.5)
    torch.testing.assert_close(run_block(block, batches)[0].x, before, rtol=1e-4, atol=1e-4)


def test_smoothing_lowers_w8a8_error_on_outlier_channels() -> None:
    torch.manual_seed(0)
    x = torch.randn(512, 64)
    x[:, :3] *= 50  # outlier channels: a per-token int8 scale set by them flattens the rest
    w = torch.randn(32, 64) * 0.1
    y = x @ w.t()

    def w8a8(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xq, sx = quantize_per_token(x)
        return (xq.float() * sx) @ quantize_rtn(w, QuantSpec(8, -1, True)).dequantize().t()

    s = smoothing_factors(x.abs().amax(0), [w])
    plain = (w8a8(x, w) - y).pow(2).mean()
    smoothed = (w8a8(x / s, w * s) - y).pow(2).mean()
    assert smoothed < 0.5 * plain


def test_recipe_checkpoint_runs_int_mm(tmp_path: Path, tiny_model_dir: Path, calib_file: Path) -> None:
    cfg = QuantizeConfig(model=str(tiny_model_dir), out_dir=str(tmp_path / "sq"), method="smoothquant",
                         calib=str(calib_file), calib_samples=8, calib_seq_len=32, eval_tokens=0)  # fmt: skip
    quantize(cfg)
    model = load_model(tmp_path / "sq", dtype="float32")[0]
    assert kernel_report(model) == {"int_mm": 14, "dequant": 1}  # the 300-row head: _int_mm wants N % 8 == 0
    ids = torch.randint(0, 300, (1, 16))
    with torch.no_grad():
        got, want = model(ids).logits, load_model(tiny_model_dir)[0](ids).logits
    assert (got - want).abs().max() < 0.1 * want.abs().max()
