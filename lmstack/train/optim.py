"""AdamW with decoupled weight decay and the usual two parameter groups.

AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization") shrinks each weight by `lr * wd * w`
outside the adaptive update, so decay strength does not depend on the gradient's scale as it does with L2 added
to the loss under Adam. Following GPT-2/3, nanoGPT and Llama practice, only matrices that multiply activations
decay; norms' gains, biases and (by default) embeddings do not: decaying a gain or a bias pulls it toward 0, which
is not "simpler", and decaying rarely seen token embeddings erases them between their updates.
With tied embeddings the output head *is* the embedding table, so it follows the embedding rule.

Gradient clipping by global norm (Pascanu et al. 2013) is `torch.nn.utils.clip_grad_norm_`, called in the
training loop (`pretrain.py`): it rescales all gradients together when their joint L2 norm exceeds a threshold,
so one bad batch cannot throw the weights far, while the update direction is kept.
Muon (for the hidden matrices) lives in muon.py. Leaves out: Lion, Adafactor, layer-wise LR decay, ZeRO sharding
(FSDP does that).
"""

from __future__ import annotations

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, decay_embeddings: bool = False) -> list[dict]:
    """Split trainable parameters into a decayed group (matrices) and an undecayed one (norms, biases, embeddings).

    Rule: a parameter decays iff it has >= 2 dims and is not an embedding table (unless `decay_embeddings`).
    Shared (tied) tensors appear once, under the first name `named_parameters` gives them.
    """
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for _name, p in model.named_parameters():  # named_parameters() de-duplicates tied tensors
        if not p.requires_grad:
            continue
        is_embedding = id(p) in embedding_ids
        if p.dim() >= 2 and (decay_embeddings or not is_embedding):
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    decay_embeddings: bool = False,
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model)`; the learning rate is overwritten every step by the schedule."""
    groups = param_groups(model, weight_decay, decay_embeddings)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply the schedule's learning rate to every group, times the group's `lr_scale` if it has one (Muon's)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
