"""Prompting techniques as small programs over `generate()`: direct answering, few-shot, chain-of-thought and
self-consistency. Each takes a batch of questions and returns one `Answer` per question, so they can be compared on
the same held-out items (bench/prompting.py; the numbers for SmolLM2-135M are in docs/eval.md).

| program          | prompt                                         | decoding                   | answer            |
|------------------|------------------------------------------------|----------------------------|-------------------|
| direct           | "Question: q\\nAnswer:"                         | greedy, one line           | last number       |
| few_shot         | k solved Question/Answer examples, then q      | greedy, one line           | last number       |
| chain_of_thought | k examples that reason step by step (Wei et    | greedy, until the next     | number after      |
|                  | al. 2022), then q                              | "Question:"                | "answer is"       |
| self_consistency | the chain-of-thought prompt (Wang et al. 2023) | k samples at temperature T | majority vote     |

Self-consistency also returns how much the samples agree (`agreement` = votes for the winner / k), an uncertainty
estimate that `hallucination.py` correlates with correctness. ReAct (tool use) is in `react.py`.
Left out: chat-template prompting (every program uses the same plain text format, so base and chat models compare),
least-to-most, tree-of-thought, automatic prompt search.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lmstack.eval.generative import Problem, extract_number, generate_texts, qa_prompt
from lmstack.generate import SamplingParams
from lmstack.model.causal_lm import CausalLM


@dataclass
class Answer:
    answer: str | None  # the extracted final answer (None: no number found)
    text: str  # the model's output (the first sample for self-consistency)
    samples: list[str] = field(default_factory=list)  # every sampled output (self-consistency)
    votes: dict[str, int] = field(default_factory=dict)  # extracted answer -> samples that gave it
    agreement: float = 1.0  # votes for the returned answer / samples
    steps: list[str] = field(default_factory=list)  # tool-use trace (ReAct)


def _run(model: CausalLM, tok: Any, prompts: list[str], params: SamplingParams, batch_size: int) -> list[str]:
    return generate_texts(model, tok, prompts, params, batch_size)


def direct(
    model: CausalLM, tok: Any, questions: list[str], max_new_tokens: int = 16, batch_size: int = 16
) -> list[Answer]:
    """Zero-shot: the question and "Answer:", greedy; the last number of the first line."""
    return few_shot(model, tok, questions, [], max_new_tokens, batch_size)


def few_shot(
    model: CausalLM, tok: Any, questions: list[str], shots: list[Problem], max_new_tokens: int = 16,
    batch_size: int = 16,
) -> list[Answer]:  # fmt: skip
    """k solved examples before each question; greedy; the last number of the first line."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=["\n"])
    outs = _run(model, tok, [qa_prompt(q, shots) for q in questions], params, batch_size)
    return [Answer(extract_number(o, "final"), o) for o in outs]


COT_STOP = ["\n\nQuestion:", "\nQuestion:"]


def chain_of_thought(
    model: CausalLM, tok: Any, questions: list[str], shots: list[Problem], max_new_tokens: int = 160,
    batch_size: int = 16,
) -> list[Answer]:  # fmt: skip
    """Examples that reason before answering ("... The answer is N."); greedy; the number after 'answer is'."""
    if any(not s.cot for s in shots):
        raise ValueError("chain_of_thought needs examples with worked solutions (Problem.cot)")
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=COT_STOP)
    outs = _run(model, tok, [qa_prompt(q, shots, cot=True) for q in questions], params, batch_size)
    return [Answer(extract_number(o, "final"), o) for o in outs]


def majority(answers: list[str | None]) -> tuple[str | None, dict[str, int], float]:
    """The most common non-empty answer (first seen wins a tie), the vote counts, and its share of all samples."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None, {}, 0.0
    best = max(votes, key=lambda a: (votes[a], -answers.index(a)))
    return best, dict(votes), votes[best] / len(answers)


def self_consistency(
    model: CausalLM, tok: Any, questions: list[str], shots: list[Problem], k: int = 5, temperature: float = 0.7,
    max_new_tokens: int = 160, batch_size: int = 16, seed: int = 0,
) -> list[Answer]:  # fmt: skip
    """k sampled reasoning chains per question; the answer most of them reach wins."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=k, stop=COT_STOP, seed=seed)
    prompts = [qa_prompt(q, shots, cot=True) for q in questions]
    outs = _run(model, tok, prompts, params, max(1, batch_size // k))  # each prompt gives k rows
    answers = []
    for i in range(len(questions)):
        samples = outs[i * k : (i + 1) * k]
        best, votes, agreement = majority([extract_number(o, "final") for o in samples])
        answers.append(Answer(best, samples[0], samples, votes, agreement))
    return answers
