"""Normalization layers: LayerNorm (Ba et al. 2016) and RMSNorm (Zhang & Sennrich 2019).

LayerNorm subtracts the mean and divides by the standard deviation over the last dim, then applies a gain and
(optionally) a bias. RMSNorm drops the mean subtraction and the bias: x / sqrt(mean(x^2) + eps) * gain. Both
compute their statistics in float32 so bf16 training does not lose the small variances (as HF Llama does).
RMSNorm calls the fused `F.rms_norm` (one dispatch instead of seven: it matters in batch-1 decoding, where a
step is mostly per-op overhead); on float32 input it is bit-identical to the formula above (tests/model).
Left out: DeepNorm scaling, norm-free residuals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., D)
        if x.dtype == torch.float32:  # x / sqrt(mean(x^2) + eps) * weight, fused
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)
        # low precision: statistics in float32, normalized x rounded back to its dtype, then the gain
        return self.weight * F.rms_norm(x.float(), x.shape[-1:], None, self.eps).to(x.dtype)


def build_norm(kind: str, dim: int, eps: float, bias: bool) -> nn.Module:
    """The norm named by `ModelConfig.norm` ("layernorm" | "rmsnorm")."""
    if kind == "layernorm":
        return LayerNorm(dim, eps, bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps)
    raise ValueError(f"ModelConfig.norm={kind!r}; expected layernorm or rmsnorm")
