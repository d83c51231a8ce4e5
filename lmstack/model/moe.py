"""Mixture-of-experts FFN: a softmax router sends each token to its top-k SwiGLU experts.

Follows Mixtral (Jiang et al. 2024): router logits = W_r x, probabilities = softmax over E experts, keep the
top k, renormalize those k weights to sum to 1, output = sum_j w_j expert_j(x). Training extras:
  - load-balancing loss (Switch Transformer, Fedus et al. 2021, eq. 4): aux = E * sum_e f_e P_e, f_e the fraction
    of (token, choice) assignments that go to expert e and P_e the mean router probability of e. It is 1.0 for a
    perfectly uniform router and grows to E when one expert takes everything. (HF Mixtral's
    `load_balancing_loss_func` is k times this number: it sums f over the k choices without dividing by k.)
  - router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): mean over tokens of logsumexp(logits)^2, keeps logits small.
  - capacity factor (Switch): expert e accepts at most C = ceil(capacity_factor * N * k / E) assignments; the
    rest are dropped (that choice contributes nothing; the residual stream carries the token on). Priority goes
    to first choices over second choices, then to earlier tokens (GShard's ordering).
  - router noise: multiplicative jitter U(1 - eps, 1 + eps) on the router input while training (Switch, HF
    Mixtral's `router_jitter_noise`).
The per-expert load (assignments kept, and how many were dropped) is returned for monitoring.
Left out: expert parallelism, shared experts (DeepSeek), expert-choice routing, grouped GEMM kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.model.ffn import SwiGLU


@dataclass
class RouterStats:
    aux_loss: torch.Tensor  # scalar load-balancing loss (1.0 = uniform)
    z_loss: torch.Tensor  # scalar router z-loss
    load: torch.Tensor  # (E,) assignments each expert processed
    dropped: torch.Tensor  # scalar: assignments dropped by the capacity limit


def capacity_keep(top_i: torch.Tensor, n_experts: int, capacity: int) -> torch.Tensor:
    """Which (token, choice) assignments fit: top_i (N, k) expert ids -> keep (N, k) bool.

    Assignments queue per expert in order (choice 0 of every token, then choice 1, ...), and the first
    `capacity` of each queue are kept. Example: top_i = [[0,1],[0,2],[0,1]], capacity 2 -> expert 0 keeps tokens
    0 and 1, drops token 2's first choice; expert 1 keeps both of its second choices."""
    order = top_i.t().reshape(-1)  # (k*N,) choice-major
    onehot = F.one_hot(order, n_experts)  # (k*N, E)
    rank = (onehot.cumsum(0) * onehot).sum(-1)  # 1-based place of each assignment in its expert's queue
    return (rank <= capacity).view(top_i.shape[1], top_i.shape[0]).t()


class MoE(nn.Module):
    def __init__(
        self,
        d_model: int,
        d_ff: int,
        n_experts: int,
        k: int,
        bias: bool = False,
        capacity_factor: float | None = None,
        router_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_experts, self.k = n_experts, k
        self.capacity_factor, self.router_noise = capacity_factor, router_noise
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_ff, bias) for _ in range(n_experts))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, D) -> router logits (N, E), renormalized top-k weights (N, k) float32, expert ids (N, k)."""
        if self.training and self.router_noise > 0:
            x = x * torch.empty_like(x).uniform_(1.0 - self.router_noise, 1.0 + self.router_noise)
        logits = self.router(x)  # (N, E)
        probs = logits.float().softmax(-1)
        top_w, top_i = probs.topk(self.k, dim=-1)  # (N, k)
        return logits, top_w / top_w.sum(-1, keepdim=True), top_i

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterStats]:
        """x (B, T, D) -> (B, T, D) and the router statistics."""
        shape = x.shape
        xf = x.reshape(-1, shape[-1])  # (N, D)
        N = xf.shape[0]
        logits, top_w, top_i = self.route(xf)
        keep = torch.ones_like(top_i, dtype=torch.bool)
        if self.capacity_factor is not None:
            capacity = math.ceil(self.capacity_factor * N * self.k / self.n_experts)
            keep = capacity_keep(top_i, self.n_experts, capacity)
        out = torch.zeros_like(xf)
        top_w = top_w.to(x.dtype)
        for e, expert in enumerate(self.experts):
            tok, slot = torch.where((top_i == e) & keep)  # tokens routed to e (and which of their k choices)
            if tok.numel() == 0:
                continue
            out.index_add_(0, tok, expert(xf[tok]) * top_w[tok, slot, None])
        return out.view(shape), self.stats(logits, top_i, keep)

    def stats(self, logits: torch.Tensor, top_i: torch.Tensor, keep: torch.Tensor) -> RouterStats:
        E = self.n_experts
        probs = logits.float().softmax(-1)  # (N, E)
        assigned = F.one_hot(top_i, E).float()  # (N, k, E)
        f = assigned.sum((0, 1)) / assigned.sum()  # fraction of assignments per expert, sums to 1
        aux = E * (f * probs.mean(0)).sum()
        z = torch.logsumexp(logits.float(), dim=-1).pow(2).mean()
        load = (assigned * keep[..., None]).sum((0, 1)).long()  # (E,)
        dropped = (~keep).sum()
        return RouterStats(aux, z, load, dropped)
