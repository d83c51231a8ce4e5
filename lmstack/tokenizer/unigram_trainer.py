"""Unigram tokenizer training: EM over a large seed vocabulary, pruned by likelihood loss (Kudo 2018, sec. 3.2),
following the structure of sentencepiece's `unigram_model_trainer.cc`.

1. Words: normalize each text as the tokenizer does ("▁" for spaces, a dummy prefix), cut before each "▁",
   count distinct words (training never crosses a word boundary, so no piece holds an inner "▁").
2. Characters: keep the most frequent characters covering `character_coverage` of all characters (the rest
   become byte pieces at encode time). These "required" characters are never pruned.
3. Seed vocabulary: every substring of every word up to `max_piece_len` characters that occurs at least twice,
   scored frequency x length, the best `seed_size` kept, plus the characters. Scores become log-probabilities.
4. Repeat until the vocabulary is at most 1.1 x `vocab_size` (the whole vocabulary, as sentencepiece counts it):
   a. EM, `em_iterations` times. E-step: for each distinct word, forward-backward over its piece lattice gives
      each piece's expected count (lattice.marginals), weighted by the word's count. M-step (sentencepiece's
      Bayesian variant): drop pieces expected fewer than 0.5 times; log p(x) = digamma(count_x) - digamma(total).
   b. Prune to max(target x 1.1, `shrinking_factor` x size). A piece whose own best segmentation is not itself
      is never used and goes. For the others, the loss of removing piece x is approximated as in sentencepiece:
      with x's Viterbi count c_x over the corpus (total V), its best split without x ("alternatives" a_1..a_k)
      receiving x's count, and F_x the share of word occurrences that use x,
          loss(x) = F_x * (log(c_x / V) - sum_j log((c_{a_j} + c_x) / (V + c_x (k - 1))))
      The pieces with the largest loss are kept.
5. Final vocabulary: the required characters, then the highest-scoring pieces, `vocab_size` in all with <unk>,
   the special tokens and (with byte fallback) the 256 byte pieces, ordered as sentencepiece orders its model.

Left out: sentencepiece's suffix-array seeding (a substring count over distinct words gives the same candidates
on corpora this size, slower), splitting at script and digit boundaries, multi-threaded EM, sentence sampling.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from lmstack.common.log import progress
from lmstack.tokenizer.lattice import build_lattice, make_trie, marginals, viterbi
from lmstack.tokenizer.unigram import BYTE_PIECES, SPACE, UNK_PENALTY, WORD_PATTERN, UnigramTokenizer

DEFAULT_SPECIALS = ("<s>", "</s>")  # after <unk> (id 0), sentencepiece's default control pieces
MIN_EXPECTED = 0.5  # M-step: pieces expected fewer times than this are dropped (sentencepiece's threshold)


def digamma(x: float) -> float:
    """psi(x) for x > 0: the recurrence psi(x) = psi(x + 1) - 1/x up to x >= 10, then the asymptotic series."""
    out = 0.0
    while x < 10.0:
        out -= 1.0 / x
        x += 1.0
    inv2 = 1.0 / (x * x)
    return out + math.log(x) - 0.5 / x - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 / 252))


def count_words(texts: Iterable[str], show_progress: bool = True) -> Counter[str]:
    """Distinct normalized words ("▁the", "▁", "ing") -> occurrences."""
    counts: Counter[str] = Counter()
    for text in progress(texts, desc="count words", unit="doc", disable=None if show_progress else True):
        if text:
            counts.update(WORD_PATTERN.findall(SPACE + text.replace(" ", SPACE)))
    return counts


def required_chars(words: Counter[str], coverage: float) -> dict[str, int]:
    """The most frequent characters that together make up `coverage` of all characters -> their counts."""
    chars: Counter[str] = Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
    total, kept, out = sum(chars.values()), 0, {}
    for ch, c in chars.most_common():
        if out and kept >= coverage * total:
            break
        out[ch] = c
        kept += c
    return out


def seed_pieces(words: Counter[str], chars: dict[str, int], max_len: int, seed_size: int) -> dict[str, float]:
    """Frequent substrings scored by frequency x length (plus every required character), as log-probabilities."""
    subs: Counter[str] = Counter()
    for w, c in words.items():
        n = len(w)
        for s in range(n):
            for e in range(s + 2, min(n, s + max_len) + 1):
                sub = w[s:e]
                if sub[-1] not in chars or (SPACE in sub[1:]):
                    break  # longer substrings from s contain it too
                subs[sub] += c
    scored = sorted(((c * len(s), s) for s, c in subs.items() if c >= 2), reverse=True)[:seed_size]
    raw = {ch: float(c) for ch, c in chars.items()}
    raw.update({s: float(score) for score, s in scored if s[0] in chars})
    log_total = math.log(sum(raw.values()))
    return {p: math.log(v) - log_total for p, v in raw.items()}


def em_step(pieces: dict[str, float], words: list[tuple[str, int]], chars: dict[str, int]) -> tuple[dict, float]:
    """One E-step + M-step; returns the new log-probabilities and the corpus log-likelihood before the update."""
    names = list(pieces)
    trie = make_trie({p: (i, s) for i, (p, s) in enumerate(pieces.items())})
    unk = min(pieces.values()) - UNK_PENALTY
    expected = [0.0] * len(names)
    loglik = 0.0
    for w, c in words:
        log_z, edges = marginals(build_lattice(w, trie, unk))
        loglik += c * log_z
        for i, p in edges:
            if i >= 0:
                expected[i] += c * p
    kept = {p: e for p, e in zip(names, expected) if e >= MIN_EXPECTED or (len(p) == 1 and p in chars)}
    kept = {p: max(e, MIN_EXPECTED) for p, e in kept.items()}  # a required character keeps a finite score
    log_total = digamma(sum(kept.values()))
    return {p: digamma(e) - log_total for p, e in kept.items()}, loglik


def prune(pieces: dict[str, float], words: list[tuple[str, int]], target: int) -> dict[str, float]:
    """Keep the `target` pieces whose removal would cost the most likelihood (module docstring, step 4b)."""
    names = list(pieces)
    trie = make_trie({p: (i, s) for i, (p, s) in enumerate(pieces.items())})
    unk = min(pieces.values()) - UNK_PENALTY
    always_keep, alternatives = [True] * len(names), [[] for _ in names]
    for i, p in enumerate(names):
        if len(p) == 1:
            continue  # characters have no alternative segmentation: always kept
        best = viterbi(build_lattice(p, trie, unk))
        if len(best) > 1:
            always_keep[i] = False  # its own best split avoids it: never used
            continue
        end = trie
        for ch in p:
            end = end[ch]
        hit = end.pop(None)  # the second-best split is the best split without the piece itself
        alternatives[i] = [j for _, j, _ in viterbi(build_lattice(p, trie, unk))]
        end[None] = hit
    freq, used_in = [0.0] * len(names), [0.0] * len(names)
    for w, c in words:
        ids = [j for _, j, _ in viterbi(build_lattice(w, trie, unk)) if j >= 0]
        for j in ids:
            freq[j] += c
        for j in set(ids):
            used_in[j] += c
    total = sum(freq)
    keep, candidates = [], []
    for i, p in enumerate(names):
        if freq[i] == 0 or not always_keep[i]:
            continue
        if not alternatives[i]:
            keep.append(p)
            continue
        alt = alternatives[i]
        new_total = total + freq[i] * (len(alt) - 1)
        logp_alt = sum(math.log(freq[a] + freq[i]) - math.log(new_total) for a in alt if a >= 0)
        loss = used_in[i] / total * (math.log(freq[i]) - math.log(total) - logp_alt)
        candidates.append((loss, p))
    candidates.sort(key=lambda lp: -lp[0])
    keep += [p for _, p in candidates[: max(0, target - len(keep))]]
    return {p: pieces[p] for p in keep}


def finalize(pieces: dict[str, float], chars: dict[str, int], n: int) -> list[tuple[str, float]]:
    """The required characters (a missing one scored just below the lowest score), then the best pieces; n in
    all, sorted by score (descending), as sentencepiece writes its model."""
    low = min(pieces.values())
    final = {}
    for k, ch in enumerate(sorted(chars, key=lambda ch: -chars[ch])):
        final[ch] = pieces.get(ch, low - 1e-4 * (k + 1))
    for p, s in sorted(pieces.items(), key=lambda ps: -ps[1]):
        if len(final) >= n:
            break
        final.setdefault(p, s)
    return sorted(final.items(), key=lambda ps: (-ps[1], ps[0]))


def train_unigram(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: list[str] | tuple[str, ...] = DEFAULT_SPECIALS,
    byte_fallback: bool = True,
    max_piece_len: int = 16,
    seed_size: int = 200_000,
    shrinking_factor: float = 0.75,
    em_iterations: int = 2,
    character_coverage: float = 0.9995,
    show_progress: bool = True,
) -> UnigramTokenizer:
    """Train on `texts`; `vocab_size` counts <unk>, the special tokens, byte pieces and learned pieces."""
    reserved = 1 + len(special_tokens) + (256 if byte_fallback else 0)
    n_learned = vocab_size - reserved
    if n_learned < 1:
        raise ValueError(f"vocab_size={vocab_size}: must exceed <unk> + special tokens + byte pieces = {reserved}")
    counts = count_words(texts, show_progress)
    if not counts:
        raise ValueError("no training text: every text is empty")
    chars = required_chars(counts, character_coverage)
    words = sorted(counts.items(), key=lambda wc: -wc[1])
    pieces = seed_pieces(counts, chars, max_piece_len, seed_size)
    desired = max(int(vocab_size * 1.1), len(chars))  # as sentencepiece: 1.1 x the whole vocabulary
    bar = progress(desc="unigram EM", unit="round", disable=None if show_progress else True)
    while True:
        for _ in range(em_iterations):
            pieces, loglik = em_step(pieces, words, chars)
        bar.update(1)
        bar.set_postfix(pieces=len(pieces), loglik=f"{loglik:.4g}", refresh=False)
        if len(pieces) <= desired:
            break
        pieces = prune(pieces, words, max(desired, int(shrinking_factor * len(pieces))))
    bar.close()
    learned = finalize(pieces, chars, n_learned)
    table = [("<unk>", 0.0), *((s, 0.0) for s in special_tokens)]
    table += [(b, 0.0) for b in BYTE_PIECES] if byte_fallback else []
    specials = {s: 1 + k for k, s in enumerate(special_tokens)}
    return UnigramTokenizer(table + learned, 0, specials, byte_fallback)
