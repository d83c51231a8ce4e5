"""The paged KV cache: one tensor of slots per layer, read and written through block tables.

Storage (allocated once from the memory budget): keys and values of shape (L, nb * bs, Hkv, hd), where slot
`block * bs + i` holds token i of that block. Block 0 is the null block (zeros, position -1 forever).

For one forward the runner builds a `PagedBatch` view, which implements the model's KV-cache protocol
(`lmstack/model/cache.py`) for a padded batch of sequences (B rows, T new tokens each, positions -1 on pads):
  - write (scatter): the new tokens' K/V go to their slots, `slot_mapping` (N,) for the N real tokens;
  - read (gather): row b attends to the first S slots of its block table, in order, so slot j holds position j;
    `gather` (B, S) lists those slots (null-block slots past a row's length) and `key_positions` (B, S) is
    j or -1. The model builds its causal mask from positions alone, so attention needs nothing else.
On CPU there is no paged-attention kernel, so reading means an index_select copy of each row's keys (O(B S)
per layer, the same order as attention's own reads). The layout is chosen for that: one slot is one
contiguous (Hkv, hd) row, so gather and scatter are single `index_select` / `index_copy_` calls.
`copy_blocks` does the copy-on-write copies the scheduler asked for.
Left out: a fused paged-attention kernel (the gather is materialized, into a reused scratch buffer), FP8/INT8
KV, sliding-window block freeing.
"""

from __future__ import annotations

import torch

from lmstack.model.causal_lm import CausalLM


def kv_bytes_per_token(model: CausalLM, dtype: torch.dtype | None = None) -> int:
    """Bytes of K and V one token takes over all layers: 2 * L * Hkv * hd * element size."""
    c = model.config
    dtype = dtype or next(model.parameters()).dtype
    return 2 * c.n_layers * c.n_kv_heads * c.head_dim * torch.empty(0, dtype=dtype).element_size()


class PagedKVCache:
    def __init__(
        self,
        n_layers: int,
        num_blocks: int,
        block_size: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.num_blocks, self.block_size = num_blocks, block_size
        shape = (n_layers, num_blocks * block_size, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, nb * bs, Hkv, hd)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.device = self.k.device
        self._gathered = torch.empty(0, dtype=dtype, device=self.device)  # scratch for `gather`, grown on demand

    def gather(self, layer: int, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of `slots` (N,) in `layer`, each (N, Hkv, hd), copied into a scratch buffer that the
        next call overwrites (every layer's attention consumes them before the next layer gathers). A fresh
        multi-megabyte tensor per layer would be page-faulted in on every call: 1.4 ms instead of 0.1 ms for a
        batch of 8 rows x 608 slots here, most of a decode step's gather."""
        n, row = slots.numel(), self.k.shape[2:]
        if self._gathered.shape[0] < 2 * n:
            self._gathered = torch.empty(2 * n, *row, dtype=self.k.dtype, device=self.device)
        keys, values = self._gathered[:n], self._gathered[n : 2 * n]
        torch.index_select(self.k[layer], 0, slots, out=keys)
        torch.index_select(self.v[layer], 0, slots, out=values)
        return keys, values

    @classmethod
    def for_model(cls, model: CausalLM, num_blocks: int, block_size: int) -> PagedKVCache:
        c, p = model.config, next(model.parameters())
        return cls(c.n_layers, num_blocks, block_size, c.n_kv_heads, c.head_dim, p.dtype, p.device)

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: block dst gets block src's keys and values in every layer."""
        if not pairs:
            return
        bs = self.block_size
        src = torch.tensor([s * bs + i for s, _ in pairs for i in range(bs)], device=self.device)
        dst = torch.tensor([d * bs + i for _, d in pairs for i in range(bs)], device=self.device)
        self.k[:, dst] = self.k[:, src]
        self.v[:, dst] = self.v[:, src]

    def batch(self, block_tables: list[list[int]], num_computed: list[int], positions: torch.Tensor) -> PagedBatch:
        """The protocol view for one forward: row b's new tokens sit at `positions[b]` (-1 = pad) and it reads
        its first num_computed[b] + (new tokens) slots through `block_tables[b]`."""
        bs = self.block_size
        B, T = positions.shape
        lengths = [c + int((positions[b] >= 0).sum()) for b, c in enumerate(num_computed)]
        S = max(lengths)
        n_blk = max(len(t) for t in block_tables)
        padded = [t + [0] * (n_blk - len(t)) for t in block_tables]  # padded with the null block
        table = torch.tensor(padded, dtype=torch.long, device=self.device)  # (B, n_blk)
        j = torch.arange(S, device=self.device)  # slot order = position
        gather = table[:, j // bs] * bs + j % bs  # (B, S)
        key_pos = torch.where(j[None] < torch.tensor(lengths, device=self.device)[:, None], j[None], -1)  # (B, S)
        gather = torch.where(key_pos >= 0, gather, 0)  # past a row's length: the null block's zeros
        real = positions >= 0  # (B, T)
        p = positions[real]  # (N,) positions of the real new tokens
        rows = torch.arange(B, device=self.device)[:, None].expand(B, T)[real]
        slot_mapping = table[rows, p // bs] * bs + p % bs  # (N,)
        token_index = real.flatten().nonzero().squeeze(1)  # (N,) where the real tokens sit in the flat (B*T)
        return PagedBatch(self, slot_mapping, token_index, gather, key_pos)


class PagedBatch:
    """Implements `KVCache.update` for one forward over a `PagedKVCache` (see the module docstring)."""

    def __init__(
        self,
        cache: PagedKVCache,
        slot_mapping: torch.Tensor,
        token_index: torch.Tensor,
        gather: torch.Tensor,
        key_positions: torch.Tensor,
    ) -> None:
        self.cache, self.slot_mapping, self.token_index = cache, slot_mapping, token_index
        self.gather, self.key_positions = gather, key_positions

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k, v (B, Hkv, T, hd) -> keys, values (B, Hkv, S, hd), key positions (B, S)."""
        B, Hkv, T, hd = k.shape
        S = self.gather.shape[1]
        for store, new in ((self.cache.k[layer], k), (self.cache.v[layer], v)):
            flat = new.transpose(1, 2).reshape(B * T, Hkv, hd).index_select(0, self.token_index)  # (N, Hkv, hd)
            store.index_copy_(0, self.slot_mapping, flat)  # scatter into the slots
        keys, values = self.cache.gather(layer, self.gather.flatten())
        keys = keys.view(B, S, Hkv, hd).transpose(1, 2)  # (B, Hkv, S, hd)
        return keys, values.view(B, S, Hkv, hd).transpose(1, 2), self.key_positions
