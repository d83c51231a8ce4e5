"""A named corpus made trainable in one call: its fixed split -> a byte-level BPE tokenizer -> token shards.

The first three steps of the speedrun and of the scaling sweep: read the documents and the fixed validation
split (`lmstack.data.corpus`), train a tokenizer on the training documents only (the validation text must not
shape the vocabulary it is scored with), tokenize both splits (`lmstack.data.shards`). Returns the tokenizer,
the shard manifest and the seconds each step took. Leaves out: dedup (`lmstack prepare-data` does it; the
embedded corpora have no duplicates worth the time in a 10-minute budget) and user files.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lmstack.common.log import info
from lmstack.data.corpus import load_corpus
from lmstack.data.shards import write_shards
from lmstack.tokenizer import Tokenizer

EOT = "<|endoftext|>"


def _prefix(docs: list[str], max_chars: int) -> list[str]:
    """The first `max_chars` characters of the concatenated documents (all of them if max_chars == 0)."""
    if max_chars <= 0:
        return docs
    out, left = [], max_chars
    for d in docs:
        if left <= 0:
            break
        out.append(d[:left])
        left -= len(d)
    return out


def corpus_shards(
    corpus: str, vocab_size: int, pattern: str, out_dir: str | Path, tokenizer_max_chars: int = 0
) -> tuple[Tokenizer, dict[str, Any], dict[str, float]]:
    """Write `<out_dir>/tokenizer/` and `<out_dir>/{train,val}.bin + manifest.json`; return (tok, manifest, times)."""
    out_dir = Path(out_dir)
    times: dict[str, float] = {}
    t = time.perf_counter()
    train_docs, val_docs = load_corpus(corpus, "train"), load_corpus(corpus, "val")
    times["corpus_s"] = time.perf_counter() - t
    info(f"corpus {corpus}: {len(train_docs)} train / {len(val_docs)} validation documents")

    t = time.perf_counter()
    info(f"tokenizer: training a {vocab_size}-token byte-level BPE ({pattern} pre-tokenizer)")
    texts = _prefix(train_docs, tokenizer_max_chars)
    tok = Tokenizer.train(texts, vocab_size, pattern=pattern, special_tokens=[EOT])
    tok.save(out_dir / "tokenizer")
    times["tokenizer_s"] = time.perf_counter() - t

    t = time.perf_counter()
    info("shards: tokenizing both splits")
    manifest = write_shards(train_docs, val_docs, tok, out_dir, workers=min(os.cpu_count() or 1, 2))
    times["shards_s"] = time.perf_counter() - t
    return tok, manifest, times
