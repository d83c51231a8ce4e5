"""BPE training: learn merges from text, updating pair counts incrementally (never recounting the corpus).

Algorithm (Sennrich et al. 2016, byte-level as in GPT-2):
1. Stream the texts once; cut each into chunks with the split stages and count identical chunks
   (a 5 MB corpus has ~1M chunks but only ~30k distinct ones). Memory is O(distinct chunks), not O(text).
2. Each distinct chunk becomes a *word*: its UTF-8 bytes as ids 0..255, weighted by its count.
3. Count every adjacent pair over all words (weighted), remember which words hold each pair, and put all
   pairs in a max-heap keyed by count.
4. Repeat until the vocabulary is full: pop the most frequent pair (a, b), give it the next id t, rewrite only
   the words that contain it (a b -> t, left to right), and apply to the pair counts only the *differences*
   those rewrites cause. Changed pairs are pushed again with their new count; an entry whose count no longer
   matches the table is stale and skipped when popped ("lazy invalidation").

Tie-break (deterministic, documented): the highest count wins; among equal counts the pair with the smallest
(id_a, id_b) wins, i.e. the pair of earlier tokens. Hugging Face's BpeTrainer uses the same rule, so merge
orders mostly agree. `train_bpe_reference` recounts every pair after every merge; a test ties the two.

Left out: min_frequency, limit_alphabet, initial alphabets beyond the 256 bytes, training resumption (a 100 MB
corpus trains in minutes; the distinct-chunk counts are the only expensive state).
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

from lmstack.common.log import progress
from lmstack.tokenizer.patterns import make_splitter

Pair = tuple[int, int]


def count_chunks(texts: Iterable[str], stages: list[str], show_progress: bool = True) -> Counter[str]:
    """Distinct chunk -> occurrences, over a stream of texts."""
    split = make_splitter(stages)
    counts: Counter[str] = Counter()
    for text in progress(texts, desc="count chunks", unit="doc", disable=None if show_progress else True):
        counts.update(split(text))
    return counts


def chunk_words(counts: Counter[str]) -> tuple[list[list[int]], list[int]]:
    """Distinct chunks -> (byte-id lists, counts); chunks of one byte have no pair and are dropped."""
    words, freqs = [], []
    for chunk, n in counts.items():
        try:
            raw = chunk.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogate: same replacement as encode()
            raw = chunk.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")
        if len(raw) >= 2:
            words.append(list(raw))
            freqs.append(n)
    return words, freqs


def merge_word(word: list[int], a: int, b: int, t: int) -> list[int]:
    """Replace each non-overlapping (a, b), left to right, by t.  merge_word([1,1,1], 1, 1, 9) == [9, 1]."""
    out, i, n = [], 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(t)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _apply_merge(
    pair: Pair, t: int, words: list[list[int]], freqs: list[int], where: dict[Pair, set[int]]
) -> dict[Pair, int]:
    """Rewrite the words holding `pair`; return the change of every pair count it causes."""
    a, b = pair
    delta: dict[Pair, int] = defaultdict(int)
    for w in where.pop(pair, ()):
        word = words[w]
        new = merge_word(word, a, b, t)
        if len(new) == len(word):
            continue  # stale index entry: an earlier merge already consumed this occurrence
        f = freqs[w]
        for p in zip(word, word[1:]):
            delta[p] -= f
        for p in zip(new, new[1:]):
            delta[p] += f
            where[p].add(w)
        words[w] = new
    return delta


def train_bpe(texts: Iterable[str], n_tokens: int, stages: list[str], show_progress: bool = True) -> dict[bytes, int]:
    """Learn `n_tokens - 256` merges; return token bytes -> rank (id), bytes first, then merges in order."""
    if n_tokens < 256:
        raise ValueError(f"vocab_size: need at least 256 ordinary tokens (one per byte), got {n_tokens}")
    words, freqs = chunk_words(count_chunks(texts, stages, show_progress))
    counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for w, word in enumerate(words):
        for p in zip(word, word[1:]):
            counts[p] += freqs[w]
            where[p].add(w)
    heap = [(-c, a, b) for (a, b), c in counts.items()]  # min-heap on (-count, a, b) = our tie rule
    heapq.heapify(heap)
    vocab = [bytes([i]) for i in range(256)]
    bar = progress(total=n_tokens - 256, desc="merges", unit="merge", disable=None if show_progress else True)
    while len(vocab) < n_tokens and heap:
        neg, a, b = heapq.heappop(heap)
        if counts.get((a, b), 0) != -neg:
            continue  # stale entry; the pair's current count was pushed when it changed
        t = len(vocab)
        vocab.append(vocab[a] + vocab[b])
        for p, d in _apply_merge((a, b), t, words, freqs, where).items():
            if d == 0:
                continue
            c = counts[p] + d
            if c > 0:
                counts[p] = c
                heapq.heappush(heap, (-c, p[0], p[1]))
            else:
                counts.pop(p, None)
                where.pop(p, None)
        bar.update(1)
    bar.close()
    return {tok: i for i, tok in enumerate(vocab)}


def train_bpe_reference(texts: Iterable[str], n_tokens: int, stages: list[str]) -> dict[bytes, int]:
    """The readable version: after every merge, recount all pairs of all distinct words. O(merges x corpus)."""
    words, freqs = chunk_words(count_chunks(texts, stages, show_progress=False))
    vocab = [bytes([i]) for i in range(256)]
    while len(vocab) < n_tokens:
        counts: Counter[Pair] = Counter()
        for word, f in zip(words, freqs):
            for p in zip(word, word[1:]):
                counts[p] += f
        if not counts:
            break
        a, b = min(counts, key=lambda p: (-counts[p], p))  # highest count, then smallest (a, b)
        t = len(vocab)
        vocab.append(vocab[a] + vocab[b])
        words = [merge_word(w, a, b, t) for w in words]
    return {tok: i for i, tok in enumerate(vocab)}
