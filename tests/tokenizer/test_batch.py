"""encode_batch equals encoding one text at a time, serially and over forked worker processes."""

from __future__ import annotations

import gc

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
    # whichever process takes the bad text (the caller or a worker, as the race goes), the caller raises
    for bad_at in range(4):
        texts = ["fine " * (400 - 50 * k) for k in range(4)]
        texts[bad_at] = "not <|endoftext|> fine " * (100 - 10 * bad_at)
        with pytest.raises(ValueError, match="special token"):
            trained.encode_batch(texts, num_workers=2)
        assert gc.isenabled()  # switched off while the workers ran, back on after the error


def test_uneven_lengths_and_surrogates_keep_order(trained, monkeypatch):
    """Texts of very different lengths (taken longest first) come back in input order; a lone surrogate is
    replaced the same way in a worker as in the caller."""
    monkeypatch.setattr(batch, "PARALLEL_MIN_CHARS", 0)
    texts = [t * n for n, t in zip((1, 40, 3, 200, 7, 1, 90), VARIED * 7)] + ["bad \ud800 surrogate " * 30, ""]
    got = trained.encode_batch(texts, num_workers=3, disallowed_special=())
    assert got == [trained.encode(t, disallowed_special=()) for t in texts]


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
