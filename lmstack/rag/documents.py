"""Documents for a collection: the embedded `pydocs` corpus or a folder of the user's text, Markdown or HTML files.

Each `Document` keeps its source path (relative to the collection root) and a title, so every chunk, and every
answer built from it, can cite where it came from. Titles: the first reST heading (a line underlined with = - ~
...), the first Markdown `# heading`, or the HTML <title>; the file name otherwise. HTML is reduced to its visible
text (scripts and styles dropped, block elements on their own lines) with the standard library's parser.
Left out: PDF/DOCX extraction, encodings other than UTF-8, per-document metadata files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".html", ".htm")
RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>:.])\1{2,}\s*$")


@dataclass
class Document:
    path: str  # source path relative to the collection root (what citations show)
    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)  # user metadata: filters match on it (plus "path")


def rst_title(text: str) -> str | None:
    """The first reST section title: a text line directly above (or between) underline rows."""
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if RST_UNDERLINE.match(lines[i]) and lines[i - 1].strip() and not RST_UNDERLINE.match(lines[i - 1]):
            return lines[i - 1].strip()
    return None


def markdown_title(text: str) -> str | None:
    m = re.search(r"^#\s+(.+?)\s*#*\s*$", text, re.M)
    return m.group(1) if m else None


class _TextExtractor(HTMLParser):
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section", "article", "dd"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style", "noscript"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True
        elif tag in self.BLOCKS:
            self.parts.append("\n\n" if tag.startswith("h") or tag == "p" else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "noscript"):
            self._skip = max(0, self._skip - 1)
        elif tag == "title":
            self._in_title = False
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page."""
    parser = _TextExtractor()
    parser.feed(html)
    text = re.sub(r"[ \t]+\n", "\n", "".join(parser.parts))
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return parser.title.strip(), text


def read_document(path: Path, root: Path) -> Document:
    try:
        raw = path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    rel = path.relative_to(root).as_posix() if path != root else path.name
    if path.suffix in (".html", ".htm"):
        title, text = html_to_text(raw)
    else:
        text = raw
        title = (markdown_title(raw) if path.suffix == ".md" else rst_title(raw)) or ""
    return Document(path=rel, title=title or path.stem, text=text)


def load_folder(root: str | Path) -> list[Document]:
    """Every .txt/.md/.rst/.html file under `root` (recursively, sorted), or the one file `root` names."""
    root = Path(root).expanduser()
    if root.is_file():
        return [read_document(root, root.parent)]
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such file or directory (expected a folder of text/Markdown/HTML)")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(TEXT_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"{root}: holds no {', '.join(TEXT_SUFFIXES)} file")
    return [read_document(p, root) for p in files]


def pydocs_root() -> Path:
    """The folder of the Python 3.11 documentation sources (fetched once by `lmstack.data`)."""
    from lmstack.data.corpus import SOURCES
    from lmstack.data.sources import fetch

    return fetch(SOURCES["pydocs"]) / "usr/share/doc/python3.11/html/_sources"


def load_pydocs() -> list[Document]:
    """The 497 reST sources of the Python 3.11 docs, titled by their first heading (paths like `faq/library.rst`)."""
    docs = []
    for doc in load_folder(pydocs_root()):
        doc.path = doc.path.removesuffix(".txt")
        docs.append(doc)
    return docs


def load_documents(source: str) -> list[Document]:
    """`pydocs` or a path to a folder / file."""
    return load_pydocs() if source == "pydocs" else load_folder(source)
