"""ROUGE-1/2/L equal Google's rouge-score (no stemming) on random and edge-case pairs."""

from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from lmstack.eval.rouge import lcs_length, rouge, tokenize

WORDS = "the cat dog sat on mat a of and in don't U.S. café 2x 42 co-op Hello, WORLD! naïve x".split()


def pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    make = lambda: " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))  # noqa: E731
    return [(make(), make()) for _ in range(n)]


@pytest.mark.parametrize("ref, pred", pairs(150, seed=0) + [("", ""), ("", "a"), ("a", ""), ("!!!", "a b"),
                                                           ("The cat.", "the CAT!"), ("é è", "e")])  # fmt: skip
def test_matches_rouge_score(ref: str, pred: str, edge_strings) -> None:
    want = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]).score(ref, pred)
    got = rouge(ref, pred)
    for key in ("rouge1", "rouge2", "rougeL"):
        assert tuple(got[key]) == pytest.approx(tuple(want[key]), abs=1e-12), key


def test_matches_rouge_score_on_edge_strings(edge_strings) -> None:
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for a in edge_strings:
        for b in edge_strings[:6]:
            want, got = scorer.score(a, b), rouge(a, b)
            assert all(tuple(got[k]) == pytest.approx(tuple(want[k])) for k in want)


def test_lcs_and_tokenize_by_hand() -> None:
    assert lcs_length("a b c d e".split(), "a c e x".split()) == 3  # a, c, e
    assert tokenize("The cat's hat, 2x!") == ["the", "cat", "s", "hat", "2x"]
