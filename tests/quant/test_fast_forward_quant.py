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


def quantized(spec: QuantSpec, head: bool):
    model = tiny_llama()
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
