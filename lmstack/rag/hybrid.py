"""Hybrid fusion: merge BM25's and dense retrieval's results into one ranking, by ranks (RRF) or by scores (convex).

Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009) merges ranked lists without comparing their scores:

    rrf(d) = sum over lists L containing d of  1 / (k + rank_L(d))        (rank from 1, k = 60)

BM25 scores (unbounded) and cosines (in [-1, 1]) are not on one scale; ranks are. A document ranked high by
either retriever rises; one ranked well by both rises most. k damps the head: with k = 60 rank 1 is worth 1/61
and rank 10 1/70, so agreement matters more than one list's top spot.
Weighted RRF multiplies each list's terms by its weight (used to let a reranker's order count less than the
retrievers' agreement).

Convex combination (Bruch, Gai & Ingber 2023, "An Analysis of Fusion Functions for Hybrid Retrieval"): map each
list's scores to [0, 1] over its own hits (min-max per query: its best hit 1, its worst 0), then rank by

    convex(d) = sum over lists L of  w_L * norm_L(d)          (w_dense = alpha, w_bm25 = 1 - alpha; 0 if d not in L)

Unlike RRF it keeps how far apart the scores are: a passage dense search puts far ahead of the rest stays ahead
even when BM25 does not find it, and a near-tie in one list costs little. That paper finds it beats RRF in and
out of domain; here it does on both evaluation sets at the untuned alpha = 0.5 (docs/rag.md), so it is the
default (`--fusion=rrf` for RRF). Left out: z-score normalization, learned per-query weights.
"""

from __future__ import annotations

from collections.abc import Sequence

FUSIONS = ("convex", "rrf")  # how a hybrid retriever merges BM25's and dense's hits
DENSE_WEIGHT = 0.5  # convex fusion: dense's weight alpha (BM25's is 1 - alpha); equal, not tuned
RERANK_FUSIONS = ("rrf", "replace")  # a reranker's order is fused with the first stage's, or replaces it
RERANK_WEIGHT = 0.5  # a reranker's list beside each retriever's (weight 1 each): chosen on both eval sets (docs/rag.md)


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int = 60, weights: Sequence[float] | None = None
) -> list[tuple[int, float]]:
    """Fuse ranked id lists (best first) -> [(id, rrf score)] best first; ties keep first-seen order.

    >>> reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60)[0][0]
    1
    """
    if k < 0:
        raise ValueError(f"rrf k={k} must be >= 0")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings) or any(w < 0 for w in weights):
        raise ValueError(f"rrf weights={weights}: expected {len(rankings)} non-negative numbers, one per ranking")
    scores: dict[int, float] = {}
    for ranking, w in zip(rankings, weights):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + w / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def convex_combination(
    lists: Sequence[Sequence[tuple[int, float]]], weights: Sequence[float]
) -> list[tuple[int, float]]:
    """Fuse scored lists [(id, score)] by the weighted sum of per-list min-max normalized scores -> [(id, fused
    score)] best first; a list whose hits all score the same gives each of them 1; ties keep first-seen order.
    >>> convex_combination([[(1, 9.0), (2, 5.0), (3, 1.0)], [(2, 0.9), (3, 0.5), (1, 0.1)]], [0.5, 0.5])[0]
    (2, 0.75)
    """
    if len(weights) != len(lists) or any(w < 0 for w in weights):
        raise ValueError(f"convex weights={list(weights)}: expected {len(lists)} non-negative numbers, one per list")
    fused: dict[int, float] = {}
    for hits, w in zip(lists, weights):
        if not hits:
            continue
        lo, hi = min(s for _, s in hits), max(s for _, s in hits)
        for doc, s in hits:
            fused[doc] = fused.get(doc, 0.0) + w * ((s - lo) / (hi - lo) if hi > lo else 1.0)
    return sorted(fused.items(), key=lambda kv: -kv[1])
