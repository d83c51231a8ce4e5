"""The quantization grid: error bounds, exact zeros, symmetric / asymmetric levels, group-size errors."""

from __future__ import annotations

import pytest
import torch

from lmstack.quant.rtn import QuantSpec, quantize_rtn


@pytest.mark.parametrize("spec", [QuantSpec(4, 32, True), QuantSpec(4, 64, False), QuantSpec(8, -1, True)])
def test_rtn_error_is_at_most_half_a_step(spec: QuantSpec) -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 128) * 0.1
    qw = quantize_rtn(w, spec)
    assert qw.q.dtype == torch.uint8 and int(qw.q.max()) <= spec.maxq
    step = qw.scales[:, qw.g_idx]  # (N, K)
    err = (qw.dequantize() - w).abs()
    if spec.sym:  # the largest positive weight of a group may clip by half a step more (levels -8s..7s)
        assert torch.all(err <= step + 1e-6)
    else:
        assert torch.all(err <= step / 2 + 1e-6)
    assert torch.equal(qw.scales, qw.scales.half().float())  # fp16-exact: the checkpoint stores fp16


def test_zero_is_exact_and_zero_groups_survive() -> None:
    w = torch.randn(4, 64)
    w[:, 5] = 0
    w[1] = 0  # a whole row (every group) of zeros
    for sym in (True, False):
        deq = quantize_rtn(w, QuantSpec(4, 32, sym)).dequantize()
        assert torch.all(deq[:, 5] == 0) and torch.all(deq[1] == 0)


def test_symmetric_zero_point_is_fixed() -> None:
    qw = quantize_rtn(torch.randn(8, 64), QuantSpec(4, 32, sym=True))
    assert torch.all(qw.zeros == 8)
    qw = quantize_rtn(torch.randn(8, 64), QuantSpec(8, -1, sym=True))
    assert torch.all(qw.zeros == 128) and qw.scales.shape == (8, 1)


def test_asymmetric_uses_the_whole_range_of_a_positive_group() -> None:
    w = torch.rand(1, 32) + 1.0  # all positive: the range is [0, max], z = 0
    qw = quantize_rtn(w, QuantSpec(4, 32, sym=False))
    assert int(qw.zeros) == 0 and int(qw.q.max()) == 15


def test_group_size_that_does_not_divide_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"in_features=576 is not divisible by --group_size=128.*32, 64"):
        quantize_rtn(torch.randn(4, 576), QuantSpec(4, 128, True))


@pytest.mark.parametrize("kw", [dict(bits=3), dict(group_size=1), dict(group_size=0)])
def test_bad_spec(kw: dict) -> None:
    with pytest.raises(ValueError, match="--bits|--group_size"):
        QuantSpec(**kw)


def test_mse_range_search_beats_min_max() -> None:
    """Shrinking the range (GPTQ's `mse` quantizer) trades a few clipped extremes for finer levels: on normal
    weights the summed |w - w_hat|^2.4 drops by > 5%, and never rises (the full range is one of the candidates)."""
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    for spec in (QuantSpec(4, 32, False), QuantSpec(4, 64, True)):
        err = [(quantize_rtn(w, spec, mse=m).dequantize() - w).abs().pow(2.4).sum(dim=1) for m in (False, True)]
        assert torch.all(err[1] <= err[0] + 1e-6) and err[1].sum() < 0.95 * err[0].sum()


def test_float_zero_recovers_a_q4_1_grid_exactly() -> None:
    """Weights that are already w = q * d + m per group of 32 (d, m fp16: how llama.cpp's Q4_1 stores them, and
    how SmolLM2's shipped GGUF holds its blocks) come back exactly with a float zero point; an integer zero point
    must round -m / d and include 0, so it cannot."""
    torch.manual_seed(0)
    q = torch.randint(0, 16, (8, 4, 32)).float()
    q[..., 0], q[..., 1] = 0, 15  # each group spans the whole grid, as Q4_1's min / max do
    d = (torch.rand(8, 4, 1) * 0.02 + 0.005).half().float()
    m = (-torch.rand(8, 4, 1) * 0.1 - d * 3).half().float()
    w = (q * d + m).reshape(8, 128)
    exact = quantize_rtn(w, QuantSpec(4, 32, sym=False, float_zero=True))
    assert exact.zeros.dtype == torch.float32
    assert torch.allclose(exact.dequantize(), w, rtol=0, atol=1e-6)
    assert torch.equal(exact.q.reshape(8, 4, 32).float(), q)
    integer = quantize_rtn(w, QuantSpec(4, 32, sym=False))
    assert (integer.dequantize() - w).abs().max() > 1e-3


def test_float_zero_needs_an_asymmetric_grid() -> None:
    with pytest.raises(ValueError, match="--float_zero=true needs an asymmetric grid"):
        QuantSpec(4, 32, sym=True, float_zero=True)
