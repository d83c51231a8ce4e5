"""doc2query: the reply parser, the real SmolLM2 writing questions for a small collection (resumable, the excluded
pages never used), and the reranker recipe training on those questions."""

from __future__ import annotations

import json

import pytest

from lmstack.rag import Index, IndexSettings, load_documents
from lmstack.rag.doc2query import Doc2QueryConfig, main, parse_question, read_questions
from lmstack.rag.train_reranker import TrainRerankerConfig, mine
from lmstack.rag.train_reranker import main as train_main


@pytest.mark.parametrize(
    ("reply", "question"),
    [
        ('The passage above answers the question "How to open a new file"', "How to open a new file?"),
        ("What is the purpose of the `mode` attribute?", "What is the purpose of the `mode` attribute?"),
        ("Question: why does json.dumps sort keys\nbecause...", "why does json.dumps sort keys?"),
        ("What question does the passage answer?", None),  # the prompt echoed back
        ("How to answer:\n\nHow to answer:", None),
        ("The passage explains the various data types in Python.", None),  # not a question
        ("How to use it?", None),  # fewer than three searchable words
        ("How to match a mock that is passed to a mock that is passed to a mock that is passed to?", None),  # a loop
    ],
)
def test_parse_question_keeps_questions_only(reply: str, question: str | None) -> None:
    assert parse_question(reply) == question


def test_read_questions_names_the_bad_line(tmp_path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": 3, "query": "How to read a file?"}\n{"id": 4, "query": null}\n')
    assert read_questions(path) == {3: "How to read a file?"}
    path.write_text('{"id": 3, "query": "How to read a file?"}\n{"id": 4, \n')
    with pytest.raises(ValueError, match=r"q\.jsonl:2: not a doc2query line"):
        read_questions(path)
    path.write_text('{"query": "How to read a file?"}\n')
    with pytest.raises(ValueError, match=r"q\.jsonl:1: not a doc2query line"):
        read_questions(path)
    with pytest.raises(ValueError, match="--index"):
        Doc2QueryConfig(out=str(path))


def test_smollm2_writes_questions_that_train_the_reranker(folder, tmp_path) -> None:
    ix = Index.create(tmp_path / "ix", IndexSettings(embedder="none", chunk_size=30))
    ix.add_documents(load_documents(str(folder)))
    ix.save()
    index = Index.open(tmp_path / "ix")
    out = tmp_path / "questions.jsonl"
    cfg = Doc2QueryConfig(index=str(tmp_path / "ix"), out=str(out), passages=2, batch_size=2, max_new_tokens=24)
    assert main(cfg) == 0
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(first) == 2 and all(r["raw"] for r in first)
    faq = set(index.store.ids_where({"path": "faq/*"}).tolist())
    assert faq and not faq & {r["id"] for r in first}  # evaluation pages are never used
    cfg.passages = 4
    assert main(cfg) == 0  # resumes: the first two are kept, two more are written
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[:2] == first and len({r["id"] for r in rows}) == 4
    questions = read_questions(out)
    assert questions, f"SmolLM2 wrote no parseable question: {[r['raw'] for r in rows]}"
    train = TrainRerankerConfig(index=str(tmp_path / "ix"), out_dir=str(tmp_path / "ce"), pairs=2, steps=1,
                                batch_queries=2, hard_negatives=1, max_length=48, queries=str(out))  # fmt: skip
    generated = mine(index, train)[-len(questions) :]  # after the mined pairs, one example per question
    chunks = {c.id: c.text for c in index.get(list(questions))}
    assert {e.query: e.passages[0] for e in generated} == {q: chunks[i] for i, q in questions.items()}
    assert all(e.labels == [1.0] + [0.0] * (len(e.passages) - 1) for e in generated)
    assert train_main(train) == 0
