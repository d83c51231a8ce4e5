"""BM25 (Okapi and BM25+) on a sparse term matrix: lexical retrieval that needs no model.

Okapi BM25 (Robertson & Walker 1994; Robertson & Zaragoza 2009) scores a document d for a query q as

    score(q, d) = sum_{t in q} idf(t) * tf(t, d) * (k1 + 1) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t) = ln(N - n(t) + 0.5) - ln(n(t) + 0.5)     (negative values -> epsilon * mean idf, as rank_bm25)

k1 saturates term frequency, b normalizes by length. BM25+ (Lv & Zhai 2011) lower-bounds the tf part by `delta`
so a long document that matches is never scored below a short one that does not:

    score+(q, d) = sum_{t in q} ln((N + 1) / n(t)) * (delta + tf * (k1 + 1) / (tf + k1 * (1 - b + b |d| / avgdl)))

The fast path precomputes every nonzero (term, document) weight once, stored column-major (CSC: one slice of
document ids and weights per term), so a query costs one `scores[docs] += weights` per query term: work
proportional to the postings read, not to the collection (the "eager sparse scoring" of bm25s, Lù 2024). BM25+'s
`delta * idf` part is the same for every document: one constant per query term. `scores_reference` recomputes
the formula from raw term frequencies, term by term; tests tie both to `rank_bm25` on the same tokens.

Deletes are tombstones (a deleted document scores -inf; N, avgdl and idf keep their build-time values until
`add` or `compact` recomputes them). Left out: stemming and language-specific analyzers (the analyzer is
lowercase word tokens minus English stopwords), BM25L/BM25-adpt, field weighting (BM25F), WAND/MaxScore pruning.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

TOKEN_RE = re.compile(r"\w+")
STOPWORDS = frozenset(
    "a an and are as at be but by for from has have how i if in into is it its of on or s so such t that the their "
    "then there these they this to was were what when where which who why will with do does can you your".split()
)


def analyze(text: str, stopwords: frozenset[str] = STOPWORDS) -> list[str]:
    """Lowercased word tokens without stopwords: "How do I read a File?" -> ["read", "file"]."""
    return [t for t in TOKEN_RE.findall(text.lower()) if t not in stopwords]


class BM25:
    """A BM25 index over tokenized documents; `variant` "okapi" or "bm25+" (k1, b, delta, epsilon as in rank_bm25)."""

    def __init__(
        self, variant: str = "okapi", k1: float = 1.5, b: float = 0.75, delta: float = 1.0, epsilon: float = 0.25
    ) -> None:
        if variant not in ("okapi", "bm25+"):
            raise ValueError(f"bm25 variant={variant!r}; expected 'okapi' or 'bm25+'")
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"bm25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.variant, self.k1, self.b, self.delta, self.epsilon = variant, k1, b, delta, epsilon
        self.vocab: dict[str, int] = {}
        self.doc_len = np.zeros(0, np.int32)  # (N,) tokens per document
        self.deleted = np.zeros(0, bool)  # (N,) tombstones
        self._tf_rows: list[Counter] = []  # per document: term id -> count (the raw matrix, row-major)
        self._build()

    # ---- building ---------------------------------------------------------------------------------------

    def add(self, docs: Iterable[list[str]]) -> None:
        """Append tokenized documents (their rows are len(self) onward) and recompute the statistics."""
        for tokens in docs:
            counts = Counter(self.vocab.setdefault(t, len(self.vocab)) for t in tokens)
            self._tf_rows.append(counts)
        self.doc_len = np.array([sum(c.values()) for c in self._tf_rows], np.int32)
        self.deleted = np.concatenate([self.deleted, np.zeros(len(self._tf_rows) - len(self.deleted), bool)])
        self._build()

    def delete(self, rows: Iterable[int]) -> None:
        self.deleted[np.asarray(list(rows), np.int64)] = True

    def compact(self) -> np.ndarray:
        """Drop deleted rows for good (and recompute N, avgdl, idf); returns the kept old row numbers."""
        keep = np.flatnonzero(~self.deleted)
        names = list(self.vocab)
        rows = [{names[t]: n for t, n in self._tf_rows[i].items()} for i in keep]
        self.vocab, self._tf_rows = {}, []
        self.doc_len, self.deleted = np.zeros(0, np.int32), np.zeros(0, bool)
        self.add([t for t, n in row.items() for _ in range(n)] for row in rows)  # terms only live docs use
        return keep

    def _idf(self, df: np.ndarray) -> np.ndarray:
        """idf per term from document frequencies (V,)."""
        N = len(self._tf_rows)
        if self.variant == "bm25+":
            return np.log((N + 1) / np.maximum(df, 1))
        idf = np.log(N - df + 0.5) - np.log(df + 0.5)
        if len(idf):  # rank_bm25: negative idf (terms in > half the documents) -> epsilon * average idf
            idf = np.where(idf < 0, self.epsilon * idf.mean(), idf)
        return idf

    def _build(self) -> None:
        """The CSC matrix of precomputed weights: for term t, documents indices[indptr[t]:indptr[t+1]]."""
        V, N = len(self.vocab), len(self._tf_rows)
        rows = np.fromiter((d for d, c in enumerate(self._tf_rows) for _ in c), np.int32, sum(map(len, self._tf_rows)))
        terms = np.fromiter((t for c in self._tf_rows for t in c), np.int64, len(rows))
        tf = np.fromiter((n for c in self._tf_rows for n in c.values()), np.float64, len(rows))
        order = np.lexsort((rows, terms))  # group by term, documents ascending within a term
        rows, terms, tf = rows[order], terms[order], tf[order]
        self.indptr = np.zeros(V + 1, np.int64)
        np.cumsum(np.bincount(terms, minlength=V), out=self.indptr[1:])
        self.indices = rows
        self.avgdl = float(self.doc_len.mean()) if N else 0.0
        self.idf = self._idf(np.diff(self.indptr).astype(np.float64))  # (V,)
        norm = self.k1 * (1 - self.b + self.b * self.doc_len[rows] / max(self.avgdl, 1e-9))  # (nnz,)
        saturated = tf * (self.k1 + 1) / (tf + norm)
        self.data = (self.idf[terms] * saturated).astype(np.float32)  # (nnz,) weight of term in document

    # ---- scoring ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tf_rows)

    def _query_terms(self, query: list[str]) -> Counter:
        return Counter(self.vocab[t] for t in query if t in self.vocab)

    def scores(self, query: list[str]) -> np.ndarray:
        """(N,) float32 BM25 scores of every document for a tokenized query (a repeated term counts again)."""
        out = np.zeros(len(self), np.float32)
        constant = 0.0
        for t, count in self._query_terms(query).items():
            lo, hi = self.indptr[t], self.indptr[t + 1]
            out[self.indices[lo:hi]] += count * self.data[lo:hi]  # a term lists each document once: no collisions
            if self.variant == "bm25+":
                constant += count * self.idf[t] * self.delta
        out += np.float32(constant)
        out[self.deleted] = -np.inf
        return out

    def scores_reference(self, query: list[str]) -> np.ndarray:
        """The formula written out per term and document from the raw counts (slow; for tests)."""
        N = len(self)
        out = np.zeros(N, np.float64)
        df = np.diff(self.indptr).astype(np.float64)
        idf = self._idf(df)
        for term in query:
            t = self.vocab.get(term)
            if t is None:
                continue
            for d, counts in enumerate(self._tf_rows):
                tf = counts.get(t, 0)
                norm = self.k1 * (1 - self.b + self.b * self.doc_len[d] / self.avgdl)
                part = tf * (self.k1 + 1) / (tf + norm)
                out[d] += idf[t] * (part + self.delta if self.variant == "bm25+" else part)
        out[self.deleted] = -math.inf
        return out

    def search(self, query: list[str], k: int = 10, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows), best first; `allowed` (N,) bool restricts the candidates (metadata filters).
        Documents sharing no term with the query are not returned."""
        s = self.scores(query)
        if allowed is not None:
            s[~allowed] = -np.inf
        matched = np.zeros(len(self), bool)
        for t in self._query_terms(query):
            matched[self.indices[self.indptr[t] : self.indptr[t + 1]]] = True
        s[~matched] = -np.inf
        k = min(k, int(np.isfinite(s).sum()))
        if k == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        return s[top], top.astype(np.int64)

    # ---- files ------------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """`bm25.npz` (raw counts as CSR + tombstones) and `bm25.json` (parameters, vocabulary) in `directory`."""
        directory.mkdir(parents=True, exist_ok=True)
        indptr = np.zeros(len(self) + 1, np.int64)
        np.cumsum([len(c) for c in self._tf_rows], out=indptr[1:])
        terms = np.fromiter((t for c in self._tf_rows for t in c), np.int32, int(indptr[-1]))
        counts = np.fromiter((n for c in self._tf_rows for n in c.values()), np.int32, int(indptr[-1]))
        np.savez(directory / "bm25.npz", indptr=indptr, terms=terms, counts=counts, deleted=self.deleted)
        params = dict(variant=self.variant, k1=self.k1, b=self.b, delta=self.delta, epsilon=self.epsilon)
        (directory / "bm25.json").write_text(json.dumps({"params": params, "vocab": list(self.vocab)}))

    @classmethod
    def load(cls, directory: Path) -> BM25:
        meta = json.loads((directory / "bm25.json").read_text())
        bm = cls(**meta["params"])
        bm.vocab = {t: i for i, t in enumerate(meta["vocab"])}
        with np.load(directory / "bm25.npz") as z:
            indptr, terms, counts, deleted = z["indptr"], z["terms"], z["counts"], z["deleted"]
        bm._tf_rows = [
            Counter(dict(zip(terms[a:b].tolist(), counts[a:b].tolist()))) for a, b in zip(indptr[:-1], indptr[1:])
        ]
        bm.doc_len = np.array([sum(c.values()) for c in bm._tf_rows], np.int32)
        bm.deleted = deleted.astype(bool)
        bm._build()
        return bm
