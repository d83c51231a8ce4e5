"""Which layers of a model get quantized, and swapping them between `nn.Linear` and `QuantLinear`.

Quantized: every linear layer inside the transformer blocks (attention q/k/v/o, FFN gate/up/down, MoE experts)
and, unless `head=False`, the LM head. Kept in floating point: embeddings, norms, biases and MoE routers, which
hold ~0.1% of the weights of a block but are sensitive (what GPTQ / AWQ / bitsandbytes tools do too).
With tied embeddings the head's quantized copy is separate from the (floating-point) embedding table.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmstack.quant.embedding import QuantEmbedding
from lmstack.quant.linear import QuantLinear, replace_linear
from lmstack.quant.rtn import QuantizedWeight


def quantizable_linears(model: nn.Module, head: bool = True) -> list[str]:
    """Dotted names of the linears to quantize, in model order (blocks first, then `lm_head`)."""
    names = [
        f"blocks.{i}.{n}"
        for i, block in enumerate(model.blocks)
        for n, m in block.named_modules()
        if isinstance(m, nn.Linear) and "router" not in n
    ]
    return names + (["lm_head"] if head else [])


def untie_head(model: nn.Module) -> None:
    """Give the LM head its own copy of a tied embedding matrix (it will be changed / quantized separately)."""
    if model.lm_head.weight is model.embed.weight:
        model.lm_head.weight = nn.Parameter(model.embed.weight.detach().clone(), requires_grad=False)


def apply_quantized(
    model: nn.Module, qweights: dict[str, Any], kernel: str = "auto", act_quant: bool = False
) -> nn.Module:
    """Replace each named nn.Linear by a `QuantLinear` built from its `QuantizedWeight` (or an `NF4Linear` from an
    `NF4Tensor`), in place."""
    from lmstack.quant.nf4 import NF4Linear, NF4Tensor

    for name, qw in qweights.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear), f"{name} is {type(layer).__name__}, expected nn.Linear"
        if isinstance(qw, NF4Tensor):
            ql = NF4Linear(qw, layer.bias.data if layer.bias is not None else None)
        else:
            ql = QuantLinear(qw, layer.bias, kernel=kernel, act_quant=act_quant)
        replace_linear(model, name, ql.to(layer.weight.device))
    return model


def dequantize_model(model: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Replace every `QuantLinear` by an nn.Linear holding its dequantized weight (in place): the float model
    the quantized one computes, for export (GGUF, HF) and for parity tests."""
    from lmstack.quant.nf4 import NF4Linear

    for name, layer in list(model.named_modules()):
        if isinstance(layer, (QuantLinear, NF4Linear)):
            lin = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, dtype=dtype)
            with torch.no_grad():
                w = layer.dequantized(dtype) if isinstance(layer, QuantLinear) else layer.dequantized_weight(dtype)
                lin.weight.copy_(w)
                if layer.bias is not None:
                    lin.bias.copy_(layer.bias)
            lin.requires_grad_(False)
            replace_linear(model, name, lin.to(next(layer.buffers()).device))
    embed = getattr(model, "embed", None)
    if isinstance(embed, QuantEmbedding):  # the int8 table it shared with the head, as a float table again
        table = embed(torch.arange(embed.num_embeddings, device=embed.table.device))
        model.embed = nn.Embedding.from_pretrained(table, freeze=True)
        head = getattr(model, "lm_head", None)
        if isinstance(head, nn.Linear) and head.weight.dtype == table.dtype and torch.equal(head.weight, table):
            model.embed.weight = head.weight  # tied again: the same values, one tensor
    return model


def quantized_layers(model: nn.Module) -> dict[str, QuantizedWeight]:
    """{name: QuantizedWeight} of every QuantLinear in the model (exact integers, for saving)."""
    return {n: m.quantized_weight() for n, m in model.named_modules() if isinstance(m, QuantLinear)}
