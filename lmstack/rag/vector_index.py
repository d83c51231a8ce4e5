"""What every vector index shares: the `VectorIndex` protocol, id bookkeeping, top-k, and atomic files.

All indexes score by inner product on L2-normalized vectors (= cosine similarity), keep caller-chosen int64 ids
(chunk ids), delete by tombstone (a deleted row is never returned; `compact` or a rebuild reclaims it), and take
`allowed` ids for metadata filters (only those ids may be returned). On disk an index is a directory written
atomically (temp dir + rename): `index.json` (kind, parameters) and `index.npz` (arrays).

    index = make_index("hnsw", dim=384, M=16)      # exact | ivf | ivfpq | hnsw
    index.add(ids, vectors)                          # (n,) int64, (n, D) float32
    scores, ids = index.search(queries, k=10, allowed=None)   # (Q, k) each; id -1 = fewer than k hits
    index.save(path); load_index(path)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lmstack.common.atomic import atomic_dir


class VectorIndex(Protocol):
    kind: str
    dim: int

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def delete(self, ids: np.ndarray) -> int: ...

    def save(self, path: str | Path) -> None: ...

    def __len__(self) -> int: ...


class Rows:
    """External ids <-> internal rows, plus tombstones; shared by every index."""

    def __init__(self, ids: np.ndarray | None = None, alive: np.ndarray | None = None) -> None:
        self.ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, np.int64)
        self.alive = np.ones(len(self.ids), bool) if alive is None else np.asarray(alive, bool)

    def append(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, np.int64)
        clash = np.intersect1d(ids, self.ids[self.alive])
        if len(clash) or len(np.unique(ids)) != len(ids):
            raise ValueError(f"ids already in the index or repeated: {clash[:5].tolist() or ids[:5].tolist()}")
        self.ids = np.concatenate([self.ids, ids])
        self.alive = np.concatenate([self.alive, np.ones(len(ids), bool)])

    def delete(self, ids: np.ndarray) -> int:
        hit = np.isin(self.ids, np.asarray(ids, np.int64)) & self.alive
        self.alive[hit] = False
        return int(hit.sum())

    def mask(self, allowed: np.ndarray | None) -> np.ndarray:
        """(n,) bool: rows that may be returned (alive and, if given, among the allowed ids)."""
        return self.alive if allowed is None else self.alive & np.isin(self.ids, np.asarray(allowed, np.int64))

    def __len__(self) -> int:
        return int(self.alive.sum())


def check_vectors(vectors: np.ndarray, dim: int, what: str = "vectors") -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {tuple(np.shape(vectors))}")
    return v


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best k per row of scores (Q, n), sorted descending; -inf entries come back as row -1."""
    Q, n = scores.shape
    kk = min(k, n)
    out_s = np.full((Q, k), -np.inf, np.float32)
    out_r = np.full((Q, k), -1, np.int64)
    if kk == 0:
        return out_s, out_r
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (Q, 1))
    vals = np.take_along_axis(scores, part, 1)
    order = np.argsort(-vals, axis=1, kind="stable")
    out_s[:, :kk] = np.take_along_axis(vals, order, 1)
    out_r[:, :kk] = np.take_along_axis(part, order, 1)
    out_r[~np.isfinite(out_s)] = -1
    return out_s, out_r


def rows_to_ids(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)


def write_index(path: str | Path, kind: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    with atomic_dir(path) as tmp:
        np.savez(tmp / "index.npz", **arrays)
        (tmp / "index.json").write_text(json.dumps({"kind": kind, "version": 1, "params": params}, indent=2))


def read_index(path: str | Path) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    path = Path(path)
    if not (path / "index.json").is_file():
        raise FileNotFoundError(f"{path}: no index.json (not a vector index directory)")
    meta = json.loads((path / "index.json").read_text())
    with np.load(path / "index.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return meta["kind"], meta["params"], arrays


def make_index(kind: str, dim: int, **params: Any) -> VectorIndex:
    """A new empty index of `kind` (exact | ivf | ivfpq | hnsw)."""
    from lmstack.rag.exact import ExactIndex
    from lmstack.rag.hnsw import HNSWIndex
    from lmstack.rag.ivf import IVFIndex

    if kind == "exact":
        return ExactIndex(dim)
    if kind == "ivf":
        return IVFIndex(dim, pq_m=0, **params)
    if kind == "ivfpq":
        return IVFIndex(dim, **{"pq_m": 16, **params})
    if kind == "hnsw":
        return HNSWIndex(dim, **params)
    raise ValueError(f"index kind {kind!r}; expected exact, ivf, ivfpq or hnsw")


def load_index(path: str | Path) -> VectorIndex:
    from lmstack.rag.exact import ExactIndex
    from lmstack.rag.hnsw import HNSWIndex
    from lmstack.rag.ivf import IVFIndex

    kind, params, arrays = read_index(path)
    cls = {"exact": ExactIndex, "ivf": IVFIndex, "ivfpq": IVFIndex, "hnsw": HNSWIndex}.get(kind)
    if cls is None:
        raise ValueError(f"{path}: unknown index kind {kind!r}")
    return cls.from_arrays(params, arrays)
