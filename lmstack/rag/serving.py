"""RAG in the server: `/v1/embeddings` from our MiniLM, and chat answers grounded in a collection.

    lmstack serve --embedding_model all-minilm-l6-v2              # POST /v1/embeddings
    lmstack serve --rag_index ~/.cache/lmstack/rag/pydocs          # chat requests (and the page's toggle) with
                                                                    # "retrieval" answer from the collection
The serving stage defines the routes and two small protocols (`lmstack/serve/embeddings.py: TextEmbedder`,
`lmstack/serve/retrieval.py: RetrievalService`) and knows nothing about indexes; this module implements them with
lmstack.rag's own pieces — `SentenceEmbedder` for vectors, and `answer.ground` / `answer.conclude` (the halves of
`lmstack rag ask` around generation) for grounded chat — and is what the `lmstack serve` command runs, because
rag sits after serve in the layering. Both options are off by default: a server that does not ask for them loads
no embedder and no index, so it starts and answers exactly as before.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmstack.rag.answer import Grounding, conclude, ground
from lmstack.rag.embedder import SentenceEmbedder
from lmstack.rag.index import Index
from lmstack.rag.retriever import MODES, Retriever
from lmstack.serve.protocol import RetrievalOptions
from lmstack.serve.retrieval import Grounded
from lmstack.serve.server import ServeConfig
from lmstack.serve.server import main as serve_main


class EmbeddingService:
    """A `SentenceEmbedder` as the server's `TextEmbedder` (no on-disk cache: requests are not stored)."""

    def __init__(self, embedder: SentenceEmbedder, name: str) -> None:
        self.embedder, self.name = embedder, name
        self.dim, self.max_tokens = embedder.dim, embedder.max_length

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(self.embedder.tokenizer.encode(t)) + 2 for t in texts]  # + [CLS] and [SEP]

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed(texts, use_cache=False)


class RetrievalService:
    """A collection as the server's `RetrievalService`: `ground` before the engine generates, `check` after."""

    def __init__(
        self, index: Index, mode: str = "hybrid", k: int = 3, min_score: float = 0.3, injection: str = "redact"
    ) -> None:
        self.index, self.mode, self.k, self.min_score, self.injection = index, mode, k, min_score, injection
        self.lock = threading.Lock()  # one search at a time: the store's connection is shared across threads

    def describe(self) -> dict[str, Any]:
        mode = self.mode if self.index.dense else "bm25"
        return {"collection": self.index.directory.name, "chunks": len(self.index), "mode": mode, "k": self.k}

    def ground(self, question: str, options: RetrievalOptions) -> Grounded:
        retriever = Retriever(self.index, options.mode or self.mode, options.k or self.k)
        min_score = self.min_score if options.min_score is None else options.min_score
        with self.lock:
            g = ground(question, retriever, min_score=min_score, injection=self.injection, where=options.where)
        sources = [{"n": n, "title": h.title, "path": h.path, "start": h.start, "end": h.end, "score": h.score,
                    "text": h.context} for n, h in enumerate(g.hits, 1)]  # fmt: skip
        if g.messages is None:
            a = conclude(g, "")
            return Grounded(sources, None, a.text, report(a), g)
        return Grounded(sources, g.messages, state=g)

    def check(self, grounded: Grounded, text: str) -> dict[str, Any]:
        g: Grounding = grounded.state
        return report(conclude(g, text))


def report(a: Any) -> dict[str, Any]:
    """An `Answer`'s verdict as JSON: citations, abstained, reason, confidence (null when not calibrated)."""
    citations = [{"number": c.number, "sentence": c.sentence, "exists": c.exists, "supported": c.supported,
                  "overlap": round(c.overlap, 3), "added": c.added} for c in a.citations]  # fmt: skip
    conf = None if a.confidence != a.confidence else round(float(a.confidence), 4)
    return {"citations": citations, "abstained": a.abstained, "reason": a.reason, "confidence": conf}


@dataclass
class RagServeConfig(ServeConfig):
    embedding_model: str = ""  # serve /v1/embeddings with this sentence embedder (all-minilm-l6-v2 or a BERT dir)
    rag_index: str = ""  # collection dir (`lmstack rag index`): chat requests with "retrieval" answer from it
    rag_mode: str = "hybrid"  # retrieval for grounded chat: bm25 | dense | hybrid (a request may override it)
    rag_k: int = 3  # sources per grounded answer (a 135M model copes with ~3)
    rag_min_score: float = 0.3  # abstain ("I don't know.") below this best dense cosine
    rag_injection: str = "redact"  # prompt-injection guard on retrieved text: redact | mark | off

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rag_mode not in MODES:
            raise ValueError(f"--rag_mode={self.rag_mode!r}; expected one of {list(MODES)}")
        if not 1 <= self.rag_k <= 20:
            raise ValueError(f"--rag_k={self.rag_k}: expected 1..20")
        if self.rag_injection not in ("redact", "mark", "off"):
            raise ValueError(f"--rag_injection={self.rag_injection!r}; expected redact, mark or off")


def services(cfg: RagServeConfig) -> tuple[EmbeddingService | None, RetrievalService | None]:
    """The embedder and the retrieval service the flags ask for (loaded now, so a bad flag fails at startup)."""
    retrieval = None
    if cfg.rag_index:
        path = Path(cfg.rag_index).expanduser()
        if not (path / "index.json").is_file():
            raise FileNotFoundError(f"--rag_index={cfg.rag_index}: no collection there (build one with "
                                    "`lmstack rag index SOURCE --index=DIR`)")  # fmt: skip
        index = Index.open(path)
        if index.dense:
            index.embedder  # noqa: B018  (load it now: the first question should not pay for it)
        retrieval = RetrievalService(index, cfg.rag_mode, cfg.rag_k, cfg.rag_min_score, cfg.rag_injection)
    embedder = None
    if cfg.embedding_model:
        if cfg.embedding_model.startswith("lm:"):
            raise ValueError(f"--embedding_model={cfg.embedding_model}: the server embeds with a BERT sentence "
                             "embedder (all-minilm-l6-v2 or a directory of one)")  # fmt: skip
        same = retrieval is not None and retrieval.index.dense
        same = same and retrieval.index.settings.embedder == cfg.embedding_model
        model = retrieval.index.embedder if same else SentenceEmbedder(cfg.embedding_model)
        name = Path(cfg.embedding_model).name if Path(cfg.embedding_model).is_dir() else cfg.embedding_model
        embedder = EmbeddingService(model, name)
    return embedder, retrieval


def main(cfg: RagServeConfig) -> int:
    """`lmstack serve`: the serving stage's server, plus the embedder and collection the flags ask for."""
    embedder, retrieval = services(cfg)
    return serve_main(cfg, embedder, retrieval)


if __name__ == "__main__":
    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["serve", *sys.argv[1:]]))
