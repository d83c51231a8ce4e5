"""Embedded SFT sets: present, verifiable, and the held-out split fixed and disjoint from training."""

from __future__ import annotations

import pytest

from lmstack.finetune.builtin_data import load_builtin


def questions(convs: list) -> set[str]:
    return {next(m["content"] for m in c if m["role"] == "user") for c in convs}


def test_generated_split_is_fixed_and_disjoint():
    held = load_builtin("arithmetic", "held_out", 30)
    assert held == load_builtin("arithmetic", "held_out", 30)  # the same items for every run
    assert held[:10] == load_builtin("arithmetic", "held_out", 10)  # n held-out items = the first n
    train = load_builtin("arithmetic", "train", 300, seed=3)
    assert not questions(train) & questions(held) and len(questions(train)) == 300
    a, b = (int(x) for x in held[0][0]["content"].split(":")[1].strip(" =").replace("-", "+").split("+"))
    assert held[0][1]["content"] in (str(a + b), str(a - b))  # verifiable: the answer is the arithmetic result


@pytest.mark.parametrize("name", ["chatterbot", "evals_qa"])
def test_file_based_sets_split_by_hash(name):
    train, held = load_builtin(name, "train"), load_builtin(name, "held_out")
    assert len(train) > 5 * len(held) > 0 and not questions(train) & questions(held)
    assert all(c[-1]["role"] == "assistant" for c in train + held)


def test_errors_name_the_flag(monkeypatch):
    from lmstack.finetune import builtin_data

    with pytest.raises(ValueError, match="--data"):
        load_builtin("nope")
    with pytest.raises(ValueError, match="size"):
        load_builtin("arithmetic", "train", 0)
    one_digit = ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})  # ~200 problems
    monkeypatch.setitem(builtin_data.GENERATED, "one_digit", one_digit)
    monkeypatch.setattr(builtin_data, "HELD_OUT_POOL", 10)
    with pytest.raises(ValueError, match="distinct problems"):  # an error, not an endless loop
        builtin_data._generated("one_digit", "train", 500, 0)
