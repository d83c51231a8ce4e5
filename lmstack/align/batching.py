"""Prompt + completion texts -> padded model rows, and the deterministic order batches are drawn in.

Every alignment method scores a *completion* given a *prompt*. One row is the prompt's ids followed by the
completion's ids, right-padded to the longest row of the batch:

    input_ids        p p p p c c c c 0 0        (B, T), padding id 0
    positions        0 1 2 3 4 5 6 7 -1 -1      (B, T), -1 marks padding: attention never reads it (model/cache.py)
    completion_mask  0 0 0 0 1 1 1 1 0 0        (B, T), 1 on the tokens whose log-probability is scored

Rendering follows the fine-tuning stage's SFT rendering and `lmstack chat`, so SFT -> DPO -> chat all see the same
text: with ChatML tokens (SmolLM2) the prompt is the chat template's default system message (SmolLM2's template
inserts one when none is given), one user turn and the assistant header (`...<|im_start|>assistant\\n`), and the
completion ends with `<|im_end|>`; without them (the speedrun's base model) the prompt is the plain
`User: ...\\nAssistant:` transcript and the completion " {text}" followed by the EOS token (a newline if the
tokenizer has none). Prompt and completion are encoded separately (as TRL does, and as generation produces them),
so the completion's first token never merges with the prompt's last one.

Too long rows keep the end of the prompt (the question is usually at its end) and the start of the completion.
Batch order: epoch e is a permutation of the items drawn from `torch.Generator(seed + e)`, so the batch of any
step is a pure function of (seed, step): a resumed run draws exactly the batches the first run would have.
Left out: packing several pairs into one row, multi-turn prompts (pass the rendered ids yourself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmstack.tokenizer.chat import IM_END, has_chatml, render_prompt, template_system_prompt


@dataclass
class Rows:
    input_ids: torch.Tensor  # (B, T) int64, right-padded with 0
    positions: torch.Tensor  # (B, T) int64, 0.. on tokens, -1 on padding
    completion_mask: torch.Tensor  # (B, T) float, 1 on completion tokens

    def to(self, device: torch.device | str) -> Rows:
        return Rows(self.input_ids.to(device), self.positions.to(device), self.completion_mask.to(device))

    @property
    def completion_lengths(self) -> torch.Tensor:
        """(B,) completion tokens per row."""
        return self.completion_mask.sum(-1)


def prompt_ids(tok: Any, prompt: str) -> list[int]:
    """The prompt as one user turn (after the template's default system message), ending where the reply starts."""
    messages = [{"role": "user", "content": prompt}]
    system = template_system_prompt(tok) if has_chatml(tok) else ""
    return render_prompt(tok, [{"role": "system", "content": system}, *messages] if system else messages)


def completion_ids(tok: Any, completion: str) -> list[int]:
    """The reply's ids including its end: `<|im_end|>` with ChatML, else EOS (or a newline without one)."""
    if has_chatml(tok):
        return tok.encode_ordinary(completion) + [tok.special_tokens[IM_END]]
    return tok.encode_ordinary(" " + completion) + end_of_reply_ids(tok)


def end_of_reply_ids(tok: Any) -> list[int]:
    """The token that ends a reply (the stop id of rollouts): `<|im_end|>`, else EOS, else a newline."""
    if has_chatml(tok):
        return [tok.special_tokens[IM_END]]
    return [tok.eos_id] if tok.eos_id is not None else tok.encode_ordinary("\n")[-1:]


def pad_rows(prompts: list[list[int]], completions: list[list[int]], max_len: int = 0) -> Rows:
    """Concatenate each prompt with its completion and right-pad; `max_len` > 0 caps the row length."""
    assert len(prompts) == len(completions), f"{len(prompts)} prompts vs {len(completions)} completions"
    rows = [fit(p, c, max_len) for p, c in zip(prompts, completions)]
    T = max(len(p) + len(c) for p, c in rows)
    ids = torch.zeros(len(rows), T, dtype=torch.long)
    pos = torch.full((len(rows), T), -1, dtype=torch.long)
    mask = torch.zeros(len(rows), T)
    for b, (p, c) in enumerate(rows):
        n = len(p) + len(c)
        ids[b, :n] = torch.tensor(p + c, dtype=torch.long)
        pos[b, :n] = torch.arange(n)
        mask[b, len(p) : n] = 1.0
    return Rows(ids, pos, mask)


def fit(prompt: list[int], completion: list[int], max_len: int) -> tuple[list[int], list[int]]:
    """Cut a row to `max_len` tokens: the end of the prompt (>= 1 token) and the start of the completion."""
    if not prompt or not completion:
        raise ValueError(f"empty prompt or completion ({len(prompt)} / {len(completion)} tokens)")
    if max_len <= 0 or len(prompt) + len(completion) <= max_len:
        return prompt, completion
    completion = completion[: max_len - 1]
    return prompt[-(max_len - len(completion)) :], completion


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """The permutation of `n` items used in `epoch` (a pure function of seed and epoch)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Item indices of optimizer step `step` (0-based): consecutive slices of per-epoch permutations."""
    orders: dict[int, list[int]] = {}
    out = []
    for k in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(k, n)
        if epoch not in orders:
            orders[epoch] = epoch_order(n, epoch, seed)
        out.append(orders[epoch][i])
    return out
