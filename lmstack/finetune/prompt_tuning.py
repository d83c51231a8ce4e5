"""Prompt tuning: n trainable "virtual token" embeddings prepended to the input (Lester et al. 2021).

Only an (n, D) table trains; the model is frozen. PEFT's `PromptTuning` concatenates the table in front of the
input embeddings and runs the whole sequence (the real tokens then sit at positions n, n+1, ...). We compute
the same thing in two steps, which also makes generation cheap:
  1. the virtual pass: run the n virtual embeddings alone through the frozen model (a forward hook swaps the
     embedding layer's output for the table) and record every layer's keys/values (`RecordingCache`);
  2. the real pass: the real tokens at positions n, n+1, ... with those K/V as a per-layer prefix
     (`prefix_tuning.PrefixCache`).
Attention is causal and the virtual tokens come first, so they never see the real tokens: the two steps give
exactly the concatenated forward's logits (tests/finetune/test_prefix_prompt.py checks against PEFT). Step 1
costs one forward of n tokens per training step, independent of the batch size; in eval mode its K/V are kept,
so a generated token costs nothing extra beyond reading n more keys. Context cost: n tokens of max_seq_len.

Init (Lester et al. sec. 3): the embeddings of n tokens -- of a text (e.g. a task description) or sampled from
the vocabulary -- rather than random vectors, which they found trains better.
Left out: the prompt-encoder reparameterizations (P-tuning's LSTM/MLP), multi-task prompts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmstack.finetune.prefix_tuning import PrefixCache, RecordingCache, shift_positions
from lmstack.model import Output, Transformer


class PromptTuning(nn.Module):
    """A frozen `Transformer` plus a trainable (n, D) virtual-token table; a `CausalLM` itself."""

    def __init__(self, model: Transformer, init_ids: list[int]) -> None:
        super().__init__()
        if not init_ids:
            raise ValueError("--num_virtual_tokens: expected > 0 virtual tokens")
        self.model, self.n_virtual = model, len(init_ids)
        for p in model.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            table = model.embed(torch.tensor(init_ids, device=model.embed.weight.device)).float()
        self.prompt = nn.Parameter(table.clone())  # (n, D)
        self._kv: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None  # eval-mode cache of step 1

    @property
    def config(self) -> Any:
        return self.model.config

    def train(self, mode: bool = True) -> PromptTuning:
        self._kv = None  # the table may change: recompute the virtual pass
        return super().train(mode)

    def virtual_kv(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Step 1: every layer's K/V of the virtual tokens alone, each (1, Hkv, n, hd)."""
        n, dev = self.n_virtual, self.prompt.device
        rec = RecordingCache()
        swap = self.model.embed.register_forward_hook(lambda mod, inp, out: self.prompt[None].to(out.dtype))
        try:
            dummy = torch.zeros(1, n, dtype=torch.long, device=dev)  # its embeddings are replaced by the table
            self.model(dummy, torch.arange(n, device=dev)[None], cache=rec)
        finally:
            swap.remove()
        L = self.config.n_layers
        return [rec.keys[i] for i in range(L)], [rec.values[i] for i in range(L)]

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: Any = None,
        targets: torch.Tensor | None = None,
    ) -> Output:
        """input_ids (B, T) -> Output over the real tokens (step 2 of the module docstring)."""
        if self._kv is not None and not self.training:
            keys, values = self._kv
        else:
            keys, values = self.virtual_kv()
            if not self.training:
                self._kv = ([k.detach() for k in keys], [v.detach() for v in values])
        pos = shift_positions(positions, input_ids, self.n_virtual)
        return self.model(input_ids, pos, PrefixCache(cache, keys, values), targets)

    def peft_tensors(self) -> dict[str, torch.Tensor]:
        return {"prompt_embeddings": self.prompt.data}

    def load_peft_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.prompt.data.copy_(tensors["prompt_embeddings"])
        self._kv = None

    def peft_config(self, base: str) -> dict[str, Any]:
        c = self.config
        return {"peft_type": "PROMPT_TUNING", "base_model_name_or_path": base, "num_virtual_tokens": self.n_virtual,
                "token_dim": c.d_model, "num_attention_heads": c.n_heads, "num_layers": c.n_layers,
                "num_transformer_submodules": 1, "prompt_tuning_init": "RANDOM"}  # fmt: skip
