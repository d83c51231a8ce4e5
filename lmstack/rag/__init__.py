"""Retrieval-augmented generation: chunk a collection, index it sparse (BM25) and dense (MiniLM on our BERT) with
exact / IVF / IVF-PQ / HNSW vector indexes, fuse (convex combination or RRF), rerank, and answer with verified
citations (docs/rag.md).

    from lmstack.rag import Index, Retriever, answer, load_documents
    index = Index.create("runs/rag/notes"); index.add_documents(load_documents("~/notes")); index.save()
    hits = Retriever(Index.open("runs/rag/notes"), mode="hybrid", k=5).retrieve("How do I ...?")
    ans = answer("How do I ...?", Retriever(index), model, tokenizer)   # model, tokenizer = load_model(...)

Heavy pieces (numba for HNSW, psycopg for pgvector, the LLM) load only when used.
"""

from lmstack.rag.answer import Answer, answer
from lmstack.rag.documents import Document, load_documents
from lmstack.rag.index import Index, IndexSettings
from lmstack.rag.retriever import Hit, Retriever

__all__ = ["Answer", "Document", "Hit", "Index", "IndexSettings", "Retriever", "answer", "load_documents"]
