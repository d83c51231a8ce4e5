"""Contamination: does an evaluation item appear in the training data? 13-gram overlap, as in GPT-3 (Brown et al.
2020, appendix C) and the Llama 2 / lm-eval decontamination tools.

Both sides are normalized the way `lmstack.data.dedup.normalize` normalizes documents (NFKC, lower case,
whitespace collapsed) and split into words. An item is *flagged* when any of its word 13-grams occurs in the
training data; an item shorter than 13 words is flagged when all of it occurs as a run of words. `overlap` is the
fraction of the item's 13-grams found: 1.0 means the item is in the data verbatim.

The training side is an `NgramIndex`: the sorted, de-duplicated 64-bit hashes of every 13-gram of every document,
searched with `np.searchsorted` (a million training words take ~8 MB). A 13-gram's hash is
sum_k h(word_k) * m_k mod 2^64 with blake2b word hashes and fixed odd multipliers m_k, vectorized over a document;
with 64 bits, a false match among a billion training n-grams has probability ~1e-10 per item n-gram.

Training data comes from token shards (`lmstack.data.shards`; each document is decoded back to text with the
shard directory's tokenizer) or from any text the user names (a corpus name or files, `lmstack.data.corpus`).
Left out: token-level overlap, fuzzy (edit-distance) matching, removing flagged items automatically.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmstack.common.log import progress
from lmstack.data.dedup import normalize

N = 13
_MIX = np.random.default_rng(13).integers(0, 2**63, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


class _WordHasher:
    def __init__(self) -> None:
        self.table: dict[str, int] = {}

    def __call__(self, words: list[str]) -> np.ndarray:
        for w in set(words).difference(self.table):
            self.table[w] = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
        return np.fromiter((self.table[w] for w in words), dtype=np.uint64, count=len(words))


def ngram_hashes(text: str, n: int = N, hasher: _WordHasher | None = None) -> np.ndarray:
    """(k,) uint64: the hash of every word n-gram of the normalized text (one hash of all words if fewer than n)."""
    words = normalize(text).split()
    if not words:
        return np.zeros(0, dtype=np.uint64)
    w = (hasher or _WordHasher())(words)  # (n_words,)
    k = max(len(w) - n + 1, 1)
    h = np.zeros(k, dtype=np.uint64)
    for j in range(min(n, len(w))):
        h += w[j : j + k] * _MIX[j]  # wraps mod 2^64
    return h


def _all_runs(text: str, n: int, hasher: _WordHasher) -> np.ndarray:
    """Hashes of every run of exactly `n` words (used to find short items inside training documents)."""
    words = normalize(text).split()
    if len(words) < n:
        return np.zeros(0, dtype=np.uint64)
    return ngram_hashes(" ".join(words), n, hasher)


class NgramIndex:
    """The set of word n-grams of a training corpus (plus shorter runs for items under n words)."""

    def __init__(self, documents: Iterable[str], n: int = N, short_lengths: Iterable[int] = (), name: str = "") -> None:
        self.n, self.name = n, name
        hasher = _WordHasher()
        chunks, short = [], {m: [] for m in short_lengths if 0 < m < n}
        n_docs = 0
        for doc in progress(documents, desc=f"index {name or 'corpus'}", unit="doc"):
            chunks.append(np.unique(ngram_hashes(doc, n, hasher)))
            for m in short:
                short[m].append(np.unique(_all_runs(doc, m, hasher)))
            n_docs += 1
        self.hashes = np.unique(np.concatenate(chunks)) if chunks else np.zeros(0, dtype=np.uint64)
        self.short = {m: np.unique(np.concatenate(v)) for m, v in short.items() if v}
        self.n_documents = n_docs

    def contains(self, hashes: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        """(k,) bool: which hashes are in the index."""
        table = self.hashes if table is None else table
        if len(table) == 0 or len(hashes) == 0:
            return np.zeros(len(hashes), dtype=bool)
        i = np.clip(np.searchsorted(table, hashes), 0, len(table) - 1)
        return table[i] == hashes


@dataclass
class Overlap:
    flagged: bool  # some n-gram of the item (or the whole short item) is in the training data
    overlap: float  # fraction of the item's n-grams found
    source: str  # the index that flagged it ("" if none)


def check_item(text: str, indexes: list[NgramIndex]) -> Overlap:
    """Overlap of one evaluation item with each index; the first index that flags it is named."""
    best = Overlap(False, 0.0, "")
    for index in indexes:
        n_words = len(normalize(text).split())
        if n_words == 0:
            continue
        if n_words < index.n:
            table = index.short.get(n_words)
            found = index.contains(ngram_hashes(text, n_words), table) if table is not None else np.zeros(1, bool)
        else:
            found = index.contains(ngram_hashes(text, index.n))
        frac = float(found.mean()) if len(found) else 0.0
        if frac > best.overlap:
            best = Overlap(bool(found.any()), frac, index.name)
    return best


def check_items(texts: dict[str, str], indexes: list[NgramIndex]) -> dict[str, Overlap]:
    """item id -> Overlap, for every item text."""
    return {k: check_item(t, indexes) for k, t in texts.items()}


def short_lengths(texts: Iterable[str], n: int = N) -> set[int]:
    """Word counts under n among the items: the run lengths an index must also hold."""
    return {m for m in (len(normalize(t).split()) for t in texts) if 0 < m < n}


def shard_documents(data_dir: str | Path, split: str = "train") -> Iterable[str]:
    """The documents of a token-shard split, decoded with the tokenizer saved beside the shards."""
    from lmstack.data.shards import ShardDataset
    from lmstack.tokenizer import Tokenizer

    data_dir = Path(data_dir)
    ds = ShardDataset(data_dir, split)
    tok = Tokenizer.load(data_dir / "tokenizer")
    eot = ds.manifest["eot_id"]
    tokens = np.asarray(ds.tokens)
    starts = np.flatnonzero(tokens == eot)  # every document is preceded by EOT
    bounds = np.append(starts, len(tokens))
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield tok.decode(tokens[a + 1 : b].tolist())
