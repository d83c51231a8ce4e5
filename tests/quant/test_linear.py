"""QuantLinear: each path equals the dequantized-weights reference; the fused kernels equal the fallback."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmstack.quant.gptq import gptq_quantize
from lmstack.quant.linear import QuantLinear, kernel_report
from lmstack.quant.rtn import QuantSpec, quantize_rtn

SPECS = [QuantSpec(4, 32, True), QuantSpec(4, 64, False), QuantSpec(4, 128, True), QuantSpec(8, -1, True),
         QuantSpec(4, 32, False, float_zero=True)]  # fmt: skip


def _weight(spec: QuantSpec, act_order: bool = False, N: int = 48, K: int = 256):
    torch.manual_seed(0)
    w = torch.randn(N, K) * 0.05
    if not act_order:
        return quantize_rtn(w, spec)
    x = torch.randn(512, K) * torch.linspace(0.1, 3, K)
    return gptq_quantize(w, x.t() @ x / 512, spec, act_order=True)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("act_order", [False, True])
def test_dequant_path_equals_dequantized_weights(spec: QuantSpec, act_order: bool) -> None:
    qw = _weight(spec, act_order)
    bias = torch.randn(qw.shape[0])
    layer = QuantLinear(qw, bias, kernel="dequant")
    x = torch.randn(2, 7, qw.shape[1])
    ref = x @ qw.dequantize().t() + bias
    torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-5)
    assert layer.path == "dequant"


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("act_order", [False, True])
def test_fused_path_equals_fallback(spec: QuantSpec, act_order: bool) -> None:
    """The fused kernels take bf16 activations: they match the fallback to bf16 rounding (rel. 1e-2 of the max)."""
    qw = _weight(spec, act_order)  # per-channel int8 has one group: act-order leaves no permutation to apply
    fused, ref = QuantLinear(qw, kernel="fused"), QuantLinear(qw, kernel="dequant")
    assert fused.path == ("int4pack_mm" if spec.bits == 4 else "int8pack_mm")
    for B in (1, 5):
        x = torch.randn(B, qw.shape[1])
        y, y_ref = fused(x), ref(x)
        assert y.dtype == x.dtype
        assert (y - y_ref).abs().max() <= 1e-2 * y_ref.abs().max()
        torch.testing.assert_close(fused(x.bfloat16()).float(), ref(x.bfloat16()).float(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("kernel", ["auto", "dequant"])
def test_integers_and_grid_are_recovered_exactly(spec: QuantSpec, kernel: str) -> None:
    """Every layout (including the kernel's own int4 packing) gives back the exact integers, scales, groups."""
    for act_order in (False, True):
        qw = _weight(spec, act_order)
        back = QuantLinear(qw, kernel=kernel).quantized_weight()
        assert torch.equal(back.q, qw.q) and torch.equal(back.scales, qw.scales)
        assert torch.equal(back.zeros, qw.zeros) and torch.equal(back.g_idx, qw.g_idx)


def test_memory_is_packed() -> None:
    qw = _weight(QuantSpec(4, 64, True), N=64, K=256)
    for kernel in ("auto", "dequant"):
        layer = QuantLinear(qw, kernel=kernel)
        assert layer.weight.numel() * layer.weight.element_size() == 64 * 256 // 2  # two 4-bit values per byte


def test_unsupported_shapes_fall_back_and_are_reported() -> None:
    odd = quantize_rtn(torch.randn(40, 64), QuantSpec(4, 32, True))  # N = 40: the int4 kernel needs N % 16 == 0
    asym8 = quantize_rtn(torch.randn(32, 64), QuantSpec(8, -1, sym=False))
    model = nn.Sequential(QuantLinear(odd), QuantLinear(asym8), QuantLinear(_weight(QuantSpec(4, 32, True))))
    assert kernel_report(model) == {"dequant": 2, "int4pack_mm": 1}
    with pytest.raises(ValueError, match="no fused CPU kernel"):
        QuantLinear(odd, kernel="fused")
