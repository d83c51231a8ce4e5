"""The evaluation archives parse completely, with the documented item counts and sane answer keys."""

from __future__ import annotations

import collections

import pytest

from lmstack.eval.datasets import load_humaneval, load_mc, load_unsolvable, quartz_fewshot


@pytest.mark.parametrize("task, n, k", [("social_iqa", 2224, 3), ("quartz", 3860, 2), ("mmlu", 1000, 4),
                                        ("logiqa", 1354, 4)])  # fmt: skip
def test_multiple_choice_sets_parse(task: str, n: int, k: int) -> None:
    items = load_mc(task)
    assert len(items) == n
    assert all(len(it.choices) == k and all(c for c in it.choices) and it.question for it in items)
    golds = collections.Counter(it.gold for it in items)
    assert set(golds) == set(range(k)) and min(golds.values()) > n / (2 * k)  # every position is used
    assert len({it.id for it in items}) == n


def test_item_contents() -> None:
    siqa = load_mc("social_iqa")[0]
    assert siqa.question.endswith("What will happen to Others?")
    assert siqa.choices == ["talk to the family", "hate bailey", "thank bailey"] and siqa.gold == 2
    logiqa = load_mc("logiqa")[0]
    assert logiqa.passage.startswith("The company sent Zhang") and logiqa.choices[0] == "Zhao chose to travel by car."
    assert load_mc("mmlu")[0].source_prompt.rstrip().endswith("Answer:")
    assert len(quartz_fewshot()) == 4


def test_unsolvable_and_humaneval() -> None:
    items = load_unsolvable()
    assert len(items) == 300 and sum(i.answerable for i in items) == 150 and items[0].passage
    problems = load_humaneval()
    assert len(problems) == 164 and problems[0].id == "HumanEval/0"
    assert all("def check(candidate)" in p.test and p.entry_point in p.prompt for p in problems)


def test_unknown_set_is_named() -> None:
    with pytest.raises(ValueError, match="expected one of social_iqa"):
        load_mc("hellaswag")
