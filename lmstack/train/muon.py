"""Muon for the hidden weight matrices, AdamW for everything else, as one optimizer.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"; the modded-nanogpt speedruns)
keeps SGD momentum per matrix and replaces the update by the nearest semi-orthogonal matrix: for the momentum
M = U S V^T it steps along U V^T (all singular values set to 1), so rare directions move as much as common ones.
U V^T is approximated without an SVD by five steps of a quintic Newton-Schulz iteration on X = M / ||M||_F:

    A = X X^T;   X <- a X + (b A + c A A) X,     (a, b, c) = (3.4445, -4.7750, 2.0315)

which pushes every singular value of X into ~[0.7, 1.2] (Jordan's coefficients: fast, not exact; computed in
bfloat16, as in the reference). Momentum is Nesterov-style: the update orthogonalized is g + mu (m - g) after
m <- mu m + (1 - mu) g.

Scale: an orthogonalized (r, c) matrix has entries of RMS sqrt(1 / max(r, c)), so the update is multiplied by
0.2 sqrt(max(r, c)) to give it the ~0.2 RMS of a typical AdamW update (Liu et al. 2025, "Muon is Scalable for
LLM Training"): one learning rate then serves both kinds of parameters, and `lr_scale` (per group, applied by
`optim.set_lr`) tunes Muon's relative to AdamW's. Weight decay is decoupled, as in AdamW.

Which parameters: every matrix inside the blocks (attention and FFN projections) uses Muon; token and position
embeddings, the LM head (tied or not), norm gains and biases use AdamW (`muon_groups`): Muon's argument is about
hidden linear maps, not lookup tables or the output layer. Same-shaped matrices are orthogonalized together in
one batched iteration (fewer, larger matmuls).

The state (momentum buffers; AdamW moments and step counts) is ordinary optimizer state, so checkpoints save and
resume it exactly like AdamW's (tests/train/test_muon.py). Leaves out: distributed sharding of the
orthogonalization (each rank repeats it), Muon for embeddings, adaptive Newton-Schulz step counts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T, by Newton-Schulz. g (..., r, c) -> same shape, bfloat16."""
    a, b, c = NS_COEFFS
    x = g.bfloat16()
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the wide orientation: X X^T is then the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        gram = x @ x.mT  # (..., r, r)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def muon_groups(
    model: nn.Module, weight_decay: float, muon_lr_scale: float = 1.0, embed_lr_scale: float = 1.0
) -> list[dict]:
    """Parameter groups: block matrices -> Muon (decayed); embeddings, head -> AdamW at `embed_lr_scale` x lr
    (undecayed, as in `optim.param_groups`); norms and biases -> AdamW (undecayed)."""
    table_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "lm_head", None)
    if head is not None:
        table_ids.add(id(head.weight))
    muon, tables, adam = [], [], []
    for _name, p in model.named_parameters():  # de-duplicates tied tensors
        if not p.requires_grad:
            continue
        (tables if id(p) in table_ids else muon if p.dim() == 2 else adam).append(p)
    groups = [
        {"params": muon, "muon": True, "weight_decay": weight_decay, "lr_scale": muon_lr_scale},
        {"params": tables, "muon": False, "weight_decay": 0.0, "lr_scale": embed_lr_scale},
        {"params": adam, "muon": False, "weight_decay": 0.0, "lr_scale": 1.0},
    ]
    return [g for g in groups if g["params"]]


class Muon(torch.optim.Optimizer):
    """Groups with `muon=True` take Muon steps, the others AdamW steps; see the module docstring."""

    def __init__(
        self,
        groups: list[dict],
        lr: float = 1e-3,
        momentum: float = 0.95,
        ns_steps: int = 5,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"--muon_momentum: got {momentum}, expected 0 <= momentum < 1")
        defaults = dict(lr=lr, momentum=momentum, ns_steps=ns_steps, betas=betas, eps=eps,
                        weight_decay=weight_decay, muon=False, lr_scale=1.0)  # fmt: skip
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        assert closure is None, "Muon takes no closure"
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["muon"] else self._adamw)(group, params)

    def _muon(self, group: dict, params: list[torch.Tensor]) -> None:
        mu, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
        by_shape: dict[torch.Size, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.lerp_(p.grad, 1 - mu)  # m <- mu m + (1 - mu) g
            by_shape.setdefault(p.shape, []).append((p, p.grad.lerp(buf, mu)))  # Nesterov: g + mu (m - g)
        for shape, items in by_shape.items():
            ortho = orthogonalize(torch.stack([u for _, u in items]), group["ns_steps"])  # (n, r, c)
            scale = 0.2 * math.sqrt(max(shape))  # RMS of an AdamW update (module docstring)
            for (p, _), o in zip(items, ortho):
                p.mul_(1 - lr * wd)
                p.add_(o.to(p.dtype), alpha=-lr * scale)

    def _adamw(self, group: dict, params: list[torch.Tensor]) -> None:
        (b1, b2), lr, wd, eps = group["betas"], group["lr"], group["weight_decay"], group["eps"]
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = float(state["step"])
            state["exp_avg"].lerp_(p.grad, 1 - b1)
            state["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.mul_(1 - lr * wd)
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - b2**t)).add_(eps)
            p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - b1**t))


def build_muon(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    momentum: float = 0.95,
    muon_lr_scale: float = 1.0,
    ns_steps: int = 5,
    embed_lr_scale: float = 1.0,
) -> Muon:
    """Muon over `muon_groups(model)`; the learning rate is set every step by the schedule (`optim.set_lr`)."""
    groups = muon_groups(model, weight_decay, muon_lr_scale, embed_lr_scale)
    return Muon(groups, lr=lr, momentum=momentum, ns_steps=ns_steps, betas=betas, weight_decay=weight_decay)
