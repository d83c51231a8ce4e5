"""Prefix tuning: trainable keys and values prepended to every layer's attention (Li & Liang 2021).

Each of the L layers gets n trainable key vectors and n value vectors per KV head, (L, Hkv, n, hd) each; every
real token attends to them as if n "virtual tokens" preceded the input, but nothing else of the model changes
and only 2 L n Hkv hd numbers train. They enter through the KV-cache protocol (`lmstack/model/cache.py`):
`PrefixCache.update(layer, k, v, positions)` returns [prefix K/V, then the layer's own (cached) K/V] with the
prefix at positions 0..n-1, so the model's position-derived mask lets every real token read all of them. Real
tokens move to positions n, n+1, ... (the context cost: n of the model's max_seq_len), and the prefix keys are
used as stored, with no rotary rotation of their own -- exactly what PEFT's `PrefixTuning` does on a Hugging Face
model (`past_key_values` + positions shifted by n), so logits agree on the same values
(tests/finetune/test_prefix_prompt.py). At generation time the wrapper wraps whatever cache the decoder passes,
so `lmstack generate --adapter` works unchanged.

Init: PEFT initializes the table N(0, 1); here `init_prefix_from_text` can instead start from the K/V the frozen
model computes for real text (Li & Liang report more stable training from real-word activations).
Left out: the MLP reparameterization (`prefix_projection=True`), packing (a packed row would need the prefix
per example; the recipe refuses `--pack` with prefix or prompt tuning).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmstack.model import Output, Transformer


class PrefixCache:
    """KV cache that puts per-layer prefix keys/values (each (1 or B, Hkv, n, hd)) before the inner cache's."""

    def __init__(self, inner: Any, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self.inner, self.keys, self.values = inner, keys, values

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.inner is not None:
            k, v, positions = self.inner.update(layer, k, v, positions)  # (B, Hkv, S, hd), (B, S)
        B, n = k.shape[0], self.keys[layer].shape[2]
        pk = self.keys[layer].to(k.dtype).expand(B, -1, -1, -1)  # (B, Hkv, n, hd)
        pv = self.values[layer].to(v.dtype).expand(B, -1, -1, -1)
        ppos = torch.arange(n, device=positions.device).expand(B, n)  # (B, n): readable by every real token
        return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), torch.cat([ppos, positions], dim=1)


class RecordingCache:
    """A cache for one forward without history: records each layer's K/V (used to turn text into a prefix)."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor) -> tuple:
        self.keys[layer], self.values[layer] = k, v
        return k, v, positions


def shift_positions(positions: torch.Tensor | None, input_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Real tokens' positions moved past n virtual tokens (padding stays -1)."""
    if positions is None:
        B, T = input_ids.shape
        positions = torch.arange(T, device=input_ids.device).expand(B, T)
    return torch.where(positions >= 0, positions + n, positions)


class PrefixTuning(nn.Module):
    """A frozen `Transformer` plus trainable per-layer prefix keys/values; a `CausalLM` itself."""

    def __init__(self, model: Transformer, n_virtual: int, init_std: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        if n_virtual <= 0:
            raise ValueError(f"--num_virtual_tokens: got {n_virtual}, expected > 0")
        c = model.config
        self.model, self.n_virtual = model, n_virtual
        for p in model.parameters():
            p.requires_grad_(False)
        g = torch.Generator().manual_seed(seed)
        shape = (c.n_layers, c.n_kv_heads, n_virtual, c.head_dim)
        device = next(model.parameters()).device
        self.prefix_keys = nn.Parameter((torch.randn(shape, generator=g) * init_std).to(device))  # (L, Hkv, n, hd)
        self.prefix_values = nn.Parameter((torch.randn(shape, generator=g) * init_std).to(device))

    @property
    def config(self) -> Any:
        return self.model.config

    @torch.no_grad()
    def init_prefix_from_text(self, ids: list[int]) -> None:
        """Start from the K/V the frozen model computes for `ids` (first n tokens, repeated if shorter)."""
        ids = (ids * (self.n_virtual // max(len(ids), 1) + 1))[: self.n_virtual]
        rec = RecordingCache()
        self.model(torch.tensor([ids], device=self.prefix_keys.device), cache=rec)
        self.prefix_keys.copy_(torch.stack([rec.keys[i][0] for i in range(len(rec.keys))]))
        self.prefix_values.copy_(torch.stack([rec.values[i][0] for i in range(len(rec.values))]))

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: Any = None,
        targets: torch.Tensor | None = None,
    ) -> Output:
        """input_ids (B, T) -> Output over the real tokens; `cache` (if any) holds only real tokens."""
        keys = [self.prefix_keys[i][None] for i in range(self.config.n_layers)]  # L x (1, Hkv, n, hd)
        values = [self.prefix_values[i][None] for i in range(self.config.n_layers)]
        pos = shift_positions(positions, input_ids, self.n_virtual)
        return self.model(input_ids, pos, PrefixCache(cache, keys, values), targets)

    # ---- PEFT format: one table (n, L * 2 * Hkv * hd) read as (n, L, 2, Hkv, hd) --------------------------------

    def peft_tensors(self) -> dict[str, torch.Tensor]:
        kv = torch.stack([self.prefix_keys, self.prefix_values], dim=1)  # (L, 2, Hkv, n, hd)
        return {"prompt_embeddings": kv.permute(3, 0, 1, 2, 4).reshape(self.n_virtual, -1)}

    def load_peft_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        c = self.config
        table = tensors["prompt_embeddings"]  # (n, L * 2 * Hkv * hd)
        kv = table.view(self.n_virtual, c.n_layers, 2, c.n_kv_heads, c.head_dim).permute(1, 2, 3, 0, 4)
        self.prefix_keys.data.copy_(kv[:, 0])  # (L, Hkv, n, hd)
        self.prefix_values.data.copy_(kv[:, 1])

    def peft_config(self, base: str) -> dict[str, Any]:
        c = self.config
        token_dim = c.n_kv_heads * c.head_dim  # PEFT sizes the prefix by KV heads for GQA models
        return {
            "peft_type": "PREFIX_TUNING", "base_model_name_or_path": base, "num_virtual_tokens": self.n_virtual,
            "token_dim": token_dim, "num_attention_heads": c.n_kv_heads, "num_layers": c.n_layers,
            "num_transformer_submodules": 1, "encoder_hidden_size": token_dim, "prefix_projection": False,
        }  # fmt: skip
