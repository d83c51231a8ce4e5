"""LLM-as-judge: a model compares two answers to a question, asked twice with the answers' positions swapped.

Judges favour whichever answer comes first (or second) independently of quality (Zheng et al. 2023, "Judging
LLM-as-a-Judge with MT-Bench and Chatbot Arena", position bias). So each pair is judged in both orders:

    order 1: "Answer 1: a / Answer 2: b"   ->  prefers a or b
    order 2: "Answer 1: b / Answer 2: a"   ->  prefers a or b
    verdict: the same answer both times -> that answer wins; otherwise a tie (the preference followed the position)

The judge's preference in one order is log p(" 1" | prompt) - log p(" 2" | prompt): two continuations of one
prompt, scored by the log-likelihood harness (no sampling, no parsing). `agreement` scores verdicts against
ground truth (which answer is really right): wins for the right answer count 1, ties 1/2, wrong wins 0; it also
reports the tie rate and how often a single judgment picked position 1 (0.5 = no position bias).
Left out: single-answer grading on a scale, reference-guided judging, multi-turn judging.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmstack.eval.loglikelihood import loglikelihood
from lmstack.model.causal_lm import CausalLM

PROMPT = ("Question: {question}\n\nAnswer 1: {first}\n\nAnswer 2: {second}\n\n"
          "Which answer is correct, 1 or 2?\nThe correct answer is Answer")  # fmt: skip


@dataclass
class Verdict:
    winner: str  # "a", "b" or "tie"
    pref_ab: float  # log-odds for slot 1 with a shown first (> 0: prefers a)
    pref_ba: float  # log-odds for slot 1 with b shown first (> 0: prefers b)

    @property
    def consistent(self) -> bool:
        return self.winner != "tie"


def verdict(pref_ab: float, pref_ba: float) -> Verdict:
    """Combine the two orders: a wins if preferred in slot 1 and in slot 2, b likewise, else a tie."""
    a_first = pref_ab > 0  # order 1 chose a
    a_second = pref_ba < 0  # order 2 chose slot 2, which holds a
    winner = "a" if a_first and a_second else "b" if not a_first and not a_second else "tie"
    return Verdict(winner, pref_ab, pref_ba)


def judge_pairs(model: CausalLM, tok: Any, pairs: list[tuple[str, str, str]]) -> list[Verdict]:
    """(question, answer a, answer b) -> position-swapped verdicts."""
    requests = []
    for q, a, b in pairs:
        for first, second in ((a, b), (b, a)):
            prompt = PROMPT.format(question=q, first=first, second=second)
            requests += [(prompt, " 1"), (prompt, " 2")]
    ll = [r.logprob for r in loglikelihood(model, tok, requests)]
    return [verdict(ll[4 * i] - ll[4 * i + 1], ll[4 * i + 2] - ll[4 * i + 3]) for i in range(len(pairs))]


def agreement(verdicts: list[Verdict], truth: list[str]) -> dict[str, float]:
    """Agreement with ground truth ("a" or "b" is right): score, accuracy on decided pairs, ties, position bias."""
    if len(verdicts) != len(truth):
        raise ValueError(f"{len(verdicts)} verdicts but {len(truth)} ground-truth labels")
    n = len(verdicts)
    right = sum(v.winner == t for v, t in zip(verdicts, truth))
    ties = sum(v.winner == "tie" for v in verdicts)
    decided = n - ties
    slot1 = sum((v.pref_ab > 0) + (v.pref_ba > 0) for v in verdicts)  # single judgments that chose position 1
    return {"agreement": (right + 0.5 * ties) / n, "accuracy_decided": right / decided if decided else 0.0,
            "tie_rate": ties / n, "position1_rate": slot1 / (2 * n), "n": n}  # fmt: skip
