"""Validation scoring: every target once in non-overlapping windows; loss, perplexity and bits-per-byte formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmstack.train.evaluate import evaluate

from .standin import Bigram


def test_uniform_model_gives_log_vocab():
    class Uniform(torch.nn.Module):
        def forward(self, x):
            return type("O", (), {"logits": torch.zeros(*x.shape, 7)})()

    tokens = np.random.default_rng(0).integers(0, 7, size=101).astype(np.uint16)
    r = evaluate(Uniform(), tokens, n_bytes=250, seq_len=16, batch_size=4)
    assert r["val_loss"] == pytest.approx(math.log(7))
    assert r["val_ppl"] == pytest.approx(7.0)
    # 100 targets * ln 7 nats over 250 bytes, in bits
    assert r["val_bpb"] == pytest.approx(100 * math.log(7) / (math.log(2) * 250))
    assert r["val_tokens"] == 100 and r["val_bytes"] == 250


def test_context_free_model_matches_whole_stream_scoring():
    # for a bigram model the window cuts do not matter, so the sum must equal scoring the stream in one piece
    torch.manual_seed(0)
    model = Bigram(13)
    tokens = np.random.default_rng(1).integers(0, 13, size=257)
    r = evaluate(model, tokens, n_bytes=1000, seq_len=10, batch_size=3)
    t = torch.from_numpy(tokens)
    with torch.no_grad():
        ref = F.cross_entropy(model(t[None, :-1]).logits[0], t[1:], reduction="sum").item()
    assert r["val_loss"] == pytest.approx(ref / 256, rel=1e-6)
    assert r["val_bpb"] == pytest.approx(ref / (math.log(2) * 1000), rel=1e-6)


def test_prefix_estimate_scales_bytes():
    model = Bigram(13)
    tokens = np.random.default_rng(2).integers(0, 13, size=201)
    r = evaluate(model, tokens, n_bytes=400, seq_len=10, max_tokens=50)
    assert r["val_tokens"] == 50 and r["val_bytes"] == 100


def test_too_short_split_is_an_error():
    with pytest.raises(ValueError, match="validation split"):
        evaluate(Bigram(3), np.array([1]), n_bytes=1, seq_len=4)
