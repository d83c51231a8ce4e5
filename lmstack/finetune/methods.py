"""Attaching a fine-tuning method to a base model, and saving / restoring what it trains.

    model, base, tok = build(cfg, device)     # full | lora | qlora | prompt | prefix on cfg.model
    save_output(cfg, model, base, tok, dir)   # full: an HF directory; the others: a PEFT adapter directory
    restore_output(cfg, model, base, dir)     # read it back into the live model (checkpoint resume)

`cfg` is the recipe's `SFTConfig` (finetune/sft.py); every method's hyper-parameters are fields there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmstack.finetune import peft_format
from lmstack.finetune.lora import apply_lora
from lmstack.finetune.prefix_tuning import PrefixTuning
from lmstack.finetune.prompt_tuning import PromptTuning
from lmstack.finetune.qlora import quantize_base
from lmstack.model import Transformer, load_model, model_path

METHODS = ("full", "lora", "qlora", "prompt", "prefix")


def build(cfg: Any, device: str) -> tuple[torch.nn.Module, Transformer, Any]:
    """(the module that trains, the underlying Transformer, tokenizer) with the method attached."""
    base, tok = load_model(cfg.model, device)
    base.train()
    torch.manual_seed(cfg.seed)
    if cfg.method == "full":
        return base, base, tok
    if cfg.method == "qlora":
        quantize_base(base)
    if cfg.method in ("lora", "qlora"):
        targets = cfg.target_regex or cfg.target_modules
        dtype = torch.bfloat16 if cfg.adapter_dtype == "bfloat16" else torch.float32
        apply_lora(base, targets, cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.rslora, dtype)
        return base, base, tok
    init = tok.encode(cfg.init_text) or [0]
    init = (init * (cfg.num_virtual_tokens // len(init) + 1))[: cfg.num_virtual_tokens]
    if cfg.method == "prompt":
        return PromptTuning(base, init).to(device), base, tok
    wrapper = PrefixTuning(base, cfg.num_virtual_tokens, seed=cfg.seed).to(device)
    wrapper.init_prefix_from_text(init)
    return wrapper, base, tok


def adapter_config(cfg: Any, model: torch.nn.Module) -> dict[str, Any]:
    base = str(model_path(cfg.model))
    if cfg.method in ("lora", "qlora"):
        targets = cfg.target_regex or cfg.target_modules
        return peft_format.lora_config(targets, cfg.r, cfg.lora_alpha, cfg.lora_dropout, cfg.rslora, base)
    return model.peft_config(base)


def save_output(cfg: Any, model: torch.nn.Module, base: Transformer, tok: Any, d: Path) -> None:
    """The run's product into directory d: an HF model (full) or a PEFT adapter (the other methods)."""
    if cfg.method == "full":
        base.save_pretrained(d, tokenizer=tok)
    elif cfg.method in ("lora", "qlora"):
        peft_format.save_lora(base, d, adapter_config(cfg, model))
    else:
        peft_format.write_adapter(d, adapter_config(cfg, model), model.peft_tensors())


def restore_output(cfg: Any, model: torch.nn.Module, base: Transformer, d: Path) -> dict[str, torch.Tensor]:
    """Read back what `save_output` wrote into the live model; returns the full state dict for the optimizer."""
    if cfg.method == "full":
        return Transformer.from_pretrained(d).state_dict()
    tensors = peft_format.read_adapter_weights(d)
    if cfg.method in ("prompt", "prefix"):
        model.load_peft_tensors(tensors)
    else:
        names = peft_format.module_names(base)
        for ours, layer in peft_format.lora_layers(base).items():
            for part in ("lora_A", "lora_B"):
                getattr(layer, part).weight.data.copy_(tensors[f"{peft_format.PREFIX}{names[ours]}.{part}.weight"])
    return model.state_dict()
