"""An on-disk embedding cache keyed by content hash: re-indexing unchanged text costs nothing.

key = sha256(embedder fingerprint + NUL + text); value = the float32 vector's bytes, in one SQLite table
(`WITHOUT ROWID`, primary key on the hash). SQLite gives atomic commits and safe concurrent readers, so several
indexing runs can share `$LMSTACK_HOME/embeddings.sqlite`. A different model, weights or max_length has a
different fingerprint, so its vectors never mix with another model's.
Left out: eviction (the file grows with every distinct text; delete it to reset).
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np


def content_key(fingerprint: str, text: str) -> bytes:
    return hashlib.sha256(fingerprint.encode() + b"\0" + text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
        self.db.commit()

    def get_many(self, keys: list[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """The cached vectors among `keys` (missing keys are absent from the result)."""
        found: dict[bytes, np.ndarray] = {}
        for lo in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            part = keys[lo : lo + 500]
            marks = ",".join("?" * len(part))
            for key, blob in self.db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", part):
                vec = np.frombuffer(blob, np.float32)
                if len(vec) == dim:
                    found[key] = vec
        return found

    def put_many(self, keys: list[bytes], vectors: np.ndarray) -> None:
        rows = [(k, np.ascontiguousarray(v, np.float32).tobytes()) for k, v in zip(keys, vectors)]
        with self.db:  # one transaction: all or nothing
            self.db.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]

    def close(self) -> None:
        self.db.close()
