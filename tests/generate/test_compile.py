"""`torch.compile(model, dynamic=True)` (the `--compile` flag) decodes exactly like the eager model. Slow: the
first compile takes tens of seconds on a shared CPU."""

from __future__ import annotations

import pytest

from lmstack.generate import SamplingParams, generate
from lmstack.generate.cli import maybe_compile

pytestmark = pytest.mark.slow


def test_compiled_model_generates_the_same_tokens(tiny_model):
    model = tiny_model(sharpen=True)
    fast = maybe_compile(model, True)
    assert fast is not model and maybe_compile(model, False) is model
    prompts = [[5, 9, 2, 7, 7, 1], [3], [10, 20, 30, 40, 50, 60, 70, 80, 90, 15]]
    greedy = SamplingParams(max_new_tokens=12, temperature=0, ignore_eos=True)
    assert generate(fast, prompts, greedy) == generate(model, prompts, greedy)
    sampled = SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=3, n=2)
    assert generate(fast, prompts, sampled) == generate(model, prompts, sampled)
