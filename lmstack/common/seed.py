"""Seeding and device choice. Randomness is explicit: functions take a seed or a `torch.Generator`."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> "torch.Generator":  # noqa: F821
    """Seed Python, NumPy and torch's global RNGs; return a fresh `torch.Generator` seeded with `seed`."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def pick_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' if available, else 'mps', else 'cpu'; anything else is validated and returned."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device={name}: CUDA is not available on this machine; use --device=cpu")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise ValueError(f"--device={name}: expected auto, cpu, cuda[:N] or mps")
    return name


def set_cpu_threads(n: int | None = None) -> None:
    """Steady CPU training: passive OpenMP waiting and a fixed thread count (see docs/log.md)."""
    import torch

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(n or min(os.cpu_count() or 1, int(os.environ.get("OMP_NUM_THREADS", "0")) or 64))
