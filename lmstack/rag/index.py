"""`Index`: a retrieval collection on disk — chunks, their embeddings, a BM25 matrix and how they were made.

    index = Index.create("runs/rag/pydocs", embedder="all-minilm-l6-v2", ann="hnsw")
    index.add_documents(load_documents("pydocs"))      # chunk -> embed (cached) -> store + BM25
    index.save()                                       # the whole directory, atomically
    index = Index.open("runs/rag/pydocs")
    index.bm25_search("read file lines", k=10, where={"path": "tutorial/*"})   -> [(chunk id, score)]
    index.dense_search("How do I read a file line by line?", k=10)           -> [(chunk id, cosine)]

Directory layout: `index.json` (embedder name and fingerprint, chunker settings, ANN kind, backend), `bm25/` and
`bm25_ids.npy` (BM25 row -> chunk id), and for the SQLite backend `chunks.sqlite` + `vectors/`. With
`backend="postgres"` chunks and embeddings live in PostgreSQL + pgvector (`pgvector.py`) and only BM25 and
`index.json` stay on disk. Deletes remove chunks from the store and tombstone their BM25 rows.
Left out: incremental re-chunking of edited documents (delete by path, then add), sharding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmstack.common.atomic import atomic_dir
from lmstack.rag.bm25 import BM25, analyze
from lmstack.rag.chunking import TokenCounter, chunk_documents
from lmstack.rag.documents import Document
from lmstack.rag.embedder import DEFAULT_EMBEDDER, Embedder, SentenceEmbedder, load_embedder
from lmstack.rag.store import SQLiteStore, Store, StoredChunk

FORMAT_VERSION = 1


@dataclass
class IndexSettings:
    embedder: str = DEFAULT_EMBEDDER  # all-minilm-l6-v2 | a BERT directory | lm:<model> | none (BM25 only)
    ann: str = "hnsw"  # exact | ivf | ivfpq | hnsw
    chunker: str = "recursive"  # fixed | recursive | semantic | parent-child
    chunk_size: int = 200  # tokens per chunk (children for parent-child)
    chunk_overlap: int = 32  # tokens shared by neighbouring fixed chunks
    parent_size: int = 800  # parent-child: tokens per parent
    bm25_variant: str = "okapi"  # okapi | bm25+
    k1: float = 1.5  # BM25 term-frequency saturation
    b: float = 0.75  # BM25 length normalization
    backend: str = "sqlite"  # sqlite (files in the index directory) | postgres (pgvector)
    dsn: str = ""  # postgres: connection string; table: the index directory's name
    table: str = ""  # postgres: table name (default: derived from the directory name)


class Index:
    def __init__(self, directory: Path, settings: IndexSettings, store: Store, bm25: BM25, bm25_ids: np.ndarray):
        self.directory, self.settings, self.store, self.bm25, self.bm25_ids = directory, settings, store, bm25, bm25_ids
        self._embedder: Embedder | None = None
        self.dim = int(getattr(store, "dim", 0) or 0)
        self.fingerprint = ""

    # ---- lifecycle --------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: str | Path, settings: IndexSettings | None = None, embedder: Embedder | None = None
    ) -> Index:
        """A new, empty collection (nothing is written until `save`)."""
        settings = settings or IndexSettings()
        if embedder is None and settings.embedder != "none":
            embedder = load_embedder(settings.embedder, cache=default_cache())
        dim = embedder.dim if embedder is not None else 0
        store = _make_store(Path(directory), settings, dim, new=True)
        bm25 = BM25(settings.bm25_variant, settings.k1, settings.b)
        index = cls(Path(directory), settings, store, bm25, np.zeros(0, np.int64))
        index._embedder, index.dim = embedder, dim
        index.fingerprint = embedder.fingerprint if embedder is not None else ""
        return index

    @classmethod
    def open(cls, directory: str | Path) -> Index:
        directory = Path(directory)
        meta_path = directory / "index.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{directory}: no index.json; build it with `lmstack rag index SOURCE --out_dir=...`"
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format version {meta.get('version')} (expected {FORMAT_VERSION}); rebuild")
        settings = IndexSettings(**meta["settings"])
        store = _make_store(directory, settings, meta["dim"], new=False)
        bm25 = BM25.load(directory / "bm25")
        index = cls(directory, settings, store, bm25, np.load(directory / "bm25_ids.npy"))
        index.dim, index.fingerprint = meta["dim"], meta["fingerprint"]
        return index

    def save(self) -> Path:
        """Write the collection directory atomically (temp dir + rename)."""
        with atomic_dir(self.directory) as tmp:
            if isinstance(self.store, SQLiteStore):
                self.store.save_to(tmp)
            self.bm25.save(tmp / "bm25")
            np.save(tmp / "bm25_ids.npy", self.bm25_ids)
            meta = dict(
                version=FORMAT_VERSION, settings=asdict(self.settings), dim=self.dim, fingerprint=self.fingerprint,
                chunks=len(self.bm25_ids), live_chunks=self.store.count(),
            )  # fmt: skip
            (tmp / "index.json").write_text(json.dumps(meta, indent=2))
        return self.directory

    @property
    def dense(self) -> bool:
        """True when the collection has embeddings (built with an embedder, not `--embedder=none`)."""
        return self.settings.embedder != "none"

    @property
    def embedder(self) -> Embedder:
        if not self.dense:
            raise ValueError(f"{self.directory} was built with --embedder=none (BM25 only): use --mode=bm25")
        if self._embedder is None:
            self._embedder = load_embedder(self.settings.embedder, cache=default_cache())
            if self.fingerprint and self._embedder.fingerprint != self.fingerprint:
                raise ValueError(
                    f"{self.directory}: built with embedder fingerprint {self.fingerprint}, but "
                    f"{self.settings.embedder} now has {self._embedder.fingerprint}; rebuild the index"
                )
        return self._embedder

    # ---- contents ---------------------------------------------------------------------------------------

    def add_documents(self, docs: list[Document], show_progress: bool = False, batch_size: int = 32) -> int:
        """Chunk, embed and store `docs`; returns the number of chunks added."""
        s = self.settings
        emb = self.embedder if self.dense else None
        count = TokenCounter(emb.tokenizer.encode) if isinstance(emb, SentenceEmbedder) else None
        embed_fn = (lambda texts: emb.embed(texts, batch_size)) if s.chunker == "semantic" else None
        chunks = chunk_documents(docs, s.chunker, s.chunk_size, s.chunk_overlap, s.parent_size, count, embed_fn)
        if not chunks:
            return 0
        searchable = [c for c in chunks if c.kind != "parent"]
        vectors = np.zeros((len(chunks), self.dim), np.float32)
        rows = [i for i, c in enumerate(chunks) if c.kind != "parent"]
        if emb is not None:
            vectors[rows] = emb.embed([embed_text(c) for c in searchable], batch_size, show_progress)
        ids = self.store.add(chunks, vectors)
        self.bm25.add(analyze(embed_text(c)) for c in searchable)
        self.bm25_ids = np.concatenate([self.bm25_ids, ids[rows]])
        return len(chunks)

    def delete(self, where: dict[str, Any]) -> int:
        """Delete every chunk matching `where` (children of a deleted parent too); returns how many."""
        ids = self.store.ids_where(where, searchable=False)
        parents = [c.id for c in self.store.get(ids.tolist()) if c.kind == "parent"]
        if parents:
            kids = self.store.ids_where(None, searchable=False)
            children = [c.id for c in self.store.get(kids.tolist()) if c.parent in set(parents)]
            ids = np.union1d(ids, np.array(children, np.int64))
        self.bm25.delete(np.flatnonzero(np.isin(self.bm25_ids, ids)))
        return self.store.delete(ids)

    def get(self, ids: list[int]) -> list[StoredChunk]:
        return self.store.get(ids)

    def __len__(self) -> int:
        return self.store.count()

    # ---- search -----------------------------------------------------------------------------------------

    def bm25_search(self, query: str, k: int = 10, where: dict[str, Any] | None = None) -> list[tuple[int, float]]:
        allowed = np.isin(self.bm25_ids, self.store.ids_where(where)) if where else None
        scores, rows = self.bm25.search(analyze(query), k, allowed)
        return [(int(self.bm25_ids[r]), float(s)) for r, s in zip(rows, scores)]

    def dense_search(
        self, query: str | np.ndarray, k: int = 10, where: dict[str, Any] | None = None
    ) -> list[tuple[int, float]]:
        vec = (
            self.embedder.embed([query], use_cache=False)[0]
            if isinstance(query, str)
            else np.asarray(query, np.float32)
        )
        return self.store.search(vec, k, where)


def embed_text(chunk: Any) -> str:
    """What is embedded and BM25-indexed for a chunk: its title line, then its text (titles carry the topic)."""
    return f"{chunk.title}\n{chunk.text}"


def default_cache() -> Path:
    from lmstack.common.home import lmstack_home

    return lmstack_home() / "embeddings.sqlite"


def _make_store(directory: Path, settings: IndexSettings, dim: int, new: bool) -> Store:
    if settings.backend == "sqlite":
        return SQLiteStore(dim, settings.ann, directory=None if new else directory)
    if settings.backend == "postgres":
        from lmstack.rag.pgvector import PgVectorStore

        table = settings.table or "lmstack_" + "".join(c if c.isalnum() else "_" for c in directory.name.lower())
        return PgVectorStore(settings.dsn, table, dim, create=new)
    raise ValueError(f"backend={settings.backend!r}; expected sqlite or postgres")
