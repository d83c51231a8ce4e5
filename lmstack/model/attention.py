"""Multi-head self-attention with grouped KV heads (MHA / GQA / MQA), masks built from positions, and a cache.

Attention(Q, K, V) = softmax(Q K^T / sqrt(hd) + bias) V  (Vaswani et al. 2017). Grouped-query attention
(Ainslie et al. 2023) shares each K/V head among H / Hkv query heads: Hkv = H is MHA, Hkv = 1 is MQA
(Shazeer 2019). Options: q/k/v biases (GPT-2, Qwen2), QK-norm (RMSNorm per head before RoPE), sliding window
(Mistral: a query reads only keys less than `window` positions back), causal or bidirectional, ALiBi bias.

The mask comes from positions alone (see `lmstack/model/cache.py`): query at p reads key at q iff q >= 0,
q <= p (causal) and p - q < window. Padded queries (p = -1) read every slot so softmax never sees an all -inf
row (their outputs are garbage and ignored). Three paths compute the same thing, tied by tests:
  - "sdpa": `torch.nn.functional.scaled_dot_product_attention` (fused; `is_causal=True` and no mask tensor when
    nothing but causality constrains the scores: no cache, default positions, no ALiBi, window >= T); under
    CPU autocast it attends in float32 (`sdpa` below: torch's bf16 CPU kernel has a slow backward)
  - "reference": explicit softmax in float32; the only path that can return the attention weights (for plots).
  - "flash": the tiled online-softmax algorithm in plain PyTorch (flash_attention.py): O(T) memory, not fast.
Left out: cross-attention, attention sinks, differential attention, multi-latent attention.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.model.cache import KVCache
from lmstack.model.config import ModelConfig
from lmstack.model.flash_attention import flash_attention
from lmstack.model.norms import RMSNorm
from lmstack.model.positions import apply_rope_signed


def position_bias(
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    causal: bool,
    window: int | None,
    slopes: torch.Tensor | None,
    dtype: torch.dtype,
    packed: bool = False,
) -> torch.Tensor:
    """Additive bias (B, 1 or H, T, S) from query positions (B, T) and key positions (B, S): 0 where a query may
    read a key, -inf where it may not, plus -slope_h * |p - q| for ALiBi.

    packed (no cache: the keys are the queries' own tokens): a row may hold several sequences packed one after
    another, each with positions restarting at 0 (fine-tuning's packing); a position that does not increase
    starts a new sequence, and a query reads only keys of its own sequence (a block-diagonal causal mask)."""
    p, q = q_pos[:, :, None], k_pos[:, None, :]  # (B, T, 1), (B, 1, S)
    allowed = q >= 0
    if packed:
        starts = torch.ones_like(q_pos, dtype=torch.bool)
        starts[:, 1:] = q_pos[:, 1:] <= q_pos[:, :-1]  # a reset of the position starts a sequence
        seq = starts.cumsum(dim=1)  # (B, T) sequence index of every token
        allowed = allowed & (seq[:, :, None] == seq[:, None, :])
    if causal:
        allowed = allowed & (q <= p)
    if window is not None:
        allowed = allowed & ((p - q).abs() < window)
    allowed = allowed | (p < 0)  # padded queries read everything: no all-masked rows, no NaN
    bias = torch.where(allowed, 0.0, float("-inf"))[:, None]  # (B, 1, T, S) float32
    if slopes is not None:
        bias = bias - slopes.to(bias.device)[None, :, None, None] * (p - q).abs()[:, None].float()  # (B, H, T, S)
    return bias if bias.dtype == dtype else bias.to(dtype)


class SharedBias:
    """One forward's attention bias, built by the first layer and reused by the next ones while they read the same
    key-positions tensor: without a cache that is `positions` itself, and the contiguous cache returns one view per
    forward. A cache that returns a new tensor per layer simply gets a bias per layer (the result is the same)."""

    def __init__(self) -> None:
        self.k_pos: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def get(self, q_pos: torch.Tensor, k_pos: torch.Tensor, *args: object) -> torch.Tensor:
        """`position_bias(q_pos, k_pos, *args)`, computed once per key-positions tensor (`args` are per-model)."""
        if k_pos is not self.k_pos:
            self.k_pos, self.bias = k_pos, position_bias(q_pos, k_pos, *args)
        return self.bias


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.causal, self.window, self.dropout = cfg.causal, cfg.sliding_window, cfg.dropout
        self.impl = cfg.attention
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        slopes: torch.Tensor | None = None,
        cache: KVCache | None = None,
        plain_causal: bool = False,
        return_weights: bool = False,
        shared: SharedBias | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, D), positions (B, T) -> (B, T, D) and, if asked, weights (B, H, T, S).

        rope: (cos, signed sin) from `RotaryEmbedding.signed`, computed once per forward.
        plain_causal: the caller guarantees positions are arange(T) for every row and there is no cache, so the
        mask is the plain triangle (the SDPA `is_causal` fast path).
        shared: the forward's `SharedBias`, so the mask is built once, not once per layer."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope_signed(q, *rope), apply_rope_signed(k, *rope)
        k_pos = positions
        if cache is not None:
            k, v, k_pos = cache.update(self.layer_idx, k, v, positions)  # (B, Hkv, S, hd), (B, S)
        use_ref = return_weights or self.impl == "reference"
        flash = self.impl == "flash" and not return_weights  # builds its mask tile by tile
        fast = plain_causal and slopes is None and (self.window is None or self.window >= T)
        packed = cache is None  # the keys are the queries' own tokens: position resets separate packed sequences
        bias = None
        if not (fast or flash):
            args = (self.causal, self.window, slopes, q.dtype, packed)
            bias = (shared or SharedBias()).get(positions, k_pos, *args)
        drop = self.dropout if self.training else 0.0
        weights = None
        if flash:
            out = flash_attention(q, k, v, positions, k_pos, self.causal, self.window, slopes, packed=packed)
        elif use_ref:
            out, weights = reference_attention(q, k, v, bias, fast and self.causal, drop)
        else:
            out = sdpa(q, k, v, bias, drop, fast and self.causal, self.n_kv_heads != self.n_heads)  # (B, H, T, hd)
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(out), (weights if return_weights else None)


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    dropout: float = 0.0,
    causal: bool = False,
    gqa: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """`F.scaled_dot_product_attention`, except under CPU autocast, where it runs in float32: torch 2.13's bf16
    flash-attention backward on the CPU is ~6x slower than its fp32 one at small head sizes (22 vs 3.5 ms per
    layer for 16 x 4 heads x 128 tokens x 32 dims), so the fp32 kernel makes a bf16 training step ~19 % faster
    (docs/log.md, 2026-12-01 fifth session). The projections around it stay in bf16. `T5Attention` uses it too."""
    upcast = q.device.type == "cpu" and torch.is_autocast_enabled("cpu")
    if upcast:
        q, k, v = q.float(), k.float(), v.float()
        bias = bias.float() if bias is not None and bias.is_floating_point() else bias
    with torch.autocast("cpu", enabled=False) if upcast else contextlib.nullcontext():  # else autocast casts back
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=dropout, is_causal=causal, scale=scale, enable_gqa=gqa
        )


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, causal: bool, dropout: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Explicit softmax(q k^T / sqrt(hd) + bias) v in float32; returns output (B, H, T, hd), weights (B, H, T, S)."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # (B, H, S, hd): query head h reads KV head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, T, S)
    if causal:  # plain triangle, aligned at the end (T == S here)
        T, S = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1), -math.inf)
    if bias is not None:
        scores = scores + bias.float()
    weights = scores.softmax(dim=-1)
    dropped = F.dropout(weights, dropout) if dropout > 0 else weights
    return (dropped @ v.float()).to(q.dtype), weights
