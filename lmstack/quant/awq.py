"""AWQ (Lin et al. 2024, "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration").

Observation: a few input channels carry much larger activations than the rest, and the weights that multiply
them matter most. Scaling input channel k of a linear layer by s_k > 1 and the incoming activation by 1 / s_k
leaves the float layer unchanged (W diag(s) diag(1/s) x = W x), but after group-wise rounding the salient
weights w s get relatively finer levels, so their error shrinks ~1/s. AWQ keeps all weights at the same bit
width (no mixed precision) and folds 1/s into the operation that produces x, so inference costs nothing extra:

    stage (inputs shared)     1/s folded into
    q, k, v                   the attention norm's weight (and bias)
    o                         v_proj's output rows (only if Hkv = H: with GQA one v channel feeds several heads)
    gate, up                  the FFN norm's weight
    down                      up_proj's output rows (SwiGLU: silu(gate) * up is linear in up)
    lm_head                   the final norm's weight

Scale search (`search_scale`): s = mean|x|^alpha (per channel), normalised by sqrt(max s * min s), for alpha on
a grid in [0, 1); the alpha whose quantized layers give the smallest output error wins (alpha = 0 is plain RTN,
so AWQ never does worse on the calibration set). Clip search (`search_clip`, AWQ's auto-clip): per output row
and group, shrink the weight range to r * max|w| for r from 1 down to 0.55 and keep the r with the smallest
output error of that group; not for q/k (their errors interact through the attention softmax; AutoAWQ skips
them too). Output errors use the calibration Hessian (`layerwise.output_error`), which equals the mean squared
output over every calibration token, instead of AutoAWQ's forward passes on a token sample.

Differences from AutoAWQ: its q/k/v and gate/up scales are scored on the output of the whole attention / MLP
block; here on the output of the stage's own linears. Left out: MoE experts, the AWQ GEMM/GEMV packed layout
(results are saved in the GPTQ layout, which holds the same grid: `checkpoint.py`).
"""

from __future__ import annotations

import torch
from torch import nn

from lmstack.quant.layerwise import Batch, LayerStats, collect, output_error, stages
from lmstack.quant.rtn import QuantizedWeight, QuantSpec, fake_quantize, grid_params, quantize_rtn


def _fake_rtn(w: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """RTN in float (no integers kept): w (N, K) -> its group-wise grid values."""
    N, K = w.shape
    groups = w.reshape(-1, K if spec.group_size == -1 else spec.group_size)
    scale, zero = grid_params(groups, spec)
    return fake_quantize(groups, scale, zero, spec.maxq).reshape(N, K)


def search_scale(weights: list[torch.Tensor], stats: LayerStats, spec: QuantSpec, n_grid: int = 20) -> torch.Tensor:
    """Per-input-channel scales s (K,) for linears sharing one input (their weights (N_i, K) stacked)."""
    w = torch.cat([x.detach().float() for x in weights])  # (sum N_i, K)
    x_mean, H = stats.abs_mean, stats.hessian
    best, best_s = float("inf"), torch.ones_like(x_mean)
    for i in range(n_grid):
        s = x_mean.pow(i / n_grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        w_eff = _fake_rtn(w * s, spec) / s  # what the layer computes after folding 1/s into its input
        err = output_error(w, w_eff, H)
        if err < best:
            best, best_s = err, s
    return best_s


def search_clip(
    w: torch.Tensor, hessian: torch.Tensor, spec: QuantSpec, n_grid: int = 20, max_shrink: float = 0.5
) -> torch.Tensor:
    """Per (row, group) clipping threshold (N, G) minimising each group's output error; apply with `clip`."""
    N, K = w.shape
    gs = K if spec.group_size == -1 else spec.group_size
    G = K // gs
    wg = w.detach().float().reshape(N, G, gs)
    Hg = torch.stack([hessian[g * gs : (g + 1) * gs, g * gs : (g + 1) * gs] for g in range(G)])  # (G, gs, gs)
    org_max = wg.abs().amax(dim=-1)  # (N, G)
    best_err = torch.full((N, G), float("inf"))
    best_max = org_max.clone()
    for i in range(int(max_shrink * n_grid)):
        max_val = org_max * (1 - i / n_grid)  # (N, G)
        clipped = torch.maximum(torch.minimum(wg, max_val[..., None]), -max_val[..., None])
        dw = wg - _fake_rtn(clipped.reshape(N, K), spec).reshape(N, G, gs)  # (N, G, gs)
        err = torch.einsum("ngi,gij,ngj->ng", dw, Hg, dw)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_max = torch.where(better, max_val, best_max)
    return best_max


def clip(w: torch.Tensor, max_val: torch.Tensor) -> torch.Tensor:
    """Clamp each (row, group) of w (N, K) to [-max_val, max_val] (N, G)."""
    N, K = w.shape
    G = max_val.shape[1]
    lim = max_val.repeat_interleave(K // G, dim=1)  # (N, K)
    return torch.maximum(torch.minimum(w, lim), -lim)


def fold_target(block: nn.Module, stage: tuple[str, ...]) -> tuple[nn.Module, str] | None:
    """The module (and how: "norm" or "rows") that produces the stage's input, if 1/s can be folded into it."""
    first = stage[0]
    if first == "attn.q_proj" and hasattr(block, "attn_norm") and getattr(block, "pre", True):
        return block.attn_norm, "norm"
    if first == "ffn.gate_proj" or (first == "ffn.up_proj" and not hasattr(block.ffn, "gate_proj")):
        return (block.ffn_norm, "norm") if getattr(block, "pre", True) else None
    if first == "attn.o_proj":
        v, o = block.attn.v_proj, block.attn.o_proj
        return (v, "rows") if v.out_features == o.in_features else None
    if first == "ffn.down_proj" and hasattr(block.ffn, "gate_proj"):
        return block.ffn.up_proj, "rows"
    return None


def fold(target: nn.Module, kind: str, s: torch.Tensor) -> None:
    """Divide what `target` outputs on each channel by s: a norm's gain (and bias) or a linear's output rows."""
    with torch.no_grad():
        if kind == "norm":
            target.weight.div_(s.to(target.weight.dtype))
        else:
            target.weight.div_(s.to(target.weight.dtype)[:, None])
        if getattr(target, "bias", None) is not None:
            target.bias.div_(s.to(target.bias.dtype))


def scale_stage(
    layers: list[nn.Linear], stats: LayerStats, target: tuple[nn.Module, str] | None, spec: QuantSpec
) -> LayerStats:
    """Search and apply the stage's scales (W <- W diag(s), producer <- producer / s); returns the statistics of
    the rescaled input x / s."""
    if target is None:
        return stats
    s = search_scale([layer.weight for layer in layers], stats, spec)
    fold(*target, s)
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(s.to(layer.weight.dtype))
    scaled = LayerStats(stats.K)
    scaled.n = stats.n
    scaled.xtx = stats.xtx / (s.double()[:, None] * s.double()[None, :])
    scaled.abs_sum = stats.abs_sum / s.double()
    scaled.abs_max = stats.abs_max / s
    return scaled


def quantize_layer(
    layer: nn.Linear, stats: LayerStats, spec: QuantSpec, name: str, clip_search: bool = True
) -> QuantizedWeight:
    """Clip search (unless disabled) then RTN on the (already scaled) weight; the layer keeps the fake-quantized
    weight for the calibration of later layers."""
    w = layer.weight.detach().float()
    if clip_search:
        w = clip(w, search_clip(w, stats.hessian, spec))
    qw = quantize_rtn(w, spec, where=name)
    with torch.no_grad():
        layer.weight.copy_(qw.dequantize(layer.weight.dtype))
    return qw


def awq_block(block: nn.Module, batches: list[Batch], spec: QuantSpec, prefix: str) -> dict[str, QuantizedWeight]:
    """AWQ one block: statistics of every stage from the float block, scales searched and folded stage by stage,
    then clip + RTN per linear. Returns {full name: QuantizedWeight}."""
    all_stages = list(stages(block))
    stats = collect(block, batches, all_stages)  # folding is exact in float: later stages' inputs only scale
    scaled: dict[str, LayerStats] = {}
    for stage in all_stages:
        layers = [block.get_submodule(n) for n in stage]
        scaled.update(dict.fromkeys(stage, scale_stage(layers, stats[stage[0]], fold_target(block, stage), spec)))
    out = {}
    for stage in all_stages:
        for n in stage:
            clip_ok = n not in ("attn.q_proj", "attn.k_proj")
            out[f"{prefix}.{n}"] = quantize_layer(block.get_submodule(n), scaled[n], spec, f"{prefix}.{n}", clip_ok)
    return out
