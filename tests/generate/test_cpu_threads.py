"""forward_fn runs a model that fits in the last-level cache on one thread (and restores the caller's count),
leaves a bigger one alone, and changes no logit either way."""

from __future__ import annotations

import torch

from lmstack.generate import ContiguousKVCache
from lmstack.generate import cpu_threads
from lmstack.generate.fast_forward import FastForward, forward_fn


def test_cache_size_is_read_from_the_system():
    assert cpu_threads.last_level_cache_bytes() >= 1 << 20  # any CPU this runs on has >= 1 MiB of cache


def test_small_model_decodes_on_one_thread_and_restores_the_setting(tiny_model, monkeypatch):
    model = tiny_model(sharpen=True)
    seen = []
    fast = FastForward.of(model)
    monkeypatch.setattr(FastForward, "__call__", lambda self, *a, **k: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ids = torch.tensor([[1, 2, 3]])
        cache = ContiguousKVCache.for_model(model, 1, max_len=4)
        forward_fn(model)(ids, torch.arange(3)[None], cache)
        assert seen == [1] and torch.get_num_threads() == 2
        monkeypatch.setattr(cpu_threads, "last_level_cache_bytes", lambda: 1024)  # now "too big to fit"
        forward_fn(model)(ids, torch.arange(3)[None], cache)
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)
    assert fast is not None


def test_one_thread_changes_no_logit(tiny_model):
    model = tiny_model(sharpen=True)
    ids = torch.tensor([[5, 9, 2, 7]])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            fast = FastForward.of(model)(ids, torch.arange(4)[None], ContiguousKVCache.for_model(model, 1, 4))
            wrapped = forward_fn(model)(ids, torch.arange(4)[None], ContiguousKVCache.for_model(model, 1, 4))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(fast, wrapped)
