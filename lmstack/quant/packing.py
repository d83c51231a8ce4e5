"""Bit packing: b-bit integers into bytes and int32 words, in the layouts checkpoints and kernels use.

Quantized weights are small integers (0..15 for 4 bits, 0..255 for 8); stored one per byte they would save
nothing over int8. Packing puts 32 / b of them into one int32 word (GPTQ checkpoints) or two 4-bit values into
one byte (our in-memory fallback layout):

- GPTQ `qweight` (AutoGPTQ / GPTQModel "gptq" format, what `transformers` reads with `quant_method: gptq`):
  the (out N, in K) integer matrix is transposed to (K, N) and every 32 / b consecutive *input* rows share one
  int32: `qweight[k // p, n] |= q[n, k] << (b * (k % p))` with p = 32 / b (first value in the low bits).
- GPTQ `qzeros`: the (N, G) zero points (G groups) transposed to (G, N) and packed along N the same way:
  `qzeros[g, n // p] |= (z[n, g] - 1) << (b * (n % p))`. The "- 1" is the v1 format's historical offset
  (AutoGPTQ stored zero - 1); readers add 1 back and mask to b bits, so a zero point of 0 (stored as -1, all
  ones) also round-trips.
- `pack_nibbles`: (N, K) 4-bit values -> (N, K/2) uint8, element 2j in the low nibble, 2j+1 in the high one.

    >>> pack_int32(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]).t(), bits=4).item() == 0x87654321
    True

Left out: 2/3-bit packing (3-bit GPTQ words straddle int32 boundaries), the exllama/marlin shuffled layouts.
"""

from __future__ import annotations

import torch


def _check(bits: int) -> int:
    if bits not in (4, 8):
        raise ValueError(f"bits={bits}: only 4 and 8 are supported")
    return 32 // bits


def pack_int32(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack along dim 0: (R, C) integers in [0, 2^bits) -> (ceil(R * bits / 32), C) int32 (last word zero-padded)."""
    p = _check(bits)
    q = q.to(torch.int64)
    if q.shape[0] % p:  # zero-pad the last word
        q = torch.cat([q, q.new_zeros(p - q.shape[0] % p, *q.shape[1:])])
    words = q.reshape(q.shape[0] // p, p, *q.shape[1:])  # (R/p, p, C)
    shifts = (torch.arange(p, dtype=torch.int64) * bits).view(1, p, *[1] * (q.dim() - 1))
    packed = (words << shifts).sum(dim=1)  # no overlap between fields, so sum == bitwise or
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)  # reinterpret as signed int32
    return packed.to(torch.int32)


def unpack_int32(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of `pack_int32`: (R / p, C) int32 -> (R, C) uint8 (bits=4, 8); R includes any padding."""
    p = _check(bits)
    words = packed.to(torch.int64) & 0xFFFFFFFF  # (R/p, C) as unsigned
    shifts = (torch.arange(p, dtype=torch.int64) * bits).view(1, p, *[1] * (packed.dim() - 1))
    fields = (words.unsqueeze(1) >> shifts) & (2**bits - 1)  # (R/p, p, C)
    return fields.reshape(-1, *packed.shape[1:]).to(torch.uint8)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(N, K) values in [0, 16) -> (N, K/2) uint8: even columns in the low nibble, odd in the high one."""
    assert q.shape[-1] % 2 == 0, f"K={q.shape[-1]} must be even to pack two 4-bit values per byte"
    q = q.to(torch.uint8)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_nibbles`: (N, K/2) uint8 -> (N, K) uint8."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


GPTQ_SUFFIXES = ("qweight", "qzeros", "mins", "scales", "g_idx")  # what `gptq_tensors` may write per layer


def gptq_tensors(
    q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor, bits: int
) -> dict[str, torch.Tensor]:
    """GPTQ checkpoint tensors of one linear layer.

    q (N, K) ints, scales (N, G), zeros (N, G) ints, g_idx (K,) group of each input column ->
    qweight (K*b/32, N) int32, qzeros (G, N*b/32) int32, scales (G, N) fp16, g_idx (K,) int32. (AutoGPTQ needs
    K and N to be multiples of 32/b; other sizes get a zero-padded last word, which lmstack reads back.)
    Float zero points (`QuantSpec.float_zero`) are stored as `mins` (G, N) fp16 = -z * s instead of qzeros: an
    lmstack extension, which GPTQ loaders elsewhere do not read."""
    out = {"qweight": pack_int32(q.t().contiguous(), bits), "scales": scales.t().contiguous().to(torch.float16)}
    if zeros.is_floating_point():  # a float zero point: store the offset w_hat(q=0) = -z * s, as Q4_1 does
        out["mins"] = (-zeros * scales).t().contiguous().to(torch.float16)
    else:
        stored_zeros = (zeros.to(torch.int64) - 1) & (2**bits - 1)  # v1 offset; a zero of 0 wraps to all ones
        out["qzeros"] = pack_int32(stored_zeros, bits).t().contiguous()  # packed along N, then (G, N*b/32)
    out["g_idx"] = g_idx.to(torch.int32)
    return out


def from_gptq_tensors(
    tensors: dict[str, torch.Tensor], bits: int, in_features: int, out_features: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `gptq_tensors`: -> q (N, K) uint8, scales (N, G) fp32, zeros (N, G) uint8 (float32 from
    `mins`), g_idx (K,) int64.
    Shapes are checked against (in_features, out_features); a mismatch is a ValueError naming the tensor."""
    p = _check(bits)
    K, N = in_features, out_features
    qweight, scales = tensors["qweight"], tensors["scales"]
    mins = tensors.get("mins")  # float zero points, else packed integer qzeros
    words = lambda n: -(-n // p)  # noqa: E731  (ceil: a partial last word is zero-padded)
    if tuple(qweight.shape) != (words(K), N) or qweight.dtype != torch.int32:
        raise ValueError(f"qweight is {tuple(qweight.shape)} {qweight.dtype}, expected ({words(K)}, {N}) int32")
    G = scales.shape[0]
    zeros_name, stored, zeros_shape = (
        ("qzeros", tensors["qzeros"], (G, words(N))) if mins is None else ("mins", mins, (G, N))
    )
    if scales.dim() != 2 or tuple(scales.shape) != (G, N) or tuple(stored.shape) != zeros_shape:
        shapes = f"scales {tuple(scales.shape)} / {zeros_name} {tuple(stored.shape)}"
        raise ValueError(f"{shapes} do not match N={N}, {G} groups")
    if K % G:
        raise ValueError(f"{G} groups do not divide in_features={K}")
    g_idx = tensors.get("g_idx")
    g_idx = torch.arange(K) // (K // G) if g_idx is None else g_idx.to(torch.int64)
    if tuple(g_idx.shape) != (K,) or int(g_idx.min()) < 0 or int(g_idx.max()) >= G:
        raise ValueError(f"g_idx must hold {K} group indices in [0, {G})")
    maxq = 2**bits - 1
    q = unpack_int32(qweight, bits)[:K].t().contiguous()  # (N, K)
    scales = scales.t().float().contiguous()
    if mins is not None:  # float zero points: z = -min / s, computed exactly as `rtn.grid_params` does
        return q, scales, (-mins.t().float() / scales).contiguous(), g_idx
    zeros = (unpack_int32(stored.t(), bits)[:N].to(torch.int64) + 1) & maxq  # (N, G), v1 offset undone
    return q, scales, zeros.to(torch.uint8).contiguous(), g_idx
