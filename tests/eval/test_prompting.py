"""Prompt programs: majority voting, self-consistency sampling, chain-of-thought inputs, ReAct's tool loop and the
calculator it calls."""

from __future__ import annotations

import pytest

from lmstack.eval import react as react_mod
from lmstack.eval.calculator import calculate
from lmstack.eval.generative import load_problems
from lmstack.eval.prompting import chain_of_thought, direct, majority, self_consistency
from lmstack.eval.react import parse_action, react


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from lmstack.model import load_model

    return load_model(tiny_model_dir, device="cpu")


def test_majority_vote() -> None:
    assert majority(["3", "4", "3", None]) == ("3", {"3": 2, "4": 1}, 0.5)
    assert majority(["5", "4"])[0] == "5"  # a tie goes to the answer seen first
    assert majority([None, None]) == (None, {}, 0.0)


def test_programs_run_on_a_model(tiny) -> None:
    model, tok = tiny
    qs = ["What is 2 + 3?", "What is 7 - 1?"]
    shots = load_problems("gsm", 1, seed=5)
    assert len(direct(model, tok, qs, max_new_tokens=4)) == 2
    cot = chain_of_thought(model, tok, qs, shots, max_new_tokens=6)
    assert all(a.samples == [] and a.agreement == 1.0 for a in cot)
    sc = self_consistency(model, tok, qs, shots, k=3, max_new_tokens=6, seed=1)
    for a in sc:
        assert len(a.samples) == 3 and sum(a.votes.values()) <= 3
        assert a.agreement in (0.0, 1 / 3, 2 / 3, 1.0) and (a.answer is None) == (not a.votes)
    with pytest.raises(ValueError, match="worked solutions"):
        chain_of_thought(model, tok, qs, load_problems("arithmetic", 1, seed=0))


def test_react_loop_calls_tools_and_finishes(monkeypatch) -> None:
    script = {
        0: [" I need 12 * 7.\nAction: calculator[12 * 7]", " Let me look it up.\nAction: search[capital of France]"],
        1: [" I have it.\nAction: finish[84]", " The answer is Paris, 2 words.\nAction: finish[Paris]"],
    }
    calls = []

    def fake_generate_texts(model, tok, prompts, params, batch_size):
        calls.append(list(prompts))
        return script[len(calls) - 1][: len(prompts)]

    monkeypatch.setattr(react_mod, "generate_texts", fake_generate_texts)
    out = react(None, None, ["What is 12 times 7?", "Capital of France?"], tools={"search": lambda q: "Paris"})
    assert [a.answer for a in out] == ["84", "Paris"]
    assert "Observation: 84" in out[0].steps and "Observation: Paris" in out[1].steps
    assert calls[1][0].endswith("Action: calculator[12 * 7]\nObservation: 84\nThought:")


def test_react_without_action_and_with_unknown_tool(monkeypatch) -> None:
    outs = iter([[" it is 5, so 6\n", " Action: teleport[x]"], [" Action: finish[1]"]])
    monkeypatch.setattr(react_mod, "generate_texts", lambda m, t, prompts, p, b: next(outs)[: len(prompts)])
    a, b = react(None, None, ["q1", "q2"], max_steps=2)
    assert a.answer == "6" and len(a.steps) == 1
    assert "unknown tool 'teleport'" in b.steps[1] and b.answer == "1"


def test_parse_action() -> None:
    assert parse_action("Thought: x\nAction: calculator[ (3 + 4) * 2 ]") == ("calculator", "(3 + 4) * 2")
    assert parse_action("Action: a[1]\nAction: Finish[2]") == ("finish", "2")
    assert parse_action("no action here") is None


CASES = [("(3 + 4) * 2", "14"), ("7 / 2", "3.5"), ("2^10", "1024"), ("-3 + 1,000", "997"), ("10 / 4 * 2", "5"),
         ("1 / 3", "0.3333333333"), ("17 % 5", "2")]  # fmt: skip


@pytest.mark.parametrize("expr, want", CASES)
def test_calculator(expr: str, want: str) -> None:
    assert calculate(expr) == want


@pytest.mark.parametrize("expr", ["__import__('os').system('ls')", "x + 1", "9 ** 9 ** 9", "1 / 0", "'a' * 3", ""])
def test_calculator_refuses_everything_else(expr: str) -> None:
    assert calculate(expr).startswith("error:")


def test_react_searches_a_rag_index(tmp_path, monkeypatch) -> None:
    from lmstack.eval.react import retrieval_tool
    from lmstack.rag import Document, Index, IndexSettings, Retriever

    index = Index.create(tmp_path / "idx", IndexSettings(embedder="none"))  # BM25 only: no embedding model
    index.add_documents([Document("a.txt", "Paris", "The capital of France is Paris, on the Seine."),
                         Document("b.txt", "Lima", "Lima is the capital of Peru.")])  # fmt: skip
    index.save()
    search = retrieval_tool(Retriever(Index.open(tmp_path / "idx"), mode="bm25", k=1), k=1)
    assert "Paris" in search("capital of France") and "Lima" not in search("capital of France")
    outs = iter([[" Look it up.\nAction: search[capital of France]"], [" Found it.\nAction: finish[Paris]"]])
    monkeypatch.setattr(react_mod, "generate_texts", lambda m, t, prompts, p, b: next(outs)[: len(prompts)])
    (a,) = react(None, None, ["What is the capital of France?"], tools={"search": search})
    assert a.answer == "Paris" and any("Seine" in s for s in a.steps)
