"""Learning-rate schedules over the fraction of the training budget done: warmup + cosine, constant, WSD.

All three start with a linear warmup from 0 to the peak learning rate. Then:

- `cosine` (Loshchilov & Hutter 2017, "SGDR"; the GPT-3 / Chinchilla recipe): half a cosine from the peak down to
  a floor `min_lr_ratio * peak`, reached exactly at the end of the budget.
- `constant`: stay at the peak.
- `wsd` (warmup-stable-decay; Hu et al. 2024, "MiniCPM"): stay at the peak, then decay linearly to the floor over
  the last `decay_frac` of the budget. The stable phase can be extended without knowing the end in advance.

The schedule is a function of `t` in [0, 1], the fraction of the budget done *after* the step it sets the rate
for: `(step + 1) / total_steps` for a step budget, `elapsed / train_seconds` for a wall-clock budget. So the same
schedule drives a "train for N steps" run and a "train for X minutes" speedrun.

Why warmup: at initialisation Adam's second-moment estimates are noisy and the gradients are large, so a full
learning rate on step 1 can push the weights somewhere the loss never recovers from (spikes, divergence);
ramping up over the first few percent keeps the early updates small (Goyal et al. 2017; Liu et al. 2020).
Leaves out: cyclic/restart schedules, inverse-sqrt, per-group schedules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ScheduleKind = Literal["cosine", "constant", "wsd"]


@dataclass(frozen=True)
class Schedule:
    kind: ScheduleKind  # cosine | constant | wsd
    peak_lr: float  # learning rate at the end of warmup
    warmup_frac: float = 0.02  # fraction of the budget spent ramping linearly from 0 to peak_lr
    min_lr_ratio: float = 0.1  # floor = min_lr_ratio * peak_lr, reached at the end of the budget (cosine, wsd)
    decay_frac: float = 0.2  # wsd only: the final fraction of the budget spent decaying to the floor

    def __post_init__(self) -> None:
        if self.kind not in ("cosine", "constant", "wsd"):
            raise ValueError(f"--schedule: got {self.kind!r}, expected cosine, constant or wsd")
        if not self.peak_lr > 0:
            raise ValueError(f"--lr: got {self.peak_lr}, expected > 0")
        if not 0 <= self.warmup_frac < 1:
            raise ValueError(f"--warmup_frac: got {self.warmup_frac}, expected 0 <= warmup_frac < 1")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"--min_lr_ratio: got {self.min_lr_ratio}, expected 0 <= min_lr_ratio <= 1")
        if not 0 < self.decay_frac <= 1 - self.warmup_frac:
            raise ValueError(f"--decay_frac: got {self.decay_frac}, expected 0 < decay_frac <= 1 - warmup_frac")

    def lr(self, t: float) -> float:
        """Learning rate after fraction `t` of the budget (clamped to [0, 1])."""
        t = min(max(t, 0.0), 1.0)
        peak, floor = self.peak_lr, self.min_lr_ratio * self.peak_lr
        if t < self.warmup_frac:
            return peak * t / self.warmup_frac  # linear ramp 0 -> peak
        if self.kind == "constant":
            return peak
        if self.kind == "cosine":
            q = (t - self.warmup_frac) / (1 - self.warmup_frac)  # 0 at end of warmup, 1 at end of budget
            return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * q))
        decay_start = 1 - self.decay_frac  # wsd: stable at peak, then linear to the floor
        if t <= decay_start:
            return peak
        return peak + (floor - peak) * (t - decay_start) / self.decay_frac


def budget_fraction(step: int, total_steps: int, elapsed_s: float, train_seconds: float) -> float:
    """`t` for the step about to run: from the wall clock when a time budget is set, else from the step count."""
    if train_seconds > 0:
        return elapsed_s / train_seconds
    return (step + 1) / total_steps
