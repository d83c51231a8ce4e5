"""Exact match and token F1 with SQuAD normalization, checked on worked examples."""

from __future__ import annotations

import pytest

from lmstack.eval.squad import exact_match, normalize_answer, token_f1


def test_normalization() -> None:
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("an apple, a pear and THE plum") == "apple pear and plum"
    assert normalize_answer("theater") == "theater"  # 'the' only as a word


def test_exact_match_takes_the_best_gold() -> None:
    assert exact_match("Paris.", ["London", "paris"]) == 1.0
    assert exact_match("Paris, France", "Paris") == 0.0


def test_token_f1_worked_examples() -> None:
    # pred tokens {barack, obama}, gold {obama}: P = 1/2, R = 1/1, F1 = 2/3
    assert token_f1("Barack Obama", "Obama") == pytest.approx(2 / 3)
    # pred "the cat sat" -> [cat, sat]; gold "a cat on the mat" -> [cat, on, mat]: common 1, P 1/2, R 1/3, F1 0.4
    assert token_f1("the cat sat", "a cat on the mat") == pytest.approx(0.4)
    assert token_f1("x y", ["z", "y x"]) == 1.0
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0
    assert token_f1("the", "a") == 1.0  # both normalize to no tokens: SQuAD 2.0 counts that as agreement
    assert token_f1("cat cat", "cat") == pytest.approx(2 / 3)  # bags, not sets: P 1/2, R 1
