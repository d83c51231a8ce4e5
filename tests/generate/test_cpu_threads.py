"""forward_fn's decode steps run on the thread count measured faster (prefill on the caller's), the choice is
remembered per model, and nothing changes numerically."""

from __future__ import annotations

import pytest
import torch

from lmstack.generate import ContiguousKVCache, SamplingParams, generate
from lmstack.generate.cpu_threads import TRIALS, DecodeThreads, decode_threads_chosen
from lmstack.generate.fast_forward import FastForward, forward_fn


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("one,many,expected", [(1.0, 3.0, 1), (3.0, 1.0, 2)])
def test_decode_steps_use_the_faster_thread_count(one, many, expected, tiny_model, two_threads):
    model = tiny_model(sharpen=True)
    seen, clock = [], [0.0]

    def step(ids, *args):  # a fake forward that 'takes' `one` s on one thread and `many` s on more
        seen.append(torch.get_num_threads())
        clock[0] += one if seen[-1] == 1 else many

    wrapped = DecodeThreads(model, step, clock=lambda: clock[0])
    wrapped(torch.zeros(1, 5, dtype=torch.long))  # a prefill: the caller's threads, no measurement
    for _ in range(1 + 2 * TRIALS + 3):
        wrapped(torch.zeros(1, 1, dtype=torch.long))
    assert seen[0] == 2 and sorted(seen[2 : 2 + 2 * TRIALS]) == [1] * TRIALS + [2] * TRIALS
    assert seen[-3:] == [expected] * 3 and torch.get_num_threads() == 2
    assert decode_threads_chosen(model) == {(2, 1): expected}
    again = DecodeThreads(model, lambda ids, *a: seen.append(torch.get_num_threads()))  # the next generate call
    again(torch.zeros(1, 1, dtype=torch.long))
    assert seen[-1] == expected


def test_generate_gives_the_same_tokens_and_logits_whatever_the_choice(tiny_model, two_threads):
    model = tiny_model(sharpen=True)
    params = SamplingParams(max_new_tokens=2 * TRIALS + 6, temperature=0, ignore_eos=True)
    prompts = [[5, 9, 2, 7], [3, 1]]
    first = generate(model, prompts, params)  # measures and chooses along the way
    assert (2, 2) in decode_threads_chosen(model)
    assert generate(model, prompts, params) == first
    ids = torch.tensor([[5, 9, 2, 7], [3, 1, 4, 1]])  # two rows: FastForward's path (one row may run in C)
    pos = torch.arange(4).expand(2, 4)
    with torch.inference_mode():
        fast = FastForward.of(model)(ids, pos, ContiguousKVCache.for_model(model, 2, 4))
        wrapped = forward_fn(model)(ids, pos, ContiguousKVCache.for_model(model, 2, 4))
    assert torch.equal(fast, wrapped)
