"""Chunkers: cut documents into retrievable passages that keep their source, title and character span.

- fixed:     windows of `size` tokens with `overlap` tokens shared between neighbours (cut at word boundaries, so
             a window holds at most `size` tokens; a single longer word is a window of its own).
- recursive: by structure, coarse to fine (LangChain's RecursiveCharacterTextSplitter idea, in tokens): split at
             section headings, then blank lines (paragraphs), then lines, then sentences, then words, descending
             only into pieces still longer than `size`; then merge neighbours back while they fit. Each chunk's
             title is "document title > section heading".
- semantic:  sentences embedded one by one; a new chunk starts where the cosine distance between consecutive
             sentences is above the `percentile`-th of the document's distances (Kamradt's semantic chunking),
             and wherever the chunk would exceed `size` tokens.
- parent-child: recursive parents of `parent_size` tokens, each cut into fixed children of `size` tokens; search
             matches the small child (precise), the answer reads its parent (context) (LlamaIndex's "auto-merging"
             / LangChain's ParentDocumentRetriever idea).

Token counts come from a `count(text) -> int` function (the embedder's WordPiece by default, so a chunk never
exceeds the embedder's window). Every chunk's text is exactly document.text[start:end].
Left out: token-exact cuts inside a word, table- and code-aware splitting, LLM-proposed boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmstack.rag.documents import RST_UNDERLINE, Document

WORD_RE = re.compile(r"\S+\s*")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'`*])")
CHUNKERS = ("fixed", "recursive", "semantic", "parent-child")


@dataclass
class Chunk:
    text: str
    path: str  # the document's source path
    title: str  # document title, "> section" for structural chunkers
    start: int  # character span in the document: text == document.text[start:end]
    end: int
    kind: str = "chunk"  # chunk | parent | child (parent-child: only children are searched)
    parent: int | None = None  # parent-child: index of the parent in the same chunk list
    meta: dict[str, Any] = field(default_factory=dict)


class TokenCounter:
    """count(text) with a per-word memo: chunking a large collection re-counts the same words constantly."""

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self.encode = encode
        self._memo: dict[str, int] = {}

    def __call__(self, text: str) -> int:
        return sum(self.word(w) for w in WORD_RE.findall(text))

    def word(self, w: str) -> int:
        n = self._memo.get(w)
        if n is None:
            n = self._memo[w] = len(self.encode(w))
        return n


def default_counter() -> TokenCounter:
    """WordPiece token counts of the default embedder (all-MiniLM-L6-v2)."""
    from lmstack.model.loader import model_path
    from lmstack.rag.embedder import DEFAULT_EMBEDDER
    from lmstack.tokenizer.wordpiece import WordPieceTokenizer

    return TokenCounter(WordPieceTokenizer.load(model_path(DEFAULT_EMBEDDER)).encode)


def _words(text: str, start: int, end: int) -> list[tuple[int, int]]:
    return [(start + m.start(), start + m.end()) for m in WORD_RE.finditer(text[start:end])]


def fixed_spans(text: str, count: TokenCounter, size: int, overlap: int, start: int = 0, end: int | None = None):
    """[(start, end)] windows of <= size tokens over text[start:end], neighbours sharing ~overlap tokens."""
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap={overlap} must be in [0, size={size})")
    words = _words(text, start, len(text) if end is None else end)
    tokens = [count.word(text[a:b]) for a, b in words]
    spans, i = [], 0
    while i < len(words):
        j, total = i, 0
        while j < len(words) and (j == i or total + tokens[j] <= size):
            total += tokens[j]
            j += 1
        spans.append((words[i][0], words[j - 1][1]))
        if j >= len(words):
            break
        back, shared = j, 0  # step back while the shared tail stays within `overlap` tokens
        while back - 1 > i and shared + tokens[back - 1] <= overlap:
            back -= 1
            shared += tokens[back]
        i = back
    return spans


def _heading_starts(text: str) -> list[int]:
    """Character offsets where a reST (title + underline) or Markdown (# title) section begins."""
    starts, pos = [], 0
    lines = text.split("\n")
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if (line.strip() and RST_UNDERLINE.match(nxt) and not RST_UNDERLINE.match(line)) or re.match(r"#{1,6}\s", line):
            starts.append(pos)
        pos += len(line) + 1
    return starts


def _split_at(text: str, start: int, end: int, level: int) -> list[tuple[int, int]]:
    """Pieces of text[start:end] cut at the separators of `level` (0 headings, 1 blank lines, 2 lines, 3 sentences)."""
    if level == 0:
        cuts = [c for c in _heading_starts(text[start:end]) if c > 0]
        cuts = [start + c for c in cuts]
    else:
        pattern = {1: r"\n\s*\n", 2: r"\n", 3: SENTENCE_END.pattern}[level]
        cuts = [start + m.end() for m in re.finditer(pattern, text[start:end])]
    bounds = [start, *cuts, end]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if text[a:b].strip()]


def recursive_spans(
    text: str, count: TokenCounter, size: int, start: int = 0, end: int | None = None, level: int = 0
) -> list[tuple[int, int]]:
    """Structure-following spans of <= size tokens (see the module docstring); a span never crosses a heading."""
    end = len(text) if end is None else end
    if count(text[start:end]) <= size:
        return [(start, end)] if text[start:end].strip() else []
    if level > 3:
        return fixed_spans(text, count, size, 0, start, end)
    pieces = []
    for a, b in _split_at(text, start, end, level) or [(start, end)]:
        pieces += recursive_spans(text, count, size, a, b, level + 1)
    if level == 0:
        return pieces  # sections stay apart, so each chunk has one section title
    merged: list[tuple[int, int]] = []  # merge neighbours back while the union fits
    for a, b in pieces:
        if merged and count(text[merged[-1][0] : b]) <= size:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def section_title(doc: Document, offset: int, heads: list[int]) -> str:
    """'document title > heading' of the section containing `offset` (`heads`: `_heading_starts(doc.text)`)."""
    before = [h for h in heads if h <= offset]
    if not before:
        return doc.title
    heading = doc.text[max(before) :].split("\n", 1)[0].lstrip("# ").strip()
    return doc.title if heading == doc.title else f"{doc.title} > {heading}"


def semantic_spans(text: str, count: TokenCounter, size: int, embed: Callable, percentile: float = 90.0):
    """Sentence groups split where consecutive sentences are least similar (and at `size` tokens)."""
    sentences = [s for a, b in _split_at(text, 0, len(text), 1) for s in _split_at(text, a, b, 3)]
    if len(sentences) <= 1:
        return recursive_spans(text, count, size)
    vecs = embed([text[a:b] for a, b in sentences])  # (S, D) unit vectors
    dist = 1.0 - (vecs[:-1] * vecs[1:]).sum(1)  # (S-1,) distance between sentence i and i+1
    threshold = np.percentile(dist, percentile)
    spans, (a, b), tokens = [], sentences[0], count(text[slice(*sentences[0])])
    for i, (s, e) in enumerate(sentences[1:]):
        n = count(text[s:e])
        if dist[i] > threshold or tokens + n > size:
            spans.append((a, b))
            a, tokens = s, 0
        b, tokens = e, tokens + n
    spans.append((a, b))
    out = []
    for a, b in spans:  # a single sentence longer than `size`: cut it
        out += [(a, b)] if count(text[a:b]) <= size else fixed_spans(text, count, size, 0, a, b)
    return out


def chunk_documents(
    docs: list[Document],
    method: str = "recursive",
    size: int = 200,
    overlap: int = 32,
    parent_size: int = 800,
    count: TokenCounter | None = None,
    embed: Callable | None = None,
) -> list[Chunk]:
    """Chunks of every document, in document order (parents precede their children)."""
    if method not in CHUNKERS:
        raise ValueError(f"chunker={method!r}; expected one of {list(CHUNKERS)}")
    if size <= 0:
        raise ValueError(f"chunk size={size} must be positive")
    count = count or default_counter()
    chunks: list[Chunk] = []
    for doc in docs:
        text = doc.text
        if method == "fixed":
            spans = [(s, "chunk", None) for s in fixed_spans(text, count, size, overlap)]
        elif method == "recursive":
            spans = [(s, "chunk", None) for s in recursive_spans(text, count, size)]
        elif method == "semantic":
            if embed is None:
                raise ValueError("chunker=semantic needs an embedder (embed=...)")
            spans = [(s, "chunk", None) for s in semantic_spans(text, count, size, embed)]
        else:
            spans = []
            for a, b in recursive_spans(text, count, parent_size):
                spans.append(((a, b), "parent", None))
                parent = len(chunks) + len(spans) - 1
                spans += [(s, "child", parent) for s in fixed_spans(text, count, size, overlap, a, b)]
        heads = _heading_starts(text) if method != "fixed" else []
        for (a, b), kind, parent in spans:
            title = section_title(doc, a, heads)
            chunks.append(Chunk(text[a:b], doc.path, title, a, b, kind, parent, dict(doc.meta)))
    return chunks
