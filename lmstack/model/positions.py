"""Position information: learned tables, sinusoids, rotary embeddings (with context-extension scalings), ALiBi.

- Learned absolute (GPT-2): an `nn.Embedding(max_seq_len, D)` added to the token embeddings (in transformer.py).
- Sinusoidal (Vaswani et al. 2017, sec. 3.5): PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(same).
- RoPE (Su et al. 2021, "RoFormer"): rotate each pair of query/key dims by angle p * inv_freq[i], with
  inv_freq[i] = theta^(-2i/d). Then q_p . k_q depends on p - q only. We use the "rotate_half" pairing (dim i
  with dim i + d/2), the HF/GPT-NeoX layout; partial rotary rotates only the first `rope_dim` dims of a head.
  Context extension rewrites inv_freq:
    linear  (Chen et al. 2023, position interpolation): inv_freq / factor
    dynamic (NTK-aware, bloc97/emozilla): theta' = theta * (factor * s / L - (factor - 1))^(d / (d - 2)) once
            the sequence s exceeds the trained length L
    yarn    (Peng et al. 2023): per-frequency blend of interpolation and extrapolation by a linear ramp over
            the dims whose wavelengths fall between beta_fast and beta_slow rotations, and cos/sin scaled by
            0.1 ln(factor) + 1
    llama3  (Meta 2024): keep high frequencies, divide low frequencies by factor, smooth in between
- ALiBi (Press et al. 2022, "Train Short, Test Long"): no embedding; attention adds -slope_h * (p - q), slopes a
  geometric sequence 2^(-8/H), 2^(-16/H), ... (interleaved for H not a power of two, as in the paper's code).
- T5 relative buckets (Raffel et al. 2020, sec. 2.1): no embedding; each attention score gets a learned scalar per
  head, indexed by a bucket of the relative distance q - p: exact buckets for small distances, logarithmically
  wider ones up to `max_distance`, one bucket beyond. Bidirectional (encoder) buckets also split by sign.
Left out: LongRoPE, xPos, NoPE-specific tricks, per-layer RoPE configs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def sinusoidal(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Vaswani sinusoids for integer positions (B, T) -> (B, T, D), sin on even dims, cos on odd dims."""
    i = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    angle = positions.float()[..., None] / base ** (i / dim)  # (B, T, D/2)
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1)  # (B, T, D/2, 2)
    return pe.flatten(-2)[..., :dim]


def _scaling_kind(scaling: dict[str, Any] | None) -> str:
    if not scaling:
        return "default"
    return scaling.get("rope_type", scaling.get("type", "default"))


def rope_inv_freq(
    dim: int, theta: float, scaling: dict[str, Any] | None, max_seq_len: int, seq_len: int | None = None
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (dim/2,) for `dim` rotary dims and the cos/sin scale (1.0 except YaRN)."""
    kind = _scaling_kind(scaling)
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim  # 2i/d
    if kind == "dynamic":
        # NTK-aware: grow the base so the lowest frequency stretches to the new length, the highest stays
        s = max(seq_len or max_seq_len, max_seq_len)
        factor = scaling["factor"]
        theta = theta * ((factor * s / max_seq_len) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / theta**exponents
    if kind == "linear":
        return inv_freq / scaling["factor"], 1.0
    if kind == "llama3":
        return _llama3(inv_freq, scaling, max_seq_len), 1.0
    if kind == "yarn":
        return _yarn(dim, theta, scaling, max_seq_len)
    return inv_freq, 1.0


def _llama3(inv_freq: torch.Tensor, scaling: dict[str, Any], max_seq_len: int) -> torch.Tensor:
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling.get("original_max_position_embeddings", max_seq_len)
    wavelen = 2 * math.pi / inv_freq
    # long wavelengths (> old_len / low) are interpolated, short ones (< old_len / high) kept
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)  # 0 at the long end, 1 at the short end
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


def _yarn(dim: int, theta: float, scaling: dict[str, Any], max_seq_len: int) -> tuple[torch.Tensor, float]:
    factor = scaling["factor"]
    old_len = scaling.get("original_max_position_embeddings", max_seq_len)
    beta_fast, beta_slow = scaling.get("beta_fast") or 32, scaling.get("beta_slow") or 1
    attention_factor = scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0

    def dim_of(rotations: float) -> float:
        # the dim index whose wavelength fits `rotations` full turns into old_len
        return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    lo, hi = dim_of(beta_fast), dim_of(beta_slow)
    if scaling.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
    extrapolate = 1 - ramp  # 1 for high frequencies (kept), 0 for low ones (interpolated)
    base = theta ** (torch.arange(0, dim, 2).float() / dim)
    inv_freq = (1.0 / (factor * base)) * (1 - extrapolate) + (1.0 / base) * extrapolate
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for integer positions; `apply_rope` rotates queries and keys with them."""

    def __init__(self, dim: int, theta: float, scaling: dict[str, Any] | None, max_seq_len: int) -> None:
        super().__init__()
        self.dim, self.theta, self.scaling, self.max_seq_len = dim, theta, scaling, max_seq_len
        inv_freq, self.attention_factor = rope_inv_freq(dim, theta, scaling, max_seq_len)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._tables()

    def _apply(self, fn: Any, recurse: bool = True) -> RotaryEmbedding:
        # `model.to(bfloat16)` would round the frequencies by ~0.4% (an angle error of radians by position 1000),
        # and `to_empty` would leave them uninitialized: recompute them in float32 on the new device instead.
        super()._apply(fn, recurse)
        inv_freq, _ = rope_inv_freq(self.dim, self.theta, self.scaling, self.max_seq_len)
        self.inv_freq = inv_freq.to(self.inv_freq.device)
        self._tables()
        return self

    def _tables(self) -> None:
        """[f, f] and [-f, f] for `signed` (plain attributes: recomputed with inv_freq, never saved)."""
        f = self.inv_freq.float()
        self.both_freq, self.signed_freq = torch.cat([f, f]), torch.cat([-f, f])

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin (B, 1, T, rope_dim) in `dtype` (pads, p = -1, get a harmless angle)."""
        angles = self._angles(positions)
        emb = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, rope_dim)
        return self._scaled(emb.cos(), dtype), self._scaled(emb.sin(), dtype)

    def signed(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, signed sin (B, 1, T, rope_dim) for `apply_rope_signed`: the sin table with
        its first half negated, so the rotation needs no negation per layer (the model computes it once)."""
        freq = self._inv_freq(positions)
        both, signed = self.both_freq, self.signed_freq  # (rope_dim,) [f, f] and [-f, f]
        if freq is not self.inv_freq:  # dynamic NTK past the trained length
            both, signed = torch.cat([freq, freq]), torch.cat([-freq, freq])
        p = positions[:, None, :, None].float()  # (B, 1, T, 1)
        cos, sin = (p * both).cos(), (p * signed).sin()  # sin(-a) = -sin(a): the first half negated
        return self._scaled(cos, dtype), self._scaled(sin, dtype)

    def _angles(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (B, T) -> angles p * inv_freq (B, T, rope_dim/2) in float32."""
        return positions.float()[..., None] * self._inv_freq(positions)

    def _inv_freq(self, positions: torch.Tensor) -> torch.Tensor:
        """inv_freq (rope_dim/2,) float32, or dynamic NTK's for the current length."""
        inv_freq = self.inv_freq
        if _scaling_kind(self.scaling) == "dynamic":
            longest = int(positions.max()) + 1  # dynamic NTK depends on the current length (one host sync)
            if longest > self.max_seq_len:
                inv_freq, _ = rope_inv_freq(self.dim, self.theta, self.scaling, self.max_seq_len, longest)
                inv_freq = inv_freq.to(positions.device)
        return inv_freq.float()

    def _scaled(self, table: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        table = table * self.attention_factor if self.attention_factor != 1.0 else table  # YaRN only
        return table if table.dtype == dtype else table.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90-degree turn of every (i, i + d/2) pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of x (B, H, T, hd); the rest pass through (partial rotary)."""
    rd = cos.shape[-1]
    if rd == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    rot, keep = x[..., :rd], x[..., rd:]
    return torch.cat([rot * cos + rotate_half(rot) * sin, keep], dim=-1)


def apply_rope_signed(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` with the tables of `RotaryEmbedding.signed`: rotate_half(x) * sin == roll(x, d/2) * signed_sin,
    so a rotation is four ops instead of six (what the model runs; tests tie it to `apply_rope`). Not `addcmul`:
    its fused multiply-add rounds once instead of twice, which moves SmolLM2's logits 4e-5 away from `transformers`."""
    rd = cos.shape[-1]
    if rd == x.shape[-1]:
        return x * cos + x.roll(rd // 2, -1) * signed_sin
    rot, keep = x[..., :rd], x[..., rd:]
    return torch.cat([rot * cos + rot.roll(rd // 2, -1) * signed_sin, keep], dim=-1)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes (H,): 2^(-8 i / n) for i = 1..n, n the largest power of two <= H; the remaining
    heads take every other slope of the 2n sequence (Press et al. 2022, reference implementation)."""
    n = 2 ** math.floor(math.log2(n_heads))
    slopes = [2 ** (-8 * i / n) for i in range(1, n + 1)]
    if n < n_heads:
        extra = [2 ** (-8 * i / (2 * n)) for i in range(1, 2 * n + 1)][::2]
        slopes += extra[: n_heads - n]
    return torch.tensor(slopes, dtype=torch.float32)


def relative_position_bucket(
    relative: torch.Tensor, bidirectional: bool, n_buckets: int = 32, max_distance: int = 128
) -> torch.Tensor:
    """T5's bucket of each relative distance (key position - query position), int64 in [0, n_buckets).

    Bidirectional: half the buckets for keys after the query. Of the rest, the first half are exact distances
    0, 1, ..., the second half cover [n/2, max_distance) in log-spaced bins; farther keys share the last bucket.
    Causal (decoder): only keys at or before the query exist, so all buckets go to distances >= 0.
    >>> relative_position_bucket(torch.tensor([-3, 0, 3, 200]), True, 8, 20).tolist()
    [2, 0, 6, 7]
    """
    bucket = torch.zeros_like(relative)
    if bidirectional:
        n_buckets //= 2
        bucket = bucket + (relative > 0).long() * n_buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    exact = n_buckets // 2
    # log-spaced: exact + (n - exact) * log(d / exact) / log(max_distance / exact), capped at the last bucket
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (n_buckets - exact)).long()).clamp(max=n_buckets - 1)
    return bucket + torch.where(distance < exact, distance, far)


class RelativePositionBias(nn.Module):
    """T5's learned bias: one scalar per (bucket, head), added to the attention scores of every layer."""

    def __init__(self, n_buckets: int, max_distance: int, n_heads: int, bidirectional: bool) -> None:
        super().__init__()
        self.n_buckets, self.max_distance, self.bidirectional = n_buckets, max_distance, bidirectional
        self.weight = nn.Parameter(torch.zeros(n_buckets, n_heads))

    def forward(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """q_pos (B, T), k_pos (B, S) -> bias (B, H, T, S)."""
        relative = k_pos[:, None, :] - q_pos[:, :, None]  # (B, T, S)
        buckets = relative_position_bucket(relative, self.bidirectional, self.n_buckets, self.max_distance)
        return self.weight[buckets].permute(0, 3, 1, 2)
