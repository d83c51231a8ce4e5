"""`lmstack rag index|query|ask|eval`: build a collection, search it, ask it questions, measure it.

    lmstack rag index pydocs                         # the Python docs -> $LMSTACK_HOME/rag/pydocs (hybrid)
    lmstack rag index ~/notes --embedder=none        # a folder of .txt/.md/.rst/.html, BM25 only (fast)
    lmstack rag query "read a file line by line" --k=5 --where='{"path": "tutorial/*"}'
    lmstack rag ask "How do I read a file line by line?"            # streams a cited answer
    lmstack rag ask "..." --rerank=cross-encoder --expand=hyde
    lmstack rag eval                                  # retrieval + answer metrics (see evaluate.py)

`ask` and `query` on the default pydocs collection build it on first use if it is missing: BM25 only, in seconds
(`lmstack rag index pydocs` builds the hybrid one: all-MiniLM-L6-v2 embeddings of ~22K chunks, minutes on a
laptop-class CPU, cached by content hash). The cross-encoder comes from `lmstack rag-train-reranker`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmstack.common.log import info
from lmstack.rag.hybrid import DENSE_WEIGHT, FUSIONS, RERANK_FUSIONS, RERANK_WEIGHT

ACTIONS = ("index", "query", "ask", "eval")


@dataclass
class RagConfig:
    # `index SOURCE` (pydocs or a folder/file), `query TEXT`, `ask QUESTION` or `eval`
    args: list[str] = field(default_factory=lambda: ["ask"], metadata={"positional": True})
    index: str = ""  # collection directory (default: $LMSTACK_HOME/rag/<source name>, i.e. .../rag/pydocs)
    embedder: str = "all-minilm-l6-v2"  # index: all-minilm-l6-v2 | a BERT dir | lm:<model> | none (BM25 only)
    ann: str = "hnsw"  # index: exact | ivf | ivfpq | hnsw
    chunker: str = "recursive"  # index: fixed | recursive | semantic | parent-child
    chunk_size: int = 200  # index: tokens per chunk
    chunk_overlap: int = 32  # index: tokens shared by neighbouring fixed chunks
    parent_size: int = 800  # index: parent-child parent size in tokens
    bm25_variant: str = "okapi"  # index: okapi | bm25+
    backend: str = "sqlite"  # index: sqlite | postgres
    dsn: str = ""  # index: PostgreSQL connection string for backend=postgres
    overwrite: bool = False  # index: replace an existing collection
    batch_size: int = 32  # index: texts per embedding batch
    mode: str = "hybrid"  # query/ask: bm25 | dense | hybrid
    fusion: str = "convex"  # query/ask/eval: how hybrid merges BM25 and dense: convex (normalized scores) | rrf
    dense_weight: float = DENSE_WEIGHT  # query/ask/eval: convex fusion's weight on dense (BM25's: 1 - it)
    k: int = 3  # query/ask: hits returned (the sources given to the model: a 135M model copes with ~3)
    where: str = ""  # query/ask: metadata filter as JSON, e.g. {"path": "library/*"}
    rerank: str = "none"  # query/ask: none | cross-encoder | llm
    reranker: str = ""  # cross-encoder directory (default: <index>-reranker)
    rerank_candidates: int = 20  # query/ask/eval: fused hits the reranker reorders (then the top k are kept)
    rerank_fusion: str = "rrf"  # query/ask: rrf (the reranker's order fused with the retrievers') | replace
    rerank_weight: float = RERANK_WEIGHT  # query/ask/eval: the reranker's RRF weight (the retrievers': 1)
    expand: str = "none"  # query/ask: none | hyde | rewrite (uses --model)
    model: str = "smollm2-135m"  # ask (and llm rerank / hyde / rewrite): the answering model
    min_score: float = 0.3  # ask: abstain when the retrieval confidence is below this
    max_new_tokens: int = 160  # ask: answer length limit
    injection: str = "redact"  # ask: prompt-injection guard: redact | mark | off
    verify: str = "overlap"  # ask: citation support check: overlap | model
    out: str = ""  # eval: report directory (default: $LMSTACK_HOME/rag/eval)
    answers: int = 10  # eval: questions per set answered by the model (0 = retrieval only)
    json: bool = False  # query/ask: print JSON instead of text

    def __post_init__(self) -> None:
        if not self.args or self.args[0] not in ACTIONS:
            raise ValueError(f"rag: got {self.args!r}; expected one of: {', '.join(ACTIONS)} (then its argument)")
        action = self.args[0]
        if action in ("query", "ask") and len(self.args) < 2:
            raise ValueError(f'rag {action}: give the text, e.g. lmstack rag {action} "How do I read a file?"')
        for name, allowed in [("mode", ("bm25", "dense", "hybrid")), ("rerank", ("none", "cross-encoder", "llm")),
                              ("expand", ("none", "hyde", "rewrite")),
                              ("rerank_fusion", RERANK_FUSIONS), ("fusion", FUSIONS)]:  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name}={getattr(self, name)!r}; expected one of {list(allowed)}")
        if self.rerank_weight < 0:
            raise ValueError(f"--rerank_weight={self.rerank_weight} must be >= 0")
        if not 0 <= self.dense_weight <= 1:
            raise ValueError(f"--dense_weight={self.dense_weight} must be in [0, 1]")
        if self.rerank_candidates <= 0:
            raise ValueError(f"--rerank_candidates={self.rerank_candidates}: expected a positive number of hits")
        if self.k <= 0:
            raise ValueError(f"--k={self.k} must be positive")
        if self.where:
            self.filter()

    def filter(self) -> dict[str, Any] | None:
        if not self.where:
            return None
        try:
            value = json.loads(self.where)
        except json.JSONDecodeError as e:
            raise ValueError(f'--where={self.where!r} is not JSON ({e.msg}); e.g. \'{{"path": "faq/*"}}\'') from None
        if not isinstance(value, dict):
            raise ValueError(f"--where={self.where!r}: expected a JSON object")
        return value


def default_index_dir(source: str = "pydocs") -> Path:
    from lmstack.common.home import lmstack_home

    name = "pydocs" if source == "pydocs" else Path(source).expanduser().resolve().name
    return lmstack_home() / "rag" / name


def build(cfg: RagConfig, source: str, directory: Path) -> Path:
    from lmstack.rag.documents import load_documents
    from lmstack.rag.index import Index, IndexSettings

    if (directory / "index.json").exists() and not cfg.overwrite:
        raise ValueError(f"{directory} already holds a collection; pass --overwrite to rebuild it")
    settings = IndexSettings(
        embedder=cfg.embedder, ann=cfg.ann, chunker=cfg.chunker, chunk_size=cfg.chunk_size,
        chunk_overlap=cfg.chunk_overlap, parent_size=cfg.parent_size, bm25_variant=cfg.bm25_variant,
        backend=cfg.backend, dsn=cfg.dsn,
    )  # fmt: skip
    docs = load_documents(source)
    info(f"indexing {len(docs)} documents from {source} -> {directory}")
    index = Index.create(directory, settings)
    n = index.add_documents(docs, show_progress=True, batch_size=cfg.batch_size)
    index.save()
    dense = f"embedder {cfg.embedder}, ann {cfg.ann}" if cfg.embedder != "none" else "BM25 only"
    info(f"{n} chunks ({cfg.chunker}, {cfg.chunk_size} tokens), {dense}")
    return directory


def open_index(cfg: RagConfig):
    from lmstack.rag.index import Index

    directory = Path(cfg.index).expanduser() if cfg.index else default_index_dir()
    if not (directory / "index.json").exists():
        if cfg.index:
            raise FileNotFoundError(f"--index {directory}: no collection there; build it with `lmstack rag index`")
        info(f"no collection at {directory}: building a BM25-only pydocs index first (`lmstack rag index pydocs` "
             "builds the hybrid one)")  # fmt: skip
        build(RagConfig(args=["index", "pydocs"], embedder="none"), "pydocs", directory)
    return Index.open(directory)


def make_retriever(cfg: RagConfig, index, lm=None):
    from lmstack.rag.retriever import Retriever

    reranker = expander = None
    if cfg.rerank == "cross-encoder":
        from lmstack.rag.reranker import CrossEncoder

        reranker = CrossEncoder.load(cfg.reranker or f"{index.directory}-reranker")
    elif cfg.rerank == "llm":
        from lmstack.rag.reranker import LLMReranker

        reranker = LLMReranker(*lm())
    if cfg.expand != "none":
        from lmstack.rag.query_expansion import HyDE, QueryRewriter

        expander = HyDE(*lm()) if cfg.expand == "hyde" else QueryRewriter(*lm())
    return Retriever(index, cfg.mode, cfg.k, reranker=reranker, expander=expander,
                     rerank_candidates=cfg.rerank_candidates, rerank_fusion=cfg.rerank_fusion,
                     rerank_weight=cfg.rerank_weight, fusion=cfg.fusion, dense_weight=cfg.dense_weight)  # fmt: skip


def _lazy_model(spec: str):
    cache: list = []

    def get():
        if not cache:
            from lmstack.model import load_model

            cache.append(load_model(spec, device="cpu"))
        return cache[0]

    return get


def main(cfg: RagConfig) -> int:
    action = cfg.args[0]
    if action == "index":
        source = cfg.args[1] if len(cfg.args) > 1 else "pydocs"
        build(cfg, source, Path(cfg.index).expanduser() if cfg.index else default_index_dir(source))
        return 0
    if action == "eval":
        from lmstack.rag.evaluate import run_eval

        return run_eval(cfg)
    index = open_index(cfg)
    lm = _lazy_model(cfg.model)
    retriever = make_retriever(cfg, index, lm)
    text = " ".join(cfg.args[1:])
    if action == "query":
        hits = retriever.retrieve(text, where=cfg.filter())
        if cfg.json:
            print(json.dumps([asdict(h) for h in hits], indent=2))
            return 0
        for n, h in enumerate(hits, 1):
            scores = " ".join(f"{k}={v:.3f}" for k, v in h.scores.items())
            print(f"[{n}] {h.title}  ({h.path}:{h.start}-{h.end})  {scores}")
            print("    " + h.text.strip().replace("\n", "\n    ")[:600] + "\n")
        return 0
    return _ask(cfg, text, retriever, lm)


def _ask(cfg: RagConfig, question: str, retriever, lm) -> int:
    import sys

    from lmstack.rag.answer import answer

    model, tok = lm()
    stream = None if cfg.json else (lambda t: (sys.stdout.write(t), sys.stdout.flush()))
    ans = answer(
        question, retriever, model, tok, min_score=cfg.min_score, max_new_tokens=cfg.max_new_tokens,
        injection=cfg.injection, verify=cfg.verify, where=cfg.filter(), on_text=stream,
    )  # fmt: skip
    if cfg.json:
        print(json.dumps({"question": question, "answer": ans.text, "abstained": ans.abstained,
                          "reason": ans.reason, "citations": [asdict(c) for c in ans.citations],
                          "sources": [{"n": n, "title": h.title, "path": h.path, "span": [h.start, h.end]}
                                      for n, h in enumerate(ans.hits, 1)]}, indent=2))  # fmt: skip
        return 0
    print("\n")
    for c in ans.citations:
        mark = "ok" if c.exists and c.supported else ("missing source" if not c.exists else "not supported")
        how = " (attributed)" if c.added else ""
        print(f"  [{c.number}] {mark}{how}: overlap {c.overlap:.2f}")
    print("Sources:")
    for n, h in enumerate(ans.hits, 1):
        print(f"  [{n}] {h.title} ({h.path}:{h.start}-{h.end})")
    conf = "n/a" if ans.confidence != ans.confidence else f"{ans.confidence:.2f}"
    print(f"({ans.reason}; retrieval confidence {conf})")
    return 0
