"""Bad generation input is an error naming the value, never a silent wrong result or a hang (issue 9)."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import torch

from lmstack.generate import SamplingParams, generate
from lmstack.generate.constrained import automaton_for
from lmstack.model import ModelConfig, Transformer


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(stop="ee"), r"stop='ee': expected a list"),  # used to stop at every "e"
        (dict(stop_token_ids=5), "stop_token_ids=5: expected a list"),
        (dict(choices="yes"), "choices='yes': expected a list"),
        (dict(bad_words_ids=[3, 4]), "bad_words_ids: each entry must be a non-empty list"),
        (dict(logit_bias=[1]), "logit_bias=\\[1\\]: expected a mapping"),
    ],
)
def test_regression_str_or_scalar_where_a_list_belongs(kw, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kw)


@pytest.mark.parametrize(
    "kw",
    [
        dict(regex="a{1,10000000}"),
        dict(regex="(ab{1,1000}){1,1000}"),
        dict(json_schema={"type": "string", "maxLength": 10_000_000}),
    ],  # fmt: skip
)
def test_regression_huge_counted_repetition_is_refused_fast(kw):
    # `a{1,10000000}` used to allocate ~4 GB and hang while building the automaton
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=r"too large to constrain decoding.*limit 50,000"):
        automaton_for(SamplingParams(**kw))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0 and peak < 10 * 2**20  # refused before anything big is built


def test_out_of_vocabulary_ids_name_the_id(tiny_model_kwargs):
    model = Transformer(ModelConfig(**tiny_model_kwargs)).eval()
    V = tiny_model_kwargs["vocab_size"]
    with pytest.raises(ValueError, match=rf"token id {V + 4} is outside the vocabulary \[0, {V}\)"):
        model(torch.tensor([[1, 2, V + 4]]))
    with pytest.raises(ValueError, match=r"token id -1 is outside"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match=rf"must be in \[0, {V}\)"):
        generate(model, [[1, V]], SamplingParams(max_new_tokens=2, temperature=0))
