"""Per-choice log-likelihoods equal lm-eval's `HFLM.loglikelihood` on the same (context, continuation) pairs.

The same tiny random Llama (an HF directory written by our exporter) is loaded by lm-eval through transformers and by
us through `load_model`. The pairs are real harness requests (Social IQa, MMLU cloze and letters, LogiQA, QuaRTz,
with few-shot prefixes) plus the tokenization edge cases lm-eval handles specially: a context ending in spaces, an
empty context, a pair longer than the window (left truncation), and continuations that are the model's own greedy
output (so `is_greedy` is True for some). Final norm scaled by 30: sharp logits, so argmax ties cannot flip.
Tolerance: fp32, |diff| <= 1e-4 + 1e-5 |value| per summed log-probability.
"""

from __future__ import annotations

import pytest
import torch

from lmstack.eval.loglikelihood import Loglik, encode_pair, loglikelihood, loglikelihood_tokens, score_groups
from lmstack.eval.multiple_choice import load_items, requests_for
from lmstack.generate import SamplingParams, generate
from lmstack.model import load_model

from .conftest import save_tiny_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tok):
    path = save_tiny_model(tmp_path_factory.mktemp("parity") / "m", tiny_tok, seed=3, max_seq_len=256, sharpen=30.0)
    model, tok = load_model(path, device="cpu")
    return path, model, tok


def harness_pairs(tok, model) -> list[tuple[str, str]]:
    pairs = []
    for task, shots in (("social_iqa", 0), ("mmlu", 0), ("mmlu_letters", 1), ("logiqa", 0), ("quartz", 2)):
        items = load_items(task)
        pairs += requests_for(task, items, [0, 1], shots, seed=0)
    ctx = "Question: what is two plus two?\nAnswer:"
    own = generate(model, [tok.encode(ctx)], SamplingParams(max_new_tokens=4, temperature=0))[0]
    pairs += [
        (ctx + " ", "four"),  # trailing space moves into the continuation
        (ctx + "  \n", "four"),
        ("", "The quick brown fox"),  # empty context -> prefix token
        (ctx, tok.decode(own)),  # the model's own greedy continuation: is_greedy True
        (ctx, tok.decode(own[:1])),
    ]
    return pairs


def test_matches_lm_eval_hflm(setup) -> None:
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    path, model, tok = setup
    pairs = harness_pairs(tok, model)
    assert len(pairs) >= 30
    ours = loglikelihood(model, tok, pairs)
    lm = HFLM(pretrained=str(path), device="cpu", batch_size=8, dtype="float32")
    ref = lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)
    assert any(len(tok.encode(c + x)) > 256 for c, x in pairs)  # left truncation really happened (LogiQA)
    assert any(g for _, g in ref)  # greedy flags are exercised both ways
    for (c, x), o, (lp, greedy) in zip(pairs, ours, ref):
        assert o.logprob == pytest.approx(lp, abs=1e-4, rel=1e-5), (c[-60:], x)
        assert o.is_greedy == greedy, (c[-60:], x)


def test_shared_context_equals_one_forward_per_pair(setup) -> None:
    """The cached-prefix batched path equals scoring context + continuation in one plain forward."""
    _, model, tok = setup
    pairs = [("Alex found a ring on the beach.", " keep it"), ("Alex found a ring on the beach.", " return it to lost"),
             ("def add(a, b):", "\n    return a + b"), ("The code for Alice is", " 1234")]  # fmt: skip
    got = loglikelihood(model, tok, pairs, batch_tokens=64, chunk_tokens=3)  # tiny chunks and batches
    for (c, x), g in zip(pairs, got):
        ctx, cont = encode_pair(tok, c, x)
        ids = torch.tensor([ctx + cont])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, len(ctx) - 1 : -1].float(), -1)
        want = lp.gather(1, torch.tensor(cont)[:, None]).sum().item()
        assert g.logprob == pytest.approx(want, abs=1e-4)
        assert g.n_tokens == len(cont)


def test_single_token_continuations_need_one_forward(setup) -> None:
    _, model, _ = setup
    calls = []
    hook = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        res = score_groups(model, [([5, 6, 7], [[8], [9], [10]])], chunk_tokens=512)
    finally:
        hook.remove()
    assert len(calls) == 1 and all(isinstance(r, Loglik) for r in res[0])


def test_empty_request_is_an_error(setup) -> None:
    _, model, _ = setup
    with pytest.raises(ValueError, match="request 0"):
        loglikelihood_tokens(model, [([], [1])])
