"""Fixtures for the RAG tests: the real MiniLM embedder (loaded once), a small mixed-format folder, vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmstack.rag.embedder import SentenceEmbedder

FILES = {
    "tutorial/files.md": "# Reading and Writing Files\n\nTo read a file line by line, loop over the file object: "
    "`for line in f: print(line)`. This is memory efficient and fast.\n\nUse `f.readlines()` to get a list of "
    "all the lines.\n\n## Closing files\n\nThe `with` statement closes the file for you, even when an exception "
    "is raised.\n",
    "library/json.rst": "json --- JSON encoder and decoder\n=================================\n\n``json.dumps`` "
    "serializes an object to a JSON formatted string. ``json.loads`` parses a JSON document.\n\nUse ``indent`` "
    "for pretty printing.\n",
    "faq/general.txt": "General FAQ\n===========\n\nWhat is Python?\n---------------\n\nPython is an interpreted, "
    "interactive, object-oriented programming language.\n",
    "web/asyncio.html": "<html><head><title>asyncio</title><style>p {color: red}</style></head><body><h1>Event "
    "loop</h1><p>The event loop runs asynchronous tasks and callbacks.</p><script>alert(1)</script></body></html>",
}


@pytest.fixture(scope="session")
def minilm() -> SentenceEmbedder:
    return SentenceEmbedder("all-minilm-l6-v2")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def clustered(n: int, dim: int, seed: int, centers: int = 20) -> np.ndarray:
    """Unit vectors around a few random centers (structured like real embeddings, unlike uniform noise)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    x = c[rng.integers(0, centers, n)] + 0.6 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
