"""Batches from a flat token array: random windows for pretraining, sequential windows for evaluation.

Pretraining (`RandomBatches`): each row is a random window of T + 1 tokens, x = window[:-1], y = window[1:]
(next-token targets), as nanoGPT's `get_batch` does. The randomness is counter-based: batch number `step`
draws its start offsets from a fresh generator seeded with (seed, step) (numpy's SeedSequence mixes the pair
into an independent stream), so the whole data position is the pair (seed, step). `state_dict()` returns it,
and a run resumed from a checkpoint sees exactly the batches the uninterrupted run would have seen, without
replaying the generator. Under data parallelism each of `world_size` ranks takes its own rows of one global
draw of `world_size * B` offsets, so the global batch is the same at any world size.

Evaluation (`eval_windows`): non-overlapping windows in order, every target token scored exactly once: window
i reads tokens [iT, iT + T) and predicts [iT + 1, iT + T + 1); full windows come `batch_size` at a time and
the remainder (shorter than T) comes last on its own, unpadded. Each batch also says how many targets it
scores, so callers can sum nats and divide without guessing about padding.

Leaves out: document-aligned windows / attention masks across documents (windows run across EOTs, as in
GPT-2 pretraining), sampling weighted across several corpora.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch


def _rows(tokens: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
    """(B, length) int64 tensor of tokens[s : s + length] for each start s."""
    idx = starts[:, None] + np.arange(length)[None, :]  # (B, length)
    return torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))


class RandomBatches:
    """Endless (x, y) batches of shape (B, T) from random windows; the position is (seed, step)."""

    def __init__(
        self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size={batch_size}, seq_len={seq_len}: both must be >= 1")
        if len(tokens) < seq_len + 1:
            raise ValueError(f"seq_len={seq_len}: the token array has only {len(tokens)} tokens, need seq_len + 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not in [0, world_size={world_size})")
        self.tokens, self.batch_size, self.seq_len, self.seed = tokens, batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.step = 0  # batches drawn so far: the data position

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch number `step` (pure function of seed, step, rank): x, y int64 of shape (B, T)."""
        rng = np.random.default_rng([self.seed, step])
        n_starts = len(self.tokens) - self.seq_len  # last valid start leaves room for T + 1 tokens
        starts = rng.integers(0, n_starts, size=self.batch_size * self.world_size)  # (world * B,)
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]  # (B,)
        window = _rows(self.tokens, mine, self.seq_len + 1)  # (B, T + 1)
        return window[:, :-1], window[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.batch(self.step)
        self.step += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "step": self.step, "batch_size": self.batch_size, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at `state["step"]`; the seed and shapes must match the ones this sampler was built with."""
        for key in ("seed", "batch_size", "seq_len"):
            if state.get(key) != getattr(self, key):
                raise ValueError(
                    f"data state mismatch: checkpoint has {key}={state.get(key)!r}, this run has "
                    f"{key}={getattr(self, key)!r}; resume with the same --{key}"
                )
        self.step = int(state["step"])


class EvalBatch(NamedTuple):
    """x, y of shape (B, T) and the number of target tokens they score (B * T: no padding)."""

    x: torch.Tensor
    y: torch.Tensor
    n_targets: int


def eval_windows(tokens: np.ndarray, seq_len: int, batch_size: int) -> Iterator[EvalBatch]:
    """Non-overlapping windows covering targets 1..N-1 exactly once; the shorter remainder comes last alone.

    >>> [(b.x.tolist(), b.y.tolist(), b.n_targets) for b in eval_windows(np.arange(6), 2, 8)]
    [([[0, 1], [2, 3]], [[1, 2], [3, 4]], 4), ([[4]], [[5]], 1)]
    """
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len={seq_len}, batch_size={batch_size}: both must be >= 1")
    n_targets = max(len(tokens) - 1, 0)
    n_full = n_targets // seq_len
    for first in range(0, n_full, batch_size):
        rows = np.arange(first, min(first + batch_size, n_full)) * seq_len  # window starts
        window = _rows(tokens, rows, seq_len + 1)  # (B, T + 1)
        yield EvalBatch(window[:, :-1], window[:, 1:], window.shape[0] * seq_len)
    rest = n_targets - n_full * seq_len
    if rest > 0:
        window = _rows(tokens, np.array([n_full * seq_len]), rest + 1)  # (1, rest + 1)
        yield EvalBatch(window[:, :-1], window[:, 1:], rest)
