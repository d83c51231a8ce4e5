"""GPTQ and AWQ against RTN: per-layer output error on the same calibration set, at the same bits and group size.

The error of a quantized weight W_hat is the mean squared output error over the calibration tokens,
||X W^T - X W_hat^T||^2 / n = tr(dW H dW^T) with H = X^T X / n (`layerwise.output_error`; checked against the
direct computation below). The model is a tiny random Llama whose norms give a few channels 10x larger
activations, as trained LLMs have."""

from __future__ import annotations

import pytest
import torch

from lmstack.quant.awq import clip, search_clip, search_scale
from lmstack.quant.gptq import gptq_quantize
from lmstack.quant.layerwise import LayerStats, block_inputs, collect, output_error, stages
from lmstack.quant.rtn import QuantSpec, quantize_rtn
from tests.quant.conftest import tiny_llama

SPECS = [QuantSpec(4, 32, True), QuantSpec(4, 32, False), QuantSpec(8, -1, True)]


@pytest.fixture(scope="module")
def block0_stats():
    model = tiny_llama()
    tokens = torch.randint(0, model.config.vocab_size, (16, 48), generator=torch.Generator().manual_seed(0))
    batches = block_inputs(model, tokens, batch_size=4)
    block = model.blocks[0]
    groups = list(stages(block))
    return block, groups, collect(block, batches, groups), batches


def test_output_error_equals_the_direct_computation() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(300, 32), torch.randn(16, 32)
    w_hat = quantize_rtn(w, QuantSpec(4, 32, True)).dequantize()
    stats = LayerStats(32)
    stats.add(x[:100])
    stats.add(x[100:])
    direct = ((x @ w.t() - x @ w_hat.t()) ** 2).sum() / 300
    assert output_error(w, w_hat, stats.hessian) == pytest.approx(float(direct), rel=1e-4)


def test_stats_are_shared_by_layers_with_one_input(block0_stats) -> None:
    block, groups, stats, _ = block0_stats
    assert groups[0] == ("attn.q_proj", "attn.k_proj", "attn.v_proj")
    assert stats["attn.q_proj"] is stats["attn.v_proj"] and stats["attn.q_proj"].n == 16 * 48


@pytest.mark.parametrize("spec", SPECS, ids=str)
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_beats_rtn_on_every_layer(block0_stats, spec: QuantSpec, act_order: bool) -> None:
    """Strictly better on every layer, and over the block by > 5% (> 20% with act-order). Without act-order the
    gate/up outlier channels, which come last, leave GPTQ little room there (~0.96x RTN, block ~0.89x);
    act-order quantizes them first (~0.7x, block ~0.70x)."""
    block, groups, stats, _ = block0_stats
    total_rtn = total_gptq = 0.0
    for name in (n for g in groups for n in g):
        w, H = block.get_submodule(name).weight, stats[name].hessian
        rtn = output_error(w, quantize_rtn(w, spec).dequantize(), H)
        gptq = output_error(w, gptq_quantize(w, H, spec, act_order=act_order).dequantize(), H)
        assert gptq < rtn, f"{name}: GPTQ {gptq:.3g} vs RTN {rtn:.3g}"
        total_rtn, total_gptq = total_rtn + rtn, total_gptq + gptq
    assert total_gptq < (0.8 if act_order else 0.95) * total_rtn


@pytest.mark.parametrize("spec", SPECS[:2], ids=str)
def test_awq_beats_rtn_where_scales_fold(block0_stats, spec: QuantSpec) -> None:
    """q/k/v (scales folded into the attention norm) and gate/up (into the FFN norm): the stage's summed output
    error with AWQ's scales and clipping is below RTN's; o_proj (GQA, no fold) gets clipping only, never worse."""
    block, groups, stats, _ = block0_stats
    for stage in groups:
        st = stats[stage[0]]
        s = search_scale([block.get_submodule(n).weight for n in stage], st, spec)
        H_scaled = st.hessian / (s[:, None] * s[None, :])  # statistics of the rescaled input x / s
        awq = rtn = 0.0
        for name in stage:
            w = block.get_submodule(name).weight
            ws = w * s
            if name not in ("attn.q_proj", "attn.k_proj"):
                ws = clip(ws, search_clip(ws, H_scaled, spec))
            awq += output_error(w, quantize_rtn(ws, spec).dequantize() / s, st.hessian)
            rtn += output_error(w, quantize_rtn(w, spec).dequantize(), st.hessian)
        if stage[0] in ("attn.q_proj", "ffn.gate_proj"):
            assert awq < 0.8 * rtn, f"{stage}: AWQ {awq:.3g} vs RTN {rtn:.3g}"
        else:
            assert awq <= rtn * (1 + 1e-6), f"{stage}: AWQ {awq:.3g} vs RTN {rtn:.3g}"


def test_gptq_handles_dead_inputs_and_damping() -> None:
    """A channel that is always 0 gets weight 0 (it never matters) and the Cholesky still succeeds."""
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    x[:, 3] = 0
    qw = gptq_quantize(torch.randn(8, 32), x.t() @ x / 64, QuantSpec(4, 32, True))
    assert torch.all(qw.dequantize()[:, 3] == 0)
