"""SmoothQuant W8A8 (Xiao et al. 2023, "SmoothQuant: Accurate and Efficient Post-Training Quantization for
Large Language Models"): int8 weights *and* int8 activations, so the matmul itself runs in int8.

Weights are easy to quantize (smooth, per-channel int8 loses little); activations are not: a few input channels
carry values 10-100x larger than the rest, and a per-token int8 scale set by those outliers rounds every other
channel to a handful of levels. SmoothQuant moves the difficulty from activations to weights with the same
exact rescaling AWQ uses: x' = x / s, W' = W diag(s), with per-input-channel

    s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha)        (alpha = 0.5 by default)

so both the activation range and the weight range of channel j become sqrt(max|x_j| max|W_j|). 1/s is folded
into the operation producing x (the norms; v_proj / up_proj rows, see `awq.fold_target`). Then weights are
quantized per output channel (symmetric int8, `rtn.py`) and, at run time, activations per token (dynamic
absmax), and `QuantLinear`'s "int_mm" path multiplies int8 x int8 -> int32 with `torch._int_mm`.

The checkpoint is the GPTQ int8 per-channel layout (smoothing is already folded into the float tensors) with
`quantization_config.meta.act_quant = "int8-per-token"`; a GPTQ loader elsewhere runs the same file as
weight-only int8. Left out: static (calibrated) activation scales, per-tensor activation quantization, int8 KV.
"""

from __future__ import annotations

import torch
from torch import nn

from lmstack.quant.awq import fold, fold_target
from lmstack.quant.layerwise import Batch, LayerStats, collect, stages
from lmstack.quant.rtn import QuantizedWeight, QuantSpec, quantize_rtn

SPEC = QuantSpec(bits=8, group_size=-1, sym=True)


def smoothing_factors(act_max: torch.Tensor, weights: list[torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    """s (K,) for linears sharing one input with per-channel activation maxima act_max (K,)."""
    w_max = torch.cat([w.detach().float() for w in weights]).abs().amax(dim=0).clamp(min=1e-5)  # (K,)
    return (act_max.float().clamp(min=1e-5).pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)


def smooth_stage(layers: list[nn.Linear], stats: LayerStats, target: tuple[nn.Module, str] | None, alpha: float):
    """Fold 1/s into the producer and s into the layers' input columns (no-op without a producer)."""
    if target is None:
        return
    s = smoothing_factors(stats.abs_max, [layer.weight for layer in layers], alpha)
    fold(*target, s)
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(s.to(layer.weight.dtype))


def quantize_weight(layer: nn.Linear, name: str) -> QuantizedWeight:
    """Per-channel symmetric int8 of the (smoothed) weight; the layer keeps the dequantized values."""
    qw = quantize_rtn(layer.weight, SPEC, where=name)
    with torch.no_grad():
        layer.weight.copy_(qw.dequantize(layer.weight.dtype))
    return qw


def smoothquant_block(
    block: nn.Module, batches: list[Batch], prefix: str, alpha: float = 0.5
) -> dict[str, QuantizedWeight]:
    """Smooth every foldable stage of one block (statistics from the float block), then int8 its linears."""
    all_stages = list(stages(block))
    stats = collect(block, batches, all_stages)
    for stage in all_stages:
        smooth_stage([block.get_submodule(n) for n in stage], stats[stage[0]], fold_target(block, stage), alpha)
    return {f"{prefix}.{n}": quantize_weight(block.get_submodule(n), f"{prefix}.{n}") for st in all_stages for n in st}
