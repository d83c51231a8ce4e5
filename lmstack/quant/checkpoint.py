"""Quantized checkpoints: an HF model directory in the GPTQ tensor layout, reloaded by `Transformer.from_pretrained`.

A quantized directory is an ordinary HF directory (config.json, model.safetensors, generation_config.json,
tokenizer files) in which every quantized linear `<name>` is stored as four tensors instead of `<name>.weight`:

    <name>.qweight  (K * b / 32, N) int32   integers, 32 / b per word along the input dim   (`packing.py`)
    <name>.qzeros   (G, N * b / 32) int32   zero points minus 1 (GPTQ v1), packed along the output dim
    <name>.scales   (G, N) float16          one scale per group and output channel
    <name>.g_idx    (K,) int32              group of each input column (act-order permutes it)
    <name>.bias     (N,)                    unchanged, if the layer has one

(with `--float_zero`, `<name>.mins (G, N) float16`, the fp16 offset of each group, w_hat = q * s + min,
replaces qzeros and config.json says `"zero_point": "float"`: an lmstack extension other GPTQ loaders do not
read), and config.json carries the `transformers` GPTQConfig fields (`meta.act_quant = "int8-per-token"` marks a
SmoothQuant W8A8 model, whose activations are quantized at run time too):

    "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": true,
                            "desc_act": false, "checkpoint_format": "gptq", "lm_head": true,
                            "meta": {"quantizer": "lmstack", "method": "awq", ...}}

A head quantized on its own grid (`--head_bits 8` beside 4-bit blocks) is described the way GPTQModel describes
per-module settings, `"dynamic": {"+:lm_head": {"bits": 8, "group_size": -1, "sym": true}}` (a regex over
checkpoint prefixes; `layer_spec`). `"meta": {"embedding": "lm_head"}` marks a tied model whose input embedding
reads that int8 head's table (`embedding.py`): the file still holds `embed_tokens.weight`, the same values in
`dtype`, for loaders that do not share it; lmstack's loader does not load it.

This is the layout AutoGPTQ / GPTQModel write and `transformers` reads (with a GPTQ backend installed), so
GPTQ kernels elsewhere can run these files. RTN, GPTQ and AWQ results all fit it: each is a group-wise integer
grid; AWQ's scales are already folded into the norms / previous layers, which are stored as ordinary float
tensors (`meta.method` records which algorithm produced the integers). Floating-point tensors (embeddings,
norms, biases) are saved in `dtype` (bfloat16 by default; config.json's `dtype` says so).

Loading (`load_quantized`, called by `lmstack.model.hf.load_hf_dir` when config.json has a
`quantization_config`): the model is built on the meta device, each quantized linear becomes a `QuantLinear`
(fused kernel when the shape allows, see `linear.py`), the remaining modules are materialised and filled by the
model stage's own name mapping and shape checks. No full-precision copy of the quantized layers is ever made.
Errors name the tensor or field. Left out: GPT-2's fused c_attn layout, the AWQ GEMM layout, exllama v2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmstack.common.atomic import atomic_files
from lmstack.model.config import ModelConfig
from lmstack.model.hf import config_to_hf, hf_family, state_dict_from_hf, state_dict_to_hf
from lmstack.model.hf_names import rename
from lmstack.model.save_target import SAVED_BY, check_save_target, remove_stale_weights
from lmstack.model.transformer import DTYPES, Transformer
from lmstack.quant.embedding import QuantEmbedding, can_share_table
from lmstack.quant.linear import QuantLinear, replace_linear
from lmstack.quant.packing import GPTQ_SUFFIXES, from_gptq_tensors, gptq_tensors
from lmstack.quant.rtn import QuantizedWeight, QuantSpec


def _hf_prefix(name: str, family: str) -> str:
    """Our module name -> its name in the checkpoint (blocks.0.attn.q_proj -> model.layers.0.self_attn.q_proj)."""
    if family == "lmstack":
        return name
    hf = rename(name + ".weight", family, to_hf=True)
    assert hf is not None, f"no {family} name for {name}"
    return hf.removesuffix(".weight")


def _our_name(prefix: str, family: str) -> str | None:
    if family == "lmstack":
        return prefix
    ours = rename(prefix + ".weight", family, to_hf=False)
    return None if ours is None else ours.removesuffix(".weight")


def quantization_config(spec: QuantSpec, head: bool, meta: dict[str, Any]) -> dict[str, Any]:
    qc = {
        "quant_method": "gptq",
        "bits": spec.bits,
        "group_size": spec.group_size,
        "sym": spec.sym,
        "desc_act": bool(meta.get("act_order", False)),
        "checkpoint_format": "gptq",
        "lm_head": head,
        "meta": {"quantizer": "lmstack", **meta},
    }
    if spec.float_zero:
        qc["zero_point"] = "float"  # lmstack's extension: `<name>.mins` replaces qzeros (packing.py)
    return qc


def dynamic_entry(spec: QuantSpec) -> dict[str, Any]:
    """A `quantization_config.dynamic` value: the fields in which one module's grid differs from the rest."""
    return {"bits": spec.bits, "group_size": spec.group_size, "sym": spec.sym}


def layer_spec(qc: dict[str, Any], prefix: str, where: str) -> QuantSpec:
    """The grid of the layer stored under `prefix`: the config's, with the first matching `dynamic` override
    ({"+:<regex>": {bits, group_size, sym}}, GPTQModel's per-module format; "-:" entries mean "not quantized")."""
    for key, override in (qc.get("dynamic") or {}).items():
        if key.startswith("-:"):
            continue
        if re.fullmatch(key.removeprefix("+:"), prefix):
            return spec_from_config({**qc, **override}, f"{where} (dynamic {key!r})")
    return spec_from_config(qc, where)


def save_quantized(
    model: Transformer,
    qweights: dict[str, Any],
    path: str | Path,
    tokenizer: Any = None,
    meta: dict[str, Any] | None = None,
    dtype: str = "bfloat16",
    overwrite: bool = False,
) -> Path:
    """Write an HF directory with `qweights` ({our linear name: QuantizedWeight, or NF4Tensor for the
    bitsandbytes layout of `nf4_checkpoint.py`}) and every other tensor of `model` in `dtype`. The save rules of
    `lmstack.model.save_target` apply (a foreign non-empty directory needs `overwrite`; no other file is touched);
    files appear atomically."""
    from safetensors.torch import save_file

    from lmstack.quant.nf4 import NF4Tensor
    from lmstack.quant.nf4_checkpoint import nf4_config, nf4_tensors

    cfg = model.config
    family = hf_family(cfg)
    if family == "gpt2":
        raise ValueError("quantized checkpoints of gpt2-family models (fused c_attn) are not supported")
    nf4 = all(isinstance(q, NF4Tensor) for q in qweights.values())
    _, tensors = state_dict_to_hf(model)
    quantized_prefixes = {_hf_prefix(n, family) for n in qweights}
    out = {k: v.detach().to(DTYPES[dtype]).cpu().contiguous() for k, v in tensors.items()
           if k.removesuffix(".weight") not in quantized_prefixes or not k.endswith(".weight")}  # fmt: skip
    if nf4:
        qc = nf4_config(dtype, double_quant=all(q.double_quant for q in qweights.values()))
        for name, q in qweights.items():
            out.update(nf4_tensors(_hf_prefix(name, family), q, dtype))
    else:
        specs = {qw.spec for name, qw in qweights.items() if name != "lm_head"} or {qweights["lm_head"].spec}
        if len(specs) != 1:
            raise ValueError(f"all quantized block layers must share one bits/group_size/sym setting, got {specs}")
        spec = specs.pop()
        qc = quantization_config(spec, "lm_head" in qweights, meta or {})
        if "lm_head" in qweights and qweights["lm_head"].spec != spec:  # --head_bits: GPTQModel's per-module override
            head = qweights["lm_head"].spec
            if head.float_zero:
                raise ValueError("a head with its own grid must not use --float_zero")
            entry = dynamic_entry(head) | ({"zero_point": "int"} if spec.float_zero else {})  # not inherited
            qc["dynamic"] = {f"+:{re.escape(_hf_prefix('lm_head', family))}": entry}
        for name, qw in qweights.items():
            prefix = _hf_prefix(name, family)
            for suffix, t in gptq_tensors(qw.q, qw.scales, qw.zeros, qw.g_idx, qw.spec.bits).items():
                out[f"{prefix}.{suffix}"] = t.cpu().contiguous()
    config = config_to_hf(ModelConfig.from_dict({**cfg.to_dict(), "dtype": dtype}))
    config["quantization_config"] = qc
    path = Path(path)
    ours = check_save_target(path, overwrite, flag="--out_dir")
    with atomic_files(path) as tmp:
        save_file(out, tmp / "model.safetensors", metadata={"format": "pt", "saved_by": SAVED_BY})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        gen = {k: getattr(cfg, k) for k in ("bos_token_id", "eos_token_id") if getattr(cfg, k) is not None}
        (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2))
        if tokenizer is not None:
            tokenizer.save(tmp)
        written = {f.name for f in tmp.iterdir()}
    remove_stale_weights(path, written, ours)
    return path


def spec_from_config(qc: dict[str, Any], where: str) -> QuantSpec:
    """QuantSpec from a GPTQ `quantization_config`; anything this loader cannot run is a ValueError naming it."""
    fmt = qc.get("checkpoint_format", "gptq")
    if fmt != "gptq":
        raise ValueError(f"{where}: quantization_config.checkpoint_format={fmt!r} is not supported (expected 'gptq')")
    try:
        zero_point = qc.get("zero_point", "int")
        if zero_point not in ("int", "float"):
            raise ValueError(f"zero_point={zero_point!r}: expected 'int' or 'float'")
        bits, group_size, sym = int(qc["bits"]), int(qc.get("group_size", -1)), bool(qc.get("sym", True))
        return QuantSpec(bits, group_size, sym, float_zero=zero_point == "float")
    except KeyError:
        raise ValueError(f"{where}: quantization_config has no 'bits'") from None
    except ValueError as e:
        raise ValueError(f"{where}: quantization_config: {e}") from None


def gptq_layers(
    tensors: dict[str, torch.Tensor], qc: dict[str, Any], model: nn.Module, our_name: Any, kernel: str
) -> dict[str, tuple[str, nn.Module]]:
    """{our name: (checkpoint prefix, QuantLinear)} for every GPTQ layer in `tensors` (their tensors are popped)."""
    spec_from_config(qc, "config.json")  # the config itself is valid before any layer is read
    act_quant = (qc.get("meta") or {}).get("act_quant") == "int8-per-token"  # SmoothQuant W8A8
    layers = {}
    for prefix in sorted({k.removesuffix(".qweight") for k in tensors if k.endswith(".qweight")}):
        name = our_name(prefix)
        layer = model.get_submodule(name) if name is not None else None
        if not isinstance(layer, nn.Linear):
            raise ValueError(f"quantized tensor {prefix}.qweight does not belong to a linear layer of this model")
        spec = layer_spec(qc, prefix, "config.json")
        needed = ("qweight", "mins" if spec.float_zero else "qzeros", "scales")
        missing = [f"{prefix}.{s}" for s in needed if f"{prefix}.{s}" not in tensors]
        if missing:
            raise ValueError(f"checkpoint is missing tensor {missing[0]!r}")
        parts = {s: tensors.pop(f"{prefix}.{s}") for s in GPTQ_SUFFIXES if f"{prefix}.{s}" in tensors}
        try:
            q, scales, zeros, g_idx = from_gptq_tensors(parts, spec.bits, layer.in_features, layer.out_features)
        except ValueError as e:
            raise ValueError(f"quantized layer {prefix}: {e}") from None
        qw = QuantizedWeight(q, scales, zeros, g_idx, spec)
        bias = torch.zeros(layer.out_features) if layer.bias is not None else None  # loaded with the rest
        layers[name] = (prefix, QuantLinear(qw, bias, kernel=kernel, act_quant=act_quant))
    return layers


def load_quantized(
    hf: dict[str, Any], cfg: ModelConfig, tensors: dict[str, torch.Tensor], device: str | torch.device = "cpu"
) -> Transformer:
    """Build a Transformer whose quantized linears are `QuantLinear`s (GPTQ layout) or `NF4Linear`s (bitsandbytes
    layout); every other tensor is checked and loaded by the model stage's own mapping."""
    from lmstack.quant.nf4_checkpoint import nf4_layers

    qc = hf["quantization_config"]
    method = qc.get("quant_method")
    family = hf["model_type"]
    kernel = "auto" if torch.device(device).type == "cpu" else "dequant"  # the fused kernels are CPU kernels
    with torch.device("meta"):
        model = Transformer(cfg)
    tensors = dict(tensors)
    our_name = lambda prefix: _our_name(prefix, family)  # noqa: E731
    if method == "gptq":
        layers = gptq_layers(tensors, qc, model, our_name, kernel)
    elif method == "bitsandbytes" and qc.get("load_in_4bit") and qc.get("bnb_4bit_quant_type") == "nf4":
        layers = nf4_layers(tensors, model, our_name)
    else:
        raise ValueError(f"config.json: quantization_config.quant_method={method!r} is not supported "
                         "(expected 'gptq', or 'bitsandbytes' with 4-bit nf4)")  # fmt: skip
    if not layers:
        raise ValueError("config.json has a quantization_config but the checkpoint holds no quantized layer")
    # the model stage checks every other tensor's name and shape; quantized weights stand in as meta placeholders
    stand_ins = {f"{prefix}.weight": model.get_submodule(n).weight for n, (prefix, _) in layers.items()}
    sd = state_dict_from_hf({**tensors, **stand_ins}, family, model)
    for name, (_, layer) in layers.items():
        sd.pop(f"{name}.weight", None)
        replace_linear(model, name, layer.to(device))
    shared = (qc.get("meta") or {}).get("embedding") == "lm_head"
    if shared:  # the input embedding reads the int8 head's table (embedding.py); the saved float copy is not kept
        if "lm_head" not in layers or not can_share_table(model.lm_head):
            raise ValueError("config.json: quantization_config.meta.embedding='lm_head' needs an 8-bit per-channel "
                             "quantized lm_head in the checkpoint")  # fmt: skip
        model.embed = QuantEmbedding(model.lm_head, DTYPES[cfg.dtype])
        sd.pop("embed.weight", None)
    quantized = {id(layer) for _, layer in layers.values()} | ({id(model.embed)} if shared else set())
    for module in model.modules():  # materialise everything still on the meta device
        if id(module) not in quantized:
            module.to_empty(device=device, recurse=False)
    if cfg.tie_embeddings and "lm_head" not in layers:
        model.lm_head.weight = model.embed.weight
    missing, _ = model.load_state_dict({k: v.to(DTYPES[cfg.dtype]) for k, v in sd.items()}, strict=False)
    owned = tuple(f"{n}." for n in layers)
    missing = [k for k in missing if not k.startswith(owned) and not (k == "lm_head.weight" and cfg.tie_embeddings)]
    assert not missing, f"parameters left unloaded: {missing}"
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
