"""Validation loss, perplexity and bits-per-byte over a whole token stream, each token scored exactly once.

The stream of N validation tokens is cut into non-overlapping windows of the model's context T
(`lmstack.data.batches.eval_windows`): window i reads tokens [iT, iT + T) and predicts tokens [iT + 1, iT + T + 1),
so every token but the first is a target exactly once (the first is the document separator, which carries no
bytes; the separators that end documents are scored, with no bytes of their own). The last window is shorter
when N - 1 is not a multiple of T. Windows restart with no context, so early tokens of each window see less
history: this is the standard "non-overlapping" evaluation (a sliding window would score lower; it is not what
is reported here).

    val_loss = (sum of -ln p(token) over the N - 1 targets) / (N - 1)            nats per token
    val_ppl  = exp(val_loss)
    val_bpb  = (sum of -ln p(token) over the N - 1 targets) / (ln 2 * n_bytes)    bits per UTF-8 byte

where n_bytes is the UTF-8 length of the validation text. Bits-per-byte does not depend on the tokenizer (a
bigger vocabulary makes fewer, harder tokens; the total information per byte is what compares across them and
with character-level models, where a byte is a character on ASCII text).
Leaves out: sliding-window (strided) evaluation, per-document resets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmstack.data.batches import eval_windows


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokens: np.ndarray,
    n_bytes: int,
    seq_len: int,
    batch_size: int = 32,
    device: str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    max_tokens: int | None = None,
) -> dict[str, float]:
    """Score every validation token once; return val_loss (nats/token), val_ppl, val_bpb and the counts.

    max_tokens: score only a prefix (for quick periodic estimates during training); bpb then scales the byte
    count by the scored fraction of tokens, so it is an estimate; the final evaluation uses everything.
    """
    if len(tokens) < 2:
        raise ValueError(f"validation split has {len(tokens)} tokens; need at least 2")
    full_len = len(tokens)
    if max_tokens is not None and max_tokens + 1 < full_len:
        tokens = tokens[: max_tokens + 1]
    was_training = model.training
    model.eval()
    total_nats, n_targets = 0.0, 0
    for x, y, n in eval_windows(tokens, seq_len, batch_size):  # x, y: (B, T), n = B * T targets
        x, y = x.to(device), y.to(device)
        with torch.autocast(device_type=device.split(":")[0], dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(x).logits  # (B, T, V)
        nats = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        total_nats += nats.item()
        n_targets += n
    model.train(was_training)
    assert n_targets == len(tokens) - 1, (n_targets, len(tokens))
    scored_bytes = n_bytes * (n_targets / (full_len - 1))
    loss = total_nats / n_targets
    return {
        "val_loss": loss,
        "val_ppl": math.exp(loss),
        "val_bpb": total_nats / (math.log(2) * scored_bytes),
        "val_tokens": n_targets,
        "val_bytes": int(round(scored_bytes)),
    }
