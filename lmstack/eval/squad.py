"""Exact match and token F1 with SQuAD answer normalization (Rajpurkar et al. 2016; the official v1.1/v2.0
evaluation script's rules).

normalize: lower case, drop every ASCII punctuation character, drop the words "a", "an", "the", collapse
whitespace. Then

    exact match = normalize(prediction) == normalize(gold)
    token F1    = 2PR / (P + R) over the bags of normalized tokens (P = common / |pred|, R = common / |gold|);
                  if either side has no tokens (SQuAD 2.0's "no answer"), F1 = 1 when both are empty, else 0
    over several gold answers the best score counts.

Left out: the v2.0 "HasAns / NoAns" breakdown and no-answer threshold search.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """'The  Eiffel-Tower!' -> 'eiffeltower'."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    """1.0 if the normalized prediction equals any normalized gold answer, else 0.0."""
    golds = [golds] if isinstance(golds, str) else golds
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    p, r = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * p * r / (p + r)


def token_f1(prediction: str, golds: str | Sequence[str]) -> float:
    """The best token F1 of the prediction against the gold answers."""
    golds = [golds] if isinstance(golds, str) else golds
    pred = normalize_answer(prediction).split()
    return max(_f1(pred, normalize_answer(g).split()) for g in golds)
