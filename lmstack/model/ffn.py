"""Position-wise feed-forward networks: the GELU MLP and SwiGLU.

- GELU MLP (GPT-2; Hendrycks & Gimpel 2016 for GELU): down(gelu(up(x))), F = 4 D by default. `gelu_approx="tanh"`
  is GPT-2's "gelu_new": 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
- SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"; Llama): down(silu(gate(x)) * up(x)). Three matrices,
  so F ~ 8/3 D keeps the parameter count of a 4 D MLP.
- ReLU MLP (Vaswani et al. 2017; T5 v1.0): down(relu(up(x))).
- GeGLU (Shazeer 2020; T5 v1.1 "gated-gelu"): down(gelu_tanh(gate(x)) * up(x)).
Left out: ReGLU, squared ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GeluMLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, bias: bool, approx: str = "none") -> None:
        super().__init__()
        self.approx = approx
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., F) -> (..., D)
        return self.down_proj(F.gelu(self.up_proj(x), approximate=self.approx))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., F) -> (..., D)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ReluMLP(nn.Module):
    def __init__(self, d_model: int, d_ff: int, bias: bool) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., F) -> (..., D)
        return self.down_proj(F.relu(self.up_proj(x)))


class GeGLU(SwiGLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., F) -> (..., D)
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


def build_ffn(kind: str, d_model: int, d_ff: int, bias: bool, approx: str = "none") -> nn.Module:
    """The FFN named by `ModelConfig.ffn` ("gelu" | "swiglu" | "relu" | "geglu")."""
    if kind == "gelu":
        return GeluMLP(d_model, d_ff, bias, approx)
    if kind == "swiglu":
        return SwiGLU(d_model, d_ff, bias)
    if kind == "relu":
        return ReluMLP(d_model, d_ff, bias)
    if kind == "geglu":
        return GeGLU(d_model, d_ff, bias)
    raise ValueError(f"ModelConfig.ffn={kind!r}; expected gelu, swiglu, relu or geglu")
