"""A context-free bigram 'language model' with the Transformer's call signature, for tests that need no attention."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Output(NamedTuple):
    logits: torch.Tensor
    loss: torch.Tensor | None
    aux_loss: torch.Tensor | None = None


class Bigram(nn.Module):
    """logits[t] = table[x[t]]: the next-token distribution depends only on the current token."""

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Embedding(vocab_size, vocab_size)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(vocab_size, vocab_size, generator=g))
        self.norm = nn.LayerNorm(vocab_size)
        self.proj = nn.Linear(vocab_size, vocab_size, bias=False)  # a matrix, so weight decay has a group

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None) -> Output:
        logits = self.proj(self.norm(self.table(x)))  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return Output(logits, loss)
