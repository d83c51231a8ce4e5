"""The KV-cache protocol: how attention reads and extends cached keys and values.

Every cache (the contiguous one in `lmstack.generate.kv_cache`, the paged one in `lmstack.serve`) implements
one method per layer call. Positions travel with the keys, so attention builds its mask from positions alone:

    query at position p may read key at position q  <=>  q >= 0 and q <= p (causal) and p - q < window

Left padding, sliding windows, ALiBi distances and paged block tables all reduce to that rule: a padded
token or an empty slot has position -1 and is never read. Without a cache, a row may also pack several
sequences with positions restarting at 0 for each: a position that does not increase starts a new sequence and
attention stays inside it (`attention.position_bias(packed=True)`; fine-tuning's packing).

Encoder-decoder models (T5) also cross-attend to the encoder's output. Its keys and values never change while the
decoder generates, so `EncoderCache` projects them once per decoder layer, on the first decoder step, and every
later step reads them back. A self-attention cache carries it as `cache.encoder` (the contiguous cache in
`lmstack.generate` keeps its rows in step with the self-attention rows on `select`).

A ragged batch (`RaggedBatch`, the serving engine's mixed steps) runs several such batches in one forward: a
step's decode rows (B x 1 new tokens) and each prompt chunk (1 x T) differ in shape, and padding them to one
(B, T) would waste compute, while one forward per group reads every weight matrix once per group. Flattened into
one row of all their tokens, every projection multiplies all of them at once; only attention runs per segment,
each through its own view of the cache (`FastForward` implements this; `model(...)` does not).

Shapes: B batch, Hkv KV heads, T new tokens, S slots attention reads, hd head dim.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Segment:
    """`rows` x `tokens` new tokens of a ragged batch (flattened row-major) and the cache view they attend through."""

    rows: int
    tokens: int
    cache: KVCache


class RaggedBatch:
    """Segments flattened into one (1, N) forward, N = sum of rows x tokens (see the module docstring).
    `last` (R,) indexes the tokens whose logits the caller wants (each row's newest, say)."""

    def __init__(self, segments: list[Segment], last: torch.Tensor) -> None:
        self.segments, self.last = segments, last

    @classmethod
    def join(
        cls, groups: list[tuple[torch.Tensor, torch.Tensor, KVCache]]
    ) -> tuple[torch.Tensor, torch.Tensor, RaggedBatch]:
        """[(ids (B, T), positions (B, T), cache view), ...] -> the flat ids and positions (1, N) and the batch,
        whose `last` picks each row's newest token."""
        segments, last, start = [], [], 0
        for ids, _, cache in groups:
            B, T = ids.shape
            segments.append(Segment(B, T, cache))
            last += [start + (r + 1) * T - 1 for r in range(B)]
            start += B * T
        ids, positions = (torch.cat([g[j].flatten() for g in groups])[None] for j in (0, 1))
        return ids, positions, cls(segments, torch.tensor(last, device=ids.device))

    def update(self, *args: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise TypeError("a RaggedBatch attends per segment: run it through generate.fast_forward.FastForward")


class EncoderCache:
    """The encoder's output (B, S, D) and its key positions (B, S) (-1 = padding), plus each decoder layer's
    cross-attention keys/values, computed from it once."""

    def __init__(self, hidden: torch.Tensor, positions: torch.Tensor) -> None:
        self.hidden, self.positions = hidden, positions
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def keys_values(
        self, layer: int, project: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`project(hidden)` -> (k, v) (B, H, S, hd) on this layer's first call, the stored pair afterwards."""
        if layer not in self.kv:
            self.kv[layer] = project(self.hidden)
        k, v = self.kv[layer]
        return k, v, self.positions

    def select(self, rows: torch.Tensor) -> None:
        """Keep / duplicate / reorder rows, as the self-attention cache does (n samples, beams)."""
        self.hidden, self.positions = self.hidden.index_select(0, rows), self.positions.index_select(0, rows)
        self.kv = {i: (k.index_select(0, rows), v.index_select(0, rows)) for i, (k, v) in self.kv.items()}
