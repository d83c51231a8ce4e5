"""The INT8 KV cache: close to the float cache, ~4x smaller, usable by every decoder through `kv_cache_dtype`."""

from __future__ import annotations

import pytest
import torch

from lmstack.generate import ContiguousKVCache, SamplingParams, generate
from lmstack.quant.kv_cache import Int8KVCache, quantize_int8
from tests.quant.conftest import tiny_llama


def test_quantize_int8_error_bound() -> None:
    x = torch.randn(2, 3, 5, 64) * torch.logspace(-2, 2, 5)[:, None]  # vectors of very different magnitudes
    q, scale = quantize_int8(x)
    assert q.dtype == torch.int8 and scale.shape == (2, 3, 5, 1)
    err = (q * scale - x).abs()
    assert torch.all(err <= x.abs().amax(-1, keepdim=True) / 254 + 1e-7)  # half a step of each vector's own scale


def test_logits_match_the_float_cache_prefill_and_steps() -> None:
    model = tiny_llama()
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(20).expand(2, 20)
    out = {}
    with torch.no_grad():
        for cls in (ContiguousKVCache, Int8KVCache):
            cache = cls.for_model(model, 2, max_len=32)
            logits = [model(ids[:, :12], positions=pos[:, :12], cache=cache).logits]
            for t in range(12, 20):
                logits.append(model(ids[:, t : t + 1], positions=pos[:, t : t + 1], cache=cache).logits)
            out[cls] = torch.cat(logits, dim=1)
    ref, got = out[ContiguousKVCache], out[Int8KVCache]
    assert (got - ref).abs().max() < 2e-2 * ref.abs().max()


def test_memory_is_about_a_quarter_of_fp32() -> None:
    model = tiny_llama(head_dim=64, n_heads=2, n_kv_heads=1)
    int8 = Int8KVCache.for_model(model, 4, max_len=256)
    fp32 = ContiguousKVCache.for_model(model, 4, max_len=256)
    fp32_bytes = sum(t.numel() * t.element_size() for t in fp32.k + fp32.v)
    assert int8.nbytes() < 0.28 * fp32_bytes  # 1 + 4/64 bytes per element (+ positions) vs 4


def test_every_decoder_runs_with_int8(tiny_tokenizer) -> None:
    """Greedy, sampled n > 1 (select), beam search (reorder) and speculative decoding (truncate) all run on the
    INT8 cache; greedy tokens equal the float cache's on this model."""
    model = tiny_llama()
    prompts = [[5, 6, 7, 8], [9, 10]]
    greedy = SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert generate(model, prompts, greedy.replace(kv_cache_dtype="int8")) == generate(model, prompts, greedy)
    assert len(generate(model, prompts, greedy.replace(temperature=1.0, n=2, seed=0, kv_cache_dtype="int8"))) == 4
    beams = generate(model, prompts, SamplingParams(max_new_tokens=6, beam_width=3, kv_cache_dtype="int8"))
    assert len(beams) == 2
    spec = greedy.replace(prompt_lookup=True, num_draft_tokens=3, kv_cache_dtype="int8")
    assert generate(model, [[5, 6, 7, 5, 6, 7, 5, 6]], spec) == generate(model, [[5, 6, 7, 5, 6, 7, 5, 6]], greedy)


def test_int8_cache_refused_for_encoder_decoder() -> None:
    from types import SimpleNamespace

    from lmstack.generate.kv_cache import new_cache

    t5_like = SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=True))
    with pytest.raises(ValueError, match="encoder-decoder"):
        new_cache(t5_like, 1, 8, "int8")
