"""The contiguous KV cache: one preallocated (B, Hkv, T_max, hd) key and value tensor per layer.

Implements the protocol in `lmstack/model/cache.py`: `update(layer, k, v, positions)` writes the new keys and
values into the next free slots and returns views of every filled slot plus their positions, from which
attention builds its mask. Rows are aligned at the slot level (left padding puts the pads in the same slots the
row's missing prompt tokens would occupy), so one slot counter serves all rows; a padded slot keeps position
-1 and is never read.

Without a cache each new token re-runs attention over the whole prefix: step t costs O(t) projections and the
whole generation O(T^2). With it, step t computes K/V for one token and reads t cached ones (Pope et al. 2022,
"Efficiently Scaling Transformer Inference"; the cost plot is in docs/generate.md).

Extra operations the decoders need: `select(rows)` keeps, duplicates or reorders rows (beam search reorders by
parent beam; `n` samples duplicate the prompt's prefill instead of recomputing it) and `truncate(length)` drops
the newest slots (speculative decoding rolls back rejected draft tokens). With `grow=True` the tensors start
small and double on demand up to `max_len`. For an encoder-decoder model the cache holds the decoder's
self-attention and carries the encoder's output as `encoder` (`lmstack.model.cache.EncoderCache`), whose rows
`select` and `reorder_` move in step. `new_cache(..., kv_cache_dtype="int8")` gives the INT8 cache of
`lmstack.quant.kv_cache` (same operations, ~4x less memory). Left out: paging and prefix sharing
(`lmstack.serve`), fp8 KV, sliding-window ring buffers (a windowed model still gets a full cache; the mask does
the rest).
"""

from __future__ import annotations

import torch

from lmstack.model.cache import EncoderCache
from lmstack.model.causal_lm import CausalLM


class ContiguousKVCache:
    def __init__(
        self,
        n_layers: int,
        batch: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        grow: bool = False,
        initial_len: int = 64,
    ) -> None:
        if max_len <= 0 or batch <= 0:
            raise ValueError(f"ContiguousKVCache: max_len={max_len} and batch={batch} must be positive")
        self.max_len, self.grow = max_len, grow
        cap = min(max_len, max(initial_len, 1)) if grow else max_len
        shape = (batch, n_kv_heads, cap, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]  # L x (B, Hkv, cap, hd)
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.pos = torch.full((batch, cap), -1, dtype=torch.long, device=device)  # (B, cap) -1 = empty
        self.lengths = [0] * n_layers  # filled slots per layer (layers fill one after another in a forward)
        self.encoder: EncoderCache | None = None  # encoder-decoder models: the source, cross-attended to
        self._pos_view = self.pos[:, :0]  # (B, S) the filled slots' positions, as returned to every layer

    @classmethod
    def for_model(cls, model: CausalLM, batch: int, max_len: int | None = None, **kw: object) -> ContiguousKVCache:
        """A cache shaped for `model.config` (n_layers, n_kv_heads, head_dim), in the model's dtype and device; an
        encoder-decoder's cache has one layer per decoder block."""
        c = model.config
        p = next(model.parameters())
        n = getattr(c, "n_decoder_layers", 0) or c.n_layers
        return cls(n, batch, c.n_kv_heads, c.head_dim, max_len or c.max_seq_len, p.dtype, p.device, **kw)

    @property
    def batch(self) -> int:
        return self.pos.shape[0]

    @property
    def length(self) -> int:
        """Slots filled by the last completed forward (all layers agree between forwards)."""
        return self.lengths[-1]

    @property
    def capacity(self) -> int:
        return self.pos.shape[1]

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k, v (B, Hkv, T, hd), positions (B, T) -> keys, values (B, Hkv, S, hd), key positions (B, S)."""
        start, T = self.lengths[layer], k.shape[2]
        end = start + T
        if end > self.capacity:
            self._reserve(end)
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        if layer == 0 or self._pos_view.shape[1] != end:
            self.pos[:, start:end] = positions
            self._pos_view = self.pos[:, :end]  # one view per forward: attention then builds its mask once
        self.lengths[layer] = end
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end], self._pos_view

    def claim(self, positions: torch.Tensor) -> int:
        """For a forward that writes its keys and values itself (the C decode step, `native_decode.py`): reserve
        the next T slots of every layer, record their positions (B, T) and return the first slot."""
        start = self.length
        end = start + positions.shape[1]
        if end > self.capacity:
            self._reserve(end)
        self.pos[:, start:end] = positions
        self._pos_view = self.pos[:, :end]
        self.lengths = [end] * len(self.lengths)
        return start

    def _reserve(self, needed: int) -> None:
        if not self.grow or needed > self.max_len:
            raise ValueError(
                f"KV cache full: need {needed} slots, capacity {self.capacity} (max_len={self.max_len}); "
                "lower max_new_tokens or raise max_len"
            )
        cap = min(self.max_len, max(needed, 2 * self.capacity))
        extra = cap - self.capacity
        pad = lambda t: torch.nn.functional.pad(t, (0, 0, 0, extra))  # noqa: E731  (B, Hkv, cap, hd)
        self.k = [pad(t) for t in self.k]
        self.v = [pad(t) for t in self.v]
        self.pos = torch.nn.functional.pad(self.pos, (0, extra), value=-1)

    def select(self, rows: torch.Tensor) -> None:
        """Keep / duplicate / reorder rows: row i of the result is row `rows[i]` now. rows (B',) int64."""
        n = self.length
        if rows.shape[0] == self.batch and torch.equal(rows, torch.arange(self.batch, device=rows.device)):
            return
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]
        self.pos = self.pos.index_select(0, rows)
        if self.encoder is not None:
            self.encoder.select(rows)
        assert all(x == n for x in self.lengths), f"select between forwards only, lengths={self.lengths}"

    def reorder_(self, rows: torch.Tensor) -> None:
        """In-place row permutation for beam search (no reallocation): copies only the filled slots."""
        n = self.length
        for t in self.k + self.v:
            t[:, :, :n] = t[:, :, :n].index_select(0, rows)
        self.pos[:, :n] = self.pos[:, :n].index_select(0, rows)
        if self.encoder is not None:
            self.encoder.select(rows)

    def truncate(self, length: int) -> None:
        """Forget every slot from `length` on (speculative rollback)."""
        assert 0 <= length <= self.length, f"truncate to {length} but only {self.length} slots are filled"
        self.pos[:, length:] = -1
        self.lengths = [length] * len(self.lengths)

    def reset(self) -> None:
        self.truncate(0)


def new_cache(model: CausalLM, batch: int, max_len: int, kv_cache_dtype: str = "auto") -> ContiguousKVCache:
    """The cache `SamplingParams.kv_cache_dtype` asks for: contiguous in the model's dtype, or INT8."""
    if kv_cache_dtype == "int8":
        if getattr(model.config, "is_encoder_decoder", False):
            raise ValueError("kv_cache_dtype='int8' is for decoder-only models; an encoder-decoder takes 'auto'")
        from lmstack.quant.kv_cache import Int8KVCache

        return Int8KVCache.for_model(model, batch, max_len=max_len)  # type: ignore[return-value]
    return ContiguousKVCache.for_model(model, batch, max_len=max_len)
