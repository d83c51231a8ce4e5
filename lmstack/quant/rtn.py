"""The quantization grid and round-to-nearest (RTN): the baseline every other method is measured against.

A b-bit weight quantizer maps each weight w of a group (`group_size` consecutive input columns of one output
row; the whole row when group_size = -1, "per channel") to an integer q in [0, 2^b - 1]:

    q = clamp(round(w / s) + z, 0, 2^b - 1)        w_hat = (q - z) * s

- asymmetric: the group's range [min(w, 0), max(w, 0)] is spread over the 2^b levels, s = (max - min) / (2^b - 1),
  z = round(-min / s). Including 0 in the range keeps 0 exactly representable (and z inside [0, 2^b - 1]).
- symmetric: the range is [-a, a] with a = max|w|, s = 2a / (2^b - 1), z = 2^(b-1) fixed (8 for 4 bits); then
  only the scale is stored per group. 4-bit levels are -8s..7s, so the largest positive weight clips by s/2.
This is GPTQ's `Quantizer.find_params` (Frantar et al. 2023), which AutoGPTQ and `transformers` checkpoints use.
- asymmetric with a float zero point (`float_zero`): the range is the group's own [min, max] (0 need not be in
  it) and the offset min is stored as fp16, w_hat = q * s + min, i.e. z = -min / s is not rounded. This is
  llama.cpp's Q4_1 and HQQ's / torchao's "float zero domain"; the int4 kernel takes a float offset anyway
  (`linear.py`), so it costs 16 bits per group instead of 4 and nothing at run time. An integer zero point moves
  the grid by up to s/2 and must reach 0, which a group of 32 same-signed weights wastes levels on.
Scales are rounded to fp16 as soon as they are found: the checkpoint stores fp16, so the integers q are the
ones the stored scale implies and a reloaded model computes exactly what the in-memory one did.

RTN quantizes every weight independently with these parameters (`quantize_rtn`); GPTQ (`gptq.py`) and AWQ
(`awq.py`) use the same grid but choose the integers / scales to minimise the layer's *output* error.
Memory: b bits per weight + 16 (scale) [+ b (zero)] bits per group, so int4 at group 128 is 4.125 (sym) or
4.16 (asym) bits per weight, ~7.7x smaller than fp32 (the `BITS` table of `lmstack.model.calc`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_SCALE = 2.0**-14  # smallest normal fp16: a tinier scale would round to 0 in the checkpoint


@dataclass(frozen=True)
class QuantSpec:
    bits: int = 4  # 4 or 8
    group_size: int = 128  # input columns sharing one scale / zero point; -1 = one per output row
    sym: bool = True  # symmetric (fixed zero point 2^(b-1)) or asymmetric (a zero point per group)
    float_zero: bool = False  # asymmetric only: the zero point is the group's fp16 minimum, not an integer

    def __post_init__(self) -> None:
        if self.bits not in (4, 8):
            raise ValueError(f"--bits={self.bits}: expected 4 or 8")
        if self.float_zero and self.sym:
            raise ValueError("--float_zero=true needs an asymmetric grid (--sym=false)")
        if self.group_size != -1 and self.group_size < 2:
            raise ValueError(f"--group_size={self.group_size}: expected -1 (per channel) or >= 2")

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1

    def stored_zeros(self, zeros: torch.Tensor) -> torch.Tensor:
        """Zero points as `QuantizedWeight` holds them: uint8 integers, or float32 with `float_zero`."""
        return zeros.float() if self.float_zero else zeros.to(torch.uint8)

    def groups(self, in_features: int, where: str = "layer") -> int:
        """Number of groups per row; a group size that does not divide the input width is a ValueError."""
        if self.group_size == -1:
            return 1
        if in_features % self.group_size:
            fits = [g for g in (32, 64, 128, 256) if in_features % g == 0]
            raise ValueError(
                f"{where}: in_features={in_features} is not divisible by --group_size={self.group_size}; pick a "
                f"group size that divides every quantized layer's input width ({', '.join(map(str, fits)) or 'none'}"
                " of 32/64/128/256 divide this one) or -1 for one group per row"
            )
        return in_features // self.group_size


@dataclass
class QuantizedWeight:
    """One quantized (N, K) weight in the plain layout every method produces and every format is made from."""

    q: torch.Tensor  # (N, K) uint8 integers in [0, 2^bits)
    scales: torch.Tensor  # (N, G) float32 (fp16-representable)
    zeros: torch.Tensor  # (N, G) uint8 zero points; float32 -min / s with `spec.float_zero`
    g_idx: torch.Tensor  # (K,) int64: the group of each input column (k // group_size unless act-order)
    spec: QuantSpec

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """w_hat (N, K) = (q - z[g_idx]) * s[g_idx]."""
        s = self.scales[:, self.g_idx]  # (N, K)
        z = self.zeros[:, self.g_idx].float()
        return ((self.q.float() - z) * s).to(dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)  # type: ignore[return-value]


def grid_params(w: torch.Tensor, spec: QuantSpec, mse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of each row of w (R, n) (one group per row) -> s (R, 1) fp16-exact, z (R, 1) float.

    mse: instead of the full range, search a shrunk range [p lo, p hi] (p = 1, 0.99, ..., 0.21) per row for the
    smallest sum |w - w_hat|^2.4 (GPTQ's `Quantizer(mse=True)`): clipping a few outliers buys finer levels."""
    w = w.float()
    lo, hi = w.amin(dim=1, keepdim=True), w.amax(dim=1, keepdim=True)  # (R, 1)
    if not spec.float_zero:  # an integer zero point must be a level: the range includes 0
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    if not mse:
        return _range_params(lo, hi, spec)
    best_err = torch.full_like(lo, float("inf"))
    best_s, best_z = _range_params(lo, hi, spec)
    for i in range(80):
        s, z = _range_params(lo * (1 - i / 100), hi * (1 - i / 100), spec)
        err = (fake_quantize(w, s, z, spec.maxq) - w).abs().pow(2.4).sum(dim=1, keepdim=True)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_s, best_z = torch.where(better, s, best_s), torch.where(better, z, best_z)
    return best_s, best_z


def _range_params(lo: torch.Tensor, hi: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map [lo, hi] (lo <= 0 <= hi) onto the 2^b levels."""
    if spec.sym:
        hi = torch.maximum(-lo, hi)
        lo = -hi
    scale = (hi - lo) / spec.maxq
    scale = torch.where(hi > lo, scale, torch.ones_like(scale))  # an all-zero group: any scale, q = z
    scale = scale.clamp(min=MIN_SCALE).half().float()
    if spec.sym:
        zero = torch.full_like(scale, (spec.maxq + 1) // 2)
    elif spec.float_zero:  # the stored offset is fp16(lo); z is what it implies (checkpoint.py computes it so too)
        zero = -lo.half().float() / scale
    else:
        zero = torch.round(-lo / scale).clamp(0, spec.maxq)
    return scale, zero


def to_grid(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integers q = clamp(round(w / s + z), 0, maxq) (float tensor, same shape as w). An integer z is added after
    rounding (GPTQ's order; the two differ only on exact ties), a float zero point's fraction before."""
    whole = torch.round(zero)
    return torch.clamp(torch.round(w / scale + (zero - whole)) + whole, 0, maxq)


def fake_quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """w -> its grid value (q - z) * s, in float32."""
    return (to_grid(w, scale, zero, maxq) - zero) * scale


def quantize_rtn(w: torch.Tensor, spec: QuantSpec, where: str = "layer", mse: bool = False) -> QuantizedWeight:
    """Round every weight of w (N, K) to the nearest level of its group's grid (`mse`: see `grid_params`)."""
    N, K = w.shape
    G = spec.groups(K, where)
    gs = K // G
    groups = w.float().reshape(N * G, gs)  # one row per (output row, group)
    scale, zero = grid_params(groups, spec, mse)  # (N*G, 1)
    q = to_grid(groups, scale, zero, spec.maxq)
    return QuantizedWeight(
        q=q.reshape(N, K).to(torch.uint8),
        scales=scale.reshape(N, G),
        zeros=spec.stored_zeros(zero.reshape(N, G)),
        g_idx=torch.arange(K) // gs,
        spec=spec,
    )
