"""Incremental decoding through the KV-cache protocol equals one full forward, for every position scheme."""

from __future__ import annotations

import pytest
import torch

from lmstack.model import ModelConfig, Transformer


class ConcatCache:
    """The smallest `KVCache`: per layer, concatenate new keys/values/positions along the slot axis."""

    def __init__(self) -> None:
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor, positions: torch.Tensor):
        if layer in self.layers:
            k0, v0, p0 = self.layers[layer]
            k, v, positions = torch.cat([k0, k], 2), torch.cat([v0, v], 2), torch.cat([p0, positions], 1)
        self.layers[layer] = (k, v, positions)
        return k, v, positions


VARIANTS = {
    "rope": dict(position="rope"),
    "rope-partial-yarn": dict(position="rope", rope_fraction=0.5, rope_scaling={"rope_type": "yarn", "factor": 4.0}),
    "learned": dict(position="learned", norm="layernorm", ffn="gelu", bias=True, qkv_bias=True),
    "sinusoidal": dict(position="sinusoidal"),
    "alibi": dict(position="alibi"),
    "none": dict(position="none"),
    "sliding-window": dict(position="rope", sliding_window=4),
    "alibi-window-qknorm": dict(position="alibi", sliding_window=3, qk_norm=True),
    "moe": dict(n_experts=4, experts_per_token=2),
    "post-norm-reference": dict(norm_placement="post", attention="reference"),
}


def build(kwargs: dict, tiny_model_kwargs: dict) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(**{**tiny_model_kwargs, **kwargs})).eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_incremental_forward_with_cache_equals_full_forward(name: str, tiny_model_kwargs: dict) -> None:
    model = build(VARIANTS[name], tiny_model_kwargs)
    ids = torch.randint(0, 101, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        cache = ConcatCache()
        pieces = []
        for start, end in [(0, 5), (5, 6), (6, 7), (7, 10), (10, 11)]:  # a prefill, then steps and a chunk
            pos = torch.arange(start, end).expand(2, -1)
            pieces.append(model(ids[:, start:end], positions=pos, cache=cache).logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["rope", "learned", "alibi", "sliding-window"])
def test_left_padded_batch_matches_unpadded_rows(name: str, tiny_model_kwargs: dict) -> None:
    """Row 0 is left-padded by 3 (positions -1); its real tokens must get the logits of an unpadded forward,
    through prefill and cached steps, with no NaN anywhere."""
    model = build(VARIANTS[name], tiny_model_kwargs)
    short = torch.randint(0, 101, (1, 6), generator=torch.Generator().manual_seed(2))
    long = torch.randint(0, 101, (1, 9), generator=torch.Generator().manual_seed(3))
    ids = torch.cat([torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1), long])  # (2, 9)
    pos = torch.stack([torch.tensor([-1, -1, -1, 0, 1, 2, 3, 4, 5]), torch.arange(9)])
    nxt = torch.randint(0, 101, (2, 1), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        cache = ConcatCache()
        prefill = model(ids, positions=pos, cache=cache).logits
        step = model(nxt, positions=pos[:, -1:] + 1, cache=cache).logits
        alone_short = model(torch.cat([short, nxt[:1]], 1)).logits
        alone_long = model(torch.cat([long, nxt[1:]], 1)).logits
    assert torch.isfinite(prefill).all()
    torch.testing.assert_close(prefill[0, 3:], alone_short[0, :6], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[0, 0], alone_short[0, 6], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prefill[1], alone_long[0, :9], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step[1, 0], alone_long[0, 9], atol=1e-5, rtol=1e-5)
