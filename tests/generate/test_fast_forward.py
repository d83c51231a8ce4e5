"""FastForward (the module-call-free decoding forward) and decode_layout equal `model(...)` for every covered
variant; everything else falls back to `model(...)`; the layout changes no value, save or training result."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmstack.generate import ContiguousKVCache, SamplingParams, generate
from lmstack.generate.decode import left_pad
from lmstack.generate.fast_forward import FastForward, decode_layout, forward_fn
from lmstack.model import Transformer

VARIANTS = {
    "llama-gqa": dict(),
    "llama-untied-qkv-bias": dict(qkv_bias=True, tie_embeddings=False),
    "gpt2": dict(position="learned", norm="layernorm", norm_bias=True, ffn="gelu", gelu_approx="tanh", bias=True,
                 qkv_bias=True, tie_embeddings=True),
    "mqa-qknorm-window": dict(n_kv_heads=1, qk_norm=True, sliding_window=5),
    "alibi": dict(position="alibi"),
    "sinusoidal": dict(position="sinusoidal"),
    "none": dict(position="none"),
    "partial-rope-yarn": dict(rope_fraction=0.5, rope_scaling={"rope_type": "yarn", "factor": 4.0}),
    "bf16": dict(dtype="bfloat16"),
}  # fmt: skip
PROMPTS = [[5, 9, 2, 7, 7, 1], [3], [10, 20, 30, 40, 50, 60, 70, 80, 90, 15]]


@torch.inference_mode()
def run(fn, model: Transformer, steps: int = 4) -> list[torch.Tensor]:
    """Logits of a left-padded prefill and `steps` batched decode steps (feeding token 7) through `fn`."""
    ids, pos = left_pad(PROMPTS, "cpu")
    cache = ContiguousKVCache.for_model(model, len(PROMPTS), max_len=ids.shape[1] + steps)
    out = [fn(ids, pos, cache)]
    nxt = pos[:, -1:] + 1
    for _ in range(steps):
        out.append(fn(torch.full((len(PROMPTS), 1), 7), nxt, cache))
        nxt = nxt + 1
    return out


def reference(model: Transformer):
    return lambda ids, pos, cache: model(ids, positions=pos, cache=cache).logits


@pytest.mark.parametrize("name", list(VARIANTS))
@pytest.mark.parametrize("layout", [False, True])
def test_fast_forward_equals_the_model(name, layout, tiny_model):
    model = tiny_model(sharpen=True, **VARIANTS[name])
    want = run(reference(model), model)
    if layout:
        decode_layout(model)
    fast = FastForward.of(model)
    assert fast is not None
    assert (len(fast.layers[0].qkv) == 1) == layout  # fused q|k|v exactly when laid out
    tol = dict(rtol=2e-2, atol=2e-2) if name == "bf16" else dict(rtol=1e-5, atol=1e-5)
    for got, ref in zip(run(fast, model), want):
        assert got.dtype == ref.dtype
        torch.testing.assert_close(got, ref, **tol)
        if not layout:  # the same ops in the same order: bit-identical
            assert torch.equal(got, ref)
    ids, pos = left_pad(PROMPTS, "cpu")
    cache = ContiguousKVCache.for_model(model, len(PROMPTS), max_len=ids.shape[1])
    with torch.inference_mode():
        torch.testing.assert_close(fast(ids, pos, cache, last_only=True), want[0][:, -1:], **tol)


@pytest.mark.parametrize("name", ["llama-gqa", "partial-rope-yarn", "none"])
def test_fused_heads_rotate_q_and_k_in_one_call_bit_for_bit(name, tiny_model):
    """With q|k|v fused, the projection's output is viewed as heads once and q, k are rotated together; the
    per-tensor path (split, three views, two rotations) gives the same bits."""
    model = decode_layout(tiny_model(sharpen=True, **VARIANTS[name]))
    want = run(FastForward.of(model), model)
    per_tensor = FastForward.of(model)
    for w in per_tensor.layers:  # an identity QK-norm sends every layer down the per-tensor path
        w.q_norm = w.k_norm = lambda t: t
    for got, ref in zip(run(per_tensor, model), want):
        assert torch.equal(got, ref)


@pytest.mark.parametrize("rows", [False, True])
def test_layout_keeps_values_saves_and_trains_the_same(rows, tiny_model, tmp_path):
    model, twin = tiny_model(), tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    decode_layout(model, rows=rows)
    q = model.blocks[0].attn.q_proj.weight
    total = q.shape[0] + 2 * model.blocks[0].attn.k_proj.out_features
    # a block of rows of the (q|k|v, in) matrix, or a block of columns of the (in, q|k|v) one
    assert q.stride() == ((q.shape[1], 1) if rows else (1, total))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.save_pretrained(tmp_path / "m")
    loaded = Transformer.from_pretrained(tmp_path / "m")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, before[k]), k
    # training through the views updates the shared storage; the numbers match an untouched twin
    model.train(), twin.train()
    x = torch.randint(0, 101, (2, 12), generator=torch.Generator().manual_seed(0))
    for m in (model, twin):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        m(x[:, :-1], targets=x[:, 1:]).loss.backward()
        opt.step()
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    model.eval()
    shared = model.blocks[0].attn.q_proj.fused_with_next[0]
    torch.testing.assert_close(shared[: q.shape[0]], q)  # still one storage after the in-place updates


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
@pytest.mark.parametrize("name", ["llama-gqa", "llama-untied-qkv-bias", "gpt2"])
def test_packed_layout_agrees_with_the_model_and_goes_stale_safely(name, tiny_model):
    model = tiny_model(sharpen=True, **VARIANTS[name])
    want = run(reference(model), model)
    decode_layout(model, packed=True)
    assert model.blocks[0].attn.q_proj.onednn_weight[0].is_mkldnn
    fast = FastForward.of(model)
    for got, ref in zip(run(fast, model), want):  # another summation order: close, not bit-equal
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    params = SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True)
    assert generate(model, PROMPTS, params) == generate(tiny_model(sharpen=True, **VARIANTS[name]), PROMPTS, params)
    # an in-place update (a training step, a weight edit) bumps the version: the stale copy is not used
    with torch.no_grad():
        model.blocks[0].ffn.down_proj.weight.mul_(0.5)
        model.blocks[1].attn.q_proj.weight.add_(0.01)
    for got, ref in zip(run(FastForward.of(model), model), run(reference(model), model)):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_layout_broken_by_to_falls_back_to_separate_projections(tiny_model):
    model = decode_layout(tiny_model(sharpen=True))
    model.to(torch.bfloat16)  # new storage per parameter: the fused matrices no longer back the modules
    fast = FastForward.of(model)
    assert len(fast.layers[0].qkv) == 3 and len(fast.layers[0].gate_up) == 2
    for got, ref in zip(run(fast, model), run(reference(model), model)):
        torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)


class Wrapped(nn.Module):  # stands for a LoRA / quantized layer: a module type FastForward does not know
    def __init__(self, inner: nn.Linear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_unsupported_models_fall_back(tiny_model):
    assert FastForward.of(tiny_model(n_experts=4)) is None  # MoE
    assert FastForward.of(tiny_model(norm_placement="post")) is None
    assert FastForward.of(tiny_model().train()) is None
    wrapped = tiny_model()
    wrapped.blocks[1].attn.v_proj = Wrapped(wrapped.blocks[1].attn.v_proj)
    assert FastForward.of(wrapped) is None
    hooked = tiny_model(sharpen=True)
    seen = []
    hooked.blocks[0].ffn.register_forward_hook(lambda m, i, o: seen.append(1))
    assert FastForward.of(hooked) is None
    generate(hooked, PROMPTS, SamplingParams(max_new_tokens=3, temperature=0))
    assert seen  # the hook ran: generate used model(...)
    assert forward_fn(hooked) is not None


def test_generate_with_layout_equals_without(tiny_model):
    model, laid = tiny_model(sharpen=True), decode_layout(tiny_model(sharpen=True))
    greedy = SamplingParams(max_new_tokens=10, temperature=0, ignore_eos=True)
    assert generate(laid, PROMPTS, greedy) == generate(model, PROMPTS, greedy)
    beams = greedy.replace(beam_width=3)
    assert generate(laid, PROMPTS[:2], beams) == generate(model, PROMPTS[:2], beams)
    lookup = greedy.replace(prompt_lookup=True, num_draft_tokens=3)
    assert generate(laid, [PROMPTS[2] * 2], lookup) == generate(model, [PROMPTS[2] * 2], greedy)


def test_the_default_layout_is_the_one_the_decode_step_reads(tiny_model, monkeypatch):
    """(out, in) rows where the C decode step covers the model and can be built; (in, out) elsewhere."""
    from lmstack.generate import native_decode

    native = native_decode.library() is not None
    q = decode_layout(tiny_model()).blocks[0].attn.q_proj.weight
    assert (q.stride(1) == 1) == native
    q = decode_layout(tiny_model(**VARIANTS["gpt2"])).blocks[0].attn.q_proj.weight  # LayerNorm, GELU: not covered
    assert q.stride(0) == 1
    monkeypatch.setattr(native_decode, "library", lambda: None)  # no compiler here
    q = decode_layout(tiny_model()).blocks[0].attn.q_proj.weight
    assert q.stride(0) == 1
