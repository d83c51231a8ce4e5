"""Layer-by-layer calibration: feed calibration text through the model one block at a time and collect, for
every linear layer, the statistics of its inputs that GPTQ and AWQ need.

Quantizing layer l changes what layer l + 1 sees, so post-training methods (GPTQ, Frantar et al. 2023; AWQ,
Lin et al. 2024) calibrate sequentially: the inputs of block i are the outputs of the *already quantized*
blocks before it. The driver keeps the calibration activations (n_samples, T, D) of one block boundary at a time
(never the whole model's), in mini-batches:

    xs = block_inputs(model, tokens)                  # embeddings -> block 0 inputs, captured with a hook
    for block in model.blocks:
        for stage in stages(block):                   # q/k/v | o | gate/up | down  ("true sequential")
            stats = collect(block, xs, stage)         # hooks accumulate X^T X and mean |x| per input channel
            ... quantize the stage's linears, write their dequantized weights back ...
        xs = run_block(block, xs)                     # the next block's inputs, through the quantized block

`LayerStats.hessian` is H = X^T X / n over the n calibration tokens (the GPTQ paper's 2 X X^T up to a constant
factor, which cancels in every use), so for any weight error dW (N, K) the mean squared output error per token
is exactly tr(dW H dW^T) (`output_error`): methods can score candidate weights without another forward pass.
Left out: MoE experts (routed tokens differ per expert), caching block outputs on disk for models beyond RAM.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# Linears sharing one input, in the order they run inside a Llama / GPT-2 style block (true-sequential order).
STAGES = (
    ("attn.q_proj", "attn.k_proj", "attn.v_proj"),
    ("attn.o_proj",),
    ("ffn.gate_proj", "ffn.up_proj"),
    ("ffn.down_proj",),
)


@dataclass
class LayerStats:
    """Running statistics of one linear layer's inputs x (.., K); with `ref`, also of the float model's inputs x_ref
    for the same tokens (the cross term of the float-target objective, see `float_target`)."""

    K: int
    xtx: torch.Tensor = field(init=False)  # (K, K) sum of x x^T, float64 (float32 would lose digits over 100k tokens)
    abs_sum: torch.Tensor = field(init=False)  # (K,) sum of |x| per channel (AWQ's activation salience)
    abs_max: torch.Tensor = field(init=False)  # (K,) max |x| per channel (SmoothQuant's activation range)
    cross: torch.Tensor | None = None  # (K, K) sum of x_ref^T x, float64, when reference inputs were given
    n: int = 0
    _correction: tuple[float, torch.Tensor] | None = field(default=None, init=False, repr=False)  # float_target's

    def __post_init__(self) -> None:
        self.xtx = torch.zeros(self.K, self.K, dtype=torch.float64)
        self.abs_sum = torch.zeros(self.K, dtype=torch.float64)
        self.abs_max = torch.zeros(self.K)

    def add(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> None:
        x = x.detach().reshape(-1, self.K).float()  # (M, K)
        self.xtx += (x.t() @ x).double()  # each batch's product in fp32, the running sum in fp64
        self.abs_sum += x.abs().sum(0).double()
        self.abs_max = torch.maximum(self.abs_max, x.abs().amax(0))
        self.n += x.shape[0]
        self._correction = None
        if ref is not None:
            ref = ref.detach().reshape(-1, self.K).float()
            self.cross = (self.cross if self.cross is not None else 0) + (ref.t() @ x).double()

    @property
    def hessian(self) -> torch.Tensor:
        """H = X^T X / n (K, K) float32."""
        return (self.xtx / max(self.n, 1)).float()

    @property
    def abs_mean(self) -> torch.Tensor:
        """mean |x| per input channel (K,) float32."""
        return (self.abs_sum / max(self.n, 1)).float()

    def float_target(self, w: torch.Tensor, damp: float) -> torch.Tensor:
        """The weight W' that best maps this layer's (quantized-model) inputs X to the float model's outputs
        X_ref W^T: min ||X_ref W^T - X W'^T||^2 + lam ||W' - W||^2 (ridge toward W, lam = damp * mean diag H)
        gives W' = W (C + lam I)(H + lam I)^-1 = W + W (C - H)(H + lam I)^-1 with C = X_ref^T X / n. And
        ||X_ref W^T - X W_hat^T||^2 = ||X (W' - W_hat)^T||^2 + const (lam -> 0), so GPTQ on W' with H minimizes
        the error against the *float model* rather than the float layer on already-perturbed inputs (GPTAQ,
        Li et al. 2025, "asymmetric calibration"). Without reference inputs, W itself."""
        if self.cross is None:
            return w
        if self._correction is None or self._correction[0] != damp:  # once per stage: q/k/v share these stats
            H = self.hessian.double()
            lam = damp * torch.mean(torch.diag(H)) + 1e-12
            C = self.cross.double() / max(self.n, 1)
            eye = torch.eye(self.K, dtype=torch.float64)
            self._correction = (damp, torch.linalg.solve(H + lam * eye, (C - H).t()).t())  # (C - H)(H + lam I)^-1
        return (w.double() + w.double() @ self._correction[1]).to(w.dtype)


def output_error(w: torch.Tensor, w_hat: torch.Tensor, hessian: torch.Tensor) -> float:
    """Mean squared output error per token, ||X w^T - X w_hat^T||^2 / n = tr(dW H dW^T), for w, w_hat (N, K)."""
    dw = (w.detach().float() - w_hat.detach().float()).double()
    return float(((dw @ hessian.double()) * dw).sum())


class _Captured(Exception):
    """Raised by the hook on block 0 once its inputs are captured (the rest of the model need not run)."""


@dataclass
class Batch:
    x: torch.Tensor  # (b, T, D) hidden states entering the current block
    args: tuple[Any, ...]  # the block's other forward arguments (positions, rope tables, ...) for this batch


def block_inputs(model: nn.Module, tokens: torch.Tensor, batch_size: int = 8) -> list[Batch]:
    """Run the model's embedding stage on tokens (n, T) in mini-batches and capture what block 0 receives.

    A pre-hook on block 0 records (x, *args) exactly as the model builds them (embeddings, positions, RoPE
    tables, ALiBi slopes) and aborts the forward, so this works for every `ModelConfig` variant."""
    captured: list[Batch] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(Batch(args[0].detach(), tuple(args[1:])))
        raise _Captured

    handle = model.blocks[0].register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for chunk in tokens.split(batch_size):
                try:
                    model(chunk)
                except _Captured:
                    pass
    finally:
        handle.remove()
    return captured


def run_block(block: nn.Module, batches: list[Batch]) -> list[Batch]:
    """The block's outputs for every batch (the next block's inputs); same args."""
    with torch.no_grad():
        return [Batch(block(b.x, *b.args)[0], b.args) for b in batches]


def collect(
    block: nn.Module,
    batches: list[Batch],
    groups: list[tuple[str, ...]],
    reference: dict[str, list[torch.Tensor]] | None = None,
) -> dict[str, LayerStats]:
    """Forward every batch through `block`; accumulate the input statistics of each group of linears that share
    one input (a stage: q/k/v, ...). Every name of a group maps to the same `LayerStats`. `reference` (from
    `stage_inputs` on the float block) pairs each batch's stage inputs with the float model's, for
    `LayerStats.cross`."""
    stats: dict[str, LayerStats] = {}
    current = [0]  # the batch being run
    handles = []
    for group in groups:
        first = block.get_submodule(group[0])
        shared = LayerStats(first.in_features)
        stats.update(dict.fromkeys(group, shared))
        refs = reference[group[0]] if reference is not None else None
        hook = lambda m, args, st=shared, r=refs: st.add(args[0], r[current[0]] if r else None)  # noqa: E731
        handles.append(first.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for current[0], b in enumerate(batches):
                block(b.x, *b.args)
    finally:
        for h in handles:
            h.remove()
    return stats


def stage_inputs(block: nn.Module, batches: list[Batch]) -> tuple[dict[str, list[torch.Tensor]], list[Batch]]:
    """One pass of the (float) block: what the first linear of each stage receives, batch by batch (the
    `reference` of `collect`: it does not change while the quantized block's stages do), and the block's outputs
    (the next block's float inputs)."""
    out: dict[str, list[torch.Tensor]] = {stage[0]: [] for stage in stages(block)}
    handles = [
        block.get_submodule(name).register_forward_pre_hook(lambda m, args, xs=xs: xs.append(args[0].detach()))
        for name, xs in out.items()
    ]
    try:
        return out, run_block(block, batches)
    finally:
        for h in handles:
            h.remove()


def stages(block: nn.Module) -> Iterator[tuple[str, ...]]:
    """The block's linear layers grouped by shared input, in execution order (missing ones skipped)."""
    names = {n for n, m in block.named_modules() if isinstance(m, nn.Linear)}
    if any(".experts." in n or "router" in n for n in names):
        raise ValueError("GPTQ / AWQ calibration of mixture-of-experts blocks is not supported; use --method rtn")
    for stage in STAGES:
        present = tuple(n for n in stage if n in names)
        if present:
            yield present
    unknown = names - {n for s in STAGES for n in s}
    if unknown:
        raise ValueError(f"block has linear layers {sorted(unknown)} this calibration does not know how to order")


def head_inputs(model: nn.Module, batches: list[Batch], reference: list[Batch] | None = None) -> LayerStats:
    """Input statistics of the LM head: the final norm of the last block's outputs (paired with the float
    model's, `reference`, when given)."""
    stats = LayerStats(model.lm_head.in_features)
    with torch.no_grad():
        for i, b in enumerate(batches):
            stats.add(model.norm(b.x), model.norm(reference[i].x) if reference is not None else None)
    return stats
