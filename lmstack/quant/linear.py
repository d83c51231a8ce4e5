"""`QuantLinear`: y = x W^T + b with W held as packed 4- or 8-bit integers, multiplied by a fused CPU kernel.

Three paths compute the same product (tests tie them together); `layer.path` says which one a layer runs and
`kernel_report(model)` counts them over a model:

- "int4pack_mm": PyTorch's tinygemm-style CPU kernel `aten._weight_int4pack_mm_for_cpu`. The weight is
  repacked once by `aten._convert_weight_to_int4pack_for_cpu` into (N, K/2) bytes (a kernel-specific nibble
  order) and each group carries (scale, offset) with w = (q - 8) * s + offset; a zero point z becomes
  offset = (8 - z) * s, so symmetric, asymmetric and float-zero weights use the same kernel. Needs group size
  32/64/128/256 and N % 16 == 0.
- "int8pack_mm": `aten._weight_int8pack_mm`, int8 weights with one scale per output row (symmetric, per channel).
- "int_mm" (W8A8, `act_quant=True`, SmoothQuant's runtime): each row of x is quantized to int8 with its own
  absmax scale, `aten._int_mm` multiplies int8 x int8 -> int32 (VNNI on this CPU), and the product is scaled by
  s_x (per row) * s_w (per output channel). Weights: symmetric int8, one scale per output row.
- "dequant": unpack, w_hat = (q - z) * s in the activation dtype, then `F.linear`: any shape, group size or
  zero point, and the readable reference for the others (with `act_quant`, x is first rounded to its int8 grid).
Both kernels are only fast with bfloat16 activations on this CPU (measured, torch 2.13: float32 inputs take a
scalar path 10-30x slower), so the fused paths cast x to bf16 and the result back: they differ from "dequant"
by bf16 rounding (~0.3 % relative), which the tests bound. With act-order (GPTQ `desc_act`) groups are not
contiguous columns; the columns are stored permuted so that they are, and x is permuted to match (`perm`).

The packed weight is the only copy held (4-bit: K/2 bytes per row), so resident memory drops ~7.5x against
fp32. `quantized_weight()` recovers the exact integers from any path (the int4pack layout is read back through
the kernel itself: multiplying by the identity with unit scales returns q, which is exact in bf16).
Left out: 2/3-bit, CUDA kernels (Marlin, exllama), fused activation quantization (see `smoothquant.py`).
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import nn

from lmstack.quant.packing import pack_nibbles, unpack_nibbles
from lmstack.quant.rtn import QuantizedWeight, QuantSpec

KERNELS = ("auto", "fused", "dequant")
INT4_GROUPS = (32, 64, 128, 256)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) -> int8 (M, K) and float32 scales (M, 1): symmetric absmax per row (dynamic, per token)."""
    scale = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-8) / 127.0
    return torch.round(x.float() / scale).clamp(-127, 127).to(torch.int8), scale


def fused_path(
    spec: QuantSpec, in_features: int, out_features: int, act_order: bool, act_quant: bool = False
) -> str | None:
    """The fused kernel that can run this layer on CPU, or None."""
    per_channel_sym8 = spec.bits == 8 and spec.sym and spec.group_size in (-1, in_features) and not act_order
    if act_quant:
        ok = per_channel_sym8 and in_features % 8 == 0 and out_features % 8 == 0 and hasattr(torch, "_int_mm")
        return "int_mm" if ok else None
    if spec.bits == 4:
        group = in_features if spec.group_size == -1 else spec.group_size
        ok = group in INT4_GROUPS and out_features % 16 == 0 and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")
        return "int4pack_mm" if ok else None
    return "int8pack_mm" if per_channel_sym8 and hasattr(torch.ops.aten, "_weight_int8pack_mm") else None


class QuantLinear(nn.Module):
    def __init__(
        self, qw: QuantizedWeight, bias: torch.Tensor | None = None, kernel: str = "auto", act_quant: bool = False
    ) -> None:
        """Build from a `QuantizedWeight` (q, scales, zeros, g_idx); kernel: auto (fused if possible) | fused
        (error if impossible) | dequant. `act_quant`: also quantize activations to int8 per token (W8A8)."""
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r}; expected one of {KERNELS}")
        if act_quant and qw.spec.bits != 8:
            raise ValueError(f"act_quant (W8A8) needs 8-bit weights, got {qw.spec.bits}-bit")
        self.spec, self.act_quant = qw.spec, act_quant
        self.out_features, self.in_features = qw.shape
        N, K = qw.shape
        G = qw.scales.shape[1]
        self.group = K // G
        order = torch.argsort(qw.g_idx, stable=True)  # columns grouped contiguously
        act_order = not torch.equal(order, torch.arange(K))
        self.register_buffer("perm", order if act_order else None, persistent=False)
        q = qw.q[:, order] if act_order else qw.q  # (N, K) in kernel column order
        fused = fused_path(qw.spec, K, N, act_order, act_quant)
        if kernel == "fused" and fused is None:
            raise ValueError(f"no fused CPU kernel for {qw.spec} with shape ({N}, {K}); use kernel='dequant'")
        self.path = fused if kernel != "dequant" and fused is not None else "dequant"
        self.register_buffer("scales", qw.scales.float().contiguous(), persistent=False)  # (N, G)
        self.register_buffer("zeros", qw.spec.stored_zeros(qw.zeros).contiguous(), persistent=False)  # (N, G)
        if self.path == "int4pack_mm":
            self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.int(), 2), False)
            offset = (8 - self.zeros.float()) * self.scales  # w = (q - 8) s + offset
            sz = torch.stack([self.scales, offset], dim=-1).transpose(0, 1)  # (G, N, 2)
            self.register_buffer("scales_and_zeros", sz.to(torch.bfloat16).contiguous(), persistent=False)
        elif self.path in ("int8pack_mm", "int_mm"):
            self.register_buffer("weight", (q.to(torch.int16) - 128).to(torch.int8), persistent=False)  # (N, K)
            self.register_buffer("scales_bf16", self.scales[:, 0].to(torch.bfloat16), persistent=False)  # (N,)
        else:
            self.register_buffer("weight", pack_nibbles(q) if qw.spec.bits == 4 else q.to(torch.uint8), False)
        self.bias = nn.Parameter(bias.detach().clone().float(), requires_grad=False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        if self.perm is not None:
            x = x.index_select(-1, self.perm)
        if self.path == "dequant":
            if self.act_quant:  # the W8A8 reference: x rounded to its per-token int8 grid
                xq, sx = quantize_per_token(x.reshape(-1, self.in_features))
                x = (xq.float() * sx).to(x.dtype).reshape(x.shape)
            return F.linear(x, self.dequantized(x.dtype, ordered=False), self._bias(x.dtype))
        shape = x.shape
        if self.path == "int_mm":
            xq, sx = quantize_per_token(x.reshape(-1, self.in_features))  # (M, K) int8, (M, 1)
            y = torch._int_mm(xq, self.weight.t()).float() * sx * self.scales[:, 0]  # int32 (M, N) -> float
            y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)
            return y + self._bias(x.dtype) if self.bias is not None else y
        x2 = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, K)
        if self.path == "int4pack_mm":
            sz = self.scales_and_zeros  # a strided view after `concat_rows`; the kernel reads it as contiguous
            sz = sz if sz.is_contiguous() else sz.contiguous()
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.weight, self.group, sz)
        else:
            y = torch.ops.aten._weight_int8pack_mm(x2, self.weight, self.scales_bf16)
        y = y.to(x.dtype).reshape(*shape[:-1], self.out_features)
        return y + self._bias(x.dtype) if self.bias is not None else y

    def _bias(self, dtype: torch.dtype) -> torch.Tensor | None:
        return None if self.bias is None else self.bias.to(dtype)

    def integers(self, ordered: bool = True) -> torch.Tensor:
        """The integer weights q (N, K) uint8, in the original column order (ordered) or the stored one."""
        if self.path == "int4pack_mm":
            K, N = self.in_features, self.out_features
            unit = torch.zeros(K // self.group, N, 2, dtype=torch.bfloat16, device=self.weight.device)
            unit[..., 0], unit[..., 1] = 1, 8  # (q - 8) * 1 + 8 = q
            eye = torch.eye(K, dtype=torch.bfloat16, device=self.weight.device)
            q = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight, self.group, unit).t()  # (N, K)
        elif self.path in ("int8pack_mm", "int_mm"):
            q = self.weight.to(torch.int16) + 128
        else:
            q = unpack_nibbles(self.weight) if self.spec.bits == 4 else self.weight
        q = q.round().to(torch.uint8) if q.is_floating_point() else q.to(torch.uint8)
        if ordered and self.perm is not None:
            q = q[:, torch.argsort(self.perm)]
        return q

    def dequantized(self, dtype: torch.dtype = torch.float32, ordered: bool = True) -> torch.Tensor:
        """w_hat (N, K) = (q - z) * s in `dtype`."""
        q = self.integers(ordered=False).to(dtype)  # (N, K) in stored column order
        s = self.scales.to(dtype).repeat_interleave(self.group, dim=1)  # (N, K)
        z = self.zeros.to(dtype).repeat_interleave(self.group, dim=1)
        w = (q - z) * s
        return w[:, torch.argsort(self.perm)] if ordered and self.perm is not None else w

    def quantized_weight(self) -> QuantizedWeight:
        """The exact (q, scales, zeros, g_idx) this layer was built from."""
        K = self.in_features
        stored_groups = torch.arange(K, device=self.scales.device) // self.group  # group of each stored column
        g_idx = stored_groups if self.perm is None else stored_groups[torch.argsort(self.perm)]
        return QuantizedWeight(self.integers(), self.scales.clone(), self.zeros.clone(), g_idx, self.spec)

    def extra_repr(self) -> str:
        s = self.spec
        kind = f"int{s.bits} {'sym' if s.sym else 'asym'} group={s.group_size}{' a8' if self.act_quant else ''}"
        return f"in={self.in_features}, out={self.out_features}, {kind}, path={self.path}"


# buffer -> the dimension that indexes output features (rows of W)
ROW_DIM = {"weight": 0, "scales": 0, "zeros": 0, "scales_bf16": 0, "scales_and_zeros": 1}


def concat_rows(layers: list[QuantLinear]) -> QuantLinear | None:
    """One `QuantLinear` computing `layers`' outputs side by side (q|k|v, gate|up: one kernel call instead of
    several), or None when they cannot share a call (different paths, specs, inputs or column orders; a bias on
    some only; the dequant path). Each layer's buffers become views of the new layer's, so no memory is added
    and each layer still runs alone (its int4 scale view is made contiguous per call)."""
    first = layers[0]
    same = all(
        m.path == first.path and m.spec == first.spec and m.act_quant == first.act_quant
        and m.in_features == first.in_features and m.group == first.group
        and (m.perm is None) == (first.perm is None) and (m.perm is None or torch.equal(m.perm, first.perm))
        and (m.bias is None) == (first.bias is None)
        for m in layers
    )  # fmt: skip
    if not same or first.path == "dequant" or (first.path == "int4pack_mm" and not _int4pack_rows_separable(layers)):
        return None
    fused = QuantLinear.__new__(QuantLinear)
    nn.Module.__init__(fused)
    fused.spec, fused.act_quant, fused.path, fused.group = first.spec, first.act_quant, first.path, first.group
    fused.in_features, fused.out_features = first.in_features, sum(m.out_features for m in layers)
    fused.register_buffer("perm", first.perm, persistent=False)
    for name, dim in ROW_DIM.items():
        if getattr(first, name, None) is None:
            continue
        whole = torch.cat([getattr(m, name) for m in layers], dim=dim)
        fused.register_buffer(name, whole, persistent=False)
        offset = 0
        for m in layers:
            setattr(m, name, whole.narrow(dim, offset, m.out_features))
            offset += m.out_features
    fused.bias = None
    if first.bias is not None:
        fused.bias = nn.Parameter(torch.cat([m.bias for m in layers]), requires_grad=False)
        offset = 0
        for m in layers:
            m.bias.data = fused.bias.data[offset : offset + m.out_features]
            offset += m.out_features
    return fused


def _int4pack_rows_separable(layers: list[QuantLinear]) -> bool:
    """Whether packing the layers' rows together equals packing each alone, stacked. The CPU int4pack layout
    interleaves rows in blocks (64 in torch 2.13, measured), so it holds when every boundary falls on a block;
    checked on a random probe matrix rather than assumed."""
    g = torch.Generator().manual_seed(0)
    probes = [torch.randint(0, 16, (m.out_features, m.in_features), dtype=torch.int32, generator=g) for m in layers]
    pack = torch.ops.aten._convert_weight_to_int4pack_for_cpu
    return torch.equal(pack(torch.cat(probes), 2), torch.cat([pack(p, 2) for p in probes]))


def kernel_report(model: nn.Module) -> dict[str, int]:
    """How many quantized layers run each path, e.g. {"int4pack_mm": 210, "dequant": 1}."""
    return dict(Counter(m.path for m in model.modules() if hasattr(m, "path") and isinstance(m.path, str)))


def replace_linear(model: nn.Module, name: str, layer: nn.Module) -> None:
    """Swap the submodule at dotted `name` (e.g. "blocks.0.attn.q_proj") for `layer`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, layer)
