"""Compression statistics of a tokenizer on a text set: what `train-tokenizer` prints and the docs quote.

- bytes/token: UTF-8 bytes divided by tokens (higher = each token carries more text = shorter sequences);
- tokens/word: tokens per whitespace-separated word (1.0 would be one token per word);
- vocab used: the fraction of ordinary token ids that occur at least once (low on a small or narrow text,
  or when the vocabulary was trained on different text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from lmstack.tokenizer.tokenizer import Tokenizer


@dataclass
class Compression:
    bytes: int  # UTF-8 bytes of the text set
    words: int  # whitespace-separated words
    tokens: int  # tokens from encode_ordinary
    bytes_per_token: float  # bytes / tokens
    tokens_per_word: float  # tokens / words
    vocab_used: float  # distinct ordinary ids seen / ordinary vocabulary size (all ids but special tokens)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compression(tok: Tokenizer, texts: Sequence[str]) -> Compression:
    n_bytes = sum(len(t.encode("utf-8", "surrogatepass")) for t in texts)
    n_words = sum(len(t.split()) for t in texts)
    seen: set[int] = set()
    n_tokens = 0
    if hasattr(tok, "encode_ordinary"):  # BPE, Unigram: special-token text is ordinary text
        batches = tok.encode_batch(list(texts), allowed_special=(), disallowed_special=())
    else:  # WordPiece (BERT's rule: special-token text is its id; no flags)
        batches = tok.encode_batch(list(texts))
    for ids in batches:
        n_tokens += len(ids)
        seen.update(ids)
    return Compression(
        bytes=n_bytes,
        words=n_words,
        tokens=n_tokens,
        bytes_per_token=n_bytes / max(n_tokens, 1),
        tokens_per_word=n_tokens / max(n_words, 1),
        vocab_used=len(seen) / (tok.vocab_size - len(tok.special_tokens)),
    )


def pieces_line(tok: Tokenizer, text: str) -> str:
    """`text` cut into tokens, shown as 'piece|piece|piece' (bytes of a partial character shown as \\xNN)."""
    if not hasattr(tok, "encode_ordinary"):  # WordPiece: its string pieces ("##" continuations)
        return "|".join(tok.tokenize(text))
    return "|".join(tok.id_to_bytes(i).decode("utf-8", "backslashreplace") for i in tok.encode_ordinary(text))
