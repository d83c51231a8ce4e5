"""Hallucination checks: claim support against a passage, abstention, and uncertainty vs correctness."""

from __future__ import annotations

import pytest

from lmstack.eval.datasets import load_unsolvable
from lmstack.eval.hallucination import auroc, check_answer, claims, grounded_qa, uncertainty_vs_correctness

PASSAGE = "Marie Curie won the Nobel Prize in Physics in 1903 and the Nobel Prize in Chemistry in 1911."


def test_claim_support() -> None:
    assert check_answer("She won the Nobel Prize in Physics in 1903.", PASSAGE).unsupported == 0
    c = check_answer("She won the Nobel Prize in 1903. She was born in Warsaw in 1867.", PASSAGE)
    assert (c.claims, c.unsupported, c.abstained) == (2, 1, False)
    assert check_answer("The passage does not say; unanswerable.", PASSAGE).abstained
    assert claims("Yes. The. 1911!") == ["Yes.", "1911!"]  # "The." has no content word


def test_auroc_by_hand() -> None:
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    # pos {0.9, 0.3}, neg {0.5, 0.1}: pairs won 0.9>0.5, 0.9>0.1, 0.3>0.1 = 3 of 4
    assert auroc([0.9, 0.3, 0.5, 0.1], [True, True, False, False]) == 0.75


def test_uncertainty_vs_correctness() -> None:
    r = uncertainty_vs_correctness([1.0, 0.8, 0.4, 0.2], [True, True, False, False])
    assert r["auroc_wrong"] == 1.0 and r["pearson_agreement_correct"] > 0.9
    assert r["mean_agreement_correct"] == pytest.approx(0.9)


def test_grounded_qa_on_a_model(tiny_model_dir) -> None:
    from lmstack.model import load_model

    model, tok = load_model(tiny_model_dir, device="cpu")
    items = load_unsolvable()
    picked = [next(i for i in items if i.answerable), next(i for i in items if not i.answerable)]
    picked = [type(i)(i.id, i.question, i.passage[:300], i.answerable) for i in picked]  # keep the tiny model's window
    out = grounded_qa(model, tok, picked, max_new_tokens=6)
    assert out["summary"]["answerable"]["n"] == 1 and out["summary"]["unanswerable"]["n"] == 1
    assert 0.0 <= out["summary"]["answerable"]["unsupported_claim_rate"] <= 1.0
