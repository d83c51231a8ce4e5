"""A tiny shard directory (BPE tokenizer + train/val shards of synthetic text) and a tiny pretraining config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

WORDS = ("the king and queen of france speak to a lord in the castle while the fool sings "
         "of love and war and night ; o my good lord , what news ? none but this .").split()  # fmt: skip


def synthetic_docs(n: int, seed: int) -> list[str]:
    """`n` documents of pseudo-sentences (deterministic), ~400 bytes each."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(rng.randint(4, 10))]
        docs.append("\n".join(line.capitalize() for line in lines) + "\n")
    return docs


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shards of 120 train / 12 val synthetic documents under a 300-token BPE vocabulary; the tokenizer beside."""
    from lmstack.data.shards import write_shards
    from lmstack.tokenizer import Tokenizer

    out = tmp_path_factory.mktemp("data")
    train, val = synthetic_docs(120, seed=0), synthetic_docs(12, seed=1)
    tok = Tokenizer.train(train, 300, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save(out / "tokenizer")
    write_shards(train, val, tok, out, workers=1)
    return out


def tiny_pretrain(data_dir: Path, out_dir: Path, **overrides: object):
    """A PretrainConfig small enough for a step in a few milliseconds (2 layers, width 32, 4 / 2 heads)."""
    from dataclasses import fields

    from lmstack.model import ModelConfig
    from lmstack.train.pretrain import PretrainConfig

    shape = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, tie_embeddings=True)
    kw = dict(data_dir=str(data_dir), out_dir=str(out_dir), seq_len=32, batch_size=8, max_steps=8, lr=3e-3,
              warmup_frac=0.25, eval_every=4, eval_tokens=512, log_every=1, sample_tokens=8, threads=1,
              device="cpu", seed=7)  # fmt: skip
    model_fields = {f.name for f in fields(ModelConfig)}
    for key, value in overrides.items():
        (shape if key in model_fields else kw)[key] = value  # ModelConfig fields go to the model section
    return PretrainConfig(model=ModelConfig(**shape), **kw)
