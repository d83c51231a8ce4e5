"""Stop strings over streamed text: detect them across token boundaries and never emit text that might be one.

Tokens and stop strings do not line up: "</answer>" may arrive as "</", "answer", ">" and a token may carry
text before and after the stop string. So each row keeps its decoded text, searches only the window a new
token can complete, and holds back the longest tail that is still a prefix of some stop string (streaming must
not show "</ans" and then take it back). Text comes from the tokenizer's `StreamDecoder` (incremental UTF-8
over each token's bytes), so a multi-byte character split across tokens is emitted once, whole.

Cutting: the text ends right before the earliest stop string; the token ids keep only the tokens that end at
or before that point (a token straddling the cut is dropped from the ids; its leading text stays in the text).
"""

from __future__ import annotations

from typing import Any

from lmstack.tokenizer.stream import StreamDecoder


def token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The raw bytes of one token (`decode_bytes` when the tokenizer has it, else UTF-8 of `decode`)."""
    if hasattr(tokenizer, "decode_bytes"):
        return tokenizer.decode_bytes([token_id])
    return tokenizer.decode([token_id]).encode("utf-8")


class _BytesView:
    """Adapts any tokenizer to the `decode_bytes` interface StreamDecoder reads."""

    def __init__(self, tokenizer: Any) -> None:
        self.tok = tokenizer

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(token_bytes(self.tok, i) for i in ids)


class TextTracker:
    """Incremental text of one output row, with stop-string detection and hold-back.

    >>> tr = TextTracker(tok, stop=["\\n\\n"])
    >>> chunk, stopped = tr.feed(token_id)   # text safe to show now; True once a stop string completed
    """

    def __init__(self, tokenizer: Any, stop: list[str] | None = None) -> None:
        self.tok = tokenizer
        self.stop = list(stop or [])
        self.longest = max((len(s) for s in self.stop), default=0)
        self.decoder = StreamDecoder(_BytesView(tokenizer))
        self.text = ""
        self.token_ends: list[int] = []  # len(text) after each token
        self.emitted = 0  # chars already handed out
        self.cut: int | None = None  # where the text ends once a stop string was found

    def feed(self, token_id: int) -> tuple[str, bool]:
        if self.cut is not None:
            return "", True
        before = len(self.text)
        self.text += self.decoder.feed(token_id)
        self.token_ends.append(len(self.text))
        if self.stop:
            hit = self._find(max(0, before - self.longest + 1))
            if hit is not None:
                self.cut = hit
                out = self.text[self.emitted : hit]
                self.emitted = hit
                return out, True
        end = len(self.text) - self._holdback()
        out = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        return out, False

    def flush(self) -> str:
        """Text still held back (a partial stop string or an unfinished character) once generation ends."""
        if self.cut is not None:
            return ""
        self.text += self.decoder.flush()
        out = self.text[self.emitted :]
        self.emitted = len(self.text)
        return out

    def _find(self, start: int) -> int | None:
        hits = [i for s in self.stop if (i := self.text.find(s, start)) >= 0]
        return min(hits) if hits else None

    def _holdback(self) -> int:
        """Length of the longest text tail that is a proper prefix of a stop string."""
        for n in range(min(self.longest - 1, len(self.text)), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stop):
                return n
        return 0

    def kept_tokens(self) -> int:
        """How many of the fed tokens end at or before the cut (all of them if no stop string hit)."""
        if self.cut is None:
            return len(self.token_ends)
        return sum(1 for e in self.token_ends if e <= self.cut)

    @property
    def final_text(self) -> str:
        return self.text if self.cut is None else self.text[: self.cut]
