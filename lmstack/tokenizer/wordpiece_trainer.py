"""WordPiece training: likelihood-scored merges (Schuster & Nakajima 2012: add the unit that increases the training
data's likelihood the most), not HF `tokenizers`' WordPieceTrainer (which runs BPE's frequency merges and relabels
them).

Words come already normalized and pre-tokenized (BERT's rules: `wordpiece.bert_normalize`, `bert_pre_tokenize`).
Each word starts as its characters, every non-initial one marked as a continuation: "hug" -> h ##u ##g. Then,
until the vocabulary is full, merge the adjacent pair (a, b) with the highest score:

    likelihood (default):  count(ab) * log(count(ab) * N / (count(a) * count(b)))
    pmi:                   count(ab) / (count(a) * count(b))

Under a unigram model of the current symbols (N symbols in all), replacing the count(ab) occurrences of "a b" by
one symbol changes the corpus log-likelihood by about count(ab) * [log p(ab) - log p(a) - log p(b)]: the pointwise
mutual information of the pair, weighted by how often the merge applies. That is "likelihood" (N is held at its
initial value, a constant factor inside the log). "pmi" drops the weight, the score the Hugging Face course gives
for WordPiece: it prefers rare pairs of rare symbols, so on a 4k vocabulary it spends merges on one-off strings
(measured in docs/tokenizer.md). Either way a frequent pair of frequent symbols scores lower than under BPE's raw
count. The merged symbol is a + b without b's "##".

Counts are updated incrementally: rewriting the words that contain (a, b) changes some pair counts, and the merge
changes count(a), count(b) and count(ab), which changes the score of every pair that holds one of them; exactly
those pairs are pushed again on a max-heap, and a popped entry whose score no longer matches is stale and skipped.
Ties go to the higher pair count, then the lexicographically smaller pair. Left out: a `min_frequency` floor, an
alphabet limit, and HF's relabelled-BPE variant.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from lmstack.common.log import progress
from lmstack.tokenizer.wordpiece import WordPieceTokenizer, bert_normalize, bert_pre_tokenize

Pair = tuple[str, str]
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _split(word: str, prefix: str) -> list[str]:
    return [word[0], *(prefix + c for c in word[1:])]


def train_wordpiece(
    words: Counter[str] | Iterable[str],
    vocab_size: int,
    special_tokens: Iterable[str] = BERT_SPECIALS,
    prefix: str = "##",
    show_progress: bool = True,
    score: str = "likelihood",
) -> list[str]:
    """The vocabulary (special tokens, then the alphabet, then merges in order) from normalized words (a Counter
    or an iterable of words); `score` is "likelihood" or "pmi" (module docstring)."""
    if score not in ("likelihood", "pmi"):
        raise ValueError(f"score={score!r}; expected 'likelihood' or 'pmi'")
    counts = words if isinstance(words, Counter) else Counter(words)
    specials = list(special_tokens)
    corpus = [(_split(w, prefix), c) for w, c in counts.items() if w]
    alphabet = sorted({s for symbols, _ in corpus for s in symbols})
    vocab = specials + [s for s in alphabet if s not in specials]
    if vocab_size < len(vocab):
        raise ValueError(f"vocab_size={vocab_size}: the special tokens and alphabet alone need {len(vocab)}")
    sym: Counter[str] = Counter()
    pair: Counter[Pair] = Counter()
    where: dict[Pair, set[int]] = defaultdict(set)  # pair -> words holding it
    pairs_of: dict[str, set[Pair]] = defaultdict(set)  # symbol -> pairs holding it (score depends on count(symbol))
    for w, (symbols, c) in enumerate(corpus):
        for s in symbols:
            sym[s] += c
        for p in zip(symbols, symbols[1:]):
            pair[p] += c
            where[p].add(w)
            pairs_of[p[0]].add(p)
            pairs_of[p[1]].add(p)

    N = sum(sym.values())

    def gain(p: Pair) -> float:
        ratio = pair[p] / (sym[p[0]] * sym[p[1]])  # p(ab) / (p(a) p(b)) up to the constant N
        return ratio if score == "pmi" else pair[p] * math.log(N * ratio)

    heap = [(-gain(p), -n, p) for p, n in pair.items()]
    heapq.heapify(heap)
    bar = progress(total=vocab_size - len(vocab), desc="wordpiece merges", disable=None if show_progress else True)
    while len(vocab) < vocab_size and heap:
        neg, neg_n, p = heapq.heappop(heap)
        if pair.get(p, 0) <= 0 or -neg != gain(p) or -neg_n != pair[p]:
            continue  # stale: a fresher entry for this pair is in the heap (or it is gone)
        a, b = p
        new = a + b[len(prefix) :]
        touched = _merge(p, new, corpus, sym, pair, where, pairs_of)
        if new not in vocab:
            vocab.append(new)
            bar.update(1)
        for q in touched | pairs_of[a] | pairs_of[b] | pairs_of[new]:  # every pair whose score changed
            if pair.get(q, 0) > 0:
                heapq.heappush(heap, (-gain(q), -pair[q], q))
    bar.close()
    return vocab


def _merge(
    p: Pair, new: str, corpus: list, sym: Counter, pair: Counter, where: dict, pairs_of: dict
) -> set[Pair]:  # fmt: skip
    """Rewrite every word holding the pair p as `new`; update the counts; return the pairs whose count changed."""
    a, b = p
    touched: set[Pair] = set()
    for w in where.pop(p, set()):
        symbols, c = corpus[w]
        out, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and symbols[i] == a and symbols[i + 1] == b:
                out.append(new)
                i += 2
            else:
                out.append(symbols[i])
                i += 1
        if len(out) == len(symbols):
            continue
        for q in zip(symbols, symbols[1:]):
            pair[q] -= c
            touched.add(q)
        for s in symbols:
            sym[s] -= c
        for s in out:
            sym[s] += c
        for q in zip(out, out[1:]):
            pair[q] += c
            touched.add(q)
            where[q].add(w)
            pairs_of[q[0]].add(q)
            pairs_of[q[1]].add(q)
        corpus[w] = (out, c)
    return touched


def train_wordpiece_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    special_tokens: Iterable[str] = BERT_SPECIALS,
    lowercase: bool = True,
    show_progress: bool = True,
    score: str = "likelihood",
) -> WordPieceTokenizer:
    """A BERT `WordPieceTokenizer` trained on `texts`: BERT normalization and pre-tokenization, then
    `train_wordpiece`; ids follow the vocabulary order (special tokens first)."""
    norm = dict(lowercase=lowercase)
    words = Counter(w for t in progress(texts, desc="count words", unit="doc", disable=None if show_progress else True)
                    for w in bert_pre_tokenize(bert_normalize(t, **norm)))  # fmt: skip
    specials = list(special_tokens)
    vocab = train_wordpiece(words, vocab_size, specials, show_progress=show_progress, score=score)
    return WordPieceTokenizer({p: i for i, p in enumerate(vocab)}, special_tokens=specials, lowercase=lowercase)
