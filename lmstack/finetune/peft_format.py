"""Adapters on disk in Hugging Face PEFT's format, so they move between lmstack and `peft` both ways.

A PEFT adapter directory holds
    adapter_config.json          {"peft_type": "LORA" | "PROMPT_TUNING" | "PREFIX_TUNING", "task_type": "CAUSAL_LM",
                                  the method's hyper-parameters, "base_model_name_or_path": ...}
    adapter_model.safetensors    the trainable tensors only, under PEFT's names

LoRA tensor names are the HF module name prefixed with `base_model.model.` and suffixed with `.lora_A.weight`
(r, in) / `.lora_B.weight` (out, r), e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
Prompt tuning stores `prompt_embeddings` (n_virtual, D); prefix tuning stores PEFT's prefix table, also named
`prompt_embeddings`, (n_virtual, L * 2 * Hkv * hd) read as (n_virtual, L, 2 (key, value), Hkv, hd) -- see
prefix_tuning.py. So `peft.PeftModel.from_pretrained(hf_model, dir)` loads what we save, and an adapter PEFT saved
loads here with `load_adapter` (tests/finetune/test_peft_format.py, test_prefix_prompt.py).
Left out: LoRA variants PEFT can save but we do not implement (DoRA, rank/alpha patterns, trained biases,
modules_to_save); loading one is an error naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmstack.common.atomic import atomic_dir, atomic_write_text
from lmstack.finetune.lora import apply_lora, lora_layers, module_names
from lmstack.model import Transformer

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise FileNotFoundError(f"--adapter: {path} is not a PEFT adapter directory (no {CONFIG})")
    try:
        return json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--adapter: {path / CONFIG} is not valid JSON: {e}") from None


def read_adapter_weights(path: str | Path) -> dict[str, torch.Tensor]:
    f = Path(path) / WEIGHTS
    if not f.is_file():
        raise FileNotFoundError(f"--adapter: {f} is missing")
    return load_file(str(f))


def write_adapter(path: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write config + tensors atomically (a crash leaves the previous adapter directory intact)."""
    full = {"task_type": "CAUSAL_LM", "inference_mode": True, "revision": None, **config}
    with atomic_dir(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / WEIGHTS),
                  metadata={"format": "pt"})  # fmt: skip
        atomic_write_text(tmp / CONFIG, json.dumps(full, indent=2))
    return Path(path)


# ---- LoRA ------------------------------------------------------------------------------------------------------


def lora_config(targets: str | list[str], r: int, alpha: float, dropout: float, rslora: bool, base: str) -> dict:
    return {
        "peft_type": "LORA", "base_model_name_or_path": base, "r": r, "lora_alpha": alpha, "lora_dropout": dropout,
        "target_modules": targets, "use_rslora": rslora, "bias": "none", "fan_in_fan_out": False,
        "init_lora_weights": True, "use_dora": False, "modules_to_save": None, "layers_to_transform": None,
        "rank_pattern": {}, "alpha_pattern": {},
    }  # fmt: skip


def save_lora(model: Transformer, path: str | Path, config: dict[str, Any]) -> Path:
    """Save the model's LoRA weights under PEFT's names, with `config` (from `lora_config`) as adapter_config.json."""
    names = module_names(model)
    tensors = {}
    for ours, layer in lora_layers(model).items():
        tensors[f"{PREFIX}{names[ours]}.lora_A.weight"] = layer.lora_A.weight.data
        tensors[f"{PREFIX}{names[ours]}.lora_B.weight"] = layer.lora_B.weight.data
    return write_adapter(path, config, tensors)


def load_lora(model: Transformer, path: str | Path) -> list[str]:
    """Apply the LoRA adapter saved at `path` (ours or PEFT's) to `model` in place; returns the adapted names."""
    cfg = read_adapter_config(path)
    if cfg.get("peft_type") != "LORA":
        raise ValueError(f"--adapter: {path} holds a {cfg.get('peft_type')} adapter, expected LORA")
    for key, ok in (("use_dora", False), ("bias", "none"), ("fan_in_fan_out", False)):
        if cfg.get(key, ok) != ok:
            raise ValueError(f"--adapter: {path}: {key}={cfg[key]!r} is not supported (expected {ok!r})")
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save", "layers_to_transform"):
        if cfg.get(key):
            raise ValueError(f"--adapter: {path}: {key} is not supported")
    tensors = read_adapter_weights(path)
    targets = cfg["target_modules"]
    dtype = next(iter(tensors.values())).dtype
    chosen = apply_lora(model, targets, cfg["r"], cfg["lora_alpha"], 0.0, cfg.get("use_rslora", False), dtype)
    names = module_names(model)
    expected = set()
    for ours in chosen:
        layer = model.get_submodule(ours)
        for part in ("lora_A", "lora_B"):
            key = f"{PREFIX}{names[ours]}.{part}.weight"
            if key not in tensors:
                raise ValueError(f"--adapter: {path}/{WEIGHTS} has no tensor {key}")
            w = getattr(layer, part).weight
            if tensors[key].shape != w.shape:
                raise ValueError(
                    f"--adapter: {key} has shape {tuple(tensors[key].shape)}, model needs {tuple(w.shape)}"
                )
            w.data.copy_(tensors[key])
            expected.add(key)
    extra = set(tensors) - expected
    if extra:
        raise ValueError(f"--adapter: {path}/{WEIGHTS} has tensors for no targeted module, e.g. {sorted(extra)[0]}")
    return chosen


# ---- any adapter ----------------------------------------------------------------------------------------------


def load_adapter(model: Transformer, path: str | Path, merge: bool = False) -> torch.nn.Module:
    """The model with the adapter at `path` applied: LoRA in place (merged into the weights when `merge`), prompt or
    prefix tuning as a wrapping module. What `lmstack generate / chat --adapter DIR` call."""
    from lmstack.finetune.lora import merge_lora
    from lmstack.finetune.prefix_tuning import PrefixTuning
    from lmstack.finetune.prompt_tuning import PromptTuning

    cfg = read_adapter_config(path)
    kind = cfg.get("peft_type")
    if kind == "LORA":
        load_lora(model, path)
        if merge:
            merge_lora(model)
        return model.eval()
    if kind not in ("PROMPT_TUNING", "PREFIX_TUNING"):
        raise ValueError(f"--adapter: {path}: peft_type {kind!r} is not supported (LORA, PROMPT_TUNING, PREFIX_TUNING)")
    if cfg.get("num_transformer_submodules", 1) != 1 or cfg.get("prefix_projection"):
        raise ValueError(f"--adapter: {path}: encoder-decoder prompts and prefix_projection are not supported")
    n = int(cfg["num_virtual_tokens"])
    tensors = read_adapter_weights(path)
    wrapper = PromptTuning(model, [0] * n) if kind == "PROMPT_TUNING" else PrefixTuning(model, n)
    expected = wrapper.peft_tensors()["prompt_embeddings"].shape
    got = tensors.get("prompt_embeddings")
    if got is None or got.shape != expected:
        shape = None if got is None else tuple(got.shape)
        raise ValueError(f"--adapter: {path}: prompt_embeddings has shape {shape}, this model needs {tuple(expected)}")
    wrapper.load_peft_tensors(tensors)
    return wrapper.eval()


def save_prompt_adapter(wrapper: torch.nn.Module, path: str | Path, base: str) -> Path:
    """Save a PromptTuning / PrefixTuning wrapper's table in PEFT's format."""
    return write_adapter(path, wrapper.peft_config(base), wrapper.peft_tensors())
