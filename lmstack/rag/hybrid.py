"""Reciprocal rank fusion (Cormack, Clarke & Büttcher 2009): merge ranked lists without comparing their scores.

    rrf(d) = sum over lists L containing d of  1 / (k + rank_L(d))        (rank from 1, k = 60)

BM25 scores (unbounded) and cosines (in [-1, 1]) are not on one scale; ranks are. A document ranked high by
either retriever rises; one ranked well by both rises most. k damps the head: with k = 60 rank 1 is worth 1/61
and rank 10 1/70, so agreement matters more than one list's top spot.
Weighted RRF multiplies each list's terms by its weight (used to let a reranker's order count less than the
retrievers' agreement). Left out: score-normalized fusion (min-max / z-score combSUM).
"""

from __future__ import annotations

from collections.abc import Sequence

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
