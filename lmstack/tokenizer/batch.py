"""Batch encoding over processes: the GIL keeps one Python process on one core, so big batches fork workers.

Workers are forked (they inherit the tokenizer's tables instead of unpickling ~100k-entry dicts); each encodes
a contiguous slice of the batch and returns its id lists. Small batches (< PARALLEL_MIN_CHARS characters in
total), a single worker, or a platform without fork encode serially in this process. Output order equals
input order, and ids equal `[tok.encode(t) for t in texts]` (a test checks it).
"""

from __future__ import annotations

import multiprocessing as mp
from typing import TYPE_CHECKING

from lmstack.tokenizer.special import SpecialSet

if TYPE_CHECKING:
    from lmstack.tokenizer.tokenizer import Tokenizer

PARALLEL_MIN_CHARS = 1_000_000  # below this, process start-up costs more than it saves

_WORKER_STATE: tuple | None = None  # (tokenizer, allowed, disallowed), set in the parent before forking


def _encode_slice(bounds: tuple[int, int, list[str]]) -> list[list[int]]:
    assert _WORKER_STATE is not None, "worker started without a tokenizer"
    tok, allowed, disallowed = _WORKER_STATE
    return [tok.encode(t, allowed_special=allowed, disallowed_special=disallowed) for t in bounds[2]]


def encode_batch(
    tok: Tokenizer, texts: list[str], workers: int, allowed: SpecialSet, disallowed: SpecialSet
) -> list[list[int]]:
    total = sum(map(len, texts))
    if workers <= 1 or len(texts) < 2 or total < PARALLEL_MIN_CHARS or "fork" not in mp.get_all_start_methods():
        return [tok.encode(t, allowed_special=allowed, disallowed_special=disallowed) for t in texts]
    global _WORKER_STATE
    _WORKER_STATE = (tok, allowed, disallowed)
    # ~4 slices per worker balances uneven documents without paying per-text pickling overhead
    n_slices = min(len(texts), workers * 4)
    step = -(-len(texts) // n_slices)
    slices = [(i, i + step, texts[i : i + step]) for i in range(0, len(texts), step)]
    try:
        with mp.get_context("fork").Pool(min(workers, len(slices))) as pool:
            parts = pool.map(_encode_slice, slices, chunksize=1)
    finally:
        _WORKER_STATE = None
    return [ids for part in parts for ids in part]
