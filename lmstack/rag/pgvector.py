"""The PostgreSQL + pgvector store: the same `Store` interface as SQLite + files, for collections that outgrow one
machine's memory or that several services share.

One table per collection: the chunk columns, `meta JSONB` and `embedding vector(D)`, with pgvector's HNSW index
on inner product (`vector_ip_ops`; `<#>` is the negated dot product, so ORDER BY ascending = most similar first).
Metadata filters become the WHERE clause of the same query. pgvector (before 0.8) filters *after* the HNSW scan,
so a selective filter could return fewer than k rows: when fewer than `exact_below` rows match, the query runs
with index scans disabled (an exact scan of the matching rows) instead, as the local indexes do.

    store = PgVectorStore("postgresql://user@host/db", "lmstack_pydocs", dim=384, create=True)

Requires `psycopg` (the `pgvector` extra) and a server with the `vector` extension (tests start one from the
`pgserver` package). Left out: connection pooling, IVFFlat indexes, halfvec/bit quantization, COPY-based bulk load.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from lmstack.rag.chunking import Chunk
from lmstack.rag.store import StoredChunk, where_sql

META_EXPR = "meta->>'{}'"


def vector_literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.8g}" for x in np.asarray(v, np.float32)) + "]"


class PgVectorStore:
    def __init__(
        self, dsn: str, table: str, dim: int, create: bool = False, M: int = 16, ef_construction: int = 64,
        ef_search: int = 64, exact_below: int = 2000,
    ) -> None:  # fmt: skip
        import psycopg

        if not table.replace("_", "").isalnum():
            raise ValueError(f"table={table!r}: use letters, digits and _ only")
        if not dsn:
            raise ValueError("backend=postgres needs --dsn (e.g. postgresql://user@localhost/db)")
        self.table, self.dim, self.ef_search, self.exact_below = table, dim, ef_search, exact_below
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        if create:
            self.conn.execute(f"DROP TABLE IF EXISTS {table}")
        self.conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {table} (
                id BIGINT PRIMARY KEY, path TEXT NOT NULL, title TEXT NOT NULL, start INTEGER NOT NULL,
                "end" INTEGER NOT NULL, kind TEXT NOT NULL, parent BIGINT, text TEXT NOT NULL,
                meta JSONB NOT NULL DEFAULT '{{}}', embedding vector({dim}))"""
        )
        self.conn.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw (embedding vector_ip_ops) "
            f"WITH (m = {int(M)}, ef_construction = {int(ef_construction)})"
        )
        self.conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_path ON {table} (path)")

    def add(self, chunks: list[Chunk], vectors: np.ndarray) -> np.ndarray:
        first = (self.conn.execute(f"SELECT MAX(id) FROM {self.table}").fetchone()[0] or 0) + 1
        ids = np.arange(first, first + len(chunks), dtype=np.int64)
        rows = [
            (int(i), c.path, c.title, c.start, c.end, c.kind, None if c.parent is None else int(ids[c.parent]),
             c.text, json.dumps(c.meta), None if c.kind == "parent" else vector_literal(v))
            for i, c, v in zip(ids, chunks, vectors)
        ]  # fmt: skip
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO {self.table} (id, path, title, start, "end", kind, parent, text, meta, embedding) '
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::vector)",
                rows,
            )
        return ids

    def get(self, ids: list[int]) -> list[StoredChunk]:
        ids = [int(i) for i in ids]
        rows = self.conn.execute(
            f'SELECT id, path, title, start, "end", kind, parent, text, meta FROM {self.table} WHERE id = ANY(%s)',
            (ids,),
        ).fetchall()
        found = {r[0]: StoredChunk(*r[:8], r[8] if isinstance(r[8], dict) else json.loads(r[8])) for r in rows}
        return [found[i] for i in ids if i in found]

    def ids_where(self, where: dict[str, Any] | None, searchable: bool = True) -> np.ndarray:
        cond, params = where_sql(where, "%s", META_EXPR)
        if searchable:
            cond += " AND kind != 'parent'"
        rows = self.conn.execute(f"SELECT id FROM {self.table} WHERE {cond}", params).fetchall()
        return np.array([r[0] for r in rows], np.int64)

    def search(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[tuple[int, float]]:
        cond, params = where_sql(where, "%s", META_EXPR)
        lit = vector_literal(vector)
        exact = bool(where) and len(self.ids_where(where)) < self.exact_below
        with self.conn.transaction():
            self.conn.execute(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), k)}")
            if exact:  # a selective filter: scan the matching rows instead of the graph
                self.conn.execute("SET LOCAL enable_indexscan = off")
            rows = self.conn.execute(
                f"SELECT id, -(embedding <#> %s::vector) FROM {self.table} WHERE {cond} AND kind != 'parent' "
                f"ORDER BY embedding <#> %s::vector LIMIT %s",
                [lit, *params, lit, k],
            ).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def delete(self, ids: np.ndarray) -> int:
        cur = self.conn.execute(f"DELETE FROM {self.table} WHERE id = ANY(%s)", ([int(i) for i in ids],))
        return cur.rowcount

    def count(self) -> int:
        return self.conn.execute(f"SELECT COUNT(*) FROM {self.table} WHERE kind != 'parent'").fetchone()[0]

    def close(self) -> None:
        self.conn.close()
