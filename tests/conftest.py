"""Shared fixtures: seeds, a tiny model config, and edge-case strings every text component must survive."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

EDGE_STRINGS = [
    "",
    "a",
    " ",
    "hello world",
    "Hello, World! How's it going? I'm fine, you're great, we'll see, they've gone, it'd be.",
    "e\u0301 combining acute; n\u0303; Zalgo: Z\u0351\u034b\u0352a\u0350\u0353",
    "emoji: 😀👍🏽 👨‍👩‍👧‍👦 🇫🇷",
    "CJK: 你好，世界。日本語のテキスト。한국어 텍스트",
    "RTL: مرحبا بالعالم — שלום עולם",
    "control \x00\x01\x07\x1b[31m bell\x7f",
    "windows\r\nline\r\nendings\r\n",
    "tabs\tand\t\tspaces     and\n\n\nnewlines   \n",
    "numbers 1234567890 3.14159 1,000,000 2026-11-25 0x1F",
    "a" * 1000,
    " " * 257 + "x",
    "1" * 300,
    "def f(x):\n    return x**2  # code\n",
    "<|endoftext|> looks special but is text",
]


@pytest.fixture
def edge_strings() -> list[str]:
    return list(EDGE_STRINGS)


@pytest.fixture
def seed() -> int:
    return 1234


TINY = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=101, max_seq_len=64)


@pytest.fixture
def tiny_model_kwargs() -> dict:
    """2 layers, width 32, 4 heads / 2 KV heads, vocab ~100: the shape every unit test uses."""
    return dict(TINY)


def build_tiny_model(seed: int = 0, sharpen: bool = False, **overrides: object):
    """A seeded `Transformer` of the tiny shape (fields overridable), in eval mode. `sharpen` scales the LM head
    by 20: logits sharper than the 0.02 init, so greedy paths differ between prompts."""
    import torch

    from lmstack.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**{**TINY, **overrides})).eval()
    if sharpen:
        with torch.no_grad():
            model.lm_head.weight.mul_(20)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    """The shared tiny-model factory: `tiny_model(seed=0, sharpen=False, **ModelConfig overrides)`."""
    return build_tiny_model
