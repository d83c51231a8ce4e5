"""The decoding forward (`lmstack.generate.fast_forward`) covers models whose projections are `QuantLinear`:
same logits as `model(...)` (the same kernels in the same order), and the quantized model decodes through it."""

from __future__ import annotations

import pytest
import torch

from lmstack.generate import SamplingParams, generate
from lmstack.generate.fast_forward import FastForward, decode_layout
from lmstack.quant import QuantLinear, kernel_report
from lmstack.quant.rtn import QuantSpec, quantize_rtn
from lmstack.quant.swap import apply_quantized, quantizable_linears, untie_head
from tests.generate.test_fast_forward import PROMPTS, reference, run
from tests.quant.conftest import tiny_llama


def quantized(spec: QuantSpec, head: bool, **config: object):
    model = tiny_llama(**config)
    if head:
        untie_head(model)
    names = quantizable_linears(model, head)
    return apply_quantized(model, {n: quantize_rtn(model.get_submodule(n).weight, spec) for n in names})


@pytest.mark.parametrize("spec", [QuantSpec(4, 32, True), QuantSpec(4, 64, False), QuantSpec(8, -1, True)], ids=str)
@pytest.mark.parametrize("head", [True, False])
def test_fast_forward_runs_quantized_layers_bit_identically(spec: QuantSpec, head: bool) -> None:
    model = quantized(spec, head)
    assert isinstance(model.blocks[0].attn.q_proj, QuantLinear) and isinstance(model.lm_head, QuantLinear) == head
    # the blocks run fused kernels (the 300-row head of a 4-bit spec takes the fallback: 300 % 16 != 0)
    assert set(kernel_report(model)) & {"int4pack_mm", "int8pack_mm"}
    fast = FastForward.of(model)
    assert fast is not None
    for got, want in zip(run(fast, model), run(reference(model), model)):
        assert torch.equal(got, want)


def test_quantized_model_generates_the_same_with_layout() -> None:
    model = quantized(QuantSpec(4, 32, False), head=False)
    params = SamplingParams(max_new_tokens=6, temperature=0, ignore_eos=True)
    with torch.inference_mode():
        plain = [model(torch.tensor([p]), positions=None).logits[0, -1].argmax().item() for p in PROMPTS]
    out = generate(decode_layout(model), PROMPTS, params)
    assert [row[0] for row in out] == plain  # the first greedy token of each prompt, through FastForward
    assert all(len(row) == 6 for row in out)


@pytest.mark.parametrize("spec", [QuantSpec(4, 32, False), QuantSpec(8, -1, True)], ids=str)
def test_layout_fuses_quantized_projections_without_changing_a_logit(spec: QuantSpec) -> None:
    model = quantized(spec, head=True, n_kv_heads=4)  # k and v 64 rows: whole blocks of the int4pack layout
    want = run(reference(model), model)
    before = {n: b.untyped_storage().data_ptr() for n, b in model.named_buffers()}
    decode_layout(model)
    attn = model.blocks[0].attn
    whole = attn.q_proj.fused_with_next[0]
    assert whole.out_features == attn.q_proj.out_features + attn.k_proj.out_features + attn.v_proj.out_features
    # the layers now view the fused buffers (no second copy of the packed weights) ...
    assert attn.k_proj.weight.untyped_storage().data_ptr() == whole.weight.untyped_storage().data_ptr()
    assert all(model.get_submodule(n.rsplit(".", 1)[0]).weight.untyped_storage().data_ptr() != p
               for n, p in before.items() if n.endswith("q_proj.weight"))  # fmt: skip
    fast = FastForward.of(model)
    assert len(fast.layers[0].qkv) == 1 and len(fast.layers[0].gate_up) == 1
    # ... and both the fused call and the layers run alone give the same logits as before the layout, bit for bit
    for got, module_path, old in zip(run(fast, model), run(reference(model), model), want):
        assert torch.equal(got, old) and torch.equal(module_path, old)


def test_layout_leaves_unfusable_quantized_groups_separate() -> None:
    model = quantized(QuantSpec(4, 32, False), head=False, n_kv_heads=4)
    model.blocks[0].attn.k_proj.perm = torch.arange(model.config.d_model).flip(0)  # a different column order
    decode_layout(model)
    assert getattr(model.blocks[0].attn.q_proj, "fused_with_next", None) is None
    assert model.blocks[1].attn.q_proj.fused_with_next is not None
    assert len(FastForward.of(model).layers[0].qkv) == 3
    # int4: 32-row k / v projections would split a 64-row block of the packed layout, so they stay separate
    narrow = decode_layout(quantized(QuantSpec(4, 32, False), head=False, n_kv_heads=2))
    assert getattr(narrow.blocks[0].attn.q_proj, "fused_with_next", None) is None
    assert narrow.blocks[0].ffn.gate_proj.fused_with_next is not None  # 128 + 128 rows: whole blocks
