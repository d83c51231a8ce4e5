"""Test doubles for generation: a scripted model (fixed next token per position) and a byte-table tokenizer."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class MockConfig:
    vocab_size: int
    max_seq_len: int = 256
    n_layers: int = 1
    n_kv_heads: int = 1
    head_dim: int = 1
    eos_token_id: int | None = None


class ScriptedModel(nn.Module):
    """Next-token logits depend only on the input token's position: argmax is `script[(p + 1) % len(script)]`.

    It writes one scalar K/V per token into the cache like a real layer, so cache bookkeeping is exercised.
    """

    def __init__(self, script: list[int], vocab_size: int, eos: int | None = None, max_seq_len: int = 256) -> None:
        super().__init__()
        self.config = MockConfig(vocab_size, max_seq_len, eos_token_id=eos)
        self.script = torch.tensor(script)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None, cache=None, targets=None):
        B, T = input_ids.shape
        self.calls += 1
        if positions is None:
            positions = torch.arange(T).expand(B, T)
        if cache is not None:
            kv = input_ids[:, None, :, None].float()  # (B, 1, T, 1)
            cache.update(0, kv, kv, positions)
        nxt = self.script[(positions.clamp(min=0) + 1) % len(self.script)]  # (B, T)
        logits = torch.full((B, T, self.config.vocab_size), -5.0)
        logits.scatter_(2, nxt[..., None], 5.0)
        return type("Out", (), {"logits": logits})()


class ByteTokenizer:
    """Token i is a fixed byte string; decode joins bytes (UTF-8, errors='replace'). encode is greedy longest-match."""

    def __init__(self, pieces: list[bytes], eos_id: int | None = None) -> None:
        self.pieces = pieces
        self.eos_id = eos_id
        self.special_tokens = {} if eos_id is None else {"<eos>": eos_id}

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(b"" if i == self.eos_id else self.pieces[i] for i in ids)

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def encode(self, text: str) -> list[int]:
        data, out, i = text.encode("utf-8"), [], 0
        while i < len(data):
            best = max(
                (j for j, p in enumerate(self.pieces) if p and j != self.eos_id and data.startswith(p, i)),
                key=lambda j: len(self.pieces[j]),
            )
            out.append(best)
            i += len(self.pieces[best])
        return out


def ascii_tokenizer(extra: list[bytes] | None = None) -> ByteTokenizer:
    """Every printable ASCII char and \\n as one token (ids 0..95), then `extra` pieces, then <eos>."""
    pieces = [bytes([c]) for c in range(32, 127)] + [b"\n"] + list(extra or [])
    return ByteTokenizer(pieces + [b""], eos_id=len(pieces))
