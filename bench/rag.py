"""Benchmark: BM25 (ours vs bm25s vs rank_bm25) and vector indexes (ours vs faiss vs hnswlib) at 10K and 100K.

Claims (issue 13): BM25 query >= 5x rank_bm25 and within 2x of bm25s; HNSW recall@10 >= 0.95 at <= 2x hnswlib
latency; build time, size and recall@10 of exact / IVF / IVF-PQ / HNSW next to faiss at matched parameters.

Method. BM25: documents are paragraphs of the Python docs and the Gutenberg corpora, tokenized once by our analyzer
and given as the same token lists to all three libraries (bm25s with method="robertson", the rank_bm25 Okapi
idf); queries are the 175 Python FAQ questions; top-10 per query, one query per call. recall@10 is against
rank_bm25's exact ranking. Vectors: 384-d unit vectors drawn around 1,000 random centres (real MiniLM embeddings
of 100K passages would take hours on this CPU; clustered data behaves like embeddings for ANN, uniform noise does
not); 200 queries from the same distribution; ground truth by exact search. Matched parameters: IVF nlist =
4 sqrt(n), nprobe 16; IVF-PQ 48 sub-quantizers x 8 bits; HNSW M 16, efConstruction 200, efSearch 64. Every library
runs single-threaded (faiss omp 1, hnswlib 1 thread, our numpy BLAS limited to 1), so build times compare
algorithms, not thread counts. Latency: one query per call, p50 / p99 over all queries, sides interleaved in
rounds after a warm-up. Other engineers load this 2-core machine while it runs: absolute times are noisy,
ratios from interleaved runs are the claim.
Run: `flock /tmp/bench.lock .venv/bin/python bench/rag.py [--quick] [--part=bm25|vectors]`; writes docs/benchmarks.md
(sections "rag-bm25" and "rag-vectors").
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402

QUICK = "--quick" in sys.argv
PARTS = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--part=")] or ["bm25", "vectors"]
KEEP_ALIVE: list = []
SIZES = [2_000, 10_000] if QUICK else [10_000, 100_000]
DIM = 384


def percentiles(times: list[float]) -> tuple[float, float]:
    ms = np.array(times) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def interleaved(sides: dict, queries: list, rounds: int = 2) -> dict[str, list[float]]:
    """Per-query latencies of every side, sides alternating query by query (after one warm-up call each)."""
    for f in sides.values():
        f(queries[0])
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for q in queries:
            for name, f in sides.items():
                t = time.perf_counter()
                f(q)
                times[name].append(time.perf_counter() - t)
    return times


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# ---------------------------------------------------------------- BM25


def bm25_docs(n: int) -> list[list[str]]:
    from lmstack.data.corpus import load_corpus
    from lmstack.rag.bm25 import analyze

    docs: list[list[str]] = []
    for name in ("pydocs", "gutenberg"):
        for d in load_corpus(name):
            for p in d.split("\n\n"):
                tokens = analyze(p)
                if len(tokens) >= 5:
                    docs.append(tokens)
                if len(docs) >= n:
                    return docs
    return docs


def bench_bm25() -> str:
    import bm25s
    from rank_bm25 import BM25Okapi

    from lmstack.rag.bm25 import BM25, analyze
    from lmstack.rag.eval_sets import faq_pairs

    queries = [analyze(it.question) for it in faq_pairs()]
    queries = [q for q in queries if q]
    rows = []
    for n in SIZES:
        docs = bm25_docs(n)
        t = time.perf_counter()
        ours = BM25()
        ours.add(docs)
        build_ours = time.perf_counter() - t
        t = time.perf_counter()
        fast = bm25s.BM25(method="robertson", k1=1.5, b=0.75)
        fast.index(docs, show_progress=False)
        build_fast = time.perf_counter() - t
        t = time.perf_counter()
        ref = BM25Okapi(docs)
        build_ref = time.perf_counter() - t
        few = queries[: 20 if n > 20_000 else 60]  # rank_bm25 scores every document in Python: keep it bounded
        truth = [set(np.argsort(-ref.get_scores(q))[:10].tolist()) for q in few]
        got = [set(ours.search(q, 10)[1].tolist()) for q in few]
        got_fast = [set(fast.retrieve([q], k=10, show_progress=False, n_threads=1)[0][0].tolist()) for q in few]
        times = interleaved(
            {
                "ours": lambda q, ours=ours: ours.search(q, 10),
                "bm25s": lambda q, fast=fast: fast.retrieve([q], k=10, show_progress=False, n_threads=1),
            },
            queries,
        )
        ref_times = interleaved({"rank_bm25": lambda q, ref=ref: np.argsort(-ref.get_scores(q))[:10]}, few, rounds=1)
        with tempfile.TemporaryDirectory() as tmp:
            ours.save(Path(tmp) / "ours")
            fast.save(str(Path(tmp) / "bm25s"))
            size_ours, size_fast = dir_bytes(Path(tmp) / "ours"), dir_bytes(Path(tmp) / "bm25s")
        rec = lambda found, truth=truth: np.mean([len(a & b) / 10 for a, b in zip(found, truth)])  # noqa: E731
        p_ours, p_fast, p_ref = (
            percentiles(times["ours"]),
            percentiles(times["bm25s"]),
            percentiles(ref_times["rank_bm25"]),
        )
        rows += [
            [f"{n:,}", "lmstack", f"{build_ours:.2f}", f"{size_ours / 2**20:.1f}", f"{p_ours[0]:.3f}",
             f"{p_ours[1]:.3f}", f"{rec(got):.3f}"],
            [f"{n:,}", "bm25s", f"{build_fast:.2f}", f"{size_fast / 2**20:.1f}", f"{p_fast[0]:.3f}", f"{p_fast[1]:.3f}",
             f"{rec(got_fast):.3f}"],
            [f"{n:,}", "rank_bm25", f"{build_ref:.2f}", "-", f"{p_ref[0]:.1f}", f"{p_ref[1]:.1f}", "1.000"],
        ]  # fmt: skip
        rows.append([f"{n:,}", "**ratios**", "", "", f"ours {p_ref[0] / p_ours[0]:.0f}x rank_bm25, "
                     f"{p_ours[0] / p_fast[0]:.2f}x bm25s time", "", ""])  # fmt: skip
        print(rows[-4:], flush=True)
    head = ["docs", "library", "build s", "size MiB", "query p50 ms", "query p99 ms", "recall@10 vs rank_bm25"]
    return table(head, rows)


# ---------------------------------------------------------------- vectors


def clustered(n: int, seed: int, centers: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.random.default_rng(12345).standard_normal((centers, DIM)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.9 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def bench_vectors() -> str:
    import faiss
    import hnswlib
    from threadpoolctl import threadpool_limits

    from lmstack.rag.vector_index import make_index

    faiss.omp_set_num_threads(1)
    rows = []
    for n in SIZES:
        x, q = clustered(n, seed=0), clustered(200, seed=1)
        ids = np.arange(n, dtype=np.int64)
        truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
        nlist = int(4 * np.sqrt(n))
        recall = lambda found, truth=truth: float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))  # noqa: E731, E501
        ours_params = {"exact": {}, "ivf": dict(nlist=nlist, nprobe=16), "ivfpq": dict(nlist=nlist, nprobe=16, pq_m=48),
                       "hnsw": dict(M=16, ef_construction=200, ef=64)}  # fmt: skip
        for kind, params in ours_params.items():
            with threadpool_limits(1):
                t = time.perf_counter()
                ours = make_index(kind, DIM, **params)
                ours.add(ids, x)
                build_ours = time.perf_counter() - t
                t = time.perf_counter()
                theirs, other_name = faiss_index(kind, n, x, nlist), "faiss"
                build_theirs = time.perf_counter() - t
                sides = {
                    "lmstack": lambda v, ours=ours: ours.search(v[None], 10)[1],
                    "faiss": lambda v, theirs=theirs: theirs.search(v[None], 10)[1],
                }
                found_ours = ours.search(q, 10)[1]
                found_theirs = theirs.search(q, 10)[1]
                extra = {}
                if kind == "hnsw":
                    t = time.perf_counter()
                    h = hnswlib.Index("ip", DIM)
                    h.init_index(n, M=16, ef_construction=200, random_seed=0)
                    h.set_num_threads(1)
                    h.add_items(x, ids)
                    h.set_ef(64)
                    extra = {"hnswlib": (h, time.perf_counter() - t)}
                    sides["hnswlib"] = lambda v, h=h: h.knn_query(v[None], 10)[0]
                times = interleaved(sides, list(q))
            with tempfile.TemporaryDirectory() as tmp:
                ours.save(Path(tmp) / "ours")
                size_ours = dir_bytes(Path(tmp) / "ours")
                size_theirs = len(faiss.serialize_index(theirs))
                if extra:
                    h.save_index(str(Path(tmp) / "h.bin"))
                    size_h = (Path(tmp) / "h.bin").stat().st_size
            for name, found, build, size in [("lmstack", found_ours, build_ours, size_ours),
                                             (other_name, found_theirs, build_theirs, size_theirs)]:  # fmt: skip
                p50, p99 = percentiles(times[name])
                rows.append([f"{n:,}", kind, name, f"{build:.1f}", f"{size / 2**20:.1f}", f"{p50:.3f}", f"{p99:.3f}",
                             f"{recall(found):.3f}"])  # fmt: skip
            if extra:
                p50, p99 = percentiles(times["hnswlib"])
                rows.append([f"{n:,}", kind, "hnswlib", f"{extra['hnswlib'][1]:.1f}", f"{size_h / 2**20:.1f}",
                             f"{p50:.3f}", f"{p99:.3f}", f"{recall(h.knn_query(q, 10)[0]):.3f}"])  # fmt: skip
            print(rows[-3:], flush=True)
    head = ["vectors", "index", "library", "build s", "size MiB", "query p50 ms", "query p99 ms", "recall@10"]
    return table(head, rows)


def faiss_index(kind: str, n: int, x: np.ndarray, nlist: int):
    import faiss

    if kind == "exact":
        index = faiss.IndexFlatIP(DIM)
    elif kind in ("ivf", "ivfpq"):
        quantizer = faiss.IndexFlatIP(DIM)
        index = (faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT) if kind == "ivf" else
                 faiss.IndexIVFPQ(quantizer, DIM, nlist, 48, 8, faiss.METRIC_INNER_PRODUCT))  # fmt: skip
        index.train(x)
        index.nprobe = 16
    else:
        index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.hnsw.efSearch = 64
    index.add(x)
    if kind in ("ivf", "ivfpq"):
        KEEP_ALIVE.append(quantizer)  # the index does not own its coarse quantizer: it must outlive it
    return index


def main() -> None:
    note = "Machine shared with other jobs: absolute times are noisy; compare rows of one size (interleaved runs)."
    if "bm25" in PARTS:
        body = (
            "### RAG: BM25 (ours vs bm25s vs rank_bm25)\n\n"
            "Same tokens for all three; top-10 per query, one query per call, single-threaded; recall against "
            f"rank_bm25's exact ranking.\n\n{bench_bm25()}\n\n{note}"
        )
        print(body, flush=True)
        write_section("rag-bm25", body)
    if "vectors" in PARTS:
        body = (
            "### RAG: vector indexes (ours vs faiss vs hnswlib)\n\n"
            "384-d clustered unit vectors, 200 queries, top-10, single-threaded, matched parameters: IVF nlist "
            f"4 sqrt(n), nprobe 16; IVF-PQ 48 x 8 bits; HNSW M 16, efC 200, ef 64.\n\n{bench_vectors()}\n\n{note}"
        )
        print(body, flush=True)
        write_section("rag-vectors", body)


if __name__ == "__main__":
    main()
