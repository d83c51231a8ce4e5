"""A collection end to end: chunk -> embed -> store + BM25 -> save (atomically) -> open -> retrieve (BM25, dense,
hybrid), metadata filters, deletes, parent-child contexts, BM25-only collections."""

from __future__ import annotations

import pytest

from lmstack.rag import Index, IndexSettings, Retriever, load_documents
from lmstack.rag.hybrid import convex_combination, reciprocal_rank_fusion

QUESTION = "How do I read a file line by line?"


@pytest.fixture
def index(folder, minilm, tmp_path) -> Index:
    ix = Index.create(tmp_path / "ix", IndexSettings(ann="hnsw", chunk_size=40), embedder=minilm)
    ix.add_documents(load_documents(str(folder)))
    ix.save()
    return ix


def test_round_trip_and_retrieval_modes(index: Index, minilm) -> None:
    again = Index.open(index.directory)
    again._embedder = minilm
    assert len(again) == len(index) > 4
    for mode in ("bm25", "dense", "hybrid"):
        hits = Retriever(again, mode, k=3).retrieve(QUESTION)
        assert hits[0].path == "tutorial/files.md", (mode, [h.path for h in hits])
        source = (index.directory.parent / "docs" / hits[0].path).read_text()
        assert hits[0].text == source[hits[0].start : hits[0].end]  # citations point at exact spans
        assert mode in hits[0].scores or mode == "hybrid"
    hybrid = Retriever(again, "hybrid", k=3).retrieve(QUESTION)[0]
    assert {"bm25", "dense", "convex"} <= set(hybrid.scores)  # convex fusion is the default
    assert {"bm25", "dense", "rrf"} <= set(Retriever(again, "hybrid", k=3, fusion="rrf").retrieve(QUESTION)[0].scores)


def test_filters_and_deletes(index: Index, minilm) -> None:
    r = Retriever(index, "hybrid", k=5)
    hits = r.retrieve(QUESTION, where={"path": "library/*"})
    assert hits and all(h.path.startswith("library/") for h in hits)
    assert index.delete({"path": "tutorial/*"}) > 0
    assert all(h.path != "tutorial/files.md" for h in r.retrieve(QUESTION))
    index.save()
    reopened = Index.open(index.directory)
    reopened._embedder = minilm
    assert all(h.path != "tutorial/files.md" for h in Retriever(reopened, "hybrid").retrieve(QUESTION))
    with pytest.raises(ValueError, match="filter key"):
        index.store.ids_where({"path; DROP TABLE chunks": 1})


def test_parent_child_returns_parent_context(folder, minilm, tmp_path) -> None:
    settings = IndexSettings(ann="exact", chunker="parent-child", chunk_size=12, chunk_overlap=2, parent_size=80)
    ix = Index.create(tmp_path / "pc", settings, embedder=minilm)
    ix.add_documents(load_documents(str(folder)))
    hit = Retriever(ix, "dense", k=1).retrieve(QUESTION)[0]
    assert len(hit.context) > len(hit.text) and hit.text in hit.context


def test_bm25_only_collection(folder, tmp_path) -> None:
    ix = Index.create(tmp_path / "bm", IndexSettings(embedder="none"))
    ix.add_documents(load_documents(str(folder)))
    ix.save()
    ix = Index.open(tmp_path / "bm")
    assert Retriever(ix, "hybrid").retrieve(QUESTION)[0].path == "tutorial/files.md"  # degrades to bm25
    with pytest.raises(ValueError, match="mode=bm25"):
        Retriever(ix, "dense").retrieve(QUESTION)


def test_rrf_by_hand() -> None:
    # d1: 1/61 + 1/62; d3: 1/63 + 1/61; d2: 1/62 -> d1 > d3 > d2
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1]], k=60)
    assert [d for d, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


class Reverse:
    """A reranker that ranks the first stage's candidates in exactly the opposite order."""

    name = "reverse"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, query: str, passages: list[str]) -> list[float]:
        self.calls += 1
        return [float(i) for i in range(len(passages))]  # the last candidate scores highest


def test_convex_combination_by_hand(index: Index) -> None:
    bm25, dense = [(1, 9.0), (2, 5.0), (3, 1.0)], [(2, 0.9), (3, 0.5), (4, 0.1)]
    fused = dict(convex_combination([bm25, dense], [0.3, 0.7]))  # min-max per list, 0 where a list lacks the id
    assert fused == pytest.approx({1: 0.3, 2: 0.3 * 0.5 + 0.7, 3: 0.7 * 0.5, 4: 0.0})
    assert convex_combination([[(7, 2.0), (8, 2.0)]], [1.0]) == [(7, 1.0), (8, 1.0)]  # all equal: each gets 1
    with pytest.raises(ValueError, match="convex weights"):
        convex_combination([bm25, dense], [1.0])
    for weight in (0.5, 0.8):  # the retriever's hybrid ranks exactly by it, over both retrievers' candidates
        hits = Retriever(index, "hybrid", k=6, dense_weight=weight).retrieve(QUESTION)
        lists = [index.bm25_search(QUESTION, 50), index.dense_search(QUESTION, 50)]
        expected = convex_combination(lists, [1 - weight, weight])[:6]
        assert [h.id for h in hits] == [i for i, _ in expected]
        assert [h.scores["convex"] for h in hits] == pytest.approx([f for _, f in expected])
    with pytest.raises(ValueError, match="fusion"):
        Retriever(index, fusion="mean")
    with pytest.raises(ValueError, match="dense_weight"):
        Retriever(index, dense_weight=1.5)


def test_rerank_replaces_or_fuses_the_first_stage_order(index: Index) -> None:
    first = [h.id for h in Retriever(index, "hybrid", k=6, rerank_candidates=6).retrieve(QUESTION)]
    replaced = Retriever(index, "hybrid", k=6, reranker=Reverse(), rerank_candidates=6, rerank_fusion="replace")
    replaced = replaced.retrieve(QUESTION)
    assert [h.id for h in replaced] == first[::-1]
    convex = Retriever(index, "hybrid", k=6, reranker=Reverse(), rerank_candidates=6, rerank_fusion="rrf")
    expected = reciprocal_rank_fusion([first, first[::-1]], 60, [1, 0.5])  # the convex order votes once
    assert [h.id for h in convex.retrieve(QUESTION)] == [i for i, _ in expected]
    first = [h.id for h in Retriever(index, "hybrid", k=6, rerank_candidates=6, fusion="rrf").retrieve(QUESTION)]
    fused = Retriever(index, "hybrid", k=6, reranker=Reverse(), rerank_candidates=6, rerank_fusion="rrf",
                      rerank_weight=1.0, fusion="rrf")  # fmt: skip
    hits = fused.retrieve(QUESTION)
    bm25 = [i for i, _ in index.bm25_search(QUESTION, 50) if i in first]  # each retriever's own order of the
    dense = [i for i, _ in index.dense_search(QUESTION, 50) if i in first]  # candidates votes, then the reranker's
    expected = reciprocal_rank_fusion([bm25, dense, first[::-1]], 60)
    assert [h.id for h in hits] == [i for i, _ in expected]
    rank = lambda r, i: r.index(i) + 1  # noqa: E731
    top = hits[0].id
    want = 1 / (60 + rank(bm25, top)) + 1 / (60 + rank(dense, top)) + 1 / (60 + 6 - first.index(top))
    assert hits[0].scores["rerank_rrf"] == pytest.approx(want) and hits[0].scores["rerank"] == first.index(top)
    half = Retriever(index, "hybrid", k=6, reranker=Reverse(), rerank_candidates=6, rerank_fusion="rrf",
                     fusion="rrf")  # weight 0.5  # fmt: skip
    expected = reciprocal_rank_fusion([bm25, dense, first[::-1]], 60, [1, 1, 0.5])
    assert [h.id for h in half.retrieve(QUESTION)] == [i for i, _ in expected]
    dense = Retriever(index, "dense", k=6, reranker=Reverse(), rerank_candidates=6, rerank_fusion="rrf",
                      rerank_weight=1.0)  # one retriever: its own order and the reranker's  # fmt: skip
    order = [h.id for h in Retriever(index, "dense", k=6).retrieve(QUESTION)]
    assert [h.id for h in dense.retrieve(QUESTION)] == [i for i, _ in reciprocal_rank_fusion([order, order[::-1]])]
    with pytest.raises(ValueError, match="rerank_fusion"):
        Retriever(index, rerank_fusion="mean")
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([first, first], 60, [1.0])
