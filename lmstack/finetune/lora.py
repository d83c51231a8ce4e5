"""LoRA: low-rank adapters on frozen linear layers (Hu et al. 2021), with rsLoRA scaling, merge and unmerge.

A frozen weight W (out, in) gets a trainable update of rank r:

    y = x W^T + scale * (dropout(x) A^T) B^T,     A (r, in), B (out, r),     scale = alpha / r
                                                                               (rsLoRA: alpha / sqrt(r))
A starts Kaiming-uniform (a = sqrt(5), PyTorch's nn.Linear default) and B starts at zero, so the adapted model
equals the base model at step 0 and only B A moves away from it. alpha / r keeps the update's size independent
of r when alpha is fixed; Kalajdzievski 2023 ("rsLoRA") shows alpha / sqrt(r) is the scaling that keeps
learning stable as r grows. Trainable parameters per adapted matrix: r (in + out).

Merge folds the update into W (W += scale B A; inference then costs nothing extra) and unmerge subtracts it
again; the base stays a plain nn.Linear, or an `NF4Linear` for QLoRA (which cannot be merged in place: the
merged weight would need requantizing; `merged_state_dict` exports dequantized + merged weights instead).

Targets follow PEFT's rules (`peft.tuners.tuners_utils.check_target_module_exists`): a list of names matches a
module whose name equals an entry or ends with "." + entry; a single string is a regex that must match the whole
module name; "all-linear" is every linear layer but the output head. Names are the Hugging Face module names of
the model's family (`model.layers.0.self_attn.q_proj`) so a PEFT config means the same thing here and in PEFT;
for models with no HF family, our own names (`blocks.0.attn.q_proj`). Equality with `peft.get_peft_model` is
tested (tests/finetune/test_lora.py). The PEFT file format lives in `peft_format.py`.
Left out: DoRA, LoRA on embeddings / convolutions, per-module rank or alpha patterns, bias training.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from lmstack.model import Transformer
from lmstack.quant.nf4 import NF4Linear


class LoRALinear(nn.Module):
    """`base` (nn.Linear or NF4Linear, frozen) plus scale * B A; `merge()` / `unmerge()` fold it in and out."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False) -> None:
        super().__init__()
        if r <= 0:
            raise ValueError(f"--r: got {r}, expected > 0")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = r, alpha
        self.scale = alpha / math.sqrt(r) if rslora else alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Linear(self.in_features, r, bias=False)  # (r, in)
        self.lora_B = nn.Linear(r, self.out_features, bias=False)  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)  # the adapted model starts equal to the base model
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)

    def delta_weight(self) -> torch.Tensor:
        """scale * B A: (out, in), the update merge adds to the base weight."""
        return self.scale * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = self.base(x)
        if self.merged:
            return y
        a = self.lora_A.weight
        update = self.lora_B(self.lora_A(self.dropout(x.to(a.dtype))))  # (..., out), in the adapter's dtype
        return y + (self.scale * update).to(y.dtype)

    def merge(self) -> None:
        if isinstance(self.base, NF4Linear):
            raise ValueError("an NF4 base cannot be merged in place; export with merged_state_dict()")
        if not self.merged:
            self.base.weight.data += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.base.weight.data -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False


def module_names(model: Transformer) -> dict[str, str]:
    """Every linear layer of the model: our module name -> the name targets are matched against (HF's when the
    model has an HF family, else ours). The output head is listed (PEFT can target it) as "lm_head"."""
    from lmstack.model.hf import hf_family
    from lmstack.model.hf_names import rename

    family = hf_family(model.config)
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, NF4Linear)) and not name.endswith(("lora_A", "lora_B")):
            name = name.removesuffix(".base")
            if family == "lmstack" or name == "lm_head":
                out[name] = name
                continue
            hf = rename(f"{name}.weight", family, to_hf=True)
            if hf is None or hf.endswith(("c_attn.weight",)):
                raise ValueError(f"LoRA: module {name} has no separate HF name in family {family!r}")
            out[name] = hf.removesuffix(".weight")
    return out


def matches(target: str | list[str], name: str) -> bool:
    """PEFT's target rule: a list matches by full name or "." suffix; a string is a full-match regex."""
    if isinstance(target, str):
        if target == "all-linear":
            return name != "lm_head"
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith("." + t) for t in target)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def apply_lora(
    model: Transformer,
    targets: str | list[str],
    r: int,
    alpha: float,
    dropout: float = 0.0,
    rslora: bool = False,
    dtype: torch.dtype = torch.float32,
) -> list[str]:
    """Freeze every weight, wrap each targeted linear in a LoRALinear (adapter weights in `dtype`), and return
    the adapted module names (ours). An error names the targets when nothing matches."""
    names = module_names(model)
    chosen = [ours for ours, theirs in names.items() if matches(targets, theirs)]
    if not chosen:
        raise ValueError(f"--target_modules: {targets!r} matches no linear layer; names look like "
                         f"{list(names.values())[:3]}")  # fmt: skip
    if "lm_head" in chosen and model.config.tie_embeddings:
        raise ValueError("--target_modules: lm_head is tied to the embedding here; LoRA on it is not supported")
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    for name in chosen:
        lora = LoRALinear(model.get_submodule(name), r, alpha, dropout, rslora)
        lora.lora_A.to(device=device, dtype=dtype)
        lora.lora_B.to(device=device, dtype=dtype)
        _set_module(model, name, lora)
    return chosen


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge_lora(model: nn.Module) -> None:
    """Fold every adapter into its base weight and put the plain base layers back: a plain Transformer again."""
    for name, lora in lora_layers(model).items():
        lora.merge()
        _set_module(model, name, lora.base)


def merged_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """The model's weights with every adapter folded in, NF4 bases dequantized: a plain Transformer state dict."""
    sd = {}
    for name, mod in model.named_modules():
        if any(isinstance(m, (LoRALinear, NF4Linear)) for m in _ancestors(model, name)):
            continue  # written by its LoRALinear / NF4Linear ancestor
        if isinstance(mod, LoRALinear):
            base = mod.base
            w = base.dequantized_weight(torch.float32) if isinstance(base, NF4Linear) else base.weight.data.float()
            w = w if mod.merged else w + mod.delta_weight().float()
            sd[f"{name}.weight"] = w.to(model.embed.weight.dtype)
            if base.bias is not None:
                sd[f"{name}.bias"] = base.bias.data
        elif isinstance(mod, NF4Linear):
            sd[f"{name}.weight"] = mod.dequantized_weight(model.embed.weight.dtype)
            if mod.bias is not None:
                sd[f"{name}.bias"] = mod.bias.data
        else:
            for pname, p in mod.named_parameters(recurse=False):
                sd[f"{name}.{pname}" if name else pname] = p.data
    return sd


def _ancestors(model: nn.Module, name: str) -> list[nn.Module]:
    parts = name.split(".") if name else []
    return [model.get_submodule(".".join(parts[:i])) for i in range(1, len(parts))]


def trainable_report(model: nn.Module) -> dict[str, float]:
    """Trainable vs total parameters (unique tensors; NF4 buffers count as the values they store)."""
    params = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    total += sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, NF4Linear))
    return {"trainable": trainable, "total": total, "trainable_pct": 100.0 * trainable / max(total, 1)}
