"""Special tokens: strings such as `<|endoftext|>` that map to one reserved id and never go through BPE.

Semantics follow tiktoken's `encode(text, allowed_special=set(), disallowed_special="all")`:
- a special token's text is turned into its id only where it is *allowed*;
- by default every special token is *disallowed*: if the text contains one, encoding raises `ValueError`
  (a user message that types "<|im_end|>" must not end a chat turn; pass `disallowed_special=()` to encode it
  as plain text, or `allowed_special={...}` / `"all"` to get the id);
- `encode_ordinary` ignores special tokens entirely (they are ordinary text).
Where two special tokens overlap, the longer one wins. Left out: HF's lstrip/rstrip/single_word flags.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

import regex

SpecialSet = Literal["all"] | Collection[str]


class SpecialTokens:
    """The special-token table of one tokenizer and the regexes that find its tokens in text."""

    def __init__(self, tokens: dict[str, int]) -> None:
        for text, i in tokens.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"special token {text!r}: must be a non-empty string")
            if not isinstance(i, int) or i < 0:
                raise ValueError(f"special token {text!r}: id {i!r} must be a non-negative int")
        if len(set(tokens.values())) != len(tokens):
            raise ValueError(f"special tokens share an id: {tokens}")
        self.tokens = dict(tokens)
        self._regex_cache: dict[frozenset[str], regex.Pattern] = {}

    def regex_for(self, names: frozenset[str]) -> regex.Pattern:
        """A regex matching any of `names` (longest first, so the longer of two overlapping tokens wins).

        The one capturing group makes `split` keep the matched special tokens.
        """
        if names not in self._regex_cache:
            alts = sorted(names, key=lambda s: (-len(s), s))
            self._regex_cache[names] = regex.compile("(" + "|".join(regex.escape(s) for s in alts) + ")")
        return self._regex_cache[names]

    def resolve(self, allowed: SpecialSet, disallowed: SpecialSet) -> tuple[frozenset[str], frozenset[str]]:
        """tiktoken's rule: "all" means every special token; disallowed="all" excludes the allowed ones."""
        allowed_set = frozenset(self.tokens) if allowed == "all" else frozenset(allowed)
        disallowed_set = frozenset(self.tokens) - allowed_set if disallowed == "all" else frozenset(disallowed)
        unknown = (allowed_set | disallowed_set) - set(self.tokens)
        if allowed != "all" and unknown & allowed_set:
            raise ValueError(
                f"allowed_special: {sorted(unknown & allowed_set)} are not special tokens of this tokenizer"
            )
        return allowed_set, disallowed_set

    def check_disallowed(self, text: str, disallowed: frozenset[str]) -> None:
        """Raise if `text` contains a disallowed special token, naming it and its position."""
        if not disallowed:
            return
        m = self.regex_for(disallowed).search(text)
        if m is not None:
            raise ValueError(
                f"text contains the special token {m.group()!r} at character {m.start()}; pass "
                f"allowed_special={{{m.group()!r}}} (or 'all') to encode it as its id, or disallowed_special=() "
                "to encode it as ordinary text"
            )

    def split(self, text: str, allowed: frozenset[str]) -> list[str]:
        """Alternate [ordinary, special, ordinary, special, ..., ordinary] segments (ordinary ones may be '')."""
        return self.regex_for(allowed).split(text) if allowed else [text]
