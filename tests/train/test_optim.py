"""AdamW parameter groups: matrices decay; norms, biases and (tied) embeddings do not."""

from __future__ import annotations

import torch
from torch import nn

from lmstack.train.optim import build_optimizer, param_groups, set_lr


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.proj = nn.Linear(8, 8, bias=True)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.embed.weight  # tied


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_groups_split_by_rule():
    m = Toy()
    decay, no_decay = param_groups(m, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert _names(m, decay) == {"proj.weight"}
    assert _names(m, no_decay) == {"embed.weight", "proj.bias", "norm.weight", "norm.bias"}
    # every trainable tensor is in exactly one group, the tied head only once
    n_in_groups = len(decay["params"]) + len(no_decay["params"])
    assert n_in_groups == len(list(m.parameters())) == 5


def test_decay_embeddings_switch():
    m = Toy()
    decay, _ = param_groups(m, weight_decay=0.1, decay_embeddings=True)
    assert _names(m, decay) == {"proj.weight", "embed.weight"}


def test_decoupled_decay_only_touches_decayed_group():
    # zero gradients: Adam's update is 0, so the only change is decoupled decay w <- w * (1 - lr * wd)
    m = Toy()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = build_optimizer(m, lr=0.5, weight_decay=0.2)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    set_lr(opt, 0.5)
    opt.step()
    after = dict(m.named_parameters())
    torch.testing.assert_close(after["proj.weight"], before["proj.weight"] * (1 - 0.5 * 0.2))
    for name in ("embed.weight", "proj.bias", "norm.weight"):
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
