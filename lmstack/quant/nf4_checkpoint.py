"""NF4 checkpoints in the bitsandbytes / `transformers` layout (`load_in_4bit`, `bnb_4bit_quant_type="nf4"`).

`transformers` saves a 4-bit bitsandbytes model as an ordinary HF directory in which each quantized linear
`<name>` holds, instead of a float `<name>.weight`:

    <name>.weight                                  (n/2, 1) uint8   two NF4 codes per byte, first in the high nibble
    <name>.weight.absmax                           (n/64,)          block absmax: uint8 codes (double quant) or fp32
    <name>.weight.quant_map                        (16,) fp32       the NF4 levels
    <name>.weight.nested_absmax                    (n/64/256,) fp32 double quantization: absmax of each 256 absmaxes
    <name>.weight.nested_quant_map                 (256,) fp32      the 8-bit dynamic code of the absmax codes
    <name>.weight.quant_state.bitsandbytes__nf4    uint8            JSON: quant_type, blocksize, dtype, shape,
                                                                    nested_blocksize, nested_offset, nested_dtype

(bitsandbytes' `QuantState.as_dict(packed=True)`), and config.json has `"quantization_config":
{"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4", ...}`. The codes come
from `nf4.py` (byte-equal to bitsandbytes). The LM head is never quantized (as `transformers` does), so the
directory loads in `transformers` + bitsandbytes as well as here, where each layer becomes an `NF4Linear`.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from lmstack.quant.nf4 import NF4_LEVELS, NF4Linear, NF4Tensor, dynamic_map

STATE = "weight.quant_state.bitsandbytes__nf4"


def nf4_config(dtype: str, double_quant: bool) -> dict[str, Any]:
    return {
        "quant_method": "bitsandbytes",
        "load_in_4bit": True,
        "load_in_8bit": False,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": double_quant,
        "bnb_4bit_compute_dtype": dtype,
        "bnb_4bit_quant_storage": "uint8",
        "llm_int8_skip_modules": ["lm_head"],
        "llm_int8_threshold": 6.0,
        "llm_int8_has_fp16_weight": False,
        "llm_int8_enable_fp32_cpu_offload": False,
    }


def nf4_tensors(prefix: str, q: NF4Tensor, dtype: str) -> dict[str, torch.Tensor]:
    """The checkpoint tensors of one NF4 layer (see the module docstring)."""
    state = {"quant_type": "nf4", "blocksize": q.blocksize, "dtype": dtype, "shape": list(q.shape)}
    out = {
        f"{prefix}.weight": q.packed.reshape(-1, 1).contiguous(),
        f"{prefix}.weight.absmax": q.absmax.contiguous(),
        f"{prefix}.weight.quant_map": torch.tensor(NF4_LEVELS, dtype=torch.float32),
    }
    if q.double_quant:
        out[f"{prefix}.weight.nested_absmax"] = q.absmax_scale.contiguous()
        out[f"{prefix}.weight.nested_quant_map"] = dynamic_map()
        state.update(nested_blocksize=256, nested_offset=q.absmax_offset, nested_dtype="float32")
    out[f"{prefix}.{STATE}"] = torch.tensor(list(json.dumps(state).encode("utf-8")), dtype=torch.uint8)
    return out


def read_nf4(prefix: str, tensors: dict[str, torch.Tensor], layer: nn.Linear) -> NF4Tensor:
    """Pop one layer's NF4 tensors from `tensors`; anything this loader cannot run is a ValueError naming it."""
    try:
        state = json.loads(bytes(tensors.pop(f"{prefix}.{STATE}").tolist()).decode("utf-8"))
        packed = tensors.pop(f"{prefix}.weight").reshape(-1)
        absmax = tensors.pop(f"{prefix}.weight.absmax")
        quant_map = tensors.pop(f"{prefix}.weight.quant_map")
        nested = "nested_offset" in state
        scale = tensors.pop(f"{prefix}.weight.nested_absmax") if nested else None
        nested_map = tensors.pop(f"{prefix}.weight.nested_quant_map") if nested else None
    except KeyError as e:
        raise ValueError(f"checkpoint is missing tensor {e.args[0]!r}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{prefix}.{STATE}: not a JSON quantization state") from None
    if state.get("quant_type") != "nf4" or not torch.equal(quant_map.float(), torch.tensor(NF4_LEVELS)):
        raise ValueError(f"{prefix}: quant_type {state.get('quant_type')!r} / quant_map is not NF4 (fp4 unsupported)")
    if nested and (state.get("nested_blocksize") != 256 or not torch.equal(nested_map.float(), dynamic_map())):
        raise ValueError(f"{prefix}: double quantization other than 256-blocks of the dynamic map is unsupported")
    shape = tuple(state.get("shape") or ())
    if shape != (layer.out_features, layer.in_features):
        raise ValueError(f"{prefix}: quantized shape {shape} does not match the layer ({layer.out_features}, "
                         f"{layer.in_features})")  # fmt: skip
    bs = int(state["blocksize"])
    n_blocks = -(-shape[0] * shape[1] // bs)
    if packed.numel() != n_blocks * bs // 2 or absmax.numel() != n_blocks:
        raise ValueError(f"{prefix}.weight: {packed.numel()} bytes / {absmax.numel()} absmax do not fit shape {shape}")
    return NF4Tensor(packed.to(torch.uint8), absmax, shape, torch.float32, bs, scale,
                     float(state.get("nested_offset", 0.0)))  # fmt: skip


def nf4_layers(tensors: dict[str, torch.Tensor], model: nn.Module, our_name: Any) -> dict[str, tuple[str, nn.Module]]:
    """{our name: (checkpoint prefix, NF4Linear)} for every NF4 layer in `tensors` (their tensors are popped)."""
    layers = {}
    for key in sorted(k for k in tensors if k.endswith("." + STATE)):
        prefix = key.removesuffix("." + STATE)
        name = our_name(prefix)
        layer = model.get_submodule(name) if name is not None else None
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"NF4 tensor {key} does not belong to a linear layer of this model")
        q = read_nf4(prefix, tensors, layer)
        bias = torch.zeros(layer.out_features) if layer.bias is not None else None  # loaded with the rest
        layers[name] = (prefix, NF4Linear(q, bias))
    return layers
