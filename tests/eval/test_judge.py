"""LLM-as-judge: both orders are asked, disagreement between them is a tie, agreement with ground truth."""

from __future__ import annotations

import pytest

from lmstack.eval import judge as judge_mod
from lmstack.eval.judge import agreement, judge_pairs, verdict
from lmstack.eval.loglikelihood import Loglik


@pytest.mark.parametrize("ab, ba, winner", [(1.0, -1.0, "a"), (-1.0, 1.0, "b"), (1.0, 1.0, "tie"), (-1.0, -1.0, "tie")])
def test_verdict_from_both_orders(ab: float, ba: float, winner: str) -> None:
    assert verdict(ab, ba).winner == winner


def fake_judge(prefer):
    """A stand-in for the log-likelihood harness: `prefer(prompt)` says which slot ("1" or "2") the judge likes."""

    def loglikelihood(model, tok, requests):
        out = []
        for prompt, cont in requests:
            out.append(Loglik(0.0 if cont.strip() == prefer(prompt) else -2.0, False, 1))
        return out

    return loglikelihood


def slot_of(prompt: str, text: str) -> str:
    return "1" if prompt.index("Answer 1:") < prompt.index(text) < prompt.index("Answer 2:") else "2"


def test_position_biased_judge_only_produces_ties(monkeypatch) -> None:
    monkeypatch.setattr(judge_mod, "loglikelihood", fake_judge(lambda p: "1"))
    pairs = [("2+2?", "4", "5"), ("3+3?", "7", "6")]
    vs = judge_pairs(None, None, pairs)
    assert [v.winner for v in vs] == ["tie", "tie"]
    stats = agreement(vs, ["a", "b"])
    assert stats["tie_rate"] == 1.0 and stats["position1_rate"] == 1.0 and stats["agreement"] == 0.5


def test_content_judge_is_consistent_and_scored(monkeypatch) -> None:
    truth_text = {"2+2?": "4", "3+3?": "6", "1+1?": "2"}
    monkeypatch.setattr(judge_mod, "loglikelihood",
                        fake_judge(lambda p: slot_of(p, f": {truth_text[p.split(chr(10))[0][10:]]}\n")))  # fmt: skip
    pairs = [("2+2?", "4", "5"), ("3+3?", "7", "6"), ("1+1?", "2", "3")]
    vs = judge_pairs(None, None, pairs)
    assert [v.winner for v in vs] == ["a", "b", "a"]
    stats = agreement(vs, ["a", "b", "b"])  # the last label disagrees with the judge
    assert stats["agreement"] == pytest.approx(2 / 3) and stats["tie_rate"] == 0.0
    assert stats["position1_rate"] == pytest.approx(0.5)


def test_prompts_swap_the_answers(monkeypatch) -> None:
    seen = []

    def record(model, tok, requests):
        seen.extend(requests)
        return [Loglik(0.0, False, 1)] * len(requests)

    monkeypatch.setattr(judge_mod, "loglikelihood", record)
    judge_pairs(None, None, [("Q?", "first answer", "second answer")])
    prompts = [p for p, _ in seen]
    assert [c for _, c in seen] == [" 1", " 2", " 1", " 2"]
    assert prompts[0].index("first answer") < prompts[0].index("second answer")
    assert prompts[2].index("second answer") < prompts[2].index("first answer")


def test_judge_runs_on_a_model(tiny_model_dir) -> None:
    from lmstack.model import load_model

    model, tok = load_model(tiny_model_dir, device="cpu")
    vs = judge_pairs(model, tok, [("2+2?", "4", "5")])
    assert vs[0].winner in ("a", "b", "tie")
    with pytest.raises(ValueError, match="1 verdicts but 2"):
        agreement(vs, ["a", "b"])
