"""Batching: random windows are deterministic, resumable exactly, and rank-consistent; eval windows score
every target token exactly once (the last partial window included)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmstack.data.batches import RandomBatches, eval_windows

TOKENS = (np.arange(10_000) * 7919 % 4093).astype(np.uint16)  # distinct-looking ids, uint16 like a shard


def take(batches: RandomBatches, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(batches) for _ in range(n)]


def test_shapes_dtype_and_next_token_targets():
    x, y = next(iter(RandomBatches(TOKENS, batch_size=4, seq_len=16, seed=0)))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    for row_x, row_y in zip(x.numpy(), y.numpy()):  # each row is a real window of the array
        start = int(np.flatnonzero((TOKENS[:-16] == row_x[0]))[0])
        assert np.array_equal(TOKENS[start : start + 17], np.concatenate([row_x, row_y[-1:]]))


def test_same_seed_same_batches_other_seed_different():
    a = take(RandomBatches(TOKENS, 4, 16, seed=1), 5)
    b = take(RandomBatches(TOKENS, 4, 16, seed=1), 5)
    c = take(RandomBatches(TOKENS, 4, 16, seed=2), 5)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


def test_exact_resume_from_state_dict():
    straight = take(RandomBatches(TOKENS, 4, 16, seed=3), 10)
    first = RandomBatches(TOKENS, 4, 16, seed=3)
    take(first, 6)
    state = first.state_dict()
    assert state == {"seed": 3, "step": 6, "batch_size": 4, "seq_len": 16}
    resumed = RandomBatches(TOKENS, 4, 16, seed=3)
    resumed.load_state_dict(state)
    for (x, y), (sx, sy) in zip(take(resumed, 4), straight[6:]):
        assert torch.equal(x, sx) and torch.equal(y, sy)


def test_mismatched_state_is_rejected():
    batches = RandomBatches(TOKENS, 4, 16, seed=3)
    with pytest.raises(ValueError, match="checkpoint has seq_len=32, this run has seq_len=16"):
        batches.load_state_dict({"seed": 3, "step": 2, "batch_size": 4, "seq_len": 32})


def test_ranks_split_one_global_batch():
    whole = RandomBatches(TOKENS, 8, 16, seed=4).batch(5)[0]
    parts = [RandomBatches(TOKENS, 4, 16, seed=4, rank=r, world_size=2).batch(5)[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), whole)


def test_windows_stay_in_bounds_on_a_tiny_array():
    tokens = np.arange(17, dtype=np.uint16)  # exactly one window of seq_len + 1 = 17
    for x, y in take(RandomBatches(tokens, 3, 16, seed=0), 3):
        assert x[:, 0].tolist() == [0, 0, 0] and y[:, -1].tolist() == [16, 16, 16]
    with pytest.raises(ValueError, match="only 16 tokens"):
        RandomBatches(tokens[:16], 1, 16, seed=0)


@pytest.mark.parametrize("n, seq_len, batch_size", [(1000, 64, 4), (1001, 100, 3), (65, 64, 2), (10, 64, 8)])
def test_eval_windows_cover_every_target_once(n, seq_len, batch_size):
    tokens = np.arange(n, dtype=np.uint32)
    batches = list(eval_windows(tokens, seq_len, batch_size))
    targets = np.concatenate([b.y.flatten().numpy() for b in batches])
    assert np.array_equal(targets, tokens[1:])  # every token after the first, once, in order
    assert sum(b.n_targets for b in batches) == n - 1
    for b in batches:
        assert b.x.shape == b.y.shape and b.x.shape[0] <= batch_size and b.x.shape[1] <= seq_len
        assert torch.equal(b.x + 1, b.y)  # inputs are the targets' predecessors
    assert all(b.x.shape[1] == seq_len for b in batches[:-1])
    if (n - 1) % seq_len:
        assert batches[-1].x.shape == (1, (n - 1) % seq_len)  # the remainder, alone and unpadded


def test_eval_windows_on_too_short_arrays():
    assert list(eval_windows(np.arange(1), 8, 2)) == []
    assert list(eval_windows(np.arange(0), 8, 2)) == []
