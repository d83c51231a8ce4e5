"""Verifiable tasks: procedurally generated problems with exact answers, and rewards computed by code.

Problems come from `reasoning-gym` (seeded generators with exact scorers; `create_dataset(name, size, seed)`), so
preference pairs and GRPO rewards need no human labels and no model judge: a program checks every answer.
The default task is `chain_sum` with two 1-2 digit terms ("State the final answer to the following arithmetic
problem: 58 + 26 =", answer "84"), which SmolLM2-135M solves only sometimes: room to improve, and enough right
answers among samples for GRPO to learn from.

Splits: the training problems come from generator seed `seed`, the held-out ones from `seed + 10**8` (reasoning-gym
draws item i from `random.Random(seed + i)`, so nearby seeds would share items), minus any question that also
occurs in the training set: a held-out score is never a memorized item.

Rewards (each maps a problem and a completion text to a float in [0, 1]):
  correct  1 if the completion's last number is the answer (reasoning-gym's scorer on that number), else 0
  exact    reasoning-gym's scorer on the whole completion: 1 for just the answer, len(answer)/len(text) when the
           text contains it, so among right answers the shortest scores highest
  format   1 if the completion is a bare number (a format rule needing no answer key), else 0
  numeric  the share of the completion's non-space characters that are digits (a dense format rule: a tiny
           random model earns some from the start, so smoke tests see the reward rise within seconds)
Left out: tasks without a single oracle answer, LLM-judged rewards, partial-credit parsing of word answers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# task name -> reasoning-gym generator settings (the difficulty knobs of each generator)
TASKS: dict[str, dict[str, Any]] = {
    "chain_sum": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "chain_sum_3": {"dataset": "chain_sum", "min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
}
HELD_OUT_OFFSET = 10**8  # item i comes from random.Random(seed + i): far-apart seeds share no item
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Problem:
    question: str  # the prompt text
    answer: str  # the oracle answer
    entry: dict[str, Any] = field(repr=False)  # the reasoning-gym record (its scorer reads metadata)


def _dataset(task: str, size: int, seed: int) -> Any:
    if task not in TASKS:
        raise ValueError(f"--task: got {task!r}, expected one of {', '.join(TASKS)}")
    import reasoning_gym  # lazy: ~1 s to import its 100 generators

    kw = dict(TASKS[task])
    return reasoning_gym.create_dataset(kw.pop("dataset", task), size=size, seed=seed, **kw)


def make_problems(task: str, n: int, seed: int, exclude: set[str] | None = None) -> list[Problem]:
    """`n` distinct problems from the task's generator seeded with `seed`, skipping questions in `exclude`."""
    exclude = set(exclude or ())
    ds = _dataset(task, 10**8, seed)  # items are generated on access: item i from random.Random(seed + i)
    out: list[Problem] = []
    for i in range(50 * (n + 16)):
        e = ds[i]
        if e["question"] not in exclude:
            out.append(Problem(e["question"], str(e["answer"]), e))
            exclude.add(e["question"])
            if len(out) == n:
                return out
    raise ValueError(f"--task {task}: only {len(out)} distinct problems found, {n} requested")


def splits(task: str, n_train: int, n_eval: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(train problems from `seed`, held-out problems from `seed + HELD_OUT_OFFSET` not in train)."""
    train = make_problems(task, n_train, seed)
    return train, make_problems(task, n_eval, seed + HELD_OUT_OFFSET, exclude={p.question for p in train})


def score_answer(problem: Problem, text: str) -> float:
    """reasoning-gym's own scorer for the problem's generator."""
    import reasoning_gym

    return float(reasoning_gym.get_score_answer_fn(problem.entry["metadata"]["source_dataset"])(text, problem.entry))


def last_number(text: str) -> str | None:
    found = NUMBER.findall(text)
    return found[-1] if found else None


def reward_correct(problem: Problem, text: str) -> float:
    n = last_number(text)
    return score_answer(problem, n) if n is not None else 0.0


def reward_exact(problem: Problem, text: str) -> float:
    return score_answer(problem, text.strip()) if text.strip() else 0.0


def reward_format(problem: Problem, text: str) -> float:
    return 1.0 if re.fullmatch(r"\s*-?\d[\d,]*(?:\.\d+)?\s*", text) else 0.0


def reward_numeric(problem: Problem, text: str) -> float:
    chars = [c for c in text if not c.isspace()]
    return sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0


REWARDS: dict[str, Callable[[Problem, str], float]] = {
    "correct": reward_correct,
    "exact": reward_exact,
    "format": reward_format,
    "numeric": reward_numeric,
}


def wrong_answer(problem: Problem, rng: random.Random) -> str:
    """A near miss the scorer rejects: off by one or ten, digits swapped, sign flipped (verified wrong)."""
    value = int(float(problem.answer.replace(",", "")))
    for _ in range(50):
        kind = rng.choice(("plus1", "minus1", "plus10", "minus10", "swap", "neg"))
        if kind == "swap" and abs(value) >= 10:
            digits = list(str(abs(value)))
            i = rng.randrange(len(digits) - 1)
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
            candidate = int("".join(digits)) * (-1 if value < 0 else 1)
        else:
            delta = {"plus1": 1, "minus1": -1, "plus10": 10, "minus10": -10}.get(kind, 0)
            candidate = -value if kind == "neg" else value + delta
        if score_answer(problem, str(candidate)) == 0.0:
            return str(candidate)
    raise AssertionError(f"no wrong answer found for {problem.question!r}")
