"""A tiny base model directory with a ChatML tokenizer (or a plain one), and tiny SFT data, for recipe tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from lmstack.model import ModelConfig, Transformer
from lmstack.tokenizer import Tokenizer


def arithmetic(n: int, seed: int) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        out.append([{"role": "user", "content": f"{a} + {b} ="}, {"role": "assistant", "content": str(a + b)}])
    return out


def tiny_base(path: Path, chatml: bool = True, seed: int = 0) -> Path:
    texts = [f"user\n{m[0]['content']} assistant\n{m[1]['content']}" for m in arithmetic(300, 1)]
    texts += ["User: Assistant: the king and queen of france speak to a lord in the castle"] * 5
    special = ["<|endoftext|>"] + (["<|im_start|>", "<|im_end|>"] if chatml else [])
    tok = Tokenizer.train(texts, 300, special_tokens=special, show_progress=False)
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=tok.vocab_size, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, max_seq_len=64)
    model = Transformer(cfg)
    # a few pretraining steps on plain text, so the base is a language model rather than noise
    stream = [i for t in texts for i in tok.encode(t + "\n")]
    ids = torch.tensor(stream[: len(stream) // 64 * 64]).view(-1, 64)  # (B, 64) windows
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(path, tokenizer=tok)
    return path


def write_jsonl(path: Path, conversations: list) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in conversations))
    return path
