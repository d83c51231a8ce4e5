"""The PostgreSQL + pgvector store behind the same interface, against a real server this test starts
(`pgserver` bundles PostgreSQL and the vector extension): same hits as the embedded store, filters, deletes."""

from __future__ import annotations

import pytest

from lmstack.rag import Index, IndexSettings, Retriever, load_documents

QUESTION = "How do I read a file line by line?"


@pytest.fixture(scope="module")
def dsn(tmp_path_factory):
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


def test_pgvector_store_matches_sqlite(dsn, folder, minilm, tmp_path) -> None:
    docs = load_documents(str(folder))
    local = Index.create(tmp_path / "local", IndexSettings(ann="exact", chunk_size=40), embedder=minilm)
    local.add_documents(docs)
    pg = Index.create(tmp_path / "pg", IndexSettings(chunk_size=40, backend="postgres", dsn=dsn), embedder=minilm)
    pg.add_documents(docs)
    pg.save()
    pg = Index.open(tmp_path / "pg")  # chunks and vectors come back from the server
    pg._embedder = minilm
    assert len(pg) == len(local)
    for mode in ("dense", "hybrid"):
        ours = [(h.path, h.start) for h in Retriever(local, mode, k=4).retrieve(QUESTION)]
        theirs = [(h.path, h.start) for h in Retriever(pg, mode, k=4).retrieve(QUESTION)]
        assert ours == theirs, mode
    dense = pg.dense_search(QUESTION, 3)
    assert dense[0][1] == pytest.approx(local.dense_search(QUESTION, 3)[0][1], abs=1e-5)
    hits = Retriever(pg, "dense", k=5).retrieve(QUESTION, where={"path": "library/*"})
    assert hits and all(h.path.startswith("library/") for h in hits)
    assert pg.delete({"path": "tutorial/*"}) > 0
    assert all(h.path != "tutorial/files.md" for h in Retriever(pg, "hybrid").retrieve(QUESTION))
