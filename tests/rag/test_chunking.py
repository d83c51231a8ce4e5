"""Chunkers keep exact spans, respect the token budget, overlap, follow structure, link parents and children."""

from __future__ import annotations

import numpy as np
import pytest

from lmstack.rag.chunking import TokenCounter, chunk_documents, fixed_spans
from lmstack.rag.documents import Document, html_to_text, load_folder, rst_title

WORDS = TokenCounter(lambda w: w.split())  # one token per word: budgets are easy to read
DOC = Document(
    "guide.rst",
    "Guide",
    "Guide\n=====\n\nIntro paragraph one. It has two sentences.\n\nFiles\n-----\n\n"
    + " ".join(f"w{i}" for i in range(50))
    + ".\n\nNetworking\n----------\n\nSockets connect. Servers listen. Clients call.\n",
)


@pytest.mark.parametrize("method", ["fixed", "recursive", "parent-child"])
def test_spans_are_exact_and_within_budget(method: str) -> None:
    chunks = chunk_documents([DOC], method, size=12, overlap=4, parent_size=30, count=WORDS)
    assert chunks
    for c in chunks:
        assert c.text == DOC.text[c.start : c.end] and c.path == "guide.rst"
        assert WORDS(c.text) <= (30 if c.kind == "parent" else 12)


def test_fixed_windows_overlap() -> None:
    text = " ".join(f"w{i}" for i in range(30))
    spans = fixed_spans(text, WORDS, size=10, overlap=3)
    assert [WORDS(text[a:b]) for a, b in spans][:2] == [10, 10]
    first, second = text[slice(*spans[0])].split(), text[slice(*spans[1])].split()
    assert first[-3:] == second[:3]  # three shared tokens
    assert spans[-1][1] == len(text)


def test_recursive_follows_sections_and_titles() -> None:
    chunks = chunk_documents([DOC], "recursive", size=20, count=WORDS)
    titles = [c.title for c in chunks]
    assert "Guide > Files" in titles and "Guide > Networking" in titles
    net = [c for c in chunks if c.title == "Guide > Networking"]
    assert len(net) == 1 and net[0].text.startswith("Networking")  # a small section stays whole


def test_parent_child_links() -> None:
    chunks = chunk_documents([DOC], "parent-child", size=8, overlap=2, parent_size=30, count=WORDS)
    for c in chunks:
        if c.kind == "child":
            parent = chunks[c.parent]
            assert parent.kind == "parent" and parent.start <= c.start and c.end <= parent.end
        else:
            assert c.kind == "parent" and c.parent is None


def test_semantic_breaks_where_topics_change() -> None:
    text = "Cats purr. Cats meow. Cats nap.\n\nStocks fell. Stocks rose. Stocks fell again.\n"

    def embed(sentences: list[str]) -> np.ndarray:  # a topic embedding: cat sentences vs stock sentences
        v = np.array([[1.0, 0.0] if "Cat" in s else [0.0, 1.0] for s in sentences], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    chunks = chunk_documents([Document("t.txt", "t", text)], "semantic", size=50, count=WORDS, embed=embed)
    assert [c.text.split()[0] for c in chunks] == ["Cats", "Stocks"]


def test_documents_titles_and_html(folder) -> None:
    docs = {d.path: d for d in load_folder(folder)}
    assert docs["tutorial/files.md"].title == "Reading and Writing Files"
    assert docs["library/json.rst"].title == "json --- JSON encoder and decoder"
    assert docs["web/asyncio.html"].title == "asyncio"
    assert "alert" not in docs["web/asyncio.html"].text and "event loop runs" in docs["web/asyncio.html"].text
    assert rst_title("no heading here") is None
    assert html_to_text("<p>a</p><p>b</p>")[1] == "a\n\nb\n"
    with pytest.raises(ValueError, match="chunker"):
        chunk_documents([DOC], "magic", count=WORDS)
