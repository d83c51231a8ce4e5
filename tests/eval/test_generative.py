"""Answer extraction and the generated arithmetic / GSM tasks."""

from __future__ import annotations

import pytest

from lmstack.eval.generative import evaluate_generative, extract_number, is_correct, load_problems, qa_prompt


@pytest.mark.parametrize("text, mode, want", [
    (" 42\n", "first", "42"), (" -4 apples", "first", "-4"), ("1,234.0 is it", "first", "1234"),
    ("no digits", "first", None), ("3 + 4 = 7. The answer is 7.", "final", "7"), ("#### 1,000", "final", "1000"),
    ("first 3 then 5", "final", "5"), ("The answer is: $12.50", "final", "12.50"),
])  # fmt: skip
def test_extract_number(text: str, mode: str, want: str | None) -> None:
    assert extract_number(text, mode) == want


def test_problems_are_seeded_and_scored_exactly() -> None:
    a, b = load_problems("arithmetic", 5, seed=3), load_problems("arithmetic", 5, seed=3)
    assert [p.question for p in a] == [p.question for p in b]
    assert is_correct("arithmetic", a[0], a[0].answer) and not is_correct("arithmetic", a[0], a[0].answer + "1")
    assert not is_correct("arithmetic", a[0], None)
    gsm = load_problems("gsm", 2, seed=0)
    assert gsm[0].cot and "####" not in gsm[0].cot


def test_qa_prompt_layout() -> None:
    shots = load_problems("gsm", 1, seed=1)
    p = qa_prompt("What is 2 + 2?", shots, cot=True)
    assert p.startswith(f"Question: {shots[0].question}\nAnswer: {shots[0].cot} The answer is {shots[0].answer}.")
    assert p.endswith("\n\nQuestion: What is 2 + 2?\nAnswer:")


def test_evaluate_generative_runs(tiny_model_dir) -> None:
    from lmstack.model import load_model

    model, tok = load_model(tiny_model_dir, device="cpu")
    out = evaluate_generative(model, tok, "arithmetic", limit=3, num_fewshot=2, max_new_tokens=6)
    assert len(out["items"]) == 3 and all("\n" not in r["output"] for r in out["items"])
    assert out["metrics"]["acc"] == sum(r["correct"] for r in out["items"]) / 3
