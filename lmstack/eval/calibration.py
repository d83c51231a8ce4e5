"""Expected calibration error (ECE) of multiple-choice answers (Naeini et al. 2015; Guo et al. 2017, "On
Calibration of Modern Neural Networks").

For each item the model's confidence is the probability it gives its chosen answer, after a softmax over the
choices' log-likelihoods. Items are put in M equal-width confidence bins B_m = ((m-1)/M, m/M] (the first bin also
takes 0), then

    ECE = sum_m |B_m| / n * | accuracy(B_m) - mean confidence(B_m) |

0 means "70 % sure" is right 70 % of the time. `reliability` returns the per-bin numbers a reliability diagram
plots. Left out: adaptive (equal-mass) bins, classwise ECE, temperature scaling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def choice_probabilities(logliks: Sequence[float]) -> np.ndarray:
    """Softmax over the choices' log-likelihoods: (C,) probabilities that sum to 1."""
    x = np.asarray(logliks, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin m (0-based) holds confidences in (m / M, (m + 1) / M]; 0 goes to bin 0."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)


def reliability(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> dict[str, list[float]]:
    """Per bin: item count, accuracy and mean confidence (NaN for empty bins)."""
    conf, ok = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if conf.shape != ok.shape or conf.ndim != 1:
        raise ValueError(f"confidence {conf.shape} and correct {ok.shape} must be equal-length vectors")
    if len(conf) and (conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    idx = bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.bincount(idx, weights=ok, minlength=n_bins) / count
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
    return {"count": count.tolist(), "accuracy": acc.tolist(), "confidence": mean_conf.tolist()}


def expected_calibration_error(confidence: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """ECE with `n_bins` equal-width bins (see the module docstring)."""
    r = reliability(confidence, correct, n_bins)
    n = sum(r["count"])
    if n == 0:
        return 0.0
    return float(sum(c / n * abs(a - m) for c, a, m in zip(r["count"], r["accuracy"], r["confidence"]) if c > 0))
