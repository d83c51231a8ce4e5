"""BM25 scores equal rank_bm25's on the same tokens (Okapi and BM25+, several k1/b), and the sparse fast path
equals the term-by-term reference; deletes, filters and files."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi, BM25Plus

from lmstack.data.corpus import load_corpus
from lmstack.rag.bm25 import BM25, analyze

QUERIES = ["read a file line by line", "dictionary comprehension", "asyncio event loop tasks", "the", "zzzz qqqq"]


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    paragraphs = [p for d in load_corpus("pydocs")[:40] for p in d.split("\n\n") if len(p) > 40]
    return [analyze(p) for p in paragraphs[:1500]]


@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (1.2, 0.3), (2.0, 1.0)])
def test_okapi_matches_rank_bm25(corpus, k1: float, b: float) -> None:
    ours, ref = BM25("okapi", k1, b), BM25Okapi(corpus, k1=k1, b=b)
    ours.add(corpus)
    for q in QUERIES:
        np.testing.assert_allclose(
            ours.scores(analyze(q) or [q]), ref.get_scores(analyze(q) or [q]), rtol=1e-5, atol=1e-5
        )


def test_bm25plus_matches_rank_bm25(corpus) -> None:
    ours, ref = BM25("bm25+", 1.5, 0.75, delta=1.0), BM25Plus(corpus, k1=1.5, b=0.75, delta=1.0)
    ours.add(corpus)
    for q in QUERIES:
        np.testing.assert_allclose(ours.scores(analyze(q)), ref.get_scores(analyze(q)), rtol=1e-5, atol=1e-4)


def test_sparse_path_equals_reference(corpus) -> None:
    bm = BM25()
    bm.add(corpus[:300])
    q = analyze("read a file line by line, file objects")
    np.testing.assert_allclose(bm.scores(q), bm.scores_reference(q), rtol=1e-5, atol=1e-5)


def test_search_filters_deletes_and_files(corpus, tmp_path) -> None:
    bm = BM25()
    bm.add(corpus)
    q = analyze("file objects")
    scores, rows = bm.search(q, 5)
    assert list(scores) == sorted(scores, reverse=True) and len(rows) == 5
    allowed = np.zeros(len(bm), bool)
    allowed[rows[1:]] = True
    assert set(bm.search(q, 5, allowed)[1]) == set(rows[1:])
    bm.delete([rows[0]])
    assert rows[0] not in bm.search(q, 5)[1]
    bm.save(tmp_path)
    again = BM25.load(tmp_path)
    np.testing.assert_array_equal(again.scores(q), bm.scores(q))
    kept = bm.compact()  # deleted rows gone for good, statistics recomputed as if never added
    fresh = BM25()
    fresh.add([corpus[i] for i in kept])
    np.testing.assert_allclose(bm.scores(q), fresh.scores(q), rtol=1e-6)
    assert bm.search(["zzzz"], 3)[1].size == 0  # no shared term: nothing returned


def test_analyzer_and_errors() -> None:
    assert analyze("How do I read a File?") == ["read", "file"]
    with pytest.raises(ValueError, match="variant"):
        BM25("bm42")
