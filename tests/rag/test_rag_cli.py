"""`lmstack rag` from the command line: index a folder, query it, errors name the flag; the eval metrics."""

from __future__ import annotations

import json

import pytest

from lmstack.cli import main as cli
from lmstack.rag.evaluate import retrieval_metrics, token_f1


def test_index_and_query_a_folder(folder, tmp_path, capsys) -> None:
    out = tmp_path / "coll"
    assert cli(["rag", "index", str(folder), f"--index={out}", "--embedder=none", "--chunk_size=40"]) == 0
    assert (out / "index.json").is_file() and (out / "chunks.sqlite").is_file()
    assert cli(["rag", "index", str(folder), f"--index={out}", "--embedder=none"]) == 2  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli(["rag", "query", "read a file line by line", f"--index={out}", "--k=2"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("[1] Reading and Writing Files") and "tutorial/files.md" in printed
    assert cli(["rag", "query", "event loop", f"--index={out}", "--json", '--where={"path": "web/*"}']) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(h["path"].startswith("web/") for h in hits)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["rag", "fly"], "expected one of"),
        (["rag", "ask"], "give the text"),
        (["rag", "query", "x", "--mode=sparse"], "--mode"),
        (["rag", "query", "x", "--where=path=faq"], "--where"),
        (["rag", "query", "x", "--index=/nonexistent/coll"], "no collection"),
        (["rag", "query", "x", "--rerank_candidates=0"], "--rerank_candidates=0"),
        (["rag", "query", "x", "--rerank_fusion=mean"], "--rerank_fusion"),
        (["rag", "query", "x", "--fusion=max"], "--fusion"),
        (["rag", "query", "x", "--dense_weight=2"], "--dense_weight=2.0"),
    ],
)
def test_errors_name_the_problem(argv, message, capsys) -> None:
    assert cli(argv) == 2
    assert message in capsys.readouterr().err


def test_metrics_by_hand() -> None:
    m = retrieval_metrics([1, 3, None, 12])
    assert m["recall@1"] == 0.25 and m["recall@5"] == 0.5 and m["recall@10"] == 0.5
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / 2) / 4)  # 1/log2(2) + 1/log2(4)
    assert token_f1("The cat sat [1].", "a cat sat down") == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))


def test_evaluation_sets_from_shipped_data() -> None:
    from lmstack.rag.eval_sets import faq_pairs, squad_items

    faq = faq_pairs()
    assert len(faq) >= 170 and all(it.question.endswith("?") and it.passage for it in faq)
    assert any(it.question == "How do I read (or write) binary data?" for it in faq)
    squad = squad_items()
    assert len(squad) == 300 and sum(it.answerable for it in squad) == 150


def test_eval_scores_each_pair_once_for_both_rerank_rows(tmp_path) -> None:
    from lmstack.rag.eval_sets import QAItem
    from lmstack.rag.evaluate import collection, evaluate_retrieval

    passages = ["Open the file and iterate over it: for line in f.", "json.dumps turns objects into JSON text.",
                "The sqlite3 module stores tables in one file.", "asyncio runs coroutines on a loop."]  # fmt: skip
    questions = ["How do I read a file line by line?", "How do I make JSON?", "Where is an SQL table kept?",
                 "What runs coroutines?"]  # fmt: skip
    items = [QAItem(q, p, "", True, "squad") for q, p in zip(questions, passages)]
    index, ids = collection(items, tmp_path / "c", "all-minilm-l6-v2")
    seen = []

    class Counting:
        name = "counting"

        def score(self, query, texts):
            seen.extend((query, t) for t in texts)
            return [-float(i) for i in range(len(texts))]  # keeps the first stage's order

    res, ms = evaluate_retrieval(items, index, ids, Counting(), rerank_candidates=4)
    assert len(seen) == len(set(seen)) == 4 * 4  # each (question, passage) scored once for both rows
    assert res["hybrid+rerank"] == res["hybrid+rerank (rrf)"] == res["hybrid"]  # same order, same metrics
    assert ms["hybrid+rerank (rrf)"] >= ms["hybrid+rerank"] - ms["hybrid"]
