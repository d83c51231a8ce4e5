"""`Retriever`: query -> ranked chunks, the pipeline every RAG call runs.

    query --(optional: rewrite / HyDE with the local model, query_expansion.py)--> query texts
          --> BM25 top-N  and/or  dense top-N   (per query text)
          --> fusion (hybrid.py): convex combination of normalized scores (default) or reciprocal rank fusion
          --> optional rerank of the fused candidates (cross-encoder or LLM, reranker.py), either replacing
              the first stage's order or fused with the first stage's lists by RRF (`rerank_fusion="rrf"`)
          --> top k hits; parent-child collections swap each child for its parent's text as context

    r = Retriever(Index.open(path), mode="hybrid", k=5)
    hits = r.retrieve("How do I read a file line by line?", where={"path": "tutorial/*"})
    hits[0].path, hits[0].title, hits[0].text, hits[0].scores   # {"bm25": ..., "dense": ..., "convex": ...}

Modes: bm25 (lexical), dense (embeddings), hybrid (both, fused by `fusion`). `Hit.scores` keeps every stage's
score so the answerer can decide to abstain (`dense` cosine, or `rerank` when reranked). With
`rerank_fusion="rrf"` the reranker's order over the candidates is one more ranked list beside the first stage's
own lists, each restricted to the candidates (weight 1 each, the reranker's `rerank_weight`): the convex-fused
order, or with `fusion="rrf"` BM25's and dense's orders as separate votes. Either way a reranker weaker than the
first stage on some questions cannot push a passage the first stage is sure of out of the top (docs/rag.md).
Left out: multi-vector (ColBERT) retrieval, MMR diversification, time-decay scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lmstack.rag.hybrid import (
    DENSE_WEIGHT,
    FUSIONS,
    RERANK_FUSIONS,
    RERANK_WEIGHT,
    convex_combination,
    reciprocal_rank_fusion,
)
from lmstack.rag.index import Index

MODES = ("bm25", "dense", "hybrid")


@dataclass
class Hit:
    id: int
    text: str  # the matched chunk
    path: str
    title: str
    start: int
    end: int
    score: float  # the final ranking score (rerank > convex or rrf > the single retriever's)
    scores: dict[str, float] = field(default_factory=dict)  # bm25 / dense / convex or rrf / rerank
    context: str = ""  # what the answerer reads: the parent's text for parent-child chunks, else `text`


class Reranker(Protocol):
    name: str

    def score(self, query: str, passages: list[str]) -> list[float]: ...


class QueryExpander(Protocol):
    def expand(self, query: str) -> dict[str, list[str]]: ...  # {"bm25": [...], "dense": [...]} query texts


class Retriever:
    def __init__(
        self,
        index: Index,
        mode: str = "hybrid",
        k: int = 5,
        candidates: int = 50,
        rrf_k: int = 60,
        reranker: Reranker | None = None,
        rerank_candidates: int = 20,
        expander: QueryExpander | None = None,
        rerank_fusion: str = "rrf",  # measured better than "replace" on both evaluation sets (docs/rag.md)
        rerank_weight: float = RERANK_WEIGHT,
        fusion: str = "convex",  # hybrid: convex (normalized scores) | rrf (ranks); both measured in docs/rag.md
        dense_weight: float = DENSE_WEIGHT,  # convex fusion: dense's weight (BM25's: 1 - dense_weight)
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"retriever mode={mode!r}; expected one of {list(MODES)}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion={fusion!r}; expected one of {list(FUSIONS)}")
        if not 0 <= dense_weight <= 1:
            raise ValueError(f"dense_weight={dense_weight} must be in [0, 1]")
        self.fusion, self.dense_weight = fusion, dense_weight
        if rerank_fusion not in RERANK_FUSIONS:
            raise ValueError(f"rerank_fusion={rerank_fusion!r}; expected one of {list(RERANK_FUSIONS)}")
        if rerank_weight < 0:
            raise ValueError(f"rerank_weight={rerank_weight} must be >= 0")
        self.rerank_fusion, self.rerank_weight = rerank_fusion, rerank_weight
        self.index, self.mode, self.k, self.candidates, self.rrf_k = index, mode, k, candidates, rrf_k
        self.reranker, self.rerank_candidates, self.expander = reranker, rerank_candidates, expander

    def retrieve(self, query: str, k: int | None = None, where: dict[str, Any] | None = None) -> list[Hit]:
        k = k or self.k
        mode = self.mode if self.index.dense else "bm25"  # a BM25-only collection: hybrid degrades to bm25
        if self.mode == "dense" and not self.index.dense:
            raise ValueError(f"{self.index.directory} has no embeddings (built with --embedder=none); use --mode=bm25")
        texts = self.expander.expand(query) if self.expander is not None else {"bm25": [query], "dense": [query]}
        lists: list[tuple[str, list[tuple[int, float]]]] = []  # (retriever, [(id, score)] best first)
        stage: dict[int, dict[str, float]] = {}
        if mode in ("bm25", "hybrid"):
            lists += [("bm25", self.index.bm25_search(text, self.candidates, where)) for text in texts["bm25"]]
        if mode in ("dense", "hybrid"):
            lists += [("dense", self.index.dense_search(text, self.candidates, where)) for text in texts["dense"]]
        for key, ranked in lists:
            for i, s in ranked:
                stage.setdefault(i, {})[key] = max(s, stage.get(i, {}).get(key, -1e30))
        rankings = [[i for i, _ in ranked] for _, ranked in lists]  # the first stage's lists (rerank votes)
        if len(lists) == 1:  # one list: its own scores rank it
            fused = list(lists[0][1])
        else:
            if self.fusion == "rrf":
                fused = reciprocal_rank_fusion(rankings, self.rrf_k)
            else:  # each retriever's weight shared by its lists (several with query expansion)
                weight = {"dense": self.dense_weight, "bm25": 1 - self.dense_weight}
                names = [name for name, _ in lists]
                weights = [weight[name] / names.count(name) for name in names]
                fused = convex_combination([ranked for _, ranked in lists], weights)
                rankings = [[i for i, _ in fused]]  # one fused list votes beside the reranker
            for i, s in fused:
                stage[i][self.fusion] = s
        keep = fused[: max(k, self.rerank_candidates if self.reranker else k)]
        chunks = {c.id: c for c in self.index.get([i for i, _ in keep])}
        hits = [
            Hit(i, c.text, c.path, c.title, c.start, c.end, s, stage[i], c.text)
            for i, s in keep
            if (c := chunks.get(i)) is not None
        ]
        if self.reranker is not None and hits:
            scores = self.reranker.score(query, [h.text for h in hits])  # text only, as the reranker was trained
            for h, s in zip(hits, scores):
                h.score = h.scores["rerank"] = h.scores[self.reranker.name] = float(s)
            if self.rerank_fusion == "rrf":  # the reranker's order is one more vote beside the first stage's lists
                row = {h.id: j for j, h in enumerate(hits)}
                votes = [[row[i] for i in r if i in row] for r in rankings] if len(rankings) > 1 else [range(len(hits))]
                votes.append(sorted(range(len(hits)), key=lambda j: -hits[j].score))
                weights = [1.0] * (len(votes) - 1) + [self.rerank_weight]
                fused_scores = dict(reciprocal_rank_fusion(votes, self.rrf_k, weights))
                for j, h in enumerate(hits):
                    h.score = h.scores["rerank_rrf"] = fused_scores[j]
            hits.sort(key=lambda h: -h.score)
        hits = hits[:k]
        self._attach_parents(hits, chunks)
        return hits

    def _attach_parents(self, hits: list[Hit], chunks: dict) -> None:
        parent_ids = {chunks[h.id].parent for h in hits if h.id in chunks and chunks[h.id].parent is not None}
        if not parent_ids:
            return
        parents = {p.id: p for p in self.index.get(sorted(parent_ids))}
        for h in hits:
            p = parents.get(chunks[h.id].parent) if h.id in chunks else None
            if p is not None:
                h.context = p.text
