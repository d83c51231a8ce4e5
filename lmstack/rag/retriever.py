"""`Retriever`: query -> ranked chunks, the pipeline every RAG call runs.

    query --(optional: rewrite / HyDE with the local model, query_expansion.py)--> query texts
          --> BM25 top-N  and/or  dense top-N   (per query text)
          --> reciprocal rank fusion (hybrid.py)
          --> optional rerank of the fused candidates (cross-encoder or LLM, reranker.py), either replacing
              the first stage's order or fused with each retriever's order by RRF (`rerank_fusion="rrf"`)
          --> top k hits; parent-child collections swap each child for its parent's text as context

    r = Retriever(Index.open(path), mode="hybrid", k=5)
    hits = r.retrieve("How do I read a file line by line?", where={"path": "tutorial/*"})
    hits[0].path, hits[0].title, hits[0].text, hits[0].scores   # {"bm25": ..., "dense": ..., "rrf": ...}

Modes: bm25 (lexical), dense (embeddings), hybrid (both, RRF). `Hit.scores` keeps every stage's score so the
answerer can decide to abstain (`dense` cosine, or `rerank` when reranked). With `rerank_fusion="rrf"` the
reranker's order over the candidates is one more ranked list beside each retriever's own (BM25's and dense's,
each restricted to the candidates; weight 1 each, the reranker's `rerank_weight`), so a reranker weaker than the
retrievers on some questions cannot push a passage that both retrievers agree on out of the top, and where one
retriever is weak the other two votes outweigh it (docs/rag.md: measured).
Left out: multi-vector (ColBERT) retrieval, MMR diversification, time-decay scoring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from lmstack.rag.hybrid import RERANK_FUSIONS, RERANK_WEIGHT, reciprocal_rank_fusion
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
    score: float  # the final ranking score (rerank > rrf > the single retriever's)
    scores: dict[str, float] = field(default_factory=dict)  # bm25 / dense / rrf / rerank
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
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"retriever mode={mode!r}; expected one of {list(MODES)}")
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
        rankings: list[list[int]] = []
        stage: dict[int, dict[str, float]] = {}
        if mode in ("bm25", "hybrid"):
            for text in texts["bm25"]:
                ranked = self.index.bm25_search(text, self.candidates, where)
                rankings.append([i for i, _ in ranked])
                for i, s in ranked:
                    stage.setdefault(i, {})["bm25"] = max(s, stage.get(i, {}).get("bm25", -1e30))
        if mode in ("dense", "hybrid"):
            for text in texts["dense"]:
                ranked = self.index.dense_search(text, self.candidates, where)
                rankings.append([i for i, _ in ranked])
                for i, s in ranked:
                    stage.setdefault(i, {})["dense"] = max(s, stage.get(i, {}).get("dense", -1e30))
        if len(rankings) == 1:  # one list: its own scores rank it
            key = "bm25" if mode == "bm25" else "dense"
            fused = [(i, stage[i][key]) for i in rankings[0]]
        else:
            fused = reciprocal_rank_fusion(rankings, self.rrf_k)
            for i, s in fused:
                stage[i]["rrf"] = s
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
            if self.rerank_fusion == "rrf":  # the reranker's order is one more vote beside each retriever's list
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
