"""encode_batch equals encoding one text at a time, serially and over forked worker processes."""

from __future__ import annotations

import pytest

import lmstack.tokenizer.batch as batch
from tests.tokenizer.texts import VARIED


def test_serial_batch_equals_single(trained):
    assert trained.encode_batch(VARIED, disallowed_special=()) == [
        trained.encode(t, disallowed_special=()) for t in VARIED
    ]


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_batch_equals_single(trained, monkeypatch, workers):
    monkeypatch.setattr(batch, "PARALLEL_MIN_CHARS", 0)  # force the forked workers on a small batch
    texts = VARIED * 3
    got = trained.encode_batch(texts, num_workers=workers, allowed_special="all")
    assert got == [trained.encode(t, allowed_special="all") for t in texts]


def test_a_worker_error_is_raised_in_the_caller(trained, monkeypatch):
    monkeypatch.setattr(batch, "PARALLEL_MIN_CHARS", 0)
    texts = ["fine " * 20] * 4 + ["not <|endoftext|> fine", "ok"]  # the bad text is in the forked worker's share
    assert batch.shares(texts, 2) == [(0, 2), (2, 6)]
    with pytest.raises(ValueError, match="special token"):
        trained.encode_batch(texts, num_workers=2)


def test_shares_are_contiguous_balanced_and_never_empty():
    texts = ["a" * n for n in (5, 1, 1, 1, 1, 1, 10, 2, 2, 2)]
    for n in (1, 2, 3, 4):
        parts = batch.shares(texts, n)
        assert len(parts) == n and parts[0][0] == 0 and parts[-1][1] == len(texts)
        assert all(a < b for a, b in parts) and all(p[1] == q[0] for p, q in zip(parts, parts[1:]))
    assert batch.shares(texts, 2) == [(0, 6), (6, 10)]  # 10 | 16 characters: the cut nearest to 13


def test_batch_raises_on_disallowed_special(trained):
    with pytest.raises(ValueError, match="special token"):
        trained.encode_batch(["fine", "not <|endoftext|> fine"])


def test_tokenizer_pickles_for_spawned_workers(trained):
    import pickle

    clone = pickle.loads(pickle.dumps(trained))
    assert clone.mergeable_ranks == trained.mergeable_ranks and clone.special_tokens == trained.special_tokens
    assert [clone.encode(t, disallowed_special=()) for t in VARIED] == [
        trained.encode(t, disallowed_special=()) for t in VARIED
    ]
