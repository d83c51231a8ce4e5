"""Each processor equals the Hugging Face processor/warper of the same name on random logits (exact, fp32)."""

from __future__ import annotations

import pytest
import torch
import transformers.generation.logits_process as hf

from lmstack.generate import processors as P
from lmstack.generate.params import SamplingParams

B, T, V = 4, 12, 50


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 8, (B, T), generator=g)  # small id range: many repeats, many n-gram matches
    logits = torch.randn(B, V, generator=g) * 3
    logits[0, :5] = logits[0, 5]  # ties
    return ids, logits


def seen_mask(ids: torch.Tensor) -> torch.Tensor:
    return torch.zeros(ids.shape[0], V, dtype=torch.bool).scatter_(1, ids, True)


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_matches_hf_temperature(data, t):
    ids, x = data
    same(P.temperature(x, t), hf.TemperatureLogitsWarper(t)(ids, x))


@pytest.mark.parametrize("k", [1, 3, 10, 49, 50, 80])
def test_matches_hf_top_k(data, k):
    ids, x = data
    same(P.top_k(x, k), hf.TopKLogitsWarper(k)(ids, x))


@pytest.mark.parametrize("p", [0.01, 0.3, 0.9, 0.999, 1.0])
@pytest.mark.parametrize("keep", [1, 3])
def test_matches_hf_top_p(data, p, keep):
    ids, x = data
    same(P.top_p(x, p, keep), hf.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, x))


@pytest.mark.parametrize("p", [0.0, 0.05, 0.5, 1.0])
@pytest.mark.parametrize("keep", [1, 2])
def test_matches_hf_min_p(data, p, keep):
    ids, x = data
    same(P.min_p(x, p, keep), hf.MinPLogitsWarper(p, min_tokens_to_keep=keep)(ids, x))


@pytest.mark.parametrize("mass", [0.2, 0.5, 0.95])
def test_matches_hf_typical(data, mass):
    ids, x = data
    same(P.typical_p(x, mass), hf.TypicalLogitsWarper(mass)(ids, x))


@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_matches_hf_repetition_penalty(data, penalty):
    ids, x = data
    same(P.repetition_penalty(x, seen_mask(ids), penalty), hf.RepetitionPenaltyLogitsProcessor(penalty)(ids, x))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_matches_hf_no_repeat_ngram(data, n):
    ids, x = data
    same(P.no_repeat_ngram(x, ids, n), hf.NoRepeatNGramLogitsProcessor(n)(ids, x.clone()))
    assert n > 2 or torch.isinf(P.no_repeat_ngram(x, ids, n)).any()  # the data really exercises the ban


def test_no_repeat_ngram_ignores_padding():
    x = torch.zeros(1, V)
    hist = torch.tensor([[-1, -1, 3, 4, 3]])  # "3 4" seen once -> after "3", 4 is banned
    out = P.no_repeat_ngram(x, hist, 2)
    assert torch.isinf(out[0, 4]) and torch.isfinite(out[0, :4]).all() and torch.isfinite(out[0, 5:]).all()
    hist = torch.tensor([[-1, -1, -1, -1, 3]])  # nothing complete yet
    assert torch.isfinite(P.no_repeat_ngram(x, hist, 2)).all()


def test_matches_hf_bad_words(data):
    ids, x = data
    seqs = [[7], [ids[0, -1].item(), 9], [ids[1, -2].item(), ids[1, -1].item(), 11], [3, 3, 3, 3]]
    same(P.bad_words(x, ids, seqs), hf.NoBadWordsLogitsProcessor(seqs)(ids, x))
    assert torch.isinf(P.bad_words(x, ids, seqs)[0, 9]) and torch.isinf(P.bad_words(x, ids, seqs)[1, 11])


def test_matches_hf_logit_bias(data):
    ids, x = data
    bias = {3: 2.5, 10: -100.0, 49: 0.5}
    ref = hf.SequenceBiasLogitsProcessor({(k,): v for k, v in bias.items()})(ids, x)
    same(P.logit_bias(x, torch.tensor(list(bias)), torch.tensor(list(bias.values()))), ref)


@pytest.mark.parametrize("step", [0, 4, 5])
def test_matches_hf_min_new_tokens(data, step):
    ids, x = data
    ref = hf.MinNewTokensLengthLogitsProcessor(T - step, 5, [2, 7])(ids, x)
    pipe = P.LogitsPipeline(SamplingParams(min_new_tokens=5), V, [2, 7], [[1]] * B)
    pipe.step = step
    same(pipe.process(x), ref)


def test_frequency_presence_openai_rule():
    x = torch.zeros(1, 5)
    counts = torch.tensor([[0.0, 1.0, 3.0, 0.0, 0.0]])
    out = P.frequency_presence(x, counts, 0.5, 0.25)
    same(out, torch.tensor([[0.0, -0.75, -1.75, 0.0, 0.0]]))  # -f*c - p*[c>0]


def test_pipeline_matches_hf_processor_list(data):
    """The whole chain, in order, equals HF's list built the way `generate` builds it."""
    ids, x = data
    p = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.2, no_repeat_ngram_size=3)
    chain = hf.LogitsProcessorList(
        [
            hf.RepetitionPenaltyLogitsProcessor(1.2),
            hf.NoRepeatNGramLogitsProcessor(3),
            hf.TemperatureLogitsWarper(0.7),
            hf.TopKLogitsWarper(20),
            hf.TopPLogitsWarper(0.9),
            hf.MinPLogitsWarper(0.05),
        ]
    )
    pipe = P.LogitsPipeline(p, V, [], ids.tolist())
    same(pipe.warp(pipe.process(x)), chain(ids, x.clone()))


def test_pipeline_state_tracks_appended_tokens():
    p = SamplingParams(repetition_penalty=2.0, frequency_penalty=1.0, no_repeat_ngram_size=2)
    pipe = P.LogitsPipeline(p, 10, [], [[1, 2], [3]])
    pipe.append(torch.tensor([5, 5]))
    pipe.append(torch.tensor([1, 5]))
    assert pipe.seen[1].nonzero().flatten().tolist() == [3, 5]
    assert pipe.counts[1, 5] == 2 and pipe.counts[0, 1] == 1
    assert pipe.history[:, : pipe.filled].tolist() == [[1, 2, 5, 1], [-1, 3, 5, 5]]


def test_params_validation_names_the_field():
    for bad in [dict(top_p=0.0), dict(temperature=-1), dict(top_k=-2), dict(n=0), dict(early_stopping="x")]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)
    with pytest.raises(ValueError, match="exclusive"):
        SamplingParams(json_mode=True, regex="a+")
