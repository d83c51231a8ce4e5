"""An INT8 KV cache: keys and values stored as int8 with one scale per (token, KV head), ~4x smaller than fp32.

At long contexts and large batches the KV cache, 2 * L * Hkv * hd * T * B values, outgrows the weights
(`lmstack calc` prints it). Each new key (and value) vector of one head, x in R^hd, is stored as

    scale = max|x| / 127        q = round(x / scale) in [-127, 127]        x_hat = q * scale

i.e. symmetric absmax int8 per head and token (KIVI, Liu et al. 2024, and vLLM's int8/fp8 caches use the same
kind of fine-grained scales; a per-token scale adapts to the outliers RoPE'd keys have). Storage per element:
1 byte + 4 / hd bytes of scale (hd = 64: 1.06 bytes against 4 for fp32, 2 for bf16). The relative error of one
element is at most 1/254 of its vector's max; attention scores move by about that much (tests bound the logits).

Implements the KV-cache protocol of `lmstack/model/cache.py` and the extra operations the decoders use
(`select`, `reorder_`, `truncate`, `reset`, `length`, `capacity`), like the contiguous cache in
`lmstack.generate.kv_cache`: `update` quantizes the new slots and returns every filled slot dequantized to the
model's dtype (attention then runs unchanged). `generate(..., SamplingParams(kv_cache_dtype="int8"))` and
`lmstack generate --kv_cache_dtype int8` select it. Left out: int4 / fp8 caches, attention kernels that read int8
directly (here the dequantized copy exists transiently, per layer, during the step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., hd) -> q int8 (..., hd), scale float32 (..., 1) with x ~ q * scale."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-8) / 127.0
    q = torch.round(x.float() / scale).clamp(-127, 127).to(torch.int8)
    return q, scale


class Int8KVCache:
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
            raise ValueError(f"Int8KVCache: max_len={max_len} and batch={batch} must be positive")
        self.max_len, self.grow, self.dtype = max_len, grow, dtype
        cap = min(max_len, max(initial_len, 1)) if grow else max_len
        shape, sshape = (batch, n_kv_heads, cap, head_dim), (batch, n_kv_heads, cap, 1)
        new = lambda s, dt: [torch.zeros(s, dtype=dt, device=device) for _ in range(n_layers)]  # noqa: E731
        self.k, self.v = new(shape, torch.int8), new(shape, torch.int8)  # L x (B, Hkv, cap, hd)
        self.k_scale, self.v_scale = new(sshape, torch.float32), new(sshape, torch.float32)  # L x (B, Hkv, cap, 1)
        self.pos = torch.full((batch, cap), -1, dtype=torch.long, device=device)  # (B, cap) -1 = empty
        self.lengths = [0] * n_layers

    @classmethod
    def for_model(cls, model: Any, batch: int, max_len: int | None = None, **kw: Any) -> Int8KVCache:
        """A cache shaped for `model.config`, dequantizing to the dtype / device of the model's weights."""
        c = model.config
        p = next(model.parameters())
        return cls(c.n_layers, batch, c.n_kv_heads, c.head_dim, max_len or c.max_seq_len, p.dtype, p.device, **kw)

    @property
    def batch(self) -> int:
        return self.pos.shape[0]

    @property
    def length(self) -> int:
        return self.lengths[-1]

    @property
    def capacity(self) -> int:
        return self.pos.shape[1]

    def nbytes(self) -> int:
        """Bytes held by the cache tensors (int8 values + fp32 scales + positions)."""
        return sum(t.numel() * t.element_size() for t in [*self.k, *self.v, *self.k_scale, *self.v_scale, self.pos])

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """k, v (B, Hkv, T, hd), positions (B, T) -> keys, values (B, Hkv, S, hd) in the model dtype, positions."""
        start, T = self.lengths[layer], k.shape[2]
        end = start + T
        if end > self.capacity:
            self._reserve(end)
        self.k[layer][:, :, start:end], self.k_scale[layer][:, :, start:end] = quantize_int8(k)
        self.v[layer][:, :, start:end], self.v_scale[layer][:, :, start:end] = quantize_int8(v)
        if layer == 0:
            self.pos[:, start:end] = positions
        self.lengths[layer] = end
        keys = (self.k[layer][:, :, :end] * self.k_scale[layer][:, :, :end]).to(self.dtype)
        values = (self.v[layer][:, :, :end] * self.v_scale[layer][:, :, :end]).to(self.dtype)
        return keys, values, self.pos[:, :end]

    def _tensors(self) -> list[list[torch.Tensor]]:
        return [self.k, self.v, self.k_scale, self.v_scale]

    def _reserve(self, needed: int) -> None:
        if not self.grow or needed > self.max_len:
            raise ValueError(
                f"KV cache full: need {needed} slots, capacity {self.capacity} (max_len={self.max_len}); "
                "lower max_new_tokens or raise max_len"
            )
        extra = min(self.max_len, max(needed, 2 * self.capacity)) - self.capacity
        for ts in self._tensors():
            ts[:] = [F.pad(t, (0, 0, 0, extra)) for t in ts]
        self.pos = F.pad(self.pos, (0, extra), value=-1)

    def select(self, rows: torch.Tensor) -> None:
        """Keep / duplicate / reorder rows: row i becomes row `rows[i]`. rows (B',) int64."""
        for ts in self._tensors():
            ts[:] = [t.index_select(0, rows) for t in ts]
        self.pos = self.pos.index_select(0, rows)

    def reorder_(self, rows: torch.Tensor) -> None:
        """Beam search's in-place row permutation of the filled slots."""
        n = self.length
        for ts in self._tensors():
            for t in ts:
                t[:, :, :n] = t[:, :, :n].index_select(0, rows)
        self.pos[:, :n] = self.pos[:, :n].index_select(0, rows)

    def truncate(self, length: int) -> None:
        """Forget every slot from `length` on (speculative rollback)."""
        assert 0 <= length <= self.length, f"truncate to {length} but only {self.length} slots are filled"
        self.pos[:, length:] = -1
        self.lengths = [length] * len(self.lengths)

    def reset(self) -> None:
        self.truncate(0)
