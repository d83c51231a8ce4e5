"""Calibration text: random token windows from an embedded corpus or the user's own files.

GPTQ and AWQ need a few hundred sequences of typical input to measure which input channels matter (the GPTQ
paper uses 128 random 2048-token segments of C4; AWQ 128 x 512 tokens of the Pile). `calibration_tokens` draws
`n_samples` windows of `seq_len` tokens: each from a random document of the source's *train* split (so held-out
evaluation on the val split stays unseen), at a random character offset, encoded with the model's tokenizer.
Same seed, same windows. The source is a corpus name (`lmstack corpus list`) or paths of .txt/.md/.jsonl files.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmstack.data.corpus import CORPORA, load_corpus, load_files


def calibration_documents(source: str | list[str]) -> list[str]:
    """Documents of a corpus name (its train split) or of files / directories."""
    if isinstance(source, str) and source in CORPORA:
        return load_corpus(source, split="train")
    paths = [source] if isinstance(source, str) else list(source)
    if not all(Path(p).exists() for p in paths):
        raise FileNotFoundError(f"--calib {source}: not a corpus name ({', '.join(CORPORA)}) nor existing files")
    return load_files(paths)


def calibration_tokens(
    tokenizer: Any, source: str | list[str], n_samples: int = 128, seq_len: int = 256, seed: int = 0
) -> torch.Tensor:
    """(n_samples, seq_len) int64 token windows drawn from `source` (see the module docstring)."""
    docs = calibration_documents(source)
    chars = seq_len * 12  # enough characters for seq_len tokens in any tokenizer we ship (>= 1 char per token)
    usable = [d for d in docs if len(d) >= seq_len]
    if not usable:
        raise ValueError(f"--calib {source}: no document is long enough for --calib_seq_len={seq_len} tokens")
    rng = random.Random(seed)
    windows: list[list[int]] = []
    for _ in range(n_samples * 20):  # some draws fall short (a document's tail); give up eventually
        doc = rng.choice(usable)
        start = rng.randrange(max(len(doc) - chars, 0) + 1)
        ids = tokenizer.encode(doc[start : start + chars])
        if len(ids) > seq_len:  # drop the first token: it may be the tail of a word cut by the offset
            windows.append(ids[1 : seq_len + 1])
        if len(windows) == n_samples:
            return torch.tensor(windows, dtype=torch.long)
    raise ValueError(f"--calib {source}: found only {len(windows)} windows of {seq_len} tokens (need {n_samples})")


def heldout_tokens(tokenizer: Any, corpus: str, n_tokens: int) -> tuple[np.ndarray, int]:
    """The first n_tokens + 1 tokens of a corpus's val split (documents joined by blank lines) and their UTF-8
    byte count: the held-out text perplexity and bits-per-byte are measured on."""
    if corpus not in CORPORA:
        raise ValueError(f"--eval_corpus {corpus!r}: expected a corpus name ({', '.join(CORPORA)})")
    text = "\n\n".join(load_corpus(corpus, split="val"))
    chars = (n_tokens + 1) * 8  # enough for n_tokens in any shipped tokenizer; cut before encoding the whole split
    ids = tokenizer.encode(text[:chars])[: n_tokens + 1]
    if len(ids) < 2:
        raise ValueError(f"--eval_corpus {corpus}: its val split is too short")
    return np.asarray(ids, dtype=np.int64), len(tokenizer.decode_bytes(ids))
