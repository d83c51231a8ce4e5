"""IVF (inverted file) and IVF-PQ approximate search (Jégou et al. 2011; faiss' IndexIVFFlat / IndexIVFPQ).

Train: k-means (spherical, `kmeans.py`) splits the space into `nlist` cells; each vector is filed under its
nearest centroid. Search: score the query against the centroids, open the `nprobe` best cells, and score only the
vectors filed there: about nprobe / nlist of the collection. More probes -> higher recall, more time.

IVF-PQ stores, instead of each vector, the PQ code (`pq.py`) of its residual x - centroid: q . x = q . c + q . r,
where q . r comes from ADC table lookups. 384-d vectors shrink from 1,536 to `pq_m` bytes; recall drops with the
coarser scores (no exact re-ranking, as faiss' plain IndexIVFPQ).

Trained on the first `add` (nlist defaults to ~4 sqrt(n), at most n / 39 so each cell trains on enough points);
later adds are filed under the existing centroids. A metadata filter that leaves fewer than `exact_below`
candidates is answered by scoring those candidates directly (a probe would often miss them all).
Left out: re-training as the collection drifts, multi-threaded search, HNSW coarse quantizers, refinement.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lmstack.rag.kmeans import assign, kmeans
from lmstack.rag.pq import ProductQuantizer
from lmstack.rag.vector_index import Rows, check_vectors, rows_to_ids, top_k, write_index


class IVFIndex:
    def __init__(
        self,
        dim: int,
        nlist: int = 0,
        nprobe: int = 8,
        pq_m: int = 0,
        seed: int = 0,
        exact_below: int = 2000,
    ) -> None:
        self.dim, self.nlist, self.nprobe, self.pq_m, self.seed = dim, nlist, nprobe, pq_m, seed
        self.exact_below = exact_below
        self.kind = "ivfpq" if pq_m else "ivf"
        self.pq = ProductQuantizer(dim, pq_m) if pq_m else None
        self.centroids = np.zeros((0, dim), np.float32)  # (nlist, D)
        self.lists = np.zeros(0, np.int64)  # (n,) cell of each row
        self.vectors = np.zeros((0, dim), np.float32)  # IVF: (n, D)
        self.codes = np.zeros((0, pq_m), np.uint8)  # IVF-PQ: (n, m)
        self.rows = Rows()
        self._order = self._offsets = None  # rows grouped by cell (rebuilt after each add)

    @property
    def trained(self) -> bool:
        return len(self.centroids) > 0

    def train(self, x: np.ndarray) -> None:
        n = len(x)
        nlist = self.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        self.centroids = kmeans(x, nlist, iters=10, seed=self.seed, spherical=True)  # faiss IVF: 10 iterations
        self.nlist = nlist
        if self.pq is not None:
            residuals = x - self.centroids[assign(x, self.centroids, spherical=True)]
            self.pq.train(residuals, seed=self.seed)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        v = check_vectors(vectors, self.dim)
        if len(ids) != len(v):
            raise ValueError(f"{len(ids)} ids for {len(v)} vectors")
        if not self.trained:
            self.train(v)
        self.rows.append(ids)
        cells = assign(v, self.centroids, spherical=True)
        self.lists = np.concatenate([self.lists, cells])
        if self.pq is not None:
            self.codes = np.concatenate([self.codes, self.pq.encode(v - self.centroids[cells])])
        else:
            self.vectors = np.concatenate([self.vectors, v])
        self._group()

    def _group(self) -> None:
        self._order = np.argsort(self.lists, kind="stable")
        self._offsets = np.concatenate([[0], np.cumsum(np.bincount(self.lists, minlength=self.nlist))])

    def _score_rows(self, q: np.ndarray, rows: np.ndarray, cell_scores: np.ndarray, lut: np.ndarray | None):
        if self.pq is None:
            return self.vectors[rows] @ q
        return cell_scores[self.lists[rows]] + self.pq.adc(lut, self.codes[rows])

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = check_vectors(queries, self.dim, "queries")
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        if not self.trained or len(self.rows) == 0:
            return out_s, out_i
        mask = self.rows.mask(allowed)
        few = allowed is not None and mask.sum() < self.exact_below
        cell_scores = q @ self.centroids.T  # (Q, nlist)
        nprobe = min(self.nprobe, self.nlist)
        probes = np.argpartition(-cell_scores, nprobe - 1, axis=1)[:, :nprobe]  # (Q, nprobe)
        for i in range(len(q)):
            if few:  # a selective filter: score every allowed row
                rows = np.flatnonzero(mask)
            else:
                rows = np.concatenate([self._order[self._offsets[c] : self._offsets[c + 1]] for c in probes[i]])
                rows = rows[mask[rows]]
            lut = self.pq.inner_product_table(q[i]) if self.pq is not None else None
            s = self._score_rows(q[i], rows, cell_scores[i], lut).astype(np.float32)
            ts, tr = top_k(s[None], k)
            out_s[i], out_i[i] = ts[0], rows_to_ids(np.where(tr[0] >= 0, rows[np.maximum(tr[0], 0)], -1), self.rows.ids)
        return out_s, out_i

    def delete(self, ids: np.ndarray) -> int:
        return self.rows.delete(ids)

    def __len__(self) -> int:
        return len(self.rows)

    def nbytes(self) -> int:
        """Bytes of the searchable payload (vectors or codes + centroids + codebooks)."""
        payload = self.codes.nbytes + self.pq.codebooks.nbytes if self.pq is not None else self.vectors.nbytes
        return payload + self.centroids.nbytes + self.lists.nbytes + self.rows.ids.nbytes

    def save(self, path: str | Path) -> None:
        params = dict(dim=self.dim, nlist=self.nlist, nprobe=self.nprobe, pq_m=self.pq_m, seed=self.seed)
        arrays = dict(centroids=self.centroids, lists=self.lists, ids=self.rows.ids, alive=self.rows.alive)
        if self.pq is not None:
            arrays.update(codes=self.codes, codebooks=self.pq.codebooks)
        else:
            arrays.update(vectors=self.vectors)
        write_index(path, self.kind, params, arrays)

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> IVFIndex:
        index = cls(**params)
        index.centroids, index.lists = arrays["centroids"], arrays["lists"]
        index.rows = Rows(arrays["ids"], arrays["alive"])
        if index.pq is not None:
            index.codes, index.pq.codebooks = arrays["codes"], arrays["codebooks"]
        else:
            index.vectors = arrays["vectors"]
        index._group()
        return index
