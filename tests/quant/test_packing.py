"""Bit packing round trips and the GPTQ tensor layout."""

from __future__ import annotations

import pytest
import torch

from lmstack.quant.packing import (
    from_gptq_tensors,
    gptq_tensors,
    pack_int32,
    pack_nibbles,
    unpack_int32,
    unpack_nibbles,
)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("rows", [8, 16, 13])  # 13: a zero-padded last word
def test_int32_round_trip(bits: int, rows: int) -> None:
    q = torch.randint(0, 2**bits, (rows, 6), dtype=torch.uint8)
    packed = pack_int32(q, bits)
    assert packed.dtype == torch.int32 and packed.shape == (-(-rows * bits // 32), 6)
    assert torch.equal(unpack_int32(packed, bits)[:rows], q)


def test_int32_layout_first_value_in_low_bits() -> None:
    """GPTQ's order: value i of a word sits at bits 4i..4i+3; 0xF in the top nibble makes the word negative."""
    q = torch.tensor([[1], [2], [3], [4], [5], [6], [7], [15]])
    assert pack_int32(q, 4).item() == 0xF7654321 - 2**32


def test_nibbles_round_trip() -> None:
    q = torch.randint(0, 16, (5, 12), dtype=torch.uint8)
    packed = pack_nibbles(q)
    assert packed.shape == (5, 6) and packed[0, 0] == q[0, 0] | (q[0, 1] << 4)
    assert torch.equal(unpack_nibbles(packed), q)


@pytest.mark.parametrize("bits,G", [(4, 4), (8, 1), (4, 1)])
def test_gptq_tensors_round_trip(bits: int, G: int) -> None:
    N, K = 24, 64
    q = torch.randint(0, 2**bits, (N, K), dtype=torch.uint8)
    scales = torch.rand(N, G).half().float()
    zeros = torch.randint(0, 2**bits, (N, G), dtype=torch.uint8)
    zeros[0, 0] = 0  # stored as -1 (all ones) in the v1 format: must read back as 0
    g_idx = torch.randperm(K) % G  # act-order style: any assignment of columns to groups
    t = gptq_tensors(q, scales, zeros, g_idx, bits)
    p = 32 // bits
    assert t["qweight"].shape == (K // p, N) and t["qzeros"].shape == (G, N // p) and t["scales"].shape == (G, N)
    assert t["scales"].dtype == torch.float16 and t["g_idx"].dtype == torch.int32
    q2, s2, z2, g2 = from_gptq_tensors(t, bits, K, N)
    assert torch.equal(q2, q) and torch.equal(s2, scales) and torch.equal(z2, zeros) and torch.equal(g2, g_idx)


def test_gptq_v1_zero_offset() -> None:
    """Symmetric 4-bit: zero point 8 is stored as 7 in every nibble (0x77777777), as AutoGPTQ writes it."""
    t = gptq_tensors(torch.zeros(8, 32, dtype=torch.uint8), torch.ones(8, 1), torch.full((8, 1), 8), torch.zeros(32), 4)
    assert t["qzeros"].item() == 0x77777777


def test_shape_mismatch_names_the_tensor() -> None:
    t = gptq_tensors(torch.zeros(8, 32, dtype=torch.uint8), torch.ones(8, 1), torch.full((8, 1), 8), torch.zeros(32), 4)
    with pytest.raises(ValueError, match="qweight"):
        from_gptq_tensors(t, 4, 64, 8)
    with pytest.raises(ValueError, match="scales"):
        from_gptq_tensors({**t, "scales": t["scales"][:, :4]}, 4, 32, 8)
