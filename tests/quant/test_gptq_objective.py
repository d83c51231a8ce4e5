"""GPTQ aimed at the float model's outputs (`--fp_target`: `LayerStats.float_target`, GPTAQ-style asymmetric
calibration) instead of the float layer's outputs on inputs that earlier quantized layers already perturbed."""

from __future__ import annotations

import torch

from lmstack.quant.gptq import gptq_block, gptq_quantize
from lmstack.quant.layerwise import LayerStats, block_inputs, run_block, stage_inputs
from lmstack.quant.rtn import QuantSpec
from tests.quant.conftest import tiny_llama


def correlated_inputs(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(k) + 0.2 * torch.randn(k, k, generator=g)
    return torch.randn(n, k, generator=g) @ mix * (0.2 + 3 * torch.rand(k, generator=g))


def test_float_target_is_the_weight_when_inputs_are_unperturbed() -> None:
    x = correlated_inputs(512, 32, seed=4)
    stats = LayerStats(32)
    stats.add(x, ref=x)
    w = torch.randn(8, 32)
    assert torch.allclose(stats.float_target(w, damp=0.01), w, atol=1e-5)
    assert LayerStats(32).float_target(w, 0.01) is w  # no reference inputs: the weight itself


def test_float_target_compensates_perturbed_inputs() -> None:
    """X = X_ref + noise (what earlier quantized layers do to a layer's inputs): GPTQ on the float target gets
    closer to the float outputs X_ref W^T than GPTQ on W itself, and W' alone (unquantized) closer still."""
    x_ref = correlated_inputs(4096, 64, seed=5)
    g = torch.Generator().manual_seed(6)
    x = x_ref + 0.3 * x_ref @ (0.1 * torch.randn(64, 64, generator=g)) + 0.05 * torch.randn(4096, 64, generator=g)
    stats = LayerStats(64)
    for a, b in zip(x.split(1000), x_ref.split(1000)):
        stats.add(a, ref=b)
    w = torch.randn(16, 64, generator=g)
    target = stats.float_target(w, damp=0.01)
    spec = QuantSpec(4, 32, False)

    def err(w_hat: torch.Tensor) -> float:
        return float(((x_ref @ w.t() - x @ w_hat.t()) ** 2).mean())

    plain = err(gptq_quantize(w, stats.hessian, spec).dequantize())
    aimed = err(gptq_quantize(target, stats.hessian, spec).dequantize())
    assert err(target) < 0.2 * err(w) and aimed < 0.7 * plain, (err(w), err(target), plain, aimed)


def test_gptq_block_with_a_float_reference() -> None:
    """Block 1 after a quantized block 0: with the float block and the float model's activations as reference,
    block 1's outputs land closer to the float model's. With the float block on the block's own inputs as the
    reference, q/k/v (which see those very inputs) are unchanged; o/gate/up/down then target the float block."""
    spec = QuantSpec(4, 32, False)
    tokens = torch.randint(0, 300, (16, 48), generator=torch.Generator().manual_seed(0))
    fp = tiny_llama()
    ref0 = block_inputs(fp, tokens, batch_size=4)
    ref1 = run_block(fp.blocks[0], ref0)
    target = run_block(fp.blocks[1], ref1)

    def quantized_block1(reference: bool) -> list:
        model = tiny_llama()
        gptq_block(model.blocks[0], ref0, spec, "blocks.0")
        xs = run_block(model.blocks[0], ref0)
        float_inputs = stage_inputs(fp.blocks[1], ref1)[0] if reference else None
        gptq_block(model.blocks[1], xs, spec, "blocks.1", reference=float_inputs)
        return run_block(model.blocks[1], xs)

    def err(batches: list) -> float:
        return sum(float(((a.x - b.x) ** 2).sum()) for a, b in zip(batches, target))

    assert err(quantized_block1(True)) < 0.9 * err(quantized_block1(False))
    same_a, same_b = tiny_llama(), tiny_llama()
    out_a = gptq_block(same_a.blocks[0], ref0, spec, "b")
    out_b = gptq_block(same_b.blocks[0], ref0, spec, "b", reference=stage_inputs(fp.blocks[0], ref0)[0])
    for name in out_a:
        assert torch.equal(out_a[name].q, out_b[name].q) == ("attn.q_proj" in name or "attn.k_proj" in name
                                                             or "attn.v_proj" in name), name  # fmt: skip
