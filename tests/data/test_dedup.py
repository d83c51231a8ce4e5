"""Exact and MinHash/LSH near-dedup: known-Jaccard pairs, estimate vs exact, removal counts, band choice.

Documents with a chosen Jaccard similarity are built from distinct random words: two documents sharing a
contiguous run of words have word-5-gram sets whose exact Jaccard `jaccard(shingles(a), shingles(b))` we
compute independently of MinHash, and the MinHash estimate must agree within 4 standard errors
sqrt(J (1 - J) / k) (k = 256 here, so <= 0.125; the seeds are fixed, so the test is deterministic).
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from lmstack.data.dedup import MinHasher, choose_bands, dedup, exact_dedup, jaccard, near_dedup, normalize, shingles


def words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"w{rng.randrange(10**9)}" for _ in range(n)]


def edited(text: str, fraction: float, seed: int) -> str:
    """`text` with `fraction` of its words replaced by fresh ones."""
    rng = random.Random(seed)
    toks = text.split()
    for i in rng.sample(range(len(toks)), int(len(toks) * fraction)):
        toks[i] = f"new{rng.randrange(10**9)}"
    return " ".join(toks)


def test_normalize_and_exact_dedup():
    assert normalize("  Hello,\r\n  WORLD\t ") == "hello, world"
    docs = ["Hello world", "hello   WORLD\n", "something else", "Hello world!", "something else"]
    assert exact_dedup(docs) == [0, 2, 3]  # case/space variants and a copy removed, punctuation differs


@pytest.mark.parametrize("overlap", [0.2, 0.5, 0.8, 0.95])
def test_minhash_estimate_matches_exact_jaccard(overlap):
    n = 2000
    shared = int(n * overlap)
    base = words(2 * n, seed=1)
    a, b = " ".join(base[:n]), " ".join(base[n - shared : 2 * n - shared])
    exact = jaccard(shingles(a), shingles(b))
    hasher = MinHasher(num_perm=256, seed=3)
    estimate = float(np.mean(hasher.signature(a) == hasher.signature(b)))
    stderr = (exact * (1 - exact) / 256) ** 0.5
    assert abs(estimate - exact) <= 4 * stderr + 1e-9, (exact, estimate)


def test_identical_and_disjoint_signatures():
    hasher = MinHasher(num_perm=64)
    a = " ".join(words(300, seed=5))
    assert np.array_equal(hasher.signature(a), hasher.signature(a.upper()))  # normalization first
    assert np.mean(hasher.signature(a) == hasher.signature(" ".join(words(300, seed=6)))) < 0.05


def test_short_documents_have_one_shingle():
    assert shingles("Two words") == {"two words"}
    assert len(shingles(" ".join(words(7, seed=0)))) == 3  # 7 words -> 3 five-grams


def test_near_duplicates_removed_distinct_kept():
    base = [" ".join(words(1000, seed=s)) for s in range(6)]
    docs = base + [edited(base[0], 0.005, seed=1), edited(base[3], 0.01, seed=2), edited(base[4], 0.5, seed=3)]
    js = [jaccard(shingles(docs[i]), shingles(docs[j])) for i, j in ((6, 0), (7, 3), (8, 4))]
    assert js[0] > 0.94 and js[1] > 0.89 and js[2] < 0.1  # exact Jaccard of the three planted pairs
    kept, pairs = near_dedup(docs, threshold=0.8)
    assert kept == [0, 1, 2, 3, 4, 5, 8]  # the 0.5%/1% edits go, the 50% rewrite (J ~ 0.03) stays
    assert [(r, k) for r, k, _ in pairs] == [(6, 0), (7, 3)]


def test_threshold_is_respected_around_a_known_jaccard():
    base = words(3000, seed=9)
    a = " ".join(base[:2000])
    b = " ".join(base[1000:3000])  # shares half the words in one run: J of 5-gram sets ~ 1/3
    j = jaccard(shingles(a), shingles(b))
    assert 0.3 < j < 0.36
    assert near_dedup([a, b], threshold=0.2, num_perm=256)[0] == [0]  # J above threshold: removed
    assert near_dedup([a, b], threshold=0.5, num_perm=256)[0] == [0, 1]  # below: kept


def test_dedup_reports_counts_and_keeps_earliest():
    base = [" ".join(words(300, seed=s)) for s in range(4)]
    docs = [base[0], base[1], base[0].upper(), edited(base[1], 0.01, seed=4), base[2], base[3]]
    report = dedup(docs, threshold=0.8)
    assert (report.n_input, report.exact_removed, report.near_removed) == (6, 1, 1)
    assert report.kept == [0, 1, 4, 5]
    assert [p[:2] for p in report.pairs] == [(3, 1)]
    assert dedup(docs, near=False).kept == [0, 1, 3, 4, 5]


def test_choose_bands_puts_the_s_curve_near_the_threshold():
    for k, t in [(128, 0.8), (128, 0.5), (256, 0.7), (64, 0.9)]:
        b, r = choose_bands(k, t)
        assert b * r == k
        midpoint = (1 / b) ** (1 / r)
        others = [(1 / bb) ** (1 / (k // bb)) for bb in range(1, k + 1) if k % bb == 0]
        assert abs(midpoint - t) == min(abs(m - t) for m in others)
    assert choose_bands(128, 0.8) == (8, 16)  # (1/8)^(1/16) = 0.878: the closest divisor pair
    with pytest.raises(ValueError, match="near_dup_threshold=0"):
        near_dedup(["a"], threshold=0.0)
