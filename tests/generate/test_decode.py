"""Greedy / sampled decoding: cache == no cache, padding-invariance, seeds, n samples, EOS, stop strings, streaming."""

from __future__ import annotations

import pytest
import torch

from lmstack.generate import ContiguousKVCache, GenerationStats, SamplingParams, generate, stream_generate
from lmstack.generate.stop import TextTracker
from lmstack.model import Transformer

from .mocks import ScriptedModel, ascii_tokenizer


@pytest.fixture(scope="module")
def model(tiny_model) -> Transformer:
    return tiny_model(sharpen=True)


PROMPTS = [[5, 9, 2, 7, 7, 1], [3], [10, 20, 30, 40, 50, 60, 70, 80, 90, 15]]


@torch.inference_mode()
def greedy_no_cache(model: Transformer, prompt: list[int], n: int) -> list[int]:
    """The definition: re-run the whole sequence each step and take the argmax."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(model(torch.tensor([ids])).logits[0, -1].argmax().item())
    return ids[len(prompt) :]


def test_cache_equals_no_cache_and_batch_equals_single(model):
    want = [greedy_no_cache(model, p, 12) for p in PROMPTS]
    assert generate(model, PROMPTS, SamplingParams(max_new_tokens=12, temperature=0)) == want  # batched, left pad
    for p, w in zip(PROMPTS, want):
        assert generate(model, [p], SamplingParams(max_new_tokens=12, temperature=0)) == [w]
    assert len({tuple(w) for w in want}) == 3


def test_kv_cache_grow_mode_matches_preallocated(model):
    outs = []
    for grow in (False, True):
        cache = ContiguousKVCache.for_model(model, 1, max_len=40, grow=grow, initial_len=4)
        ids = torch.tensor([PROMPTS[2]])
        logits = model(ids, positions=torch.arange(10)[None], cache=cache).logits[:, -1]
        assert cache.capacity == (40 if not grow else 10)  # grew from 4 to exactly the prompt
        toks = []
        for i in range(20):
            t = logits.argmax(-1)
            toks.append(t.item())
            logits = model(t[:, None], positions=torch.tensor([[10 + i]]), cache=cache).logits[:, -1]
        outs.append(toks)
        assert cache.capacity == 40  # 10 -> 20 -> 40 (doubling, capped at max_len)
    assert outs[0] == outs[1] == greedy_no_cache(model, PROMPTS[2], 20)


def test_kv_cache_truncate_and_select():
    c = ContiguousKVCache(n_layers=2, batch=2, n_kv_heads=1, head_dim=2, max_len=8)
    k = torch.arange(2 * 3 * 2, dtype=torch.float).view(2, 1, 3, 2)
    pos = torch.tensor([[-1, 0, 1], [0, 1, 2]])
    for layer in range(2):
        keys, _, kp = c.update(layer, k, k, pos)
    assert keys.shape == (2, 1, 3, 2) and torch.equal(kp, pos) and c.length == 3
    c.truncate(2)
    assert c.length == 2 and c.pos[:, 2:].eq(-1).all()
    c.select(torch.tensor([1, 1, 0]))
    assert c.batch == 3 and torch.equal(c.pos[:, :2], torch.tensor([[0, 1], [0, 1], [-1, 0]]))
    assert torch.equal(c.k[0][2, :, :2], k[0, :, :2])
    with pytest.raises(ValueError, match="KV cache full"):
        c.update(0, torch.zeros(3, 1, 7, 2), torch.zeros(3, 1, 7, 2), torch.zeros(3, 7, dtype=torch.long))


def test_seeded_sampling_is_reproducible_and_seed_matters(model):
    p = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=40, seed=7)
    a, b = generate(model, PROMPTS, p), generate(model, PROMPTS, p)
    c = generate(model, PROMPTS, p.replace(seed=8))
    assert a == b and a != c


def test_n_samples_share_prefill(model):
    stats = GenerationStats()
    out = generate(model, PROMPTS[:2], SamplingParams(max_new_tokens=6, temperature=1.5, n=3, seed=0), stats=stats)
    assert len(out) == 6 and all(len(x) == 6 for x in out)
    assert len({tuple(x) for x in out[:3]}) > 1  # samples of one prompt differ
    assert stats.forwards == 6  # one prefill + 5 decode steps for all 6 rows
    greedy = generate(model, PROMPTS[:1], SamplingParams(max_new_tokens=6, temperature=0, n=2))
    assert greedy[0] == greedy[1] == greedy_no_cache(model, PROMPTS[0], 6)


def test_eos_and_stop_ids_end_rows_and_are_not_included():
    m = ScriptedModel([1, 2, 3, 4, 9, 5, 6], vocab_size=10, eos=9)
    assert generate(m, [[0]], SamplingParams(max_new_tokens=20, temperature=0)) == [[2, 3, 4]]
    assert generate(m, [[0]], SamplingParams(max_new_tokens=20, temperature=0, stop_token_ids=[3])) == [[2]]
    out = generate(m, [[0], [0, 0, 0]], SamplingParams(max_new_tokens=20, temperature=0))
    assert out == [[2, 3, 4], [4]]  # the 3-token prompt ends at position 2: next is script[3] = 4, then EOS
    no_eos = SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True)
    assert generate(m, [[0]], no_eos)[0][:5] == [2, 3, 4, 9, 5]


def script_for(tok, text: str) -> list[int]:
    return [0] + tok.encode(text)  # position p -> token p+1: a 1-token prompt at position 0 yields the text


@pytest.mark.parametrize(
    "text, stop, want",
    [
        ("Hello world. Bye", ["."], "Hello world"),
        ("Hello world. Bye", [" wor", "."], "Hello"),
        ("abc</answer>def", ["</answer>"], "abc"),
        ("abcdef", ["xyz"], "abcdef"),
        ("aaa", ["aaaa"], "aaa"),
    ],
)
def test_stop_strings_cut_text_and_ids(text, stop, want):
    tok = ascii_tokenizer([b"</ans", b"wer>d", b"ld. B"])  # multi-char pieces: stop strings straddle tokens
    m = ScriptedModel(script_for(tok, text) + [tok.eos_id] * 3, vocab_size=len(tok.pieces), eos=tok.eos_id)
    stats = GenerationStats()
    p = SamplingParams(max_new_tokens=30, temperature=0, stop=stop)
    ids = generate(m, [[0]], p, tokenizer=tok, stats=stats)[0]
    assert stats.texts == [want]
    assert want.startswith(tok.decode(ids)) and len(want) - len(tok.decode(ids)) < 5
    chunks = [e.text for e in stream_generate(m, [0], p, tokenizer=tok)]
    assert "".join(chunks) == want
    with pytest.raises(ValueError, match="tokenizer"):
        generate(m, [[0]], p)


def test_stream_holds_back_partial_stop_string():
    tr = TextTracker(ascii_tokenizer(), stop=["STOP"])
    tok = ascii_tokenizer()
    shown = [tr.feed(i)[0] for i in tok.encode("abSTxSTO")]
    assert "".join(shown) == "abSTx" and shown[-1] == "" and tr.flush() == "STO"


def test_streaming_never_splits_a_multibyte_character():
    text = "é😀 CJK 你好 ok"
    raw = text.encode("utf-8")
    tok = ascii_tokenizer([bytes([b]) for b in range(128, 256)])  # every non-ASCII byte is its own token
    ids = [(b - 32 if 32 <= b < 127 else 95 if b == 10 else 96 + b - 128) for b in raw]
    assert tok.decode_bytes(ids) == raw
    m = ScriptedModel([0] + ids + [tok.eos_id], vocab_size=len(tok.pieces), eos=tok.eos_id)
    events = list(stream_generate(m, [0], SamplingParams(max_new_tokens=60, temperature=0), tokenizer=tok))
    chunks = [e.text for e in events]
    assert "".join(chunks) == text and "\ufffd" not in "".join(chunks)
    assert sum(1 for e in events if e.token >= 0) == len(raw)
    assert all(c in ("", *text) for c in chunks)  # each chunk is empty or one whole character
