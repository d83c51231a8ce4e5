"""The engine equals `generate()` per request (greedy and seeded sampling, fp32), whatever the batch composition,
arrival order, chunk size, prefix-cache hits and forced preemption; the paged cache equals a no-cache forward;
n > 1, stop strings, constraints, logprobs, abort and per-request failures."""

from __future__ import annotations

import json
import random

import pytest
import torch

from lmstack.generate import GenerationStats, SamplingParams, generate
from lmstack.generate.fast_forward import FastForward
from lmstack.model import ModelConfig, Transformer
from lmstack.model.cache import RaggedBatch
from lmstack.serve.engine import Engine, EngineConfig
from lmstack.serve.paged_cache import PagedKVCache

from .conftest import sharpen


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=101, max_seq_len=96)
    return sharpen(Transformer(cfg).eval())


def test_the_test_model_depends_on_its_context(model):
    """Same last token, different contexts: different continuations (else KV-cache bugs would pass unseen)."""
    outs = {tuple(generate(model, [[i, i + 1, i + 2, 50]], SamplingParams(max_new_tokens=6, temperature=0))[0])
            for i in range(0, 40, 4)}  # fmt: skip
    assert len(outs) == 10


def make_prompts(seed: int, count: int = 10) -> list[list[int]]:
    """Prompts of 1..30 tokens, many sharing a prefix (so prefix-cache hits happen)."""
    rng = random.Random(seed)
    shared = [rng.randrange(101) for _ in range(24)]
    out = []
    for _ in range(count):
        head = shared[: rng.randrange(0, 24)] if rng.random() < 0.7 else []
        out.append(head + [rng.randrange(101) for _ in range(rng.randrange(1 if not head else 0, 8))])
    return out


def run_staggered(engine: Engine, prompts: list[list[int]], params: list[SamplingParams], seed: int) -> list:
    """Add requests in a shuffled order, a few per step, and run to completion; outputs in prompt order."""
    rng = random.Random(seed)
    order = list(range(len(prompts)))
    rng.shuffle(order)
    results = {}
    while order or engine.has_unfinished():
        for _ in range(rng.randrange(0, 4)):
            if order:
                i = order.pop()
                engine.add_request(f"r{i}", prompts[i], params[i])
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out
    return [results[f"r{i}"] for i in range(len(prompts))]


CONFIGS = {
    "one step per prompt": EngineConfig(num_blocks=400, block_size=16, max_num_batched_tokens=512),
    "small chunks": EngineConfig(num_blocks=400, block_size=4, max_num_batched_tokens=8, max_prefill_chunk=3,
                                  max_num_seqs=8),
    "forced preemption": EngineConfig(num_blocks=24, block_size=2, max_num_seqs=8, max_num_batched_tokens=16),
    "block size 1, no prefix cache": EngineConfig(num_blocks=800, block_size=1, prefix_caching=False),
    "no chunked prefill": EngineConfig(num_blocks=400, block_size=4, max_num_batched_tokens=128,
                                       chunked_prefill=False),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CONFIGS))
def test_engine_equals_generate_per_request_greedy(model, name):
    prompts = make_prompts(1)
    params = [SamplingParams(max_new_tokens=4 + 3 * (i % 5), temperature=0) for i in range(len(prompts))]
    want = [generate(model, [p], sp)[0] for p, sp in zip(prompts, params)]
    engine = Engine(model, None, CONFIGS[name])
    for rnd in range(2):  # the second round runs on a warm prefix cache
        got = run_staggered(engine, prompts, params, seed=rnd)
        assert [o.outputs[0].token_ids for o in got] == want
        assert all(o.outputs[0].finish_reason == "length" for o in got)
    m = engine.metrics()
    assert m.blocks_used == 0 and m.num_running == m.num_waiting == 0
    if name == "forced preemption":
        assert m.num_preemptions > 0
    if CONFIGS[name].prefix_caching:
        assert m.prefix_cache_hits > 0
    engine.scheduler.check()


def test_every_processor_and_seeded_sampling_match_generate(model):
    prompts = make_prompts(2, count=8)
    params = [
        SamplingParams(max_new_tokens=10, temperature=0, repetition_penalty=1.5),
        SamplingParams(max_new_tokens=10, temperature=0, no_repeat_ngram_size=2, frequency_penalty=0.5),
        SamplingParams(max_new_tokens=10, temperature=0, logit_bias={5: 10.0, 7: -5.0}, presence_penalty=1.0),
        SamplingParams(max_new_tokens=10, temperature=0, bad_words_ids=[[3], [4, 5]], min_new_tokens=3),
        SamplingParams(max_new_tokens=12, temperature=0.8, top_k=20, seed=3),
        SamplingParams(max_new_tokens=12, temperature=1.2, top_p=0.9, min_p=0.05, seed=4),
        SamplingParams(max_new_tokens=12, temperature=1.0, typical_p=0.8, seed=5),
        SamplingParams(max_new_tokens=12, temperature=0, stop_token_ids=[17, 23, 42]),
    ]
    want = [generate(model, [p], sp)[0] for p, sp in zip(prompts, params)]
    engine = Engine(model, None, EngineConfig(num_blocks=60, block_size=4, max_num_batched_tokens=16, max_num_seqs=8))
    got = run_staggered(engine, prompts, params, seed=7)
    assert [o.outputs[0].token_ids for o in got] == want


def test_n_samples_fork_from_one_prefill(model):
    prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]  # 10 tokens: the forks share a partly filled block (copy-on-write)
    engine = Engine(model, None, EngineConfig(num_blocks=100, block_size=4))
    greedy = SamplingParams(max_new_tokens=9, temperature=0, n=3)
    (out,) = engine.generate([prompt], greedy)
    assert [o.token_ids for o in out.outputs] == generate(model, [prompt], greedy)  # 3 identical rows
    assert engine.runner.tokens == len(prompt) + 3 * 8  # the prompt was computed once, not three times
    sampled = SamplingParams(max_new_tokens=9, temperature=1.0, n=3, seed=11)
    (out,) = engine.generate([prompt], sampled)
    alone = [generate(model, [prompt], sampled.replace(n=1, seed=11 + i))[0] for i in range(3)]
    assert [o.token_ids for o in out.outputs] == alone  # sample i is reproducible on its own: seed + i
    assert engine.metrics().blocks_used == 0


def test_paged_cache_forward_equals_no_cache_forward(model):
    """Logits through the paged cache, a prompt fed in three chunks beside another row, equal a plain forward."""
    torch.manual_seed(1)
    ids = torch.randint(0, 101, (2, 13))
    want = model(ids).logits  # (2, 13, V)
    cache = PagedKVCache.for_model(model, num_blocks=10, block_size=4)
    tables = [[1, 2, 3, 4], [5, 6, 7, 8]]  # any blocks will do
    got = []
    with torch.inference_mode():
        for start, end in ((0, 5), (5, 6), (6, 13)):
            pos = torch.arange(start, end).expand(2, -1)
            view = cache.batch(tables, [start, start], pos)
            got.append(model(ids[:, start:end], positions=pos, cache=view).logits)
    torch.testing.assert_close(torch.cat(got, dim=1), want, atol=1e-5, rtol=1e-5)


def test_a_mixed_step_is_one_ragged_forward_equal_to_plain_forwards(model):
    """Two decode rows and two prompt chunks of different lengths in one forward (`RaggedBatch`): each row's newest
    logits equal a no-cache forward of its whole sequence, and the cache holds what one forward per group writes."""
    fast = FastForward.of(model)
    torch.manual_seed(3)
    seqs = [torch.randint(0, 101, (1, n)) for n in (9, 3, 7, 12)]
    tables = [[1, 2, 3], [4], [5, 6], [7, 8, 9]]
    done = [8, 2, 0, 4]  # tokens already cached: rows 0 and 1 decode one token, rows 2 and 3 prefill the rest
    ragged, per_group = (PagedKVCache.for_model(model, num_blocks=12, block_size=4) for _ in range(2))

    def view(kv, rows, new):
        pos = torch.stack([torch.arange(done[r], done[r] + new) for r in rows])
        return torch.cat([seqs[r][:, done[r] : done[r] + new] for r in rows]), pos, kv.batch(
            [tables[r] for r in rows], [done[r] for r in rows], pos)  # fmt: skip

    with torch.inference_mode():
        for kv in (ragged, per_group):
            for r in (0, 1, 3):  # the cached part, one row at a time
                pos = torch.arange(done[r])[None]
                fast(seqs[r][:, : done[r]], pos, kv.batch([tables[r]], [0], pos), True)
        groups = [([0, 1], 1), ([2], 7), ([3], 8)]
        want = torch.cat([fast(*view(per_group, rows, new), True)[:, -1] for rows, new in groups])  # (4, V)
        ids, pos, batch = RaggedBatch.join([view(ragged, rows, new) for rows, new in groups])
        got = fast(ids, pos, batch, True)[0]
        assert [s.rows for s in batch.segments] == [2, 1, 1] and batch.last.tolist() == [0, 1, 8, 16]
        plain = torch.stack([model(s).logits[0, -1] for s in seqs])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ragged.k, per_group.k, atol=1e-6, rtol=1e-6)
    with torch.inference_mode():  # one segment of two rows, flattened, reads the same as its plain (2, 1) batch
        alone = fast(*RaggedBatch.join([view(per_group, [0, 1], 1)]), True)[0]
    torch.testing.assert_close(alone, want[:2], atol=1e-5, rtol=1e-5)
    with torch.inference_mode(), pytest.raises(TypeError, match="FastForward"):
        model(ids, positions=pos, cache=batch)


def test_an_engine_step_is_one_model_call(model):
    """Steps that mix decode rows and prompt chunks still call the model once (each weight read once per step)."""
    engine = Engine(model, None, EngineConfig(num_blocks=200, block_size=4, max_num_batched_tokens=12,
                                              max_num_seqs=6))  # fmt: skip
    ragged = engine.runner._ragged
    mixed = []
    engine.runner._ragged = lambda out, groups: mixed.append(len(groups)) or ragged(out, groups)
    params = SamplingParams(max_new_tokens=6, temperature=0)
    prompts = make_prompts(5, count=6)
    want = [generate(model, [p], params)[0] for p in prompts]
    steps = 0
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    results = {}
    while engine.has_unfinished():
        results |= {o.request_id: o for o in engine.step() if o.finished}
        steps += 1
    assert engine.runner.forwards == steps and len(mixed) >= 2 and max(mixed) >= 3
    assert [results[f"r{i}"].outputs[0].token_ids for i in range(len(prompts))] == want


def test_text_stop_strings_and_constraints_match_generate(tiny):
    model, tok = tiny
    prompt = tok.encode("the quick brown")
    free = GenerationStats()
    generate(model, [prompt], SamplingParams(max_new_tokens=20, temperature=0), tokenizer=tok, stats=free)
    stop = free.texts[0][8:10]  # a stop string that does occur mid-output
    cases = [
        SamplingParams(max_new_tokens=20, temperature=0, stop=[stop, "never seen"]),
        SamplingParams(max_new_tokens=30, temperature=0, json_mode=True),
        SamplingParams(max_new_tokens=12, temperature=0, regex=r"[a-z]+ [0-9]{2}"),
        SamplingParams(max_new_tokens=8, temperature=0.7, seed=0, choices=["fox", "dog", "lazy dog"]),
    ]
    engine = Engine(model, tok, EngineConfig(num_blocks=200, block_size=4, max_num_batched_tokens=5, max_num_seqs=4))
    outs = engine.generate([prompt] * len(cases), cases)
    for sp, out in zip(cases, outs):
        stats = GenerationStats()
        want = generate(model, [prompt], sp, tokenizer=tok, stats=stats)[0]
        assert out.outputs[0].token_ids == want and out.outputs[0].text == stats.texts[0]
    assert outs[0].outputs[0].finish_reason == "stop" and outs[0].outputs[0].text == free.texts[0][:8]
    json.loads(outs[1].outputs[0].text)
    assert outs[3].outputs[0].text in ("fox", "dog", "lazy dog")


def test_streamed_text_deltas_add_up_and_logprobs_are_the_models(tiny):
    model, tok = tiny
    prompt = tok.encode("the lazy dog")
    engine = Engine(model, tok, EngineConfig(num_blocks=100, block_size=4))
    engine.add_request("x", prompt, SamplingParams(max_new_tokens=15, temperature=0), logprobs=3)
    text, tokens, lps, last = "", [], [], None
    while engine.has_unfinished():
        for out in engine.step():
            c = out.outputs[0]
            text, tokens, lps, last = text + c.new_text, tokens + c.new_token_ids, lps + c.new_logprobs, out
    c = last.outputs[0]
    assert last.finished and text == c.text and tokens == c.token_ids and len(lps) == len(tokens)
    with torch.inference_mode():
        full = torch.log_softmax(model(torch.tensor([prompt + tokens])).logits[0].float(), -1)  # (T, V)
    for i, lp in enumerate(lps):
        row = full[len(prompt) - 1 + i]
        assert lp.token == tokens[i] and lp.top[0][0] == lp.token  # greedy: the chosen token is the top one
        assert abs(lp.logprob - row[lp.token].item()) < 1e-4 and len(lp.top) == 3


def test_abort_and_a_failing_request_leave_the_others_untouched(model):
    prompts = make_prompts(4, count=4)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    want = [generate(model, [p], params)[0] for p in prompts]
    engine = Engine(model, None, EngineConfig(num_blocks=100, block_size=4, max_num_batched_tokens=8, max_num_seqs=8))
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    engine.add_request("doomed", prompts[0], params.replace(temperature=0.5, seed=0))
    engine.add_request("dropped", prompts[1], params)
    sampler = next(s for s in engine.requests["doomed"].samples).sampler
    sampler.choose = lambda logits: (_ for _ in ()).throw(RuntimeError("boom"))  # fails when it samples
    for _ in range(3):
        engine.step()
    assert engine.abort("dropped") and not engine.abort("dropped")
    results = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out
    assert results["doomed"].error == "RuntimeError: boom" and results["doomed"].outputs[0].finish_reason == "error"
    assert [results[f"r{i}"].outputs[0].token_ids for i in range(4)] == want
    assert "dropped" not in results and engine.metrics().blocks_used == 0
    assert engine.metrics().finished == {"length": 4, "error": 1, "abort": 1}


def test_add_request_refuses_what_it_cannot_serve(model):
    engine = Engine(model, None, EngineConfig(num_blocks=8, block_size=4))
    with pytest.raises(ValueError, match="max_seq_len"):
        engine.add_request(None, [1] * 90, SamplingParams(max_new_tokens=10))
    with pytest.raises(ValueError, match="KV blocks"):
        engine.add_request(None, [1] * 20, SamplingParams(max_new_tokens=20))
    with pytest.raises(ValueError, match="beam search"):
        engine.add_request(None, [1], SamplingParams(beam_width=2))
    with pytest.raises(ValueError, match="tokenizer"):
        engine.add_request(None, [1], SamplingParams(stop=["x"]))
    (out,) = engine.generate([[1, 2]], SamplingParams(max_new_tokens=0))
    assert out.finished and out.outputs[0].token_ids == [] and out.outputs[0].finish_reason == "length"
