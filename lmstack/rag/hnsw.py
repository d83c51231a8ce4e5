"""HNSW: hierarchical navigable small-world graphs (Malkov & Yashunin 2018), the ANN index behind hnswlib.

Every vector is a node. Node i gets a random top layer l_i = floor(-ln(U) / ln(M)), so layer l holds ~n / M^l
nodes: a skip-list of proximity graphs. Search enters at the top layer's entry point, walks greedily to the node
nearest the query, drops a layer and repeats; on layer 0 it runs a best-first search that keeps the `ef` best
nodes seen (a candidate heap and a result heap) and stops when the nearest unexplored candidate is farther than
the worst result. Insertion searches the same way with ef_construction and links the new node to at most M
neighbours per layer (2M on layer 0), chosen by the paper's heuristic (Algorithm 4): take candidates nearest
first and keep one only if it is closer to the new node than to every neighbour already kept, so links spread
in all directions instead of clustering. A neighbour whose list overflows re-selects its links the same way.

Distances are 1 - q.x on unit vectors (cosine). Deleted nodes stay in the graph as waypoints but are never
returned (hnswlib's markDelete); a metadata filter works the same way (only allowed nodes enter the results),
and a filter leaving fewer than `exact_below` nodes is answered by exact search over them.

The algorithm is plain Python over numpy arrays; numba compiles it (`@njit`) so that it runs at C speed. With
NUMBA_DISABLE_JIT=1 the same functions run as ordinary Python: the readable reference path, tied to the compiled
one by tests. Layer-0 links are an (n, 2M) int32 array; upper-layer links of the few nodes above layer 0 live in a
second array addressed by `upper_start[node] + layer - 1`.
Left out: multi-threaded insertion, re-linking on delete (hnswlib's replaceDeleted), int8/float16 storage.
"""

from __future__ import annotations

import heapq
import math
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from lmstack.common.log import progress
from lmstack.rag.vector_index import Rows, check_vectors, rows_to_ids, top_k, write_index

# ---------------------------------------------------------------- graph kernels (compiled by numba)


@njit(cache=True, fastmath=True)
def _dist(a: np.ndarray, b: np.ndarray) -> np.float32:
    """1 - a.b, written as a loop so LLVM vectorizes it (no BLAS call per pair)."""
    s = np.float32(0.0)
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return np.float32(1.0) - s


@njit(cache=True)
def _links(node, level, links0, counts0, upper, upper_counts, upper_start):
    if level == 0:
        return links0[node, : counts0[node]]
    row = upper_start[node] + level - 1
    return upper[row, : upper_counts[row]]


@njit(cache=True)
def _greedy(q, ep, top, bottom, data, links0, counts0, upper, upper_counts, upper_start):
    """Walk layers top..bottom+1, each time to the neighbour nearest q until none is nearer; return the node."""
    d = _dist(data[ep], q)
    for level in range(top, bottom, -1):
        changed = True
        while changed:
            changed = False
            for nb in _links(ep, level, links0, counts0, upper, upper_counts, upper_start):
                dn = _dist(data[nb], q)
                if dn < d:
                    d, ep, changed = dn, nb, True
    return ep


@njit(cache=True)
def _search_layer(q, entry, ef, level, data, links0, counts0, upper, upper_counts, upper_start, visited, keep):
    """Best-first search of one layer from `entry`; returns (dists, nodes) of up to ef nodes with keep[node],
    nearest first. `visited` is an int32 stamp array: visited[0] holds the current stamp."""
    visited[0] += 1
    stamp = visited[0]
    d0 = _dist(data[entry], q)
    candidates = [(d0, np.int64(entry))]  # min-heap on distance: what to expand next
    results = [(-d0, np.int64(entry))]  # max-heap (negated) of the ef best kept nodes: results[0] is the worst
    if not keep[entry]:
        results.pop()
    visited[entry + 1] = stamp
    while len(candidates) > 0:
        d, c = heapq.heappop(candidates)
        if len(results) >= ef and d > -results[0][0]:
            break  # the nearest unexplored candidate is worse than every result: done
        for nb in _links(c, level, links0, counts0, upper, upper_counts, upper_start):
            if visited[nb + 1] == stamp:
                continue
            visited[nb + 1] = stamp
            dn = _dist(data[nb], q)
            if len(results) < ef or dn < -results[0][0]:
                heapq.heappush(candidates, (dn, np.int64(nb)))
                if keep[nb]:
                    heapq.heappush(results, (-dn, np.int64(nb)))
                    if len(results) > ef:
                        heapq.heappop(results)
    n = len(results)
    dists, nodes = np.empty(n, np.float32), np.empty(n, np.int64)
    for i in range(n - 1, -1, -1):  # popping the max-heap yields the worst first
        d, node = heapq.heappop(results)
        dists[i], nodes[i] = -d, node
    return dists, nodes


@njit(cache=True)
def _select(data, dists, nodes, M):
    """The neighbour heuristic: nodes sorted by distance to the base; keep one only if it is nearer to the base
    than to every node already kept. Returns up to M nodes."""
    kept = np.empty(M, np.int64)
    n_kept = 0
    for i in range(len(nodes)):
        if n_kept >= M:
            break
        good = True
        for j in range(n_kept):
            if _dist(data[nodes[i]], data[kept[j]]) < dists[i]:
                good = False
                break
        if good:
            kept[n_kept] = nodes[i]
            n_kept += 1
    return kept[:n_kept]


@njit(cache=True)
def _connect(src, dst, level, M_max, data, links0, counts0, upper, upper_counts, upper_start):
    """Add the link src -> dst on `level`; if src's list is full, re-select its links with the heuristic."""
    if level == 0:
        lst, cnt, row = links0, counts0, src
    else:
        lst, cnt, row = upper, upper_counts, upper_start[src] + level - 1
    n = cnt[row]
    if n < M_max:
        lst[row, n] = dst
        cnt[row] = n + 1
        return
    cand = np.empty(n + 1, np.int64)
    cand[:n] = lst[row, :n]
    cand[n] = dst
    dists = np.empty(n + 1, np.float32)
    for i in range(n + 1):
        dists[i] = _dist(data[src], data[cand[i]])
    order = np.argsort(dists, kind="mergesort")
    kept = _select(data, dists[order], cand[order], M_max)
    lst[row, : len(kept)] = kept
    cnt[row] = len(kept)


@njit(cache=True)
def _insert_range(
    lo, hi, levels, data, links0, counts0, upper, upper_counts, upper_start, state, M, ef_construction, visited
):
    """Insert nodes lo..hi-1 (their vectors are already in `data`); state = [entry point, top layer]."""
    keep_all = np.ones(data.shape[0], np.bool_)  # while building, deleted nodes are valid neighbours too
    for i in range(lo, hi):
        level = levels[i]
        if state[0] < 0:
            state[0], state[1] = i, level
            continue
        q = data[i]
        ep = _greedy(q, state[0], state[1], level, data, links0, counts0, upper, upper_counts, upper_start)
        for lev in range(min(level, state[1]), -1, -1):
            dists, nodes = _search_layer(
                q, ep, ef_construction, lev, data, links0, counts0, upper, upper_counts, upper_start, visited, keep_all
            )
            M_max = 2 * M if lev == 0 else M
            chosen = _select(data, dists, nodes, M)
            for nb in chosen:
                _connect(i, nb, lev, M_max, data, links0, counts0, upper, upper_counts, upper_start)
                _connect(nb, i, lev, M_max, data, links0, counts0, upper, upper_counts, upper_start)
            ep = nodes[0]
        if level > state[1]:
            state[0], state[1] = i, level


@njit(cache=True)
def _search_many(queries, k, ef, data, links0, counts0, upper, upper_counts, upper_start, state, visited, keep):
    Q = queries.shape[0]
    out_d = np.full((Q, k), np.inf, np.float32)
    out_n = np.full((Q, k), -1, np.int64)
    for i in range(Q):
        q = queries[i]
        ep = _greedy(q, state[0], state[1], 0, data, links0, counts0, upper, upper_counts, upper_start)
        dists, nodes = _search_layer(
            q, ep, max(ef, k), 0, data, links0, counts0, upper, upper_counts, upper_start, visited, keep
        )
        m = min(k, len(nodes))
        out_d[i, :m], out_n[i, :m] = dists[:m], nodes[:m]
    return out_d, out_n


# ---------------------------------------------------------------- the index


class HNSWIndex:
    kind = "hnsw"

    def __init__(
        self, dim: int, M: int = 16, ef_construction: int = 200, ef: int = 64, seed: int = 0, exact_below: int = 2000
    ) -> None:
        if M < 2:
            raise ValueError(f"hnsw M={M} must be >= 2")
        self.dim, self.M, self.ef_construction, self.ef, self.seed = dim, M, ef_construction, ef, seed
        self.exact_below = exact_below
        self.data = np.zeros((0, dim), np.float32)  # (n, D)
        self.levels = np.zeros(0, np.int64)  # (n,) top layer of each node
        self.links0 = np.zeros((0, 2 * M), np.int32)  # (n, 2M) layer-0 neighbours
        self.counts0 = np.zeros(0, np.int32)
        self.upper = np.zeros((0, M), np.int32)  # (slots, M) layers >= 1
        self.upper_counts = np.zeros(0, np.int32)
        self.upper_start = np.zeros(0, np.int64)  # (n,) first upper slot of a node, -1 if it has none
        self.state = np.array([-1, 0], np.int64)  # entry point, top layer
        self.rows = Rows()
        self._rng = np.random.default_rng(seed)

    def add(self, ids: np.ndarray, vectors: np.ndarray, show_progress: bool = False) -> None:
        v = check_vectors(vectors, self.dim)
        if len(ids) != len(v):
            raise ValueError(f"{len(ids)} ids for {len(v)} vectors")
        self.rows.append(ids)
        lo, n = len(self.data), len(v)
        levels = np.floor(-np.log(1.0 - self._rng.random(n)) / math.log(self.M)).astype(np.int64)
        starts = np.full(n, -1, np.int64)
        has_upper = levels > 0
        starts[has_upper] = len(self.upper) + np.concatenate([[0], np.cumsum(levels[has_upper])[:-1]])
        slots = int(levels.sum())
        self.data = np.concatenate([self.data, v])
        self.levels = np.concatenate([self.levels, levels])
        self.links0 = np.concatenate([self.links0, np.full((n, 2 * self.M), -1, np.int32)])
        self.counts0 = np.concatenate([self.counts0, np.zeros(n, np.int32)])
        self.upper = np.concatenate([self.upper, np.full((slots, self.M), -1, np.int32)])
        self.upper_counts = np.concatenate([self.upper_counts, np.zeros(slots, np.int32)])
        self.upper_start = np.concatenate([self.upper_start, starts])
        visited = self._visited_stamps()
        step = 2000
        for a in progress(range(lo, lo + n, step), desc="hnsw insert", unit_scale=step, disable=not show_progress):
            _insert_range(
                a, min(a + step, lo + n), self.levels, self.data, self.links0, self.counts0, self.upper,
                self.upper_counts, self.upper_start, self.state, self.M, self.ef_construction, visited,
            )  # fmt: skip

    def search(
        self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        q = check_vectors(queries, self.dim, "queries")
        if len(self.data) == 0:
            return np.full((len(q), k), -np.inf, np.float32), np.full((len(q), k), -1, np.int64)
        keep = self.rows.mask(allowed)
        if allowed is not None and keep.sum() < self.exact_below:  # selective filter: exact over the allowed
            scores = q @ self.data.T
            scores[:, ~keep] = -np.inf
            s, r = top_k(scores, k)
            return s, rows_to_ids(r, self.rows.ids)
        visited = self._visited_stamps()
        d, nodes = _search_many(
            q, k, ef or self.ef, self.data, self.links0, self.counts0, self.upper, self.upper_counts,
            self.upper_start, self.state, visited, keep,
        )  # fmt: skip
        scores = np.where(nodes >= 0, 1.0 - d, -np.inf).astype(np.float32)
        return scores, rows_to_ids(nodes, self.rows.ids)

    def _visited_stamps(self) -> np.ndarray:
        """The reusable visited-stamp array ([0] = current stamp), so a query does not clear n entries."""
        if getattr(self, "_visited", None) is None or len(self._visited) != len(self.data) + 1:
            self._visited = np.zeros(len(self.data) + 1, np.int32)
        if self._visited[0] > 2**30:  # stamps would overflow int32: start over
            self._visited[:] = 0
        return self._visited

    def delete(self, ids: np.ndarray) -> int:
        return self.rows.delete(ids)

    def __len__(self) -> int:
        return len(self.rows)

    def nbytes(self) -> int:
        arrays = (self.data, self.links0, self.counts0, self.upper, self.upper_counts, self.upper_start, self.levels)
        return sum(a.nbytes for a in arrays) + self.rows.ids.nbytes

    def save(self, path: str | Path) -> None:
        params = dict(dim=self.dim, M=self.M, ef_construction=self.ef_construction, ef=self.ef, seed=self.seed)
        arrays = dict(
            data=self.data, levels=self.levels, links0=self.links0, counts0=self.counts0, upper=self.upper,
            upper_counts=self.upper_counts, upper_start=self.upper_start, state=self.state,
            ids=self.rows.ids, alive=self.rows.alive,
        )  # fmt: skip
        write_index(path, self.kind, params, arrays)

    @classmethod
    def from_arrays(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> HNSWIndex:
        index = cls(**params)
        for name in ("data", "levels", "links0", "counts0", "upper", "upper_counts", "upper_start", "state"):
            setattr(index, name, np.ascontiguousarray(arrays[name]))
        index.rows = Rows(arrays["ids"], arrays["alive"])
        index._rng = np.random.default_rng(params["seed"] + len(index.data))  # fresh levels for later adds
        return index
