"""Document deduplication before tokenizing: exact (normalized hash) and near-duplicate (MinHash + LSH).

Exact: a document's key is the sha256 of its normalized text (NFKC, lower case, runs of whitespace collapsed
to one space, stripped), so copies differing only in case or spacing collide.

Near: two documents are near-duplicates when the Jaccard similarity of their shingle sets (word 5-grams of
the normalized text) is at least a threshold t. MinHash (Broder 1997, "On the resemblance and containment of
documents") estimates it: with k random hash functions h_i, P[min h_i(A) == min h_i(B)] = J(A, B), so the
fraction of equal signature entries is an unbiased estimate with standard error sqrt(J(1-J)/k). Our h_i are
multiply-add-shift hashes ((a_i x + b_i) mod 2^64) >> 32 of a 32-bit shingle hash x, with seeded a_i, b_i.

LSH (Indyk & Motwani 1998; Leskovec, Rajaraman & Ullman, "Mining of Massive Datasets" ch. 3): cut the k
entries into b bands of r rows (b * r = k); two documents become a candidate pair when all r rows of some band
agree, which happens with probability 1 - (1 - J^r)^b: an S-curve in J whose steepest point is near
t* ~ (1/b)^(1/r). We pick the (b, r) whose t* is closest to the requested threshold, then confirm every
candidate with its estimated Jaccard >= t (so the S-curve only limits recall near t, never precision beyond
the estimate's noise). Documents are visited in order and a document is dropped when it is a near-duplicate of
one already kept: the earliest copy survives (callers put validation documents first to keep them whole).

Leaves out: containment (a short document inside a long one), substring/suffix-array dedup, cross-run indexes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lmstack.common.log import progress


def normalize(text: str) -> str:
    """NFKC, lower case, whitespace runs -> one space, stripped: the text exact dedup compares."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the normalized text (a document shorter than n words is one shingle)."""
    words = normalize(text).split(" ")
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity |A & B| / |A | B| (1.0 for two empty sets)."""
    return len(a & b) / len(a | b) if a or b else 1.0


class MinHasher:
    """k hash functions; `signature(text)` is the (k,) vector of their minima over the document's shingles."""

    def __init__(self, num_perm: int = 128, shingle_size: int = 5, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.num_perm, self.shingle_size = num_perm, shingle_size
        self.a = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)  # odd
        self.b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
        self.mix = rng.integers(0, 2**63, size=shingle_size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self._word_hash: dict[str, int] = {}  # word -> 64-bit blake2b, shared across documents

    def hash_shingles(self, text: str) -> np.ndarray:
        """(n,) uint64 < 2^32: one hash per distinct word n-gram.

        Each distinct word gets a 64-bit blake2b hash; an n-gram's hash is sum_k word[i+k] * mix_k (mod 2^64),
        top 32 bits: vectorized over the document instead of hashing every n-gram string in Python.
        """
        words = normalize(text).split(" ")
        table = self._word_hash
        for new in set(words).difference(table):  # each distinct word is hashed once per MinHasher
            table[new] = int.from_bytes(hashlib.blake2b(new.encode(), digest_size=8).digest(), "little")
        w = np.fromiter((table[x] for x in words), dtype=np.uint64, count=len(words))  # (n_words,)
        n = max(len(w) - self.shingle_size + 1, 1)
        h = np.zeros(n, dtype=np.uint64)
        for k in range(min(self.shingle_size, len(w))):
            h += w[k : k + n] * self.mix[k]  # wraps mod 2^64, as intended
        return np.unique(h >> np.uint64(32))

    def signature(self, text: str) -> np.ndarray:
        """(k,) uint64: min over shingles x of h_i(x) = ((a_i x + b_i) mod 2^64) >> 32.

        Multiply-add-shift (Dietzfelbinger 1996) is a 2-universal family for 32-bit x with 64-bit arithmetic,
        and numpy's uint64 multiply wraps mod 2^64 for free.
        """
        x = self.hash_shingles(text)  # (n,)
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        buf = np.empty((self.num_perm, min(len(x), 4096)), dtype=np.uint64)  # bound memory at k x 4096
        for start in range(0, len(x), 4096):
            chunk = x[None, start : start + 4096]  # (1, c)
            out = buf[:, : chunk.shape[1]]
            np.multiply(self.a[:, None], chunk, out=out)  # in place: no (k, c) temporaries
            np.add(out, self.b[:, None], out=out)
            np.minimum(sig, out.min(axis=1), out=sig)
        return sig >> np.uint64(32)  # the shift is monotone, so it commutes with min: apply it once


def choose_bands(num_perm: int, threshold: float) -> tuple[int, int]:
    """(b, r) with b * r = num_perm whose S-curve midpoint (1/b)^(1/r) is closest to `threshold`."""
    pairs = [(b, num_perm // b) for b in range(1, num_perm + 1) if num_perm % b == 0]
    return min(pairs, key=lambda br: abs((1 / br[0]) ** (1 / br[1]) - threshold))


@dataclass
class DedupReport:
    """What a dedup pass did; `kept` are indices into the input, in order."""

    n_input: int
    exact_removed: int = 0  # documents identical to an earlier one after normalization
    near_removed: int = 0  # documents with estimated Jaccard >= threshold to an earlier kept one
    kept: list[int] = field(default_factory=list)
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (removed, kept twin, estimated J)


def exact_dedup(docs: Sequence[str]) -> list[int]:
    """Indices of the first occurrence of each normalized text, in order."""
    seen: set[bytes] = set()
    kept = []
    for i, doc in enumerate(docs):
        key = hashlib.sha256(normalize(doc).encode()).digest()
        if key not in seen:
            seen.add(key)
            kept.append(i)
    return kept


def near_dedup(
    docs: Sequence[str], threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5, seed: int = 0
) -> tuple[list[int], list[tuple[int, int, float]]]:
    """Indices kept by MinHash + LSH near-dedup (earliest copy wins) and the (removed, twin, J) pairs."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"--near_dup_threshold={threshold}: expected a Jaccard threshold in (0, 1]")
    hasher = MinHasher(num_perm, shingle_size, seed)
    bands, rows = choose_bands(num_perm, threshold)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    kept, pairs, sigs = [], [], {}
    for i, doc in enumerate(progress(docs, desc="near-dedup", unit="doc")):
        sig = hasher.signature(doc)
        keys = [sig[j * rows : (j + 1) * rows].tobytes() for j in range(bands)]
        candidates = {c for j, key in enumerate(keys) for c in buckets[j].get(key, ())}
        best = max(((float(np.mean(sigs[c] == sig)), c) for c in candidates), default=(0.0, -1))
        if best[0] >= threshold:
            pairs.append((i, best[1], best[0]))
            continue
        kept.append(i)
        sigs[i] = sig
        for j, key in enumerate(keys):
            buckets[j].setdefault(key, []).append(i)
    return kept, pairs


def dedup(
    docs: Sequence[str], near: bool = True, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5
) -> DedupReport:
    """Exact dedup, then (optionally) near dedup of the survivors; indices refer to `docs`."""
    report = DedupReport(n_input=len(docs))
    exact = exact_dedup(docs)
    report.exact_removed = len(docs) - len(exact)
    report.kept = exact
    if near:
        local, pairs = near_dedup([docs[i] for i in exact], threshold, num_perm, shingle_size)
        report.kept = [exact[i] for i in local]
        report.pairs = [(exact[a], exact[b], j) for a, b, j in pairs]
        report.near_removed = len(exact) - len(local)
    return report
