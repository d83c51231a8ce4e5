"""doc2query: the local model writes the question each passage answers, as training queries for the reranker.

The pairs `train_reranker.mine` finds in a collection are headings and sentences, not questions; users ask
questions ("How do I make a Python script executable?"). doc2query (Nogueira, Yang, Lin & Cho 2019, "Document
Expansion by Query Prediction") turns a passage into the question it answers with a generative model; here the
model is the stack's own chat model (SmolLM2-135M-Instruct by default), prompted once per passage, greedy.
A 135M model answers the prompt loosely ('The passage answers the question "How to use a context manager for
selective logging"'), so `parse_question` keeps the quoted or first-line question and drops what is not one.

    lmstack rag-doc2query --index=runs/rag/pydocs --out=runs/rag/pydocs-questions.jsonl --passages=2000

Output: JSON lines {"id": chunk id, "query": question, "raw": model text}, appended as each batch finishes, so an
interrupted run resumes where it stopped (chunks already in the file are skipped). Chunks whose paths match
`exclude` (the FAQ pages, the evaluation questions) are never used.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from lmstack.common.log import info, progress
from lmstack.common.signals import interruptible
from lmstack.rag.bm25 import analyze

PROMPT = (
    "{passage}\n\nWhat question does the passage above answer? Write the question only, "
    'starting with "How" or "What" or "Why".'
)
QUESTION_WORDS = ("how", "what", "why", "when", "where", "which", "who", "can", "is", "are", "does", "do", "should")
NOT_QUESTIONS = ("how to answer", "what question does", "how does the passage", "what is the question")
QUOTED = re.compile(r'"([^"\n]{8,200})"')


@dataclass
class Doc2QueryConfig:
    index: str = ""  # collection directory (built by `lmstack rag index`)
    out: str = ""  # JSON lines file to append questions to
    model: str = "smollm2-135m"  # chat model that writes the questions
    passages: int = 2000  # passages to write a question for (a seeded random sample of the collection)
    exclude: str = "faq/*"  # glob of document paths never used (keep evaluation questions out)
    max_chars: int = 600  # passage text shown to the model (its first characters)
    max_new_tokens: int = 40
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.index or not self.out:
            raise ValueError("doc2query needs --index=DIR (a collection) and --out=FILE.jsonl")
        for name in ("passages", "max_chars", "max_new_tokens", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name}={getattr(self, name)} must be positive")


def parse_question(text: str) -> str | None:
    """The question in a model reply, or None when there is none: a quoted question wins, else the first line;
    it must open with a question word and hold at least three searchable words."""
    quoted = QUOTED.findall(text)
    candidate = quoted[0] if quoted else text.strip().split("\n")[0]
    candidate = re.sub(r"^(question|q)\s*:\s*", "", candidate.strip(), flags=re.I).strip(" .:`*")
    words = candidate.split()
    if not words or words[0].lower().strip(",") not in QUESTION_WORDS or len(analyze(candidate)) < 3:
        return None
    lowered = " ".join(w.lower() for w in words)
    if lowered.startswith(NOT_QUESTIONS) or len(set(zip(words, words[1:], words[2:]))) < len(words) - 3:
        return None  # the prompt echoed back, or a loop ("a mock that is passed to a mock that is passed to ...")
    return candidate.rstrip("?") + "?"


def eligible_ids(index, exclude: str) -> tuple[list[int], set[int]]:
    """(chunk ids that training data may come from, the ids excluded by the `exclude` path glob)."""
    excluded = set(index.store.ids_where({"path": exclude}).tolist()) if exclude else set()
    return [i for i in index.store.ids_where(None).tolist() if i not in excluded], excluded


def passage_ids(index, cfg: Doc2QueryConfig) -> list[int]:
    """The seeded sample of chunk ids the questions are written for (FAQ-style exclusions removed)."""
    ids, _ = eligible_ids(index, cfg.exclude)
    random.Random(cfg.seed).shuffle(ids)
    return ids[: cfg.passages]


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a doc2query file; a broken line is named (file and line number)."""
    rows = []
    for n, line in enumerate(Path(path).expanduser().read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            rows.append({"id": int(row["id"]), "query": row.get("query")})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            expected = '{"id": chunk id, "query": text or null}'
            raise ValueError(f"{path}:{n}: not a doc2query line ({e}); expected {expected}") from None
    return rows


def read_questions(path: str | Path) -> dict[int, str]:
    """chunk id -> question from a doc2query file (lines whose question did not parse are skipped)."""
    return {row["id"]: str(row["query"]) for row in read_rows(path) if row["query"]}


def main(cfg: Doc2QueryConfig) -> int:
    from lmstack.generate import SamplingParams, generate
    from lmstack.model import load_model
    from lmstack.rag.index import Index
    from lmstack.tokenizer.chat import chat_stop_ids, render_prompt

    index = Index.open(Path(cfg.index).expanduser())
    out = Path(cfg.out).expanduser()
    done = {row["id"] for row in read_rows(out)} if out.is_file() else set()
    todo = [i for i in passage_ids(index, cfg) if i not in done]
    info(f"doc2query: {len(done)} passages done, {len(todo)} to go -> {out}")
    if not todo:
        return 0
    model, tok = load_model(cfg.model, device="cpu")
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0, stop_token_ids=chat_stop_ids(tok))
    chunks = sorted(index.get(todo), key=lambda c: len(c.text[: cfg.max_chars]))  # similar lengths per batch
    kept = 0

    def write_batch(f, batch) -> None:
        nonlocal kept
        prompts = [
            render_prompt(tok, [{"role": "user", "content": PROMPT.format(passage=c.text[: cfg.max_chars])}])
            for c in batch
        ]
        for c, ids in zip(batch, generate(model, prompts, params, tokenizer=tok)):
            raw = tok.decode(ids).strip()
            query = parse_question(raw)
            kept += query is not None
            f.write(json.dumps({"id": c.id, "query": query, "raw": raw}) + "\n")
        f.flush()

    bar = progress(total=len(chunks), desc="doc2query", unit="passage")
    out.parent.mkdir(parents=True, exist_ok=True)
    with interruptible(), out.open("a") as f:
        try:
            for start in range(0, len(chunks), cfg.batch_size):
                write_batch(f, chunks[start : start + cfg.batch_size])
                bar.update(min(cfg.batch_size, len(chunks) - start))
        except KeyboardInterrupt:
            info(f"doc2query: interrupted; {out} keeps every finished batch, run again to resume")
            return 130
        finally:
            bar.close()
    info(f"doc2query: {len(chunks)} passages, {kept} questions kept -> {out}")
    return 0
