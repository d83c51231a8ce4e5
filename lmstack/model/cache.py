"""The KV-cache protocol: how attention reads and extends cached keys and values.

Every cache (the contiguous one in `lmstack.generate.kv_cache`, the paged one in `lmstack.serve`) implements
one method per layer call. Positions travel with the keys, so attention builds its mask from positions alone:

    query at position p may read key at position q  <=>  q >= 0 and q <= p (causal) and p - q < window

Left padding, sliding windows, ALiBi distances and paged block tables all reduce to that rule: a padded
token or an empty slot has position -1 and is never read. Without a cache, a row may also pack several
sequences with positions restarting at 0 for each: a position that does not increase starts a new sequence and
attention stays inside it (`attention.position_bias(packed=True)`; fine-tuning's packing).

Shapes: B batch, Hkv KV heads, T new tokens, S slots attention reads, hd head dim.
"""

from __future__ import annotations

from typing import Protocol

import torch


class KVCache(Protocol):
    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Store this layer's new keys/values and return everything its attention must read.

        k, v:       (B, Hkv, T, hd) for the new tokens (after RoPE, before GQA expansion)
        positions:  (B, T) int64 absolute positions of the new tokens; -1 marks padding
        returns     keys (B, Hkv, S, hd), values (B, Hkv, S, hd), key_positions (B, S) with -1 for empty slots
        """
        ...
