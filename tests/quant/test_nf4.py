"""NF4 against the published table and against bitsandbytes' CPU implementation, byte for byte."""

from __future__ import annotations

import bitsandbytes.functional as bnbf
import pytest
import torch

from lmstack.quant.nf4 import (
    NF4_LEVELS,
    NF4Linear,
    NF4Tensor,
    dequantize_nf4,
    dynamic_map,
    normal_float_levels,
    quantize_nf4,
)

# QLoRA paper, appendix E ("NormalFloat 4-bit data type"), the 16 values as printed there.
PUBLISHED = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
             -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
             0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
             0.7229568362236023, 1.0]  # fmt: skip


def test_levels_equal_published_table():
    assert list(NF4_LEVELS) == PUBLISHED
    assert torch.equal(torch.tensor(NF4_LEVELS), bnbf.get_4bit_type("nf4", device="cpu"))


def test_levels_derived_from_normal_quantiles():
    torch.testing.assert_close(normal_float_levels(), torch.tensor(PUBLISHED), atol=2e-7, rtol=0)


def test_dynamic_map_matches_bitsandbytes():
    assert torch.equal(dynamic_map(), bnbf.create_dynamic_map(signed=True))


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_bitsandbytes_nf4(double_quant, dtype):
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(192, 320, generator=g) * 0.02).to(dtype)
    w[3, :64] *= 50  # an outlier block
    w[7, 64:128] = 0  # an all-zero block
    ref_packed, st = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=double_quant)
    q = quantize_nf4(w, blocksize=64, double_quant=double_quant)
    assert torch.equal(q.packed, ref_packed.view(-1))  # same NF4 codes, same nibble order
    if not double_quant:
        assert torch.equal(q.absmax, st.absmax)
    else:
        assert torch.equal(q.absmax_scale, st.state2.absmax)
        assert q.absmax_offset == pytest.approx(float(st.offset), rel=1e-6)
        # bitsandbytes' CPU kernel finds the 8-bit code with an approximate search (BinSearch "Direct2"), which
        # may pick the other neighbour for a value within ~1e-5 of a decision boundary; ours rounds to nearest.
        code = dynamic_map()
        differ = (q.absmax != st.absmax).nonzero().view(-1)
        assert len(differ) <= 0.02 * q.absmax.numel()
        assert ((q.absmax[differ].int() - st.absmax[differ].int()).abs() == 1).all()
        ours = code[q.absmax[differ].long()]
        theirs = code[st.absmax[differ].long()]
        exact = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")[1].absmax - float(st.offset)
        scaled = exact[differ] / st.state2.absmax[differ // 256]
        assert ((scaled - (ours + theirs) / 2).abs() < 1e-4).all(), "mismatches only at decision boundaries"
        assert ((scaled - ours).abs() <= (scaled - theirs).abs()).all(), "ours is the nearest code"
    # Dequantizing bitsandbytes' own stored state with our code reproduces bitsandbytes' dequantization.
    theirs = NF4Tensor(
        ref_packed.view(-1),
        st.absmax,
        tuple(w.shape),
        dtype,
        64,
        st.state2.absmax if double_quant else None,
        float(st.offset) if double_quant else 0.0,
    )
    torch.testing.assert_close(dequantize_nf4(theirs), bnbf.dequantize_4bit(ref_packed, st), atol=0, rtol=0)
    same_block = (q.absmax == st.absmax).repeat_interleave(64).view(w.shape)  # blocks whose scale codes agree
    assert torch.equal(dequantize_nf4(q)[same_block], bnbf.dequantize_4bit(ref_packed, st)[same_block])


def test_error_bound_and_size():
    """|w - w_hat| <= half the widest level gap times the block absmax (plus the double-quant error)."""
    w = torch.randn(256, 512, generator=torch.Generator().manual_seed(1))
    q = quantize_nf4(w, double_quant=False)
    err = (dequantize_nf4(q) - w).abs().view(-1, 64)
    gaps = torch.tensor(NF4_LEVELS).diff().max() / 2
    assert (err <= gaps * w.view(-1, 64).abs().amax(1, keepdim=True) + 1e-6).all()
    assert q.nbytes() * 8 / w.numel() == pytest.approx(4.5)
    assert quantize_nf4(w).nbytes() * 8 / w.numel() == pytest.approx(4.127, abs=0.001)  # double quantization


def test_odd_sizes_roundtrip():
    w = torch.randn(3, 7)  # 21 values: one zero-padded block
    w_hat = dequantize_nf4(quantize_nf4(w))
    assert w_hat.shape == w.shape and (w_hat - w).abs().max() < 0.2 * w.abs().max()


def test_nf4_linear_forward_equals_dequantized_weight_and_is_frozen():
    lin = torch.nn.Linear(128, 64)
    layer = NF4Linear.from_linear(lin)
    x = torch.randn(2, 5, 128, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, torch.nn.functional.linear(x, layer.dequantized_weight(), lin.bias), rtol=0, atol=0)
    y.sum().backward()
    assert x.grad is not None and not any(p.requires_grad for p in layer.parameters())
    assert layer.stored_bytes() < 0.3 * lin.weight.numel() * 4 + lin.bias.numel() * 4
    assert set(layer.state_dict()) >= {"weight_packed", "weight_absmax", "weight_absmax_scale"}
