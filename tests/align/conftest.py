"""Tiny policies for recipe tests: a 2-layer model with a ChatML BPE tokenizer (and one without ChatML), saved as
HF directories that every recipe loads by path, so tests exercise the same code path as `--model=smollm2-135m`."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch


def arithmetic_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        op = rng.choice("+-")
        answer = a + b if op == "+" else a - b
        lines.append(f"State the final answer to the following arithmetic problem: {a} {op} {b} = {answer}")
    return lines


def save_tiny_policy(out: Path, chatml: bool, seed: int = 0, **model_kwargs: object) -> Path:
    from lmstack.model import ModelConfig, Transformer
    from lmstack.tokenizer import Tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] if chatml else ["<|endoftext|>"]
    tok = Tokenizer.train(arithmetic_texts(400, seed) + ["user\nassistant\nUser: Assistant:"], 320,
                          special_tokens=specials, show_progress=False)  # fmt: skip
    torch.manual_seed(seed)
    kw = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, max_seq_len=128)
    kw.update(model_kwargs)
    cfg = ModelConfig(vocab_size=tok.vocab_size, eos_token_id=tok.eos_id, **kw)
    Transformer(cfg).save_pretrained(out, tokenizer=tok)
    return out


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama-family model (width 32, 4 / 2 heads) with a ChatML tokenizer, as an HF directory."""
    return save_tiny_policy(tmp_path_factory.mktemp("policy") / "model", chatml=True)


@pytest.fixture(scope="session")
def tiny_plain_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same without ChatML tokens (a base model: prompts are a plain User/Assistant transcript)."""
    return save_tiny_policy(tmp_path_factory.mktemp("plain") / "model", chatml=False)


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Token shards of synthetic arithmetic text (train / val) and their BPE tokenizer, for a pretraining stage."""
    from lmstack.data.shards import write_shards
    from lmstack.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("shards")
    train, val = arithmetic_texts(300, seed=1), arithmetic_texts(30, seed=2)
    tok = Tokenizer.train(train, 300, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save(out / "tokenizer")
    write_shards(train, val, tok, out, workers=1)
    return out
