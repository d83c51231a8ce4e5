"""Chunk storage behind one interface: SQLite + a vector index file (the embedded default) or PostgreSQL + pgvector.

A store keeps each chunk's text, source path, title, span, kind (chunk | parent | child), parent id and user
metadata, plus its embedding, and answers: which ids match a metadata filter, which chunks have the nearest
embeddings (within a filter), delete these ids. `where` filters are a dict ANDing conditions:

    {"path": "faq/*"}                 glob on the source path (SQL GLOB)
    {"kind": "child"}                 exact match on a column (path, title, kind)
    {"lang": ["en", "de"]}            a metadata key (JSON) equal to one of the values

`SQLiteStore` works in memory (an in-memory SQLite database and the vector index arrays) and writes
`chunks.sqlite` + a vector index directory (`vector_index.py`: exact | ivf | ivfpq | hnsw) into the collection
directory that the Index then swaps in atomically: an interrupted build or update never leaves half a collection.
`PgVectorStore` (`pgvector.py`) keeps the same rows in one PostgreSQL table with a `vector` column and an HNSW index.
Left out: range/inequality filters, full-text search inside the database.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmstack.rag.chunking import Chunk
from lmstack.rag.vector_index import VectorIndex, load_index, make_index

COLUMNS = ("path", "title", "kind")
SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY, path TEXT NOT NULL, title TEXT NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL,
    kind TEXT NOT NULL, parent INTEGER, text TEXT NOT NULL, meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path);
"""


@dataclass
class StoredChunk:
    id: int
    path: str
    title: str
    start: int
    end: int
    kind: str
    parent: int | None
    text: str
    meta: dict[str, Any]


class Store(Protocol):
    def add(self, chunks: list[Chunk], vectors: np.ndarray) -> np.ndarray: ...

    def get(self, ids: list[int]) -> list[StoredChunk]: ...

    def ids_where(self, where: dict[str, Any] | None, searchable: bool = True) -> np.ndarray: ...

    def search(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[tuple[int, float]]: ...

    def delete(self, ids: np.ndarray) -> int: ...

    def count(self) -> int: ...


def where_sql(where: dict[str, Any] | None, placeholder: str = "?", meta_expr: str = "json_extract(meta, '$.{}')"):
    """(SQL condition, parameters) for a `where` filter; keys are columns or metadata keys."""
    if not where:
        return "1=1", []
    conds, params = [], []
    for key, value in where.items():
        if not isinstance(key, str) or not key.replace("_", "").isalnum():
            raise ValueError(f"filter key {key!r}: use letters, digits and _ only")
        expr = key if key in COLUMNS else meta_expr.format(key)
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, (str, int, float)) for v in values):
            raise ValueError(f"filter {key}={value!r}: expected a string or number, or a non-empty list of them")
        if key == "path" and not isinstance(value, (list, tuple)) and any(c in str(value) for c in "*?["):
            conds.append(f"path {'GLOB' if placeholder == '?' else 'LIKE'} {placeholder}")
            params.append(value if placeholder == "?" else glob_to_like(str(value)))
            continue
        conds.append(f"{expr} IN ({', '.join([placeholder] * len(values))})")
        params += [str(v) if key not in COLUMNS and placeholder != "?" else v for v in values]
    return " AND ".join(conds), params


def glob_to_like(pattern: str) -> str:
    """A shell glob (* and ?) as a SQL LIKE pattern: * -> %, ? -> _, literal % and _ escaped."""
    return "".join({"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}.get(c, c) for c in pattern)


class SQLiteStore:
    """Chunks in SQLite, embeddings in a vector index; loaded from / saved to a collection directory."""

    def __init__(
        self, dim: int, ann: str = "hnsw", ann_params: dict | None = None, directory: str | Path | None = None
    ) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        if directory is not None:  # load a saved collection into memory
            disk = sqlite3.connect(Path(directory) / "chunks.sqlite")
            disk.backup(self.db)
            disk.close()
            vec_dir = Path(directory) / "vectors"
            self.vectors: VectorIndex | None = load_index(vec_dir) if vec_dir.is_dir() else None
        else:
            self.vectors = make_index(ann, dim, **(ann_params or {})) if dim else None  # dim 0: BM25 only
        self.db.executescript(SCHEMA)

    def add(self, chunks: list[Chunk], vectors: np.ndarray) -> np.ndarray:
        """Insert chunks (parents before their children: `Chunk.parent` indexes this list) -> their ids."""
        first = (self.db.execute("SELECT MAX(id) FROM chunks").fetchone()[0] or 0) + 1
        ids = np.arange(first, first + len(chunks), dtype=np.int64)
        rows = [
            (int(i), c.path, c.title, c.start, c.end, c.kind, None if c.parent is None else int(ids[c.parent]), c.text,
             json.dumps(c.meta))
            for i, c in zip(ids, chunks)
        ]  # fmt: skip
        with self.db:
            self.db.executemany('INSERT INTO chunks (id, path, title, start, "end", kind, parent, text, meta) '
                                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
        searchable = np.array([c.kind != "parent" for c in chunks], bool)
        if searchable.any() and self.vectors is not None:
            self.vectors.add(ids[searchable], vectors[searchable])
        return ids

    def get(self, ids: list[int]) -> list[StoredChunk]:
        """Chunks by id, in the order asked (unknown ids are skipped)."""
        found: dict[int, StoredChunk] = {}
        ids = [int(i) for i in ids]
        for lo in range(0, len(ids), 500):
            part = ids[lo : lo + 500]
            q = f'SELECT id, path, title, start, "end", kind, parent, text, meta FROM chunks WHERE id IN ({",".join("?" * len(part))})'  # noqa: E501
            for r in self.db.execute(q, part):
                found[r[0]] = StoredChunk(*r[:8], json.loads(r[8]))
        return [found[i] for i in ids if i in found]

    def ids_where(self, where: dict[str, Any] | None, searchable: bool = True) -> np.ndarray:
        cond, params = where_sql(where)
        if searchable:
            cond += " AND kind != 'parent'"
        return np.array([r[0] for r in self.db.execute(f"SELECT id FROM chunks WHERE {cond}", params)], np.int64)

    def search(self, vector: np.ndarray, k: int, where: dict[str, Any] | None = None) -> list[tuple[int, float]]:
        allowed = self.ids_where(where) if where else None
        scores, ids = self.vectors.search(vector[None], k, allowed)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def delete(self, ids: np.ndarray) -> int:
        ids = [int(i) for i in ids]
        with self.db:
            n = 0
            for lo in range(0, len(ids), 500):
                part = ids[lo : lo + 500]
                n += self.db.execute(f"DELETE FROM chunks WHERE id IN ({','.join('?' * len(part))})", part).rowcount
        if self.vectors is not None:
            self.vectors.delete(np.array(ids, np.int64))
        return n

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM chunks WHERE kind != 'parent'").fetchone()[0]

    def save_to(self, directory: Path) -> None:
        """Write chunks.sqlite (an online backup: consistent even while open) and vectors/ into `directory`."""
        target = sqlite3.connect(directory / "chunks.sqlite")
        with target:
            self.db.backup(target)
        target.close()
        if self.vectors is not None:
            self.vectors.save(directory / "vectors")

    def close(self) -> None:
        self.db.close()
