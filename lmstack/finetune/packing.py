"""Batches for SFT: padding (one example per row) or packing (several short examples per row).

Both produce (input_ids, positions, targets), each (B, T):
  targets[t] = ids[t + 1] when the loss mask of token t + 1 is 1 (an assistant token to learn), else -100;
  positions  = 0, 1, 2, ... within each example and -1 on padding (the model masks attention from positions).

Padding: row b holds example b, right-padded to the longest example of the batch. Simple; wastes compute on pads
when lengths vary.
Packing: examples are laid one after another into rows of `seq_len` tokens (first fit, in order; an example never
straddles two rows). Positions restart at 0 for every example, and without a KV cache the model reads a
position that does not increase as the start of a new sequence, so attention never crosses examples (a
block-diagonal causal mask built from positions: `lmstack/model/attention.position_bias(packed=True)`). RoPE
sees the same positions as in the padded layout, targets never cross an example's end, so the summed loss over
the same examples is identical (tests/finetune/test_packing.py checks packed loss == padded loss).

The loss is a mean over supervised tokens of the whole batch (not per example first): long answers weigh more,
as in HF / TRL's default SFT loss. Left out: packing that splits long examples across rows, per-example loss
normalization, dynamic batch sizes by token budget.
"""

from __future__ import annotations

import torch

from lmstack.finetune.chat_data import Rendered

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, positions, targets: each (B, T) int64


def example_targets(r: Rendered) -> list[int]:
    """Next-token targets of one example: ids[t + 1] where mask[t + 1] == 1, else -100; the last is -100."""
    return [r.ids[t + 1] if r.mask[t + 1] else -100 for t in range(len(r.ids) - 1)] + [-100]


def pad_batch(examples: list[Rendered], pad_id: int = 0) -> Batch:
    """One example per row, right-padded to the longest (positions -1 and targets -100 on padding)."""
    T = max(len(r.ids) for r in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    pos = torch.full((len(examples), T), -1, dtype=torch.long)
    tgt = torch.full((len(examples), T), -100, dtype=torch.long)
    for b, r in enumerate(examples):
        n = len(r.ids)
        ids[b, :n] = torch.tensor(r.ids)
        pos[b, :n] = torch.arange(n)
        tgt[b, :n] = torch.tensor(example_targets(r))
    return ids, pos, tgt


def pack_rows(lengths: list[int], seq_len: int) -> list[list[int]]:
    """First-fit, in order: lists of example indices whose lengths sum to <= seq_len (each example <= seq_len)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        assert n <= seq_len, f"example {i} has {n} tokens > seq_len={seq_len}; render_all cuts to max_len first"
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(seq_len - n)
    return rows


def pack_batch(examples: list[Rendered], seq_len: int, pad_id: int = 0) -> Batch:
    """Examples packed into as few rows of `seq_len` as first fit gives; positions restart per example."""
    rows = pack_rows([len(r.ids) for r in examples], seq_len)
    ids = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    pos = torch.full((len(rows), seq_len), -1, dtype=torch.long)
    tgt = torch.full((len(rows), seq_len), -100, dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for i in row:
            r = examples[i]
            n = len(r.ids)
            ids[b, t : t + n] = torch.tensor(r.ids)
            pos[b, t : t + n] = torch.arange(n)  # restart: attention stays inside this example
            tgt[b, t : t + n] = torch.tensor(example_targets(r))
            t += n
    return ids, pos, tgt


def make_batch(examples: list[Rendered], pack: bool, seq_len: int, pad_id: int = 0) -> Batch:
    return pack_batch(examples, seq_len, pad_id) if pack else pad_batch(examples, pad_id)
