"""BLEU (Papineni et al. 2002, "BLEU: a method for automatic evaluation of machine translation"), computed the way
`sacrebleu` computes it by default, so scores are comparable with published ones (Post 2018, "A Call for Clarity in
Reporting BLEU Scores").

    BLEU = BP * exp( (1/N) * sum_n log p_n ) * 100          N = 4
    p_n  = (clipped n-gram matches) / (hypothesis n-grams)   summed over the whole corpus before dividing
    BP   = 1 if c > r else exp(1 - r / c)                    c: hypothesis words, r: reference words

Clipping: a hypothesis n-gram counts at most as often as it occurs in the reference that has the most of it.
r is, per segment, the length of the reference closest to the hypothesis (the shorter one on a tie), summed.
Tokenization is mteval-v13a's ("13a"): punctuation and symbols become their own tokens, except that a period or
comma between two digits stays inside the number, and a dash after a digit is split off.
Smoothing `exp` (the default, NIST's "method 3"): the k-th n-gram order with zero matches gets precision
1 / (2^k * total_n) instead of 0. `none` leaves zero precisions at zero (then BLEU is 0).
`effective_order` (what sentence-level BLEU uses) averages only the orders the hypothesis is long enough to have.

Left out: the other tokenizers (intl, zh, ja-mecab, char), `floor` / `add-k` smoothing, chrF and TER, signatures.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

MAX_ORDER = 4
# mteval-v13a's language-dependent rules, applied in order to " line ":
_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),  # symbols and most punctuation stand alone
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),  # . and , split off unless a digit precedes
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),  # ... or unless a digit follows
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),  # a dash after a digit
]


def tokenize_13a(line: str) -> list[str]:
    """mteval-v13a tokenization: 'Hello, world (2.5-3)!' -> ['Hello', ',', 'world', '(', '2.5', '-', '3', ')', '!']."""
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:  # the few HTML entities mteval unescapes
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = f" {line} "
    for pattern, repl in _RULES:
        line = pattern.sub(repl, line)
    return line.split()


def ngrams(words: list[str], max_order: int = MAX_ORDER) -> Counter:
    """Counts of every 1..max_order-gram (as tuples)."""
    return Counter(tuple(words[i : i + n]) for n in range(1, max_order + 1) for i in range(len(words) - n + 1))


@dataclass
class BleuScore:
    score: float  # 0..100
    precisions: list[float]  # p_n in percent, after smoothing
    bp: float  # brevity penalty
    sys_len: int  # c: hypothesis words in the corpus
    ref_len: int  # r: closest-reference words in the corpus
    matches: list[int]  # clipped n-gram matches per order
    totals: list[int]  # hypothesis n-grams per order


def segment_stats(hyp: str, refs: Sequence[str], lowercase: bool = False) -> tuple[int, int, list[int], list[int]]:
    """(hyp length, closest ref length, clipped matches per order, hyp n-grams per order) of one segment."""
    prep = (lambda s: tokenize_13a(s.lower())) if lowercase else tokenize_13a
    h = prep(hyp)
    ref_counts: Counter = Counter()
    ref_lens = []
    for ref in refs:
        words = prep(ref)
        ref_lens.append(len(words))
        for gram, c in ngrams(words).items():  # max count over references: the clipping ceiling
            ref_counts[gram] = max(ref_counts[gram], c)
    closest = min(ref_lens, key=lambda r: (abs(len(h) - r), r))  # ties -> the shorter reference
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    for gram, c in ngrams(h).items():
        totals[len(gram) - 1] += c
        matches[len(gram) - 1] += min(c, ref_counts.get(gram, 0))
    return len(h), closest, matches, totals


def bleu_from_stats(
    sys_len: int,
    ref_len: int,
    matches: list[int],
    totals: list[int],
    smooth: str = "exp",
    effective_order: bool = False,
) -> BleuScore:
    """BLEU from corpus-level sufficient statistics (see the module docstring for the formula)."""
    if smooth not in ("exp", "none"):
        raise ValueError(f"smooth={smooth!r}: expected 'exp' or 'none'")
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    precisions = [0.0] * MAX_ORDER
    if not any(matches):
        return BleuScore(0.0, precisions, bp, sys_len, ref_len, matches, totals)
    order, halvings = MAX_ORDER, 1.0
    for n in range(MAX_ORDER):
        if totals[n] == 0:  # the hypothesis has no n-grams this long
            break
        if effective_order:
            order = n + 1
        if matches[n] > 0:
            precisions[n] = 100.0 * matches[n] / totals[n]
        elif smooth == "exp":
            halvings *= 2
            precisions[n] = 100.0 / (halvings * totals[n])
    log_mean = sum(math.log(p) if p > 0 else -9999999999.0 for p in precisions[:order]) / order  # log 0 -> "-inf"
    return BleuScore(bp * math.exp(log_mean), precisions, bp, sys_len, ref_len, matches, totals)


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], smooth: str = "exp", lowercase: bool = False
) -> BleuScore:
    """Corpus BLEU. references: one list per reference set, each aligned with `hypotheses` (sacrebleu's layout);
    a None entry means that set has no reference for the segment."""
    for k, refs in enumerate(references):
        if len(refs) != len(hypotheses):
            raise ValueError(f"references[{k}] has {len(refs)} segments, hypotheses has {len(hypotheses)}")
    sys_len = ref_len = 0
    matches, totals = [0] * MAX_ORDER, [0] * MAX_ORDER
    for i, hyp in enumerate(hypotheses):
        refs = [r[i] for r in references if r[i] is not None]
        if not refs:
            raise ValueError(f"segment {i} has no reference")
        c, r, m, t = segment_stats(hyp, refs, lowercase)
        sys_len, ref_len = sys_len + c, ref_len + r
        matches = [a + b for a, b in zip(matches, m)]
        totals = [a + b for a, b in zip(totals, t)]
    return bleu_from_stats(sys_len, ref_len, matches, totals, smooth)


def sentence_bleu(hypothesis: str, references: Sequence[str], smooth: str = "exp") -> BleuScore:
    """Sentence BLEU with effective order (sacrebleu's `sentence_bleu`)."""
    c, r, m, t = segment_stats(hypothesis, references)
    return bleu_from_stats(c, r, m, t, smooth, effective_order=True)
