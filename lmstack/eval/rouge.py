"""ROUGE-1, ROUGE-2 and ROUGE-L (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries"), equal to
Google's `rouge-score` package with its defaults (no stemming).

Tokens: the text is lower-cased, every run of characters outside [a-z0-9] becomes a separator (so "don't" is
"don" + "t", and accented letters split words, as in the original Perl script), empty pieces are dropped.

    ROUGE-N: overlap = sum over n-grams g of min(count_pred(g), count_ref(g))
             precision = overlap / #pred n-grams, recall = overlap / #ref n-grams   (0 when there are none)
    ROUGE-L: the same with overlap = length of the longest common subsequence of the two token lists
    F        = 2PR / (P + R)  (0 when P + R = 0)

Left out: Porter stemming (`use_stemmer=True`), ROUGE-Lsum (summary-level LCS over sentences), bootstrap
aggregation (`lmstack.eval.confidence` gives intervals for any per-item metric).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import NamedTuple

_NON_ALNUM = re.compile(r"[^a-z0-9]+")


class Score(NamedTuple):
    precision: float
    recall: float
    fmeasure: float


def tokenize(text: str) -> list[str]:
    """'The cat's hat, 2x!' -> ['the', 'cat', 's', 'hat', '2x']."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split(" ") if t]


def _score(overlap: int, n_pred: int, n_ref: int) -> Score:
    p, r = overlap / max(n_pred, 1), overlap / max(n_ref, 1)
    return Score(p, r, 2 * p * r / (p + r) if p + r > 0 else 0.0)


def rouge_n(reference: str, prediction: str, n: int) -> Score:
    """ROUGE-N between one reference and one prediction."""
    ref, pred = tokenize(reference), tokenize(prediction)
    grams = [Counter(tuple(t[i : i + n]) for i in range(len(t) - n + 1)) for t in (ref, pred)]
    overlap = sum(min(c, grams[0][g]) for g, c in grams[1].items())
    return _score(overlap, sum(grams[1].values()), sum(grams[0].values()))


def lcs_length(a: list[str], b: list[str]) -> int:
    """Longest common subsequence by dynamic programming, one row at a time: O(len(a) * len(b)) time."""
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):  # row[j+1] = LCS of a[:i+1] and b[:j+1]
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]


def rouge_l(reference: str, prediction: str) -> Score:
    """ROUGE-L (sentence-level LCS) between one reference and one prediction."""
    ref, pred = tokenize(reference), tokenize(prediction)
    if not ref or not pred:
        return Score(0.0, 0.0, 0.0)
    return _score(lcs_length(ref, pred), len(pred), len(ref))


def rouge(reference: str, prediction: str) -> dict[str, Score]:
    """{'rouge1', 'rouge2', 'rougeL'} -> Score, the keys `rouge_score.RougeScorer` uses."""
    return {"rouge1": rouge_n(reference, prediction, 1), "rouge2": rouge_n(reference, prediction, 2),
            "rougeL": rouge_l(reference, prediction)}  # fmt: skip
