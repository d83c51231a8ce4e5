"""encode_batch equals encoding one text at a time, serially and over forked worker processes."""

from __future__ import annotations

import pytest

import lmstack.tokenizer.batch as batch
from tests.tokenizer.texts import VARIED


def test_serial_batch_equals_single(trained):
    assert trained.encode_batch(VARIED, disallowed_special=()) == [
        trained.encode(t, disallowed_special=()) for t in VARIED
    ]


def test_parallel_batch_equals_single(trained, monkeypatch):
    monkeypatch.setattr(batch, "PARALLEL_MIN_CHARS", 0)  # force the process pool on a small batch
    texts = VARIED * 3
    got = trained.encode_batch(texts, num_workers=2, allowed_special="all")
    assert got == [trained.encode(t, allowed_special="all") for t in texts]


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
