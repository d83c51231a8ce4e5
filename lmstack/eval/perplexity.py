"""Perplexity and bits-per-byte of a model on any text, by the same code that scores validation during
pretraining (`lmstack.train.evaluate.evaluate`), so the numbers are comparable with a run's report.

The documents become one token stream laid out like a shard split: each document preceded by the end-of-text
token (`<|endoftext|>`, else the tokenizer's EOS), then scored in non-overlapping windows of `seq_len` tokens.
Bits per byte divide the summed negative log-likelihood by the UTF-8 bytes of the documents, so models with
different tokenizers compare on the same text. Left out: strided (sliding-window) scoring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lmstack.model.causal_lm import CausalLM, model_device
from lmstack.train.evaluate import evaluate


def text_stream(tokenizer: Any, documents: list[str]) -> tuple[np.ndarray, int]:
    """(tokens EOT d0 EOT d1 ..., UTF-8 bytes of the documents)."""
    eot = tokenizer.special_tokens.get("<|endoftext|>", tokenizer.eos_id)
    if eot is None:
        raise ValueError("perplexity needs a document separator: the tokenizer has neither <|endoftext|> nor EOS")
    ids: list[int] = []
    for doc in documents:
        ids += [eot, *tokenizer.encode_ordinary(doc)]
    return np.asarray(ids, dtype=np.int64), sum(len(d.encode("utf-8")) for d in documents)


def perplexity(
    model: CausalLM, tokenizer: Any, documents: list[str], seq_len: int = 1024, batch_size: int = 4
) -> dict[str, float]:
    """val_loss (nats/token), val_ppl, val_bpb and counts of `documents` under `model`."""
    tokens, n_bytes = text_stream(tokenizer, documents)
    seq_len = min(seq_len, model.config.max_seq_len)
    return evaluate(model, tokens, n_bytes, seq_len, batch_size, device=str(model_device(model)))
