"""GPTQ (Frantar, Ashkboos, Hoefler & Alistarh 2023, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers"): quantize a layer's weight one input column at a time and push each
column's rounding error onto the columns not yet quantized, weighted by the inverse Hessian of the layer's
calibration inputs, so the *output* error stays small even though every weight is rounded.

The layer objective is min_{W_hat} ||X W^T - X W_hat^T||^2 = tr(dW H dW^T) with H = X^T X (`layerwise.py`).
Optimal Brain Surgeon says: after quantizing column j (error e = (w_j - q_j) / [H^-1]_jj per row), the best
update of the remaining columns is  W[:, j+1:] -= e [H^-1]_{j, j+1:}.  GPTQ makes this fast and stable:

1. dead inputs (H_jj = 0: a channel that was always 0) are set to 0 and given H_jj = 1;
2. damping: H += damp * mean(diag H) * I  (`damp`, 1% default) keeps the inverse well conditioned;
3. act-order (`act_order`): process columns by decreasing H_jj, the most-excited inputs first, while the
   most freedom is left to compensate their error; groups are formed in that order (g_idx records them);
4. the update of column j needs row j of the inverse Hessian *of the columns not yet quantized*; those rows,
   for every j, are the rows of the upper Cholesky factor U of H^-1 (H^-1 = U^T U) up to a per-row scale, so
   one Cholesky replaces K successive eliminations: e = (w_j - q_j) / U_jj, W[:, j:] -= e U_{j, j:};
5. lazy batch updates: columns are processed in blocks of `block_size`; inside a block the updates are exact,
   and the accumulated error is applied to the columns after the block in one matmul.

Group-wise grids (`rtn.grid_params`) are found when the first column of a group is reached, from the
already-updated weights of that group (blocks are a multiple of the group size so a group never straddles two).
Left out: static groups (grids fixed before the updates), GPTQ for MoE experts, 2/3-bit.
"""

from __future__ import annotations

import torch
from torch import nn

from lmstack.quant.layerwise import Batch, collect, stages
from lmstack.quant.rtn import QuantizedWeight, QuantSpec, grid_params, to_grid


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    spec: QuantSpec,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    where: str = "layer",
    mse: bool = False,
) -> QuantizedWeight:
    """Quantize w (N, K) given H (K, K) = X^T X / n of its calibration inputs."""
    N, K = w.shape
    G = spec.groups(K, where)
    gs = K // G
    W = w.detach().float().clone()
    H = hessian.detach().float().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(K)
    W, H = W[:, perm], H[perm][:, perm]  # work in processing order
    H += damp * torch.mean(torch.diag(H)) * torch.eye(K)
    U = _inverse_cholesky(H, where)  # upper triangular, H^-1 = U^T U

    block = max(block_size, gs) // gs * gs if spec.group_size != -1 else block_size
    Q = torch.zeros(N, K, dtype=torch.uint8)
    scales = torch.zeros(N, G)
    zeros = torch.zeros(N, G)
    scale = zero = None
    if spec.group_size == -1:  # one grid per row, from the whole (unmodified) row
        scale, zero = grid_params(W, spec, mse)
        scales[:, 0], zeros[:, 0] = scale[:, 0], zero[:, 0]
    for i1 in range(0, K, block):
        i2 = min(i1 + block, K)
        W1 = W[:, i1:i2].clone()  # (N, b) updated exactly inside the block
        E1 = torch.zeros_like(W1)  # scaled errors, for the lazy update of the columns after the block
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            if spec.group_size != -1 and j % gs == 0:  # first column of a group: its grid, from updated weights
                scale, zero = grid_params(W1[:, i : i + gs], spec, mse)
                scales[:, j // gs], zeros[:, j // gs] = scale[:, 0], zero[:, 0]
            col = W1[:, i : i + 1]  # (N, 1)
            q = to_grid(col, scale, zero, spec.maxq)
            Q[:, j] = q[:, 0].to(torch.uint8)
            err = (col - (q - zero) * scale) / U1[i, i]  # (N, 1)
            W1[:, i:] -= err @ U1[i : i + 1, i:]  # OBS update of this block's remaining columns
            E1[:, i : i + 1] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]  # lazy batch update of every later column

    inv = torch.argsort(perm)
    g_idx = (torch.arange(K) // gs)[inv] if spec.group_size != -1 else torch.zeros(K, dtype=torch.long)
    return QuantizedWeight(Q[:, inv].contiguous(), scales, spec.stored_zeros(zeros), g_idx, spec)


def _inverse_cholesky(H: torch.Tensor, where: str) -> torch.Tensor:
    """Upper Cholesky factor of H^-1; more damping is added if H is not positive definite in float32."""
    for extra in (0.0, 1e-4, 1e-3, 1e-2, 1e-1):
        Hd = H + extra * torch.mean(torch.diag(H)) * torch.eye(H.shape[0])
        L, info = torch.linalg.cholesky_ex(Hd)
        if info == 0:
            Hinv = torch.cholesky_inverse(L)
            U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
            if info == 0:
                return U
    raise ValueError(f"{where}: the calibration Hessian is not positive definite even with 10% damping")


def gptq_block(
    block: nn.Module,
    batches: list[Batch],
    spec: QuantSpec,
    prefix: str,
    damp: float = 0.01,
    act_order: bool = False,
    true_sequential: bool = True,
    mse: bool = False,
    reference: dict[str, list[torch.Tensor]] | None = None,
) -> dict[str, QuantizedWeight]:
    """GPTQ every linear of one block. With `true_sequential` each stage (q/k/v, o, gate/up, down) is calibrated
    on inputs that already went through the quantized stages before it (one block forward per stage); otherwise
    all stages use the float block's inputs (one forward). Quantized layers keep their dequantized weights.
    `reference` = the float block's stage inputs (`layerwise.stage_inputs`): each layer then targets the float
    model's outputs (`LayerStats.float_target`), so the error of the blocks quantized before is compensated too."""
    all_stages = list(stages(block))
    passes = [[st] for st in all_stages] if true_sequential else [all_stages]
    out = {}
    for groups in passes:
        stats = collect(block, batches, groups, reference)
        for name in (n for g in groups for n in g):
            layer = block.get_submodule(name)
            target = stats[name].float_target(layer.weight, damp)  # the weight itself without `reference`
            qw = gptq_quantize(target, stats[name].hessian, spec, damp, act_order, where=f"{prefix}.{name}", mse=mse)
            with torch.no_grad():
                layer.weight.copy_(qw.dequantize(layer.weight.dtype))
            out[f"{prefix}.{name}"] = qw
    return out
