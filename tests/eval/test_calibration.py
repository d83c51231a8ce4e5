"""ECE by hand and against sklearn's reliability curve; Wilson and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from lmstack.eval.calibration import choice_probabilities, expected_calibration_error, reliability
from lmstack.eval.confidence import bootstrap, interval, wilson


def test_ece_worked_example() -> None:
    # bin (0.8, 0.9]: confidences 0.9, 0.9 -> accuracy 1/2, |0.5 - 0.9| = 0.4, weight 2/4
    # bin (0.5, 0.6]: 0.6, 0.6 -> accuracy 1, |1 - 0.6| = 0.4, weight 2/4   => ECE = 0.4
    assert expected_calibration_error([0.9, 0.9, 0.6, 0.6], [1, 0, 1, 1]) == pytest.approx(0.4)
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0


def test_matches_sklearn_reliability_curve() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.2, 1.0, 500)
    correct = rng.uniform(size=500) < conf**2
    prob_true, prob_pred = calibration_curve(correct, conf, n_bins=10, strategy="uniform")
    r = reliability(conf, correct, 10)
    full = [i for i, c in enumerate(r["count"]) if c > 0]
    assert np.allclose(np.array(r["accuracy"])[full], prob_true)
    assert np.allclose(np.array(r["confidence"])[full], prob_pred)
    weights = np.array(r["count"])[full] / 500
    want = float(np.sum(weights * abs(prob_true - prob_pred)))
    assert expected_calibration_error(conf, correct) == pytest.approx(want)


def test_choice_probabilities_softmax() -> None:
    p = choice_probabilities([-1.0, -2.0, -1000.0])
    assert p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(1 / (1 + np.exp(-1)))


def test_wilson_known_values() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)  # the textbook 95% upper bound for 0/10
    # 80/200 by hand: center (0.4 + z^2/400) / (1 + z^2/200) = 0.40188, half 1.92307 * sqrt(0.0012 + 2.4e-5) = 0.06728
    assert wilson(80, 200) == pytest.approx((0.33460, 0.46916), abs=1e-5)


def test_bootstrap_and_interval_choice() -> None:
    x = np.random.default_rng(1).normal(0.5, 0.1, 400)
    lo, hi = bootstrap(x)
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * 0.1 / 20, rel=0.25)
    assert interval([1, 0, 1, 1]) == wilson(3, 4)
    assert interval([0.5, 1.0]) == bootstrap([0.5, 1.0])
