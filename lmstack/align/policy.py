"""The policy being aligned and its frozen reference: loading, freezing, and the model half of a checkpoint.

The policy is any model `lmstack.model.load_model` reads (a local name such as `smollm2-135m`, an HF directory,
a speedrun checkpoint, a .gguf file), trained in full or, with `train_layers = k`, only its last k blocks and
final norm (the rest frozen: cheaper backward passes and optimizer state on a CPU). Dropout is switched off, as TRL's
`disable_dropout=True` does: a preference loss compares log-probs of the policy with those of the reference, and
dropout noise would make that comparison random even at step 0.

The reference policy pi_ref (DPO's and GRPO's KL anchor) is a frozen copy: `requires_grad=False`, eval mode,
never handed to the optimizer. Checkpoints are HF model directories (`Transformer.save_pretrained`) plus
`trainer_state/` (`lmstack.train.checkpoint`), so `<out_dir>/checkpoint` is itself a model every command loads.
Left out: adapters (LoRA) as the trained part, with the base as an implicit reference (the fine-tuning stage's
adapters would slot in here), and sharing one set of weights between policy and reference.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmstack.common.seed import pick_device
from lmstack.model import Transformer, load_model
from lmstack.tokenizer import Tokenizer


def setup_device(device: str, threads: int) -> str:
    """Resolve `--device` and set the CPU thread count (0 = all cores)."""
    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    return pick_device(device)


def disable_dropout(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model


def load_policy(spec: str, device: str) -> tuple[Transformer, Tokenizer]:
    """The trainable policy (float32, train mode, no dropout) and its tokenizer."""
    model, tok = load_model(spec, device=device, dtype="float32")
    return disable_dropout(model).train(), tok


def train_last_layers(model: Transformer, n_layers: int) -> int:
    """Freeze all but the last `n_layers` blocks and the final norm (0 = train everything); return the number of
    trainable parameters. On a CPU this is what makes a 135M-parameter policy step in seconds: the backward pass
    stops at the first trainable block and the optimizer touches a fraction of the weights (the embedding, tied
    to the LM head in SmolLM2, stays frozen)."""
    if n_layers > 0:
        if n_layers > len(model.blocks):
            raise ValueError(f"--train_layers={n_layers}, but the model has {len(model.blocks)} blocks")
        for p in model.parameters():
            p.requires_grad_(False)
        for p in [*model.blocks[-n_layers:].parameters(), *model.norm.parameters()]:
            p.requires_grad_(True)
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())


def frozen(model: nn.Module) -> nn.Module:
    """A frozen copy: no gradients, eval mode; its weights never change."""
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def checkpoint_fns(model: Transformer, tok: Tokenizer) -> tuple[Any, Any]:
    """(save_model(state_dict, dir), load_weights(dir) -> state_dict) for `lmstack.train.checkpoint`."""

    def save_model(msd: dict[str, torch.Tensor], d: Path) -> None:
        plain = Transformer.without_init(model.config)
        plain.load_state_dict(msd)
        plain.save_pretrained(d, tokenizer=tok)

    def load_weights(d: Path) -> dict[str, torch.Tensor]:
        return Transformer.from_pretrained(d, dtype="float32").state_dict()

    return save_model, load_weights


def digest(items: Any) -> str:
    """A short sha256 of JSON-able data (a run's identity records which data it trained on)."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_out_dir(out: Path, resume: bool, overwrite: bool, ckpt: str = "checkpoint") -> None:
    """A fresh run never silently replaces a previous one: its checkpoint or its metrics need --overwrite."""
    if resume or overwrite:
        return
    for name in (ckpt, "metrics.jsonl"):
        if (out / name).exists():
            raise ValueError(f"--out_dir: {out} already holds a run ({out / name}); pass --resume to continue it "
                             "(needs a checkpoint) or --overwrite to start over")  # fmt: skip
