"""Pretraining: AdamW + schedules, exact-resume checkpoints, bits-per-byte evaluation, DDP/FSDP, scaling laws.

Importing this package sets `OMP_WAIT_POLICY=PASSIVE` unless the environment already chose a policy. OpenMP reads
it once, when torch loads its thread pool, so it only has an effect when `lmstack.train` is imported before torch
(as `lmstack pretrain` / `lmstack speedrun` / `python -m lmstack.train.pretrain` do). With the default (active)
policy, idle OpenMP threads spin, and on a small shared machine the spinning threads starve each other and
training steps stall for seconds (docs/log.md); passive waiting keeps them steady.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
