"""Speculative decoding: greedy equals plain greedy; sampled tokens follow the target distribution exactly."""

from __future__ import annotations

import pytest
import torch

from lmstack.generate import GenerationStats, SamplingParams, generate
from lmstack.generate.speculative import accept, lookup_draft
from lmstack.model import ModelConfig, Transformer

V, K, N = 5, 3, 200_000
CHI2_DF4_P001 = 18.467  # chi-square critical value, 4 degrees of freedom, p = 0.001 (standard table)


def chain(seed: int) -> torch.Tensor:
    """A random Markov chain over V tokens: row a = next-token distribution after token a."""
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(V, V, generator=g) * 1.5, dim=-1)


def chi2(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("one_hot_draft", [False, True])
def test_accepted_tokens_follow_the_target_distribution(one_hot_draft):
    """N independent rounds from start token 0: the 1st emitted token ~ P[0], the 2nd given the 1st ~ P[a]."""
    P, Q = chain(0), chain(1)
    g = torch.Generator().manual_seed(2)
    draft = torch.zeros(N, K, dtype=torch.long)
    prev = torch.zeros(N, dtype=torch.long)
    for i in range(K):  # draft K tokens from Q (or deterministic lookup-style drafts: q = one-hot)
        draft[:, i] = Q[prev].argmax(-1) if one_hot_draft else torch.multinomial(Q[prev], 1, generator=g).squeeze(-1)
        prev = draft[:, i]
    ctx = torch.cat([torch.zeros(N, 1, dtype=torch.long), draft], 1)  # token before each position
    p = P[ctx]  # (N, K+1, V)
    q = torch.nn.functional.one_hot(draft, V).float() if one_hot_draft else Q[ctx[:, :K]]
    m, nxt = accept(p, q, draft, g, greedy=False)
    out = torch.cat([draft, torch.zeros(N, 1, dtype=torch.long)], 1)
    out[torch.arange(N), m] = nxt  # emitted sequence: d_1..d_m, next
    first = torch.bincount(out[:, 0], minlength=V).float()
    assert chi2(first, P[0]) < CHI2_DF4_P001
    assert (first / N - P[0]).abs().sum() / 2 < 0.01  # total variation
    two = m >= 1  # rounds that emitted at least two tokens
    for a in range(V):
        sel = two & (out[:, 0] == a)
        if sel.sum() > 2000:
            assert chi2(torch.bincount(out[sel, 1], minlength=V).float(), P[a]) < CHI2_DF4_P001
    assert 0 < m.float().mean() < K  # some drafts accepted, some rejected: the test exercises both paths


def test_accept_greedy_rule():
    p = torch.tensor([[[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]])  # argmax: 1, 0, 1
    m, nxt = accept(p, torch.zeros(1, 2, 2), torch.tensor([[1, 1]]), None, greedy=True)
    assert (int(m), int(nxt)) == (1, 0)
    m, nxt = accept(p, torch.zeros(1, 2, 2), torch.tensor([[1, 0]]), None, greedy=True)
    assert (int(m), int(nxt)) == (2, 1)  # all accepted -> bonus token from the last position


def test_lookup_draft():
    ctx = [1, 2, 3, 4, 9, 1, 2, 3]
    assert lookup_draft(ctx, 3, 3) == [4, 9, 1]  # "1 2 3" seen before, followed by 4 9 1
    assert lookup_draft([1, 2, 7, 2], 2, 3) == [7, 2]  # falls back to the 1-gram "2"
    assert lookup_draft([1, 2, 3], 2, 3) == []


@pytest.fixture(scope="module")
def models(tiny_model) -> tuple[Transformer, Transformer]:
    target = tiny_model(seed=0, sharpen=True, max_seq_len=96)
    draft = tiny_model(seed=1, sharpen=True, max_seq_len=96, n_layers=1)
    return target, draft


PROMPTS = [[5, 9, 2, 7, 7, 1], [3], [10, 20, 30, 40, 50, 10, 20, 30]]


@pytest.mark.parametrize("drafter", ["model", "self", "lookup"])
@pytest.mark.parametrize("extra", [{}, {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}])
def test_speculative_greedy_equals_plain_greedy(models, drafter, extra):
    target, draft = models
    p = SamplingParams(max_new_tokens=25, temperature=0, ignore_eos=True, num_draft_tokens=4, **extra)
    want = generate(target, PROMPTS, p)
    stats = GenerationStats()
    kw = {"draft_model": {"model": draft, "self": target}.get(drafter)}
    got = generate(target, PROMPTS, p.replace(prompt_lookup=drafter == "lookup"), stats=stats, **kw)
    assert got == want
    if drafter == "self":
        assert stats.acceptance_rate == 1.0 and stats.forwards < 3 * 25 / 2


def test_speculative_stops_at_eos(models):
    target, draft = models
    free = generate(target, PROMPTS[:1], SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True))[0]
    p = SamplingParams(max_new_tokens=20, temperature=0, stop_token_ids=[free[7]], ignore_eos=True)
    want = generate(target, PROMPTS[:1], p)
    assert want[0] == free[: free.index(free[7])]
    assert generate(target, PROMPTS[:1], p, draft_model=draft) == want


def test_sampled_self_draft_accepts_everything_and_is_seeded(models):
    target, _ = models
    p = SamplingParams(max_new_tokens=20, temperature=1.0, top_k=20, seed=3, num_draft_tokens=5)
    stats = GenerationStats()
    a = generate(target, PROMPTS, p, draft_model=target, stats=stats)
    assert stats.acceptance_rate == 1.0  # q == p: min(1, p/q) = 1 always
    assert a == generate(target, PROMPTS, p, draft_model=target)
    assert all(len(x) == 20 for x in a)


def test_draft_vocab_mismatch_is_an_error(models):
    target, _ = models
    other = Transformer(ModelConfig(n_layers=1, d_model=16, n_heads=2, vocab_size=50, max_seq_len=96))
    with pytest.raises(ValueError, match="vocab_size"):
        generate(target, PROMPTS, SamplingParams(max_new_tokens=3), draft_model=other)
