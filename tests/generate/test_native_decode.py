"""The C decode step (lmstack/generate/native_decode.py) against `FastForward` and `transformers`: the same logits
(to 1e-5) for every variant it covers, in both weight layouts, on 1 and 2 threads (bit-identical between them),
through a growing cache; it is what `generate` runs for one-row decode steps; everything it does not cover falls
back; a missing or failing compiler falls back with a warning; the library is built once, atomically."""

from __future__ import annotations

import platform
import shutil
import warnings

import pytest
import torch

from lmstack.generate import ContiguousKVCache, SamplingParams, generate, native_decode
from lmstack.generate.decode import left_pad
from lmstack.generate.fast_forward import FastForward, decode_layout, forward_fn
from lmstack.generate.native_decode import MAX_ROWS, NativeDecode, library, read_once
from lmstack.quant.kv_cache import Int8KVCache

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine ('cc')")

COVERED = {
    "gqa-tied": dict(tie_embeddings=True),
    "mha-untied": dict(n_kv_heads=4, tie_embeddings=False),
    "mqa-qkv-bias-odd-ffn": dict(n_kv_heads=1, qkv_bias=True, d_ff=70),  # rows and sums not multiples of 4 or 16
    "partial-rope-yarn": dict(rope_fraction=0.5, rope_scaling={"rope_type": "yarn", "factor": 4.0}),
    "llama3-rope-wide": dict(d_model=64, n_heads=8, n_kv_heads=2, d_ff=96,
                             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                           "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
}  # fmt: skip
NOT_COVERED = {
    "layernorm": dict(norm="layernorm"),
    "gelu": dict(ffn="gelu"),
    "alibi": dict(position="alibi"),
    "qk-norm": dict(qk_norm=True),
    "window": dict(sliding_window=4),
    "bf16": dict(dtype="bfloat16"),
    "biases": dict(bias=True),
}
PROMPT = [5, 9, 2, 7, 7, 1, 30, 4]


@torch.inference_mode()
def decode(fn, model, threads: int, steps: int = 12) -> list[torch.Tensor]:
    """A prefill (FastForward) then `steps` one-token steps through `fn`, feeding back the argmax; the cache starts
    at 4 slots and grows (its tensors are replaced twice)."""
    fast = FastForward.of(model)
    cache = ContiguousKVCache.for_model(model, 1, max_len=len(PROMPT) + steps, grow=True, initial_len=4)
    logits = fast(torch.tensor([PROMPT]), torch.arange(len(PROMPT))[None], cache, True)
    out, old = [], torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for s in range(steps):
            tok = logits[:, -1].argmax(-1, keepdim=True)
            logits = fn(tok, torch.tensor([[len(PROMPT) + s]]), cache)
            out.append(logits)
    finally:
        torch.set_num_threads(old)
    assert cache.length == len(PROMPT) + steps and cache.capacity == len(PROMPT) + steps
    assert torch.equal(cache.pos[0], torch.arange(len(PROMPT) + steps))
    return out


@pytest.mark.parametrize("name", list(COVERED))
@pytest.mark.parametrize("layout", [None, "columns", "rows"])  # nn.Linear as loaded, decode_layout
def test_native_step_equals_fast_forward(name, layout, tiny_model):
    model = tiny_model(sharpen=True, **COVERED[name])
    if layout:
        decode_layout(model, rows=layout == "rows")
    native = NativeDecode.of(model)
    assert native is not None
    want = decode(FastForward.of(model), model, 2)
    one, two = decode(native, model, 1), decode(native, model, 2)
    for got1, got2, ref in zip(one, two, want):
        assert got1.shape == ref.shape == (1, 1, model.config.vocab_size)
        torch.testing.assert_close(got1, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(got1, got2)  # every output is summed by one thread in one order


@pytest.mark.parametrize("layout", [None, "columns", "rows"])  # nn.Linear as loaded, decode_layout
@pytest.mark.parametrize("T", [2, 5, MAX_ROWS])
def test_several_tokens_in_one_call(T, layout, tiny_model):
    """Up to MAX_ROWS tokens of one row in one call (a speculative verification, a short prefill): the same
    logits as `FastForward` (to 1e-5) and, bit for bit, as feeding the C step one token at a time."""
    model = tiny_model(sharpen=True, **COVERED["mqa-qkv-bias-odd-ffn"])
    if layout:
        decode_layout(model, rows=layout == "rows")
    native, fast = NativeDecode.of(model), FastForward.of(model)
    ids = torch.randint(0, model.config.vocab_size, (1, 3 * T), generator=torch.Generator().manual_seed(T))
    pos = torch.arange(3 * T)[None]

    def chunks(fn, size: int, last_only: bool = False) -> torch.Tensor:
        cache = ContiguousKVCache.for_model(model, 1, max_len=3 * T, grow=True, initial_len=4)
        with torch.inference_mode():
            outs = [fn(ids[:, i : i + size], pos[:, i : i + size], cache, last_only) for i in range(0, 3 * T, size)]
        return torch.cat(outs, dim=1)

    want = chunks(fast, T)
    got = chunks(native, T)
    assert got.shape == want.shape == (1, 3 * T, model.config.vocab_size)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got, chunks(native, 1))
    assert torch.equal(chunks(native, T, last_only=True), got[:, T - 1 :: T])


@pytest.mark.parametrize("layout", [None, "columns", "rows"])  # nn.Linear as loaded, decode_layout
def test_a_batch_of_left_padded_rows(layout, tiny_model):
    """Rows of one new token each (a batched decode step): padding slots (position -1) are not attended, every row
    writes its own cache row; the same logits as `FastForward`, also after the rows are duplicated (`n` samples)."""
    model = tiny_model(sharpen=True, **COVERED["gqa-tied"])
    if layout:
        decode_layout(model, rows=layout == "rows")
    native, fast = NativeDecode.of(model), FastForward.of(model)
    prompts = [[5, 9, 2, 7, 7, 1], [3], [10, 20, 30, 40, 50, 60, 70, 80, 90, 15]]
    ids, pos = left_pad(prompts, "cpu")
    logits = {}
    with torch.inference_mode():
        for name, fn in (("native", native), ("fast", fast)):
            cache = ContiguousKVCache.for_model(model, 3, max_len=ids.shape[1] + 8, grow=True, initial_len=4)
            out = [fast(ids, pos, cache, True)]
            nxt = pos[:, -1:] + 1
            for step in range(6):
                last = out[-1][:, -1]
                if step == 3:  # two samples of every prompt: the rows are duplicated into new tensors
                    cache.select(torch.tensor([0, 0, 1, 1, 2, 2]))
                    nxt, last = nxt.repeat_interleave(2, dim=0), last.repeat_interleave(2, dim=0)
                tok = last.argmax(-1, keepdim=True)
                assert native.covers(tok, cache)
                out.append(fn(tok, nxt, cache))
                nxt = nxt + 1
            logits[name] = out[1:]
    for got, want in zip(logits["native"], logits["fast"]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(NOT_COVERED))
def test_what_the_step_does_not_cover_falls_back(name, tiny_model):
    model = decode_layout(tiny_model(**NOT_COVERED[name]))
    assert NativeDecode.of(model) is None
    out = generate(model, [PROMPT], SamplingParams(max_new_tokens=3, temperature=0))
    assert len(out[0]) == 3


def test_quantized_weights_fall_back(tiny_model):
    from lmstack.quant import QuantLinear
    from lmstack.quant.embedding import QuantEmbedding
    from lmstack.quant.rtn import QuantSpec, quantize_rtn

    model = tiny_model(tie_embeddings=True)
    o = model.blocks[0].attn.o_proj
    model.blocks[0].attn.o_proj = QuantLinear(quantize_rtn(o.weight.detach(), QuantSpec(8, -1, True)))
    assert FastForward.of(model) is not None and NativeDecode.of(model) is None
    model = tiny_model(tie_embeddings=True)  # an int8 head whose table the embedding shares
    model.lm_head = QuantLinear(quantize_rtn(model.lm_head.weight.detach(), QuantSpec(8, -1, True)))
    model.embed = QuantEmbedding(model.lm_head, torch.float32)
    assert FastForward.of(model) is not None and NativeDecode.of(model) is None


def test_covers_one_row_one_token_and_a_float32_contiguous_cache(tiny_model):
    model = tiny_model()
    one = torch.tensor([[3]])
    cache = ContiguousKVCache.for_model(model, 1, 8)
    assert NativeDecode.covers(one, cache)
    assert NativeDecode.covers(torch.tensor([[3] * MAX_ROWS]), cache)  # a speculative verification
    assert not NativeDecode.covers(torch.tensor([[3] * (MAX_ROWS + 1)]), cache)  # a longer prefill
    assert NativeDecode.covers(torch.tensor([[3]] * MAX_ROWS), ContiguousKVCache.for_model(model, MAX_ROWS, 8))
    assert not NativeDecode.covers(torch.tensor([[3]] * 17), ContiguousKVCache.for_model(model, 17, 8))
    assert not NativeDecode.covers(torch.tensor([[3, 4]] * 2), ContiguousKVCache.for_model(model, 2, 8))  # a prefill
    assert not NativeDecode.covers(one, Int8KVCache.for_model(model, 1, max_len=8))


def test_generate_runs_the_native_step_and_matches_transformers(tmp_path, monkeypatch):
    import transformers

    from lmstack.model import Transformer

    shape = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)
    cfg = transformers.LlamaConfig(vocab_size=300, max_position_embeddings=64, num_key_value_heads=2, **shape)
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        hf.lm_head.weight.mul_(20)  # sharper logits: the greedy path depends on every step
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained(tmp_path)
    calls = []
    real = NativeDecode.__call__
    monkeypatch.setattr(NativeDecode, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    got = generate(ours, [PROMPT], SamplingParams(max_new_tokens=16, temperature=0, ignore_eos=True))
    assert len(calls) == 16  # the 8-token prefill and every step after it
    with torch.inference_mode():
        want = hf.generate(torch.tensor([PROMPT]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert got[0] == want[0, len(PROMPT) :].tolist()
    # the logits of the last step, against transformers' forward over the whole sequence
    seq = torch.tensor([PROMPT + got[0][:-1]])
    cache = ContiguousKVCache.for_model(ours, 1, seq.shape[1])
    fn = forward_fn(ours)
    with torch.inference_mode():
        fn(seq[:, :-1], torch.arange(seq.shape[1] - 1)[None], cache, True)
        step = fn(seq[:, -1:], torch.tensor([[seq.shape[1] - 1]]), cache)
        ref = hf(seq).logits[:, -1:]
    torch.testing.assert_close(step, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="-mno-avx512f is an x86 flag")
def test_the_portable_kernels_equal_fast_forward_too(tmp_path, monkeypatch, tiny_model):
    """Built without AVX-512 the step runs its plain-C dot products (the path other CPUs take): same logits."""
    monkeypatch.setenv("LMSTACK_HOME", str(tmp_path))
    monkeypatch.setattr(native_decode, "FLAGS", [*native_decode.FLAGS, "-mno-avx512f"])
    library.cache_clear()
    try:
        for layout in (None, "columns"):
            model = tiny_model(sharpen=True, n_kv_heads=1, qkv_bias=True, d_ff=70)  # rows, sums: not multiples of 4
            if layout:
                decode_layout(model, rows=False)
            native, fast = NativeDecode.of(model), FastForward.of(model)
            want = decode(fast, model, 2)
            for got, ref in zip(decode(native, model, 2), want):
                torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
            ids, pos = torch.tensor([PROMPT[:5]]), torch.arange(5)[None]  # five tokens in one call
            with torch.inference_mode():
                got = native(ids, pos, ContiguousKVCache.for_model(model, 1, 8))
                ref = fast(ids, pos, ContiguousKVCache.for_model(model, 1, 8))
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    finally:
        library.cache_clear()


def test_bad_token_id_is_a_clear_error(tiny_model):
    model = tiny_model()
    native = NativeDecode.of(model)
    cache = ContiguousKVCache.for_model(model, 1, 8)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 101\), got \[100000\]"):
        native(torch.tensor([[100000]]), torch.tensor([[0]]), cache)
    with pytest.raises(ValueError, match=r"consecutive non-negative positions per row, got \[\[0, 2\]\]"):
        native(torch.tensor([[1, 2]]), torch.tensor([[0, 2]]), cache)
    assert cache.length == 0  # nothing claimed


def test_the_library_is_built_once_atomically_and_can_be_turned_off(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setenv("LMSTACK_HOME", str(tmp_path))
    library.cache_clear()
    try:
        assert library() is not None
        built = list((tmp_path / "native").rglob("*"))
        assert [p.name for p in built if p.is_file()] == ["native_decode.so"]  # no temp file left behind
        library.cache_clear()
        monkeypatch.setenv("LMSTACK_NATIVE", "0")
        assert library() is None and NativeDecode.of(tiny_model()) is None
        library.cache_clear()
        monkeypatch.setenv("LMSTACK_NATIVE", "1")
        monkeypatch.setenv("CC", "no-such-compiler")
        with pytest.warns(UserWarning, match="no C compiler"):
            assert library() is None
        library.cache_clear()
        monkeypatch.setenv("CC", "false")  # a compiler that fails: a fresh source hash forces a build
        monkeypatch.setattr(native_decode, "FLAGS", [*native_decode.FLAGS, "-DTEST_REBUILD"])
        with pytest.warns(UserWarning, match="build of native_decode.c failed"):
            assert library() is None
        assert [p.name for p in (tmp_path / "native").rglob("*") if p.is_file()] == ["native_decode.so"]
    finally:
        library.cache_clear()


def test_read_once_reads_what_it_is_given():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seconds, total = read_once([torch.ones(1000), torch.full((77,), 2.0)], threads=2)
        assert seconds > 0 and total == 1154.0
    with pytest.raises(ValueError, match="contiguous float32"):
        read_once([torch.ones(10, 10).t()])
