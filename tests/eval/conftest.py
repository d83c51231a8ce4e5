"""Shared eval fixtures: a tiny tokenizer, a tiny random Llama saved as an HF directory, a private result cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Question: what is two plus two?\nAnswer: four.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
    "Alex found a ring on the beach and tried to find who it belonged to. What will Alex want to do next?",
    "Calculate ( 56 + -33 ) - 84. The secret number is 4827. The code for Alice is 1234.",
] * 10


@pytest.fixture(scope="session")
def tiny_tok():
    from lmstack.tokenizer import Tokenizer

    return Tokenizer.train(TEXTS, 400, special_tokens=["<|endoftext|>"], show_progress=False)


def save_tiny_model(path: Path, tok, seed: int = 0, max_seq_len: int = 512, sharpen: float = 1.0) -> Path:
    """A 2-layer Llama-family model with random weights and `tok` saved beside it (an HF directory)."""
    from lmstack.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    cfg = ModelConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                      max_seq_len=max_seq_len, eos_token_id=tok.eos_id)  # fmt: skip
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.norm.weight.mul_(sharpen)  # sharper logits: argmax ties cannot flip between implementations
    model.save_pretrained(path, tokenizer=tok)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tok) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tiny_tok)


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """Eval results and fingerprints go to a fresh directory (data archives stay in the shared $LMSTACK_HOME)."""
    from lmstack.eval import cache

    root = tmp_path / "eval-cache"
    monkeypatch.setattr(cache, "cache_root", lambda: root)
    return root
