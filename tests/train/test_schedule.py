"""LR schedules at named points: end of warmup, middle of the cosine, end of budget, WSD's decay start."""

from __future__ import annotations

import math

import pytest

from lmstack.train.schedule import Schedule, budget_fraction


def test_cosine_named_points():
    s = Schedule("cosine", peak_lr=1e-3, warmup_frac=0.1, min_lr_ratio=0.1)
    assert s.lr(0.0) == 0.0
    assert s.lr(0.05) == pytest.approx(0.5e-3)  # halfway through warmup
    assert s.lr(0.1) == pytest.approx(1e-3)  # end of warmup = peak
    assert s.lr(0.55) == pytest.approx((1e-3 + 1e-4) / 2)  # middle of the cosine = mean of peak and floor
    assert s.lr(1.0) == pytest.approx(1e-4)  # floor at the end
    assert s.lr(2.0) == pytest.approx(1e-4)  # clamped past the end
    # a quarter into the cosine: floor + (peak - floor) * (1 + cos(pi/4)) / 2
    assert s.lr(0.325) == pytest.approx(1e-4 + 9e-4 * (1 + math.cos(math.pi / 4)) / 2)


def test_cosine_is_monotone_after_warmup():
    s = Schedule("cosine", peak_lr=1.0, warmup_frac=0.05, min_lr_ratio=0.0)
    values = [s.lr(i / 100) for i in range(5, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.0, abs=1e-12)


def test_constant_and_wsd():
    c = Schedule("constant", peak_lr=2.0, warmup_frac=0.2)
    assert [c.lr(t) for t in (0.1, 0.2, 0.9, 1.0)] == pytest.approx([1.0, 2.0, 2.0, 2.0])
    w = Schedule("wsd", peak_lr=2.0, warmup_frac=0.1, min_lr_ratio=0.0, decay_frac=0.2)
    assert w.lr(0.5) == pytest.approx(2.0)
    assert w.lr(0.8) == pytest.approx(2.0)  # decay starts at 1 - decay_frac
    assert w.lr(0.9) == pytest.approx(1.0)  # linear: halfway through the decay
    assert w.lr(1.0) == pytest.approx(0.0)


def test_budget_fraction_steps_and_time():
    assert budget_fraction(step=0, total_steps=10, elapsed_s=0.0, train_seconds=0) == pytest.approx(0.1)
    assert budget_fraction(step=9, total_steps=10, elapsed_s=0.0, train_seconds=0) == pytest.approx(1.0)
    assert budget_fraction(step=3, total_steps=0, elapsed_s=30.0, train_seconds=120) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(kind="linear", peak_lr=1.0), "--schedule"),
        (dict(kind="cosine", peak_lr=0.0), "--lr"),
        (dict(kind="cosine", peak_lr=1.0, warmup_frac=1.0), "--warmup_frac"),
        (dict(kind="cosine", peak_lr=1.0, min_lr_ratio=1.5), "--min_lr_ratio"),
        (dict(kind="wsd", peak_lr=1.0, warmup_frac=0.5, decay_frac=0.6), "--decay_frac"),
    ],
)
def test_bad_values_name_the_flag(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        Schedule(**kwargs)
