"""Tiny models for quantization tests: a random Llama-shaped model (with activation outliers, as real LLMs have)
saved as an HF directory with a 300-token BPE tokenizer, and a calibration text file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

WORDS = ("the king and queen of france speak to a lord in the castle while the fool sings "
         "of love and war and night ; o my good lord , what news ? none but this .").split()  # fmt: skip


def synthetic_text(n_docs: int, seed: int) -> str:
    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n_docs * 6)]
    return "\n".join(line.capitalize() for line in lines) + "\n"


def tiny_llama(seed: int = 0, vocab_size: int = 300, **overrides: object):
    """2 blocks, width 64, 4 query / 2 KV heads, FFN 128, tied embeddings; a few input channels of every block
    get 10x larger norm gains, so some activations are outliers (what AWQ exploits)."""
    from lmstack.model import ModelConfig, Transformer

    kw = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab_size=vocab_size, max_seq_len=128,
              tie_embeddings=True)  # fmt: skip
    kw.update(overrides)
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(**kw)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn_norm.weight[:4] *= 10
            block.ffn_norm.weight[-4:] *= 10
    return model


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from lmstack.tokenizer import Tokenizer

    return Tokenizer.train([synthetic_text(40, seed=0)], 300, special_tokens=["<|endoftext|>"], show_progress=False)


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.txt"
    path.write_text(synthetic_text(60, seed=1))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "fp"
    tiny_llama().save_pretrained(out, tokenizer=tiny_tokenizer)
    return out
