"""WordPiece training: likelihood-scored merges (Schuster & Nakajima 2012; the BERT vocabulary's algorithm as
Google describes it), not HF `tokenizers`' WordPieceTrainer (which runs BPE's frequency merges and relabels them).

Words come already normalized and pre-tokenized (BERT's rules: `wordpiece.bert_normalize`, `bert_pre_tokenize`).
Each word starts as its characters, every non-initial one marked as a continuation: "hug" -> h ##u ##g. Then,
until the vocabulary is full, merge the adjacent pair (a, b) with the highest

    score(a, b) = count(a b) / (count(a) * count(b))

i.e. the pair whose merge most increases the likelihood of the corpus under a unigram model of the current
symbols (log p(ab) - log p(a) - log p(b), up to a constant): a frequent pair of rare symbols beats a frequent pair
of frequent ones, so WordPiece prefers merging meaningful units ("##iz ##ation") over glueing common letters the
way BPE's raw counts do. The merged symbol is a + b without b's "##".

Counts are updated incrementally: rewriting the words that contain (a, b) changes some pair counts, and the merge
changes count(a), count(b) and count(ab), which changes the score of every pair that holds one of them; exactly
those pairs are pushed again on a max-heap, and a popped entry whose score no longer matches is stale and skipped.
Ties go to the higher pair count, then the lexicographically smaller pair. Left out: a `min_frequency` floor, an
alphabet limit, and HF's relabelled-BPE variant.
"""

from __future__ import annotations

import heapq
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
) -> list[str]:
    """The vocabulary (special tokens, then the alphabet, then merges in order) from normalized words (a Counter
    or an iterable of words)."""
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

    def score(p: Pair) -> float:
        return pair[p] / (sym[p[0]] * sym[p[1]])

    heap = [(-score(p), -n, p) for p, n in pair.items()]
    heapq.heapify(heap)
    bar = progress(total=vocab_size - len(vocab), desc="wordpiece merges", disable=None if show_progress else True)
    while len(vocab) < vocab_size and heap:
        neg, neg_n, p = heapq.heappop(heap)
        if pair.get(p, 0) <= 0 or -neg != score(p) or -neg_n != pair[p]:
            continue  # stale: a fresher entry for this pair is in the heap (or it is gone)
        a, b = p
        new = a + b[len(prefix) :]
        touched = _merge(p, new, corpus, sym, pair, where, pairs_of)
        if new not in vocab:
            vocab.append(new)
            bar.update(1)
        for q in touched | pairs_of[a] | pairs_of[b] | pairs_of[new]:  # every pair whose score changed
            if pair.get(q, 0) > 0:
                heapq.heappush(heap, (-score(q), -pair[q], q))
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
) -> WordPieceTokenizer:
    """A BERT `WordPieceTokenizer` trained on `texts`: BERT normalization and pre-tokenization, then
    `train_wordpiece`; ids follow the vocabulary order (special tokens first)."""
    norm = dict(lowercase=lowercase)
    words = Counter(w for t in progress(texts, desc="count words", unit="doc", disable=None if show_progress else True)
                    for w in bert_pre_tokenize(bert_normalize(t, **norm)))  # fmt: skip
    specials = list(special_tokens)
    vocab = train_wordpiece(words, vocab_size, specials, show_progress=show_progress)
    return WordPieceTokenizer({p: i for i, p in enumerate(vocab)}, special_tokens=specials, lowercase=lowercase)
