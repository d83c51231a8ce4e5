"""Pretraining objectives: how a window of text tokens becomes a model's inputs and targets.

- clm (GPT; Radford et al. 2018): predict every next token. inputs x_0..x_{T-1}, targets x_1..x_T. A causal
  decoder; what generates text.
- mlm (BERT; Devlin et al. 2019, sec. 3.1): choose 15% of the positions; the model sees the window with 80% of the
  chosen replaced by [MASK], 10% by a random token and 10% unchanged, and predicts the original token at the chosen
  positions only (targets -100 elsewhere). A bidirectional encoder: every token sees both sides, which is what
  embeddings and classifiers want; it cannot generate left to right. The random/unchanged 20% keep the model from
  learning that only [MASK] positions matter (at fine-tuning time there is no [MASK]).
- span (T5; Raffel et al. 2020, sec. 3.1.4): corrupt 15% of the tokens in spans of mean length 3; the encoder reads
  the window with each span replaced by a sentinel, the decoder writes [s_0, span_0, s_1, span_1, ..., s_K, eos].
  An encoder-decoder; shorter targets than CLM (15% of the tokens plus sentinels), and the decoder generates.

Every batch is a dict of forward() keyword tensors plus "targets"; masks are drawn from an explicit generator the
recipe seeds with (seed, step), so a resumed run redraws the same masks. `extra_ids` appends the ids an objective
needs and the tokenizer lacks ([MASK]; the decoder start and sentinels) after the tokenizer's vocabulary.
Left out: whole-word masking, dynamic span lengths per row, T5's packing of several documents per window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lmstack.data.batches import eval_windows

OBJECTIVES = ("clm", "mlm", "span")
N_SENTINELS = 100  # as T5's <extra_id_0..99>


def extra_ids(objective: str, vocab_size: int) -> dict[str, Any]:
    """Ids beyond the tokenizer's vocabulary: mlm -> {"mask": V}; span -> {"start": V, "sentinels": V+1..V+100}."""
    if objective == "mlm":
        return {"mask": vocab_size, "n_extra": 1}
    if objective == "span":
        return {"start": vocab_size, "sentinels": list(range(vocab_size + 1, vocab_size + 1 + N_SENTINELS)),
                "n_extra": 1 + N_SENTINELS}  # fmt: skip
    return {"n_extra": 0}


def mask_tokens(
    x: torch.Tensor, mask_id: int, vocab_size: int, g: torch.Generator, rate: float = 0.15
) -> dict[str, torch.Tensor]:
    """BERT's 15% / 80-10-10 masking of x (B, T) -> {"input_ids", "targets"}; random replacements are drawn from
    [0, vocab_size) (the tokenizer's ids)."""
    chosen = torch.rand(x.shape, generator=g) < rate  # (B, T)
    action = torch.rand(x.shape, generator=g)  # < 0.8 mask, < 0.9 random token, else unchanged
    random_ids = torch.randint(0, vocab_size, x.shape, generator=g)
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(x, mask_id), x)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return {"input_ids": inputs, "targets": torch.where(chosen, x, torch.full_like(x, -100))}


def _segments(n_items: int, n_segments: int, g: torch.Generator) -> list[int]:
    """A random split of n_items into n_segments lengths >= 1 (uniform over compositions, as in T5)."""
    cuts = (torch.randperm(n_items - 1, generator=g)[: n_segments - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, n_items]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def span_corrupt(
    x: torch.Tensor, start_id: int, sentinels: list[int], eos_id: int | None, g: torch.Generator,
    density: float = 0.15, mean_span: float = 3.0,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """T5 span corruption of x (B, T) -> {"encoder_ids", "input_ids" (decoder inputs), "targets"}.

    With T tokens: round(T * density) noise tokens in round(noise / mean_span) spans; non-noise and noise lengths
    are random compositions, interleaved non-noise first, so every row has the same lengths:
    encoder T - noise + K (+ eos), targets noise + K + 1 (+ eos).
    E.g. "a b c d e f" with the one span "c d": encoder "a b <s0> e f", targets "<s0> c d <s1>".
    """
    B, T = x.shape
    n_noise = min(max(int(round(T * density)), 1), T - 1)
    K = min(max(int(round(n_noise / mean_span)), 1), n_noise, T - n_noise, len(sentinels) - 1)
    tail = [eos_id] if eos_id is not None else []
    enc, dec = [], []
    for row in x.tolist():
        keep, noise = _segments(T - n_noise, K, g), _segments(n_noise, K, g)
        e, d, i = [], [], 0
        for k in range(K):
            e += row[i : i + keep[k]] + [sentinels[k]]
            i += keep[k]
            d += [sentinels[k]] + row[i : i + noise[k]]
            i += noise[k]
        enc.append(e + tail)
        dec.append(d + [sentinels[K]] + tail)
    targets = torch.tensor(dec, dtype=torch.long)
    decoder_inputs = torch.cat([torch.full((B, 1), start_id), targets[:, :-1]], dim=1)  # teacher forcing
    return {"encoder_ids": torch.tensor(enc, dtype=torch.long), "input_ids": decoder_inputs, "targets": targets}


def make_batch_fn(
    objective: str, vocab_size: int, eos_id: int | None
) -> Callable[[torch.Tensor, torch.Tensor, torch.Generator], dict[str, torch.Tensor]]:
    """(x, y, generator) -> the batch dict for `objective`; x, y are the (B, T) windows of RandomBatches."""
    ids = extra_ids(objective, vocab_size)
    if objective == "clm":
        return lambda x, y, g: {"input_ids": x, "targets": y}
    if objective == "mlm":
        return lambda x, y, g: mask_tokens(x, ids["mask"], vocab_size, g)
    if objective == "span":
        return lambda x, y, g: span_corrupt(x, ids["start"], ids["sentinels"], eos_id, g)
    raise ValueError(f"--objective={objective!r}; expected one of {list(OBJECTIVES)}")


@torch.no_grad()
def evaluate_objective(
    model: torch.nn.Module, make_batch: Callable, tokens: np.ndarray, seq_len: int, batch_size: int, device: str,
    max_tokens: int | None, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Mean loss per target token of an objective over validation windows, with fixed masks (seeded)."""
    if max_tokens is not None and max_tokens + 1 < len(tokens):
        tokens = tokens[: max_tokens + 1]
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    total, n = 0.0, 0
    for x, y, _ in eval_windows(tokens, seq_len, batch_size):
        if x.shape[1] < 4:
            continue  # a last window too short to corrupt
        batch = {k: v.to(device) for k, v in make_batch(x, y, g).items()}
        count = int((batch["targets"] != -100).sum())
        if count:
            total += model(**batch).loss.item() * count
            n += count
    model.train(was_training)
    return {"val_loss": total / max(n, 1), "val_targets": n}
