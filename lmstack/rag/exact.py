"""Exact (brute-force) nearest-neighbour search: one matrix product, the ground truth for every ANN index.

scores = queries @ vectors^T (Q, n); the k largest per row. Cost O(Q n D) per batch, memory n D floats; at 100K
384-d vectors a single query takes a few milliseconds on one core, and recall is 1 by definition.
Left out: GPU search, float16/int8 storage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmstack.rag.vector_index import Rows, check_vectors, rows_to_ids, top_k, write_index


class ExactIndex:
    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.vectors = np.zeros((0, dim), np.float32)  # (n, D)
        self.rows = Rows()

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        v = check_vectors(vectors, self.dim)
        if len(ids) != len(v):
            raise ValueError(f"{len(ids)} ids for {len(v)} vectors")
        self.rows.append(ids)
        self.vectors = np.concatenate([self.vectors, v])

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = check_vectors(queries, self.dim, "queries")
        scores = q @ self.vectors.T  # (Q, n)
        scores[:, ~self.rows.mask(allowed)] = -np.inf
        s, r = top_k(scores, k)
        return s, rows_to_ids(r, self.rows.ids)

    def delete(self, ids: np.ndarray) -> int:
        return self.rows.delete(ids)

    def __len__(self) -> int:
        return len(self.rows)

    def save(self, path: str | Path) -> None:
        arrays = dict(vectors=self.vectors, ids=self.rows.ids, alive=self.rows.alive)
        write_index(path, self.kind, {"dim": self.dim}, arrays)

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> ExactIndex:
        index = cls(params["dim"])
        index.vectors = arrays["vectors"]
        index.rows = Rows(arrays["ids"], arrays["alive"])
        return index
