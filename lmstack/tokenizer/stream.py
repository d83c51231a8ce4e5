"""Incremental decoding: feed token ids one by one, get text that never ends in half a UTF-8 character.

A byte-level token can hold part of a character (an emoji is 4 bytes; GPT-2 often splits it over 2-3 tokens),
so decoding each token on its own would print U+FFFD garbage mid-stream. `StreamDecoder` keeps the bytes of an
unfinished character until the rest arrives, using Python's incremental UTF-8 decoder with errors="replace":
bytes that can never become a valid character are emitted as U+FFFD at once. The concatenation of every chunk
plus `flush()` equals `tok.decode(all_ids)`. Used by `generate` (streaming chat) and later by the server.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from typing import Protocol


class _HasBytes(Protocol):
    def decode_bytes(self, ids: list[int]) -> bytes: ...


class StreamDecoder:
    """`text = dec.feed(new_ids)` as tokens arrive; `dec.flush()` at the end returns what is left.

    >>> from lmstack.tokenizer import Tokenizer  # doctest: +SKIP
    >>> dec = StreamDecoder(tok); dec.feed([id_of_first_half_of_emoji])  # -> ""   (waits)  # doctest: +SKIP
    """

    def __init__(self, tok: _HasBytes) -> None:
        self.tok = tok
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, ids: int | Iterable[int]) -> str:
        """Add one id or several; return the text completed by them ('' while a character is unfinished)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        return self._utf8.decode(self.tok.decode_bytes(ids), final=False)

    def flush(self) -> str:
        """End of stream: an unfinished character left in the buffer becomes U+FFFD. The decoder is reset."""
        out = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return out

    def reset(self) -> None:
        """Drop buffered bytes (e.g. a new request reusing the decoder)."""
        self._utf8.reset()

    @property
    def pending(self) -> int:
        """Bytes held back because they start a character that is not complete yet."""
        return len(self._utf8.getstate()[0])
