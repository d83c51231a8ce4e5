"""Vector indexes: recall against exact search, filters, deletes, atomic save/load round trips, and the HNSW
reference path (NUMBA_DISABLE_JIT=1: the same functions as plain Python) against the compiled one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lmstack.rag.vector_index import load_index, make_index
from tests.rag.conftest import clustered

N, D = 3000, 32
RECALL = {"exact": 1.0, "ivf": 0.9, "ivfpq": 0.3, "hnsw": 0.95}
PARAMS = {"exact": {}, "ivf": {"nprobe": 16}, "ivfpq": {"nprobe": 16, "pq_m": 8}, "hnsw": {"M": 12, "ef": 64}}


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, q = clustered(N, D, seed=0), clustered(100, D, seed=1)
    ids = np.arange(N, dtype=np.int64) * 7 + 3  # ids are not row numbers
    return x, q, ids


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


@pytest.fixture(scope="module")
def truth(data) -> np.ndarray:
    x, q, ids = data
    return ids[np.argsort(-(q @ x.T), axis=1)[:, :10]]


@pytest.mark.parametrize("kind", list(RECALL))
def test_recall_filters_deletes_round_trip(kind: str, data, truth, tmp_path: Path) -> None:
    x, q, ids = data
    index = make_index(kind, D, **PARAMS[kind])
    index.add(ids, x)
    scores, found = index.search(q, 10)
    assert recall(found, truth) >= RECALL[kind]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # a filter: only even ids may come back (half the collection: the ANN path, not the exact fallback)
    allowed = ids[ids % 2 == 0]
    _, found_f = index.search(q, 10, allowed=allowed)
    assert np.isin(found_f[found_f >= 0], allowed).all()
    # a selective filter (5 ids): every one of them is found
    few = ids[[5, 50, 500, 1000, 2999]]
    _, found_few = index.search(q[:3], 10, allowed=few)
    assert all(set(row[row >= 0]) == set(few) for row in found_few)
    # deletes: never returned again, survive save/load; loading gives identical results
    gone = found[:, 0]
    assert index.delete(gone) == len(set(gone.tolist()))
    _, after = index.search(q, 10)
    assert not np.isin(after, gone).any()
    index.save(tmp_path / kind)
    again = load_index(tmp_path / kind)
    s2, f2 = again.search(q, 10)
    np.testing.assert_array_equal(f2, after)
    assert len(again) == N - len(set(gone.tolist()))
    more = clustered(50, D, seed=2)
    again.add(np.arange(10**6, 10**6 + 50), more)  # adding after load works
    assert (again.search(more[:5], 1)[1][:, 0] >= 10**6).all()


def test_failed_save_keeps_the_old_index(data, tmp_path: Path, monkeypatch) -> None:
    x, _, ids = data
    index = make_index("exact", D)
    index.add(ids[:10], x[:10])
    index.save(tmp_path / "ix")
    monkeypatch.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    index.add(ids[10:20], x[10:20])
    with pytest.raises(OSError):
        index.save(tmp_path / "ix")
    monkeypatch.undo()
    assert len(load_index(tmp_path / "ix")) == 10
    assert json.loads((tmp_path / "ix" / "index.json").read_text())["kind"] == "exact"


def test_errors() -> None:
    with pytest.raises(ValueError, match="kind"):
        make_index("annoy", 8)
    index = make_index("exact", 8)
    with pytest.raises(ValueError, match="shape"):
        index.add(np.arange(2), np.zeros((2, 9)))
    index.add(np.arange(2), np.eye(2, 8))
    with pytest.raises(ValueError, match="already"):
        index.add(np.arange(1, 3), np.eye(2, 8))


def test_hnsw_reference_path_matches_compiled(tmp_path: Path) -> None:
    """Build and search 400 points in a subprocess with numba disabled (plain Python), then compiled here."""
    script = textwrap.dedent(
        """
        import sys, numpy as np
        sys.path.insert(0, sys.argv[1])
        from tests.rag.conftest import clustered
        from lmstack.rag.hnsw import HNSWIndex
        x, q = clustered(400, 16, seed=3), clustered(30, 16, seed=4)
        index = HNSWIndex(16, M=8, ef_construction=64, ef=32)
        index.add(np.arange(400), x)
        np.save(sys.argv[2], index.search(q, 10)[1])
        """
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    subprocess.run([sys.executable, "-c", script, str(root), str(tmp_path / "ref.npy")], check=True, env=env)
    reference = np.load(tmp_path / "ref.npy")
    from lmstack.rag.hnsw import HNSWIndex

    x, q = clustered(400, 16, seed=3), clustered(30, 16, seed=4)
    index = HNSWIndex(16, M=8, ef_construction=64, ef=32)
    index.add(np.arange(400), x)
    compiled = index.search(q, 10)[1]
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    assert recall(reference, truth) >= 0.95 and recall(compiled, truth) >= 0.95
    assert recall(compiled, reference) >= 0.95  # same algorithm: same neighbours up to float summation order
