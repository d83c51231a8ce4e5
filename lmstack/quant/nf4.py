"""NF4: 4-bit NormalFloat weights with block-wise absmax and double-quantized scales (QLoRA).

Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs", sec. 3, and the bitsandbytes storage
format (`bitsandbytes.functional.quantize_4bit(quant_type="nf4", compress_statistics=True)`), which this file
reproduces bit for bit on CPU (tests/quant/test_nf4.py):

1. Blocks. The weight is flattened and cut into blocks of 64 values; each block is divided by its absolute
   maximum ("absmax"), so every value lands in [-1, 1] and one outlier only costs its own block.
2. Levels. Pretrained weights are roughly normal, so the 16 levels are quantiles of N(0, 1) rather than an even
   grid: each level then receives about the same share of the values (an information-theoretically optimal code
   for normal data). QLoRA builds an asymmetric table with an exact zero: 8 positive quantiles, 7 negative ones
   and 0, each side normalized to end at +-1 (`normal_float_levels` derives it; `NF4_LEVELS` is the published
   table). A value maps to its nearest level (decision boundaries at the midpoints between levels).
3. Packing. Two 4-bit codes per byte, the first value of each pair in the high nibble.
4. Double quantization. One fp32 absmax per 64 weights costs 32/64 = 0.5 bits per weight. The absmaxes are
   quantized again: their mean is subtracted (an offset), then they are cut into blocks of 256 and each block is
   stored as 8-bit codes of bitsandbytes' signed "dynamic" map (`dynamic_map`: a floating-point-like code with
   more resolution near 0; Dettmers 2016) times one fp32 scale per block. Cost: 8/64 + 32/(64*256) = 0.127
   bits per weight, so a weight costs ~4.127 bits instead of 4.5.

Dequantization reverses it: absmax = code8[q8] * scale2 + offset, w = NF4_LEVELS[q4] * absmax. `NF4Linear` keeps
only the packed bytes and the scales and dequantizes its weight on every forward (memory for compute: QLoRA's
trade), so backward flows to the input (and to LoRA weights beside it) but never to the frozen base weight.

API (the quantization stage reuses it for `lmstack quantize --method nf4`):
    q = quantize_nf4(w)                  # NF4Tensor (packed uint8 + scales); w any float tensor
    w_hat = dequantize_nf4(q)            # same shape, float32 (or `dtype=`)
    layer = NF4Linear.from_linear(lin)   # frozen nn.Linear replacement; layer.state_dict() holds the buffers
Left out: FP4 (the other bitsandbytes 4-bit type), fused 4-bit matmul kernels (we dequantize then matmul), paged
optimizers, blocks that straddle the end of a tensor whose size is not a multiple of the block (we zero-pad).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# The published NF4 table (QLoRA appendix E; bitsandbytes' `get_4bit_type("nf4")`), as float32 values.
NF4_LEVELS: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)  # fmt: skip
BLOCK = 64  # values per absmax block (QLoRA's choice)
DQ_BLOCK = 256  # absmaxes per second-level block in double quantization


def normal_float_levels(offset: float = 0.9677083) -> torch.Tensor:
    """Derive the 16 NF4 levels from normal quantiles (QLoRA eq. 4, asymmetric variant with an exact zero).

    Positive side: the quantiles of N(0, 1) at 8 probabilities evenly spaced in [0.5, offset] (dropping 0.5
    itself), negative side: 7 in the same way; both normalized by the largest so the ends are exactly +-1.
    `offset` = 1/2 (1/(2*15) + 1 - 1/(2*16)) keeps the end quantiles finite (QLoRA's choice).
    """
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])  # 8 positive quantiles
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])  # 7 negative quantiles
    levels = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).sort().values
    return (levels / levels.abs().max()).float()  # (16,)


def dynamic_map(exponent_bits: int = 7) -> torch.Tensor:
    """bitsandbytes' signed 8-bit "dynamic tree" code (Dettmers 2016, "8-Bit Approximations"): 256 sorted values.

    For i = 0..exponent_bits-1 the decade 10^(i - exponent_bits + 1) holds 2^i evenly spaced fractions (the
    midpoints of a linspace(0.1, 1) grid), mirrored for the sign; plus 0 and 1. Small magnitudes get fine steps,
    large ones coarse steps: a float-like code.
    """
    values: list[float] = []
    for i in range(exponent_bits):
        edges = torch.linspace(0.1, 1, 2**i + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0  # float32, as bitsandbytes rounds them
        scale = 10 ** (-(exponent_bits - 1) + i)
        values += (scale * means).tolist() + (-scale * means).tolist()
    values += [0.0, 1.0]
    assert len(values) == 256, len(values)
    return torch.tensor(sorted(values), dtype=torch.float32)


def _nearest(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of sorted `levels` for every value of x (boundaries at the midpoints)."""
    midpoints = (levels[:-1] + levels[1:]) / 2
    return torch.bucketize(x, midpoints, out_int32=True)


def quantize_blockwise_8bit(x: torch.Tensor, blocksize: int = DQ_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D x -> (uint8 codes of `dynamic_map`, fp32 absmax per block): x ~ code[q] * absmax."""
    n = x.numel()
    blocks = _pad(x.float().reshape(-1), blocksize).view(-1, blocksize)  # (nb, bs)
    absmax = blocks.abs().amax(dim=1)  # (nb,)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1)
    return _nearest(scaled.reshape(-1), dynamic_map())[:n].to(torch.uint8), absmax


def dequantize_blockwise_8bit(q: torch.Tensor, absmax: torch.Tensor, blocksize: int = DQ_BLOCK) -> torch.Tensor:
    vals = _pad(dynamic_map().to(q.device)[q.long()], blocksize).view(-1, blocksize)  # (nb, bs)
    return (vals * absmax[:, None]).reshape(-1)[: q.numel()]


def _pad(x: torch.Tensor, blocksize: int) -> torch.Tensor:
    return F.pad(x, (0, -x.numel() % blocksize))


@dataclass
class NF4Tensor:
    """A tensor stored as NF4: packed codes plus (double-quantized) block scales. Sizes for n values:"""

    packed: torch.Tensor  # (ceil(n / bs) * bs / 2,) uint8: two codes per byte, first value in the high nibble
    absmax: torch.Tensor  # (nb,) float32 block absmax, or uint8 codes of it when double quantized
    shape: tuple[int, ...]  # original shape
    dtype: torch.dtype  # original dtype (what dequantize returns by default)
    blocksize: int = BLOCK
    absmax_scale: torch.Tensor | None = None  # (ceil(nb / 256),) float32: double quantization's per-block absmax
    absmax_offset: float = 0.0  # double quantization: the mean subtracted before quantizing the absmaxes

    @property
    def double_quant(self) -> bool:
        return self.absmax_scale is not None

    def nbytes(self) -> int:
        """Bytes actually stored (codes + scales): ~0.516 bytes per value with double quantization."""
        extra = self.absmax_scale.numel() * 4 + 4 if self.absmax_scale is not None else 0
        return self.packed.numel() + self.absmax.numel() * self.absmax.element_size() + extra


def quantize_nf4(
    w: torch.Tensor, blocksize: int = BLOCK, double_quant: bool = True, dq_blocksize: int = DQ_BLOCK
) -> NF4Tensor:
    """Quantize any float tensor to NF4 (block-wise absmax, optional double quantization of the absmaxes)."""
    if blocksize % 2:
        raise ValueError(f"quantize_nf4: blocksize={blocksize} must be even (two codes per byte)")
    flat = _pad(w.detach().float().reshape(-1), blocksize)
    blocks = flat.view(-1, blocksize)  # (nb, bs)
    absmax = blocks.abs().amax(dim=1)  # (nb,)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1)  # every value in [-1, 1]
    codes = _nearest(scaled.reshape(-1), torch.tensor(NF4_LEVELS, device=w.device)).to(torch.uint8)
    packed = (codes[0::2] << 4) | codes[1::2]  # (n/2,): high nibble = even index
    q = NF4Tensor(packed, absmax, tuple(w.shape), w.dtype, blocksize)
    if double_quant:
        offset = absmax.mean()  # absmaxes are all positive: centering them uses the signed code's full range
        q.absmax, q.absmax_scale = quantize_blockwise_8bit(absmax - offset, dq_blocksize)
        q.absmax_offset = float(offset)
    return q


def dequantize_nf4(q: NF4Tensor, dtype: torch.dtype | None = None, dq_blocksize: int = DQ_BLOCK) -> torch.Tensor:
    """NF4Tensor -> the approximated tensor in its original shape (float32 math, then `dtype` or the original)."""
    absmax = q.absmax
    if q.absmax_scale is not None:
        absmax = dequantize_blockwise_8bit(absmax, q.absmax_scale, dq_blocksize) + q.absmax_offset  # (nb,)
    codes = torch.stack([q.packed >> 4, q.packed & 0xF], dim=1).reshape(-1)  # unpack: (n_padded,)
    levels = torch.tensor(NF4_LEVELS, device=q.packed.device)[codes.long()].view(-1, q.blocksize)  # (nb, bs)
    n = 1
    for s in q.shape:
        n *= s
    w = (levels * absmax[:, None].float()).reshape(-1)[:n].view(q.shape)
    return w.to(dtype or q.dtype)


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored as NF4 and dequantized on the fly: y = x W_hat^T + b.

    Buffers (so `state_dict()` saves exactly what is stored): `weight_packed` uint8, `weight_absmax` (uint8 codes
    with double quantization, else float32), `weight_absmax_scale` float32 (double quantization only; empty
    otherwise), `weight_absmax_offset` float32 scalar. No parameter trains; gradients flow to the input.
    """

    def __init__(self, q: NF4Tensor, bias: torch.Tensor | None = None, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.blocksize, self.orig_dtype = q.blocksize, q.dtype
        self.compute_dtype = compute_dtype  # dtype of the dequantized weight; None = the input's dtype
        self.register_buffer("weight_packed", q.packed)
        self.register_buffer("weight_absmax", q.absmax)
        scale = q.absmax_scale if q.absmax_scale is not None else torch.empty(0)
        self.register_buffer("weight_absmax_scale", scale)
        self.register_buffer("weight_absmax_offset", torch.tensor(q.absmax_offset, dtype=torch.float32))
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = BLOCK, double_quant: bool = True) -> NF4Linear:
        q = quantize_nf4(linear.weight.data, blocksize, double_quant)
        return cls(q, linear.bias.data if linear.bias is not None else None)

    def nf4(self) -> NF4Tensor:
        dq = self.weight_absmax_scale.numel() > 0
        return NF4Tensor(
            self.weight_packed, self.weight_absmax, (self.out_features, self.in_features), self.orig_dtype,
            self.blocksize, self.weight_absmax_scale if dq else None, float(self.weight_absmax_offset),
        )  # fmt: skip

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The (out, in) weight this layer computes with."""
        return dequantize_nf4(self.nf4(), dtype=dtype or self.orig_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        w = self.dequantized_weight(self.compute_dtype or x.dtype)  # (out, in), freed after the matmul
        return F.linear(x, w, self.bias.to(w.dtype) if self.bias is not None else None)

    def stored_bytes(self) -> int:
        """Bytes of the quantized weight storage (codes + scales + bias)."""
        return sum(b.numel() * b.element_size() for b in self.buffers()) + (
            self.bias.numel() * self.bias.element_size() if self.bias is not None else 0
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4 block={self.blocksize}"
