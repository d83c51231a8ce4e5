"""`QuantEmbedding`: the input embedding of a tied model whose LM head is quantized to 8 bits per channel.

With tied embeddings the vocabulary matrix E (V, D) is both the lookup table (token -> row) and the head
(logits = h E^T). Quantizing the head per output channel gives every row of E its own int8 scale, which is also
exactly an int8 embedding table with one scale per token. So the model keeps E once, as the head's int8 buffer,
and a lookup dequantizes only the rows it reads: (q - z) * s in the model's dtype, the same values as those
rows of `QuantLinear.dequantized()` (tests/quant/test_shared_table.py). llama.cpp does the same with a quantized
`token_embd` that its output layer reuses. On SmolLM2-135M (49,152 x 576) the table is 28 MB instead of 57 MB
in bf16, and the int8 head product is ~3x faster than the float one at batch 1 (docs/quant.md).

Only an 8-bit, per-channel, unpermuted head made from E itself can be shared: `lmstack quantize` shares it for
RTN and GPTQ (`--shared_table`, on by default), not for AWQ or SmoothQuant, which fold activation scales into
the head's columns so that its weights are no longer the embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from lmstack.quant.linear import QuantLinear


def can_share_table(head: nn.Module) -> bool:
    """Whether `head` is a QuantLinear whose stored integers can serve as an embedding table."""
    return (
        isinstance(head, QuantLinear)
        and head.spec.bits == 8
        and head.group == head.in_features  # one scale (and zero point) per row
        and head.perm is None
        and head.weight.dtype in (torch.int8, torch.uint8)  # the int8 kernels' (q - 128) or the dequant path's q
    )


class QuantEmbedding(nn.Module):
    def __init__(self, head: QuantLinear, dtype: torch.dtype) -> None:
        """Read rows from `head`'s int8 storage (shared, not copied); rows come out in `dtype`."""
        super().__init__()
        if not can_share_table(head):
            raise ValueError(f"an embedding can only share an 8-bit per-channel head's table, got {head}")
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self.register_buffer("table", head.weight, persistent=False)  # (V, D) the head's own tensor
        self.register_buffer("scales", head.scales[:, 0].to(dtype), persistent=False)  # (V,); its dtype is the output's
        # the int8 kernels store q - 128 (the symmetric zero point already subtracted); the dequant path stores q
        zeros = head.zeros[:, 0].to(dtype) if head.weight.dtype == torch.uint8 else None
        self.register_buffer("zeros", zeros, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (...) int64 -> (..., D)
        rows = self.table[ids].to(self.scales.dtype)
        if self.zeros is not None:
            rows = rows - self.zeros[ids, None]
        return rows * self.scales[ids, None]

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 table shared with the LM head"
