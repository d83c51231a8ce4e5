"""`Tokenizer`: byte-level BPE with regex pre-tokenization and special tokens, tiktoken-compatible.

encode: text -> split around allowed special tokens -> each ordinary segment cut into chunks by the split
stages (patterns.py) -> each chunk's UTF-8 bytes merged by BPE (bpe.py) -> ids. decode: ids -> bytes -> UTF-8
with U+FFFD for invalid sequences (never raises on bytes; an unknown id is a ValueError).

The model is `mergeable_ranks` (token bytes -> id = rank), `split_stages` and `special_tokens`, exactly
tiktoken's `Encoding(pat_str, mergeable_ranks, special_tokens)`. A tokenizer loaded from a Hugging Face
tokenizer.json that is not one of ours also carries its `merges` list and is ranked by merge (see bpe.py).

Speed: chunks repeat (" the", ",", "\\n"), so chunk -> ids is cached in a dict (cleared when it reaches
`CACHE_MAX` entries); a chunk that is itself a token (most English words in a 50k vocabulary) is one lookup.
Chunks of LONG_PIECE bytes or more use the O(n log n) loop. `fast=False` uses the reference merge loop and no
cache; tests tie the paths. The cache is a plain dict, safe to share between threads (the GIL serializes it).

Lone surrogates (possible in a Python str, not in UTF-8): replaced by U+FFFD before encoding, as tiktoken does,
so `decode(encode(s)) == s` holds for every string without lone surrogates.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, MutableSequence
from pathlib import Path

from lmstack.tokenizer.bpe import LONG_PIECE, merge_by_pair, merge_by_token, merge_long, merge_reference
from lmstack.tokenizer.patterns import NAMED, make_splitter, resolve_stages
from lmstack.tokenizer.special import SpecialSet, SpecialTokens

CACHE_MAX = 1 << 18  # chunk cache entries before it is cleared
EOS_NAMES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<|im_end|>")  # eos_id fallbacks, in order
BOS_NAMES = ("<|startoftext|>", "<s>", "<|begin_of_text|>")  # bos_id fallbacks, in order


def _documents(texts: Iterable[str]) -> Iterator[str]:
    """The training documents, each checked to be a str as it streams past."""
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}]: expected str, got {type(t).__name__}")
        yield t


def replace_surrogates(text: str) -> str:
    """Lone surrogates -> U+FFFD (a valid surrogate *pair* becomes its character), tiktoken's rule."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


class Tokenizer:
    """Byte-level BPE tokenizer. Build with `train`, `from_tiktoken` or `load`; see the module docstring."""

    def __init__(
        self,
        mergeable_ranks: dict[bytes, int],
        pattern: str | list[str] = "gpt4",
        special_tokens: dict[str, int] | None = None,
        merges: list[tuple[bytes, bytes]] | None = None,
        ignore_merges: bool = True,
        config: dict | None = None,
    ) -> None:
        self.mergeable_ranks = dict(mergeable_ranks)
        self.split_stages = resolve_stages(pattern)
        self.pattern = self.split_stages[-1]  # the word-level regex; earlier stages (digits) refine it
        self._special = SpecialTokens(special_tokens or {})
        self.special_tokens = self._special.tokens
        self.merges = list(merges) if merges is not None else None
        self.ignore_merges = ignore_merges if merges is not None else True
        self.config = dict(config or {})  # tokenizer_config.json fields kept on load (chat_template, eos_token)
        self._check_vocab()
        self._split = make_splitter(self.split_stages)
        self._decoder = {i: t for t, i in self.mergeable_ranks.items()}
        self._decoder.update({i: s.encode("utf-8") for s, i in self.special_tokens.items()})
        self._vocab_size = max(self._decoder) + 1
        self._pair_ranks = {p: r for r, p in enumerate(self.merges)} if self.merges is not None else None
        self._cache: dict[str, list[int]] = {}

    def _check_vocab(self) -> None:
        # HF vocabularies may lack bytes that never occur in UTF-8 text (SmolLM2 lacks 21 control bytes);
        # `tokenizers` then drops such bytes before merging, and so do we. A tiktoken vocabulary must be complete.
        self._dropped = bytes(b for b in range(256) if bytes([b]) not in self.mergeable_ranks)
        if self._dropped and self.merges is None:
            first = self._dropped[:1]
            raise ValueError(f"mergeable_ranks lacks {len(self._dropped)} single bytes (e.g. {first!r})")
        ids = set(self.mergeable_ranks.values())
        if len(ids) != len(self.mergeable_ranks):
            raise ValueError("mergeable_ranks: two tokens share an id")
        clash = ids & set(self.special_tokens.values())
        if clash:
            raise ValueError(f"special token ids {sorted(clash)[:5]} are also ordinary token ids")
        for a, b in self.merges or []:
            if a not in self.mergeable_ranks or b not in self.mergeable_ranks or a + b not in self.mergeable_ranks:
                raise ValueError(f"merge {a!r} + {b!r}: a part or the result is not in the vocabulary")

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_tiktoken(
        cls, mergeable_ranks: dict[bytes, int], pattern: str | list[str], special_tokens: dict[str, int]
    ) -> Tokenizer:
        """The equivalent of `tiktoken.Encoding(pat_str=pattern, mergeable_ranks=..., special_tokens=...)`:
        `pattern` is tiktoken's raw split regex (or one of our pattern names)."""
        raw = isinstance(pattern, str) and pattern not in NAMED
        return cls(mergeable_ranks, [pattern] if raw else pattern, special_tokens)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        pattern: str | list[str] = "gpt4",
        special_tokens: list[str] | dict[str, int] | None = None,
        show_progress: bool = True,
    ) -> Tokenizer:
        """Learn merges from `texts` (streamed once). `vocab_size` counts bytes + merges + special tokens.

        Special tokens (names; a dict's ids are ignored) get the ids after the merges, in the order given.
        """
        from lmstack.tokenizer.trainer import train_bpe

        if isinstance(texts, (str, bytes)):  # iterating would train on single characters
            raise ValueError("texts: expected an iterable of documents (e.g. a list of str), got one str; pass [text]")
        texts = _documents(texts)
        stages = resolve_stages(pattern)
        names = list(special_tokens or [])
        ranks = train_bpe(texts, vocab_size - len(names), stages, show_progress=show_progress)
        return cls(ranks, stages, {s: len(ranks) + k for k, s in enumerate(names)})

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """A directory (tokenizer.json [+ tokenizer.tiktoken] [+ tokenizer_config.json]) or a tokenizer.json."""
        from lmstack.tokenizer.persist import load_tokenizer

        return load_tokenizer(cls, Path(path))

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json (HF), tokenizer_config.json (chat template) and tokenizer.tiktoken (ranks)."""
        from lmstack.tokenizer.persist import save_tokenizer

        save_tokenizer(self, Path(directory))

    # ---- encoding ---------------------------------------------------------------------------------------

    def _encode_chunk(self, chunk: str) -> list[int]:
        """BPE one chunk (fast path), memoized."""
        piece = chunk.encode("utf-8")
        if self._dropped:
            piece = piece.translate(None, self._dropped)
        ranks = self.mergeable_ranks
        token = ranks.get(piece) if self.ignore_merges else None
        if token is not None:
            ids = [token]
        elif len(piece) >= LONG_PIECE:
            ids = self._encode_piece(piece, merge_long)
        elif self._pair_ranks is None:
            ids = [ranks[p] for p in merge_by_token(piece, ranks)]
        else:
            ids = [ranks[p] for p in merge_by_pair(piece, self._pair_ranks)]
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[chunk] = ids
        return ids

    def encode_chunk_reference(self, chunk: str) -> list[int]:
        """BPE one chunk with the readable reference loop (no cache)."""
        piece = chunk.encode("utf-8")
        if self._dropped:
            piece = piece.translate(None, self._dropped)
        if self.ignore_merges and piece in self.mergeable_ranks:
            return [self.mergeable_ranks[piece]]
        return self._encode_piece(piece, merge_reference)

    def _encode_piece(self, piece: bytes, merge: Callable) -> list[int]:
        """Run a generic merge loop (`merge_reference` / `merge_long`) with this tokenizer's pair ranking."""
        if self._pair_ranks is None:
            ranks = self.mergeable_ranks
            parts = merge(piece, lambda a, b: ranks.get(a + b))
        else:
            pairs = self._pair_ranks
            parts = merge(piece, lambda a, b: pairs.get((a, b)))
        return [self.mergeable_ranks[p] for p in parts]

    def encode_ordinary(self, text: str, fast: bool = True) -> list[int]:
        """Encode treating special-token text as ordinary text."""
        out: list[int] = []
        if fast:
            self._encode_ordinary_into(text, out, self._cache.get, self._encode_chunk)
            return out
        try:
            for chunk in self._split(text):
                out += self.encode_chunk_reference(chunk)
        except UnicodeEncodeError:  # a lone surrogate: only now pay for the replacement pass
            return self.encode_ordinary(replace_surrogates(text), fast)
        return out

    def _encode_ordinary_into(self, text: str, out: MutableSequence[int], cached: Callable, miss: Callable) -> None:
        """Append the ids of `text` (no special tokens) to `out`: a list, or an `array("i")` (batch.py's workers).

        `cached(chunk)` gives a chunk's ids or None, `miss(chunk)` computes (and caches) them; both must return
        what `out.extend` takes fastest (lists for a list, arrays for an array).
        """
        start = len(out)
        try:
            extend = out.extend
            for chunk in self._split(text):
                ids = cached(chunk)
                extend(ids if ids is not None else miss(chunk))
        except UnicodeEncodeError:  # a lone surrogate: only now pay for the replacement pass
            del out[start:]
            self._encode_ordinary_into(replace_surrogates(text), out, cached, miss)

    def encode(
        self, text: str, allowed_special: SpecialSet = frozenset(), disallowed_special: SpecialSet = "all"
    ) -> list[int]:
        """tiktoken semantics: special-token text raises ValueError unless allowed (-> its id) or not disallowed."""
        allowed, disallowed = self._special.resolve(allowed_special, disallowed_special)
        out: list[int] = []
        self._encode_into(text, allowed, disallowed, out, self._cache.get, self._encode_chunk)
        return out

    def _encode_into(
        self,
        text: str,
        allowed: frozenset[str],
        disallowed: frozenset[str],
        out: MutableSequence[int],
        cached: Callable,
        miss: Callable,
    ) -> None:
        """`encode` with resolved special sets, appending to `out` (see `_encode_ordinary_into`)."""
        self._special.check_disallowed(text, disallowed)
        if not allowed:
            self._encode_ordinary_into(text, out, cached, miss)
            return
        for k, segment in enumerate(self._special.split(text, allowed)):
            if k % 2:  # odd positions are the matched special tokens
                out.append(self.special_tokens[segment])
            elif segment:
                self._encode_ordinary_into(segment, out, cached, miss)

    def encode_batch(
        self,
        texts: list[str],
        num_workers: int | None = None,
        allowed_special: SpecialSet = frozenset(),
        disallowed_special: SpecialSet = "all",
    ) -> list[list[int]]:
        """Encode many texts; above ~1 MB in total, spread them over `num_workers` forked processes."""
        from lmstack.tokenizer.batch import encode_batch

        workers = num_workers if num_workers is not None else min(os.cpu_count() or 1, 8)
        return encode_batch(self, list(texts), workers, allowed_special, disallowed_special)

    # ---- decoding ---------------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Ids -> the concatenated bytes of their tokens (special tokens give their text). Takes a list of ints,
        or a 1-D tensor / array of them."""
        if hasattr(ids, "tolist") and not isinstance(ids, list):  # torch.Tensor, np.ndarray
            ids = ids.tolist()
            ids = [ids] if isinstance(ids, int) else ids
        ids = ids if isinstance(ids, list) else list(ids)
        try:
            return b"".join([self._decoder[i] for i in ids])
        except (KeyError, TypeError):
            bad = next(i for i in ids if not isinstance(i, int) or i not in self._decoder)
            if not isinstance(bad, int):
                raise ValueError(f"decode: expected a flat sequence of int token ids, got {bad!r}") from None
            raise ValueError(f"token id {bad!r} is not in this tokenizer (vocab_size={self.vocab_size})") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; bytes that are not valid UTF-8 become U+FFFD (never raises for valid ids)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def id_to_bytes(self, i: int) -> bytes:
        return self.decode_bytes([i])

    def id_to_piece(self, i: int) -> str:
        """A token as readable text (partial UTF-8 shown as U+FFFD)."""
        return self.id_to_bytes(i).decode("utf-8", errors="replace")

    # ---- vocabulary -------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Embedding rows needed: the largest id + 1 (ordinary and special tokens)."""
        return self._vocab_size

    def _named_id(self, key: str, fallbacks: tuple[str, ...]) -> int | None:
        name = self.config.get(key)
        name = name.get("content") if isinstance(name, dict) else name
        if name in self.special_tokens:
            return self.special_tokens[name]
        if name is not None and name.encode() in self.mergeable_ranks:
            return self.mergeable_ranks[name.encode()]
        return next((self.special_tokens[n] for n in fallbacks if n in self.special_tokens), None)

    @property
    def eos_id(self) -> int | None:
        """tokenizer_config's eos_token if set, else <|endoftext|> (then </s>, <|end_of_text|>, <|im_end|>)."""
        return self._named_id("eos_token", EOS_NAMES)

    @property
    def bos_id(self) -> int | None:
        """tokenizer_config's bos_token if set, else <|startoftext|> / <s> / <|begin_of_text|>, else None."""
        return self._named_id("bos_token", BOS_NAMES)

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template saved with the tokenizer (ChatML for ours), or None."""
        from lmstack.tokenizer.persist import tokenizer_config

        return tokenizer_config(self).get("chat_template")

    def render_chat(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False
    ) -> tuple[list[int], list[int]]:
        """ChatML ids and loss mask (1 on assistant content + its <|im_end|>); see chat.py."""
        from lmstack.tokenizer.chat import render_chat

        return render_chat(self, messages, add_generation_prompt)

    def __reduce__(self) -> tuple:
        """Picklable (for spawn-started workers): rebuilt from its tables, without the compiled regexes."""
        args = (self.mergeable_ranks, self.split_stages, self.special_tokens, self.merges, self.ignore_merges)
        return (type(self), (*args, self.config))

    def __repr__(self) -> str:
        kind = "merges" if self.merges is not None else "ranks"
        return f"Tokenizer(vocab_size={self.vocab_size}, special={len(self.special_tokens)}, by={kind})"
