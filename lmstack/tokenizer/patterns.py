"""Pre-tokenization: the regexes that cut text into chunks before BPE, and the splitter that applies them.

BPE never merges across a chunk boundary, so the regex decides what a token *can* be: GPT-2 keeps a leading
space with the word (" world"), separates letters, digits and punctuation, and keeps runs of spaces apart from
the next word. References: Radford et al. 2019 (GPT-2, `encoder.py`'s `pat`), OpenAI tiktoken's `cl100k_base`
("gpt4": case-insensitive contractions, digits in groups of at most 3, newlines kept with punctuation) and
`o200k_base` (case-aware words so "camelCase" splits, CJK-friendly letter classes).

A *split stage* is one regex. Several stages form a sequence, as in Hugging Face `tokenizers`
`Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]` (SmolLM2 / "smollm"): every chunk of one
stage is cut again by the next. Text between matches becomes its own chunk (HF's "Isolated" behaviour), so
nothing is ever dropped; for the built-in patterns, which match every character, this is identical to tiktoken.

Left out: HF split behaviours other than Isolated (Removed, MergedWith*), inverted splits, normalizers.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable

import regex

# GPT-2 (r50k/p50k), as written in tiktoken: contractions, optional space + letters/digits/other, then spaces.
GPT2 = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# The GPT-2 regex exactly as Hugging Face ByteLevel(use_regex=True) writes it; it splits identically to GPT2.
GPT2_HF = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# GPT-4 (cl100k_base): case-insensitive contractions, a punctuation char may lead a word, numbers of 1-3 digits.
GPT4 = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s"""
)

# GPT-4o (o200k_base): upper-case runs vs lower-case runs are separate words; contractions attach to the word.
O200K = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# Every digit alone (HF `Digits(individual_digits=True)`, whose test is Rust's `char::is_numeric` = \p{N}).
DIGITS = r"""\p{N}"""

# ASCII-only twins of the built-in regexes for the stdlib `re` engine, which splits ASCII text ~2x faster than
# `regex`. On ASCII input \p{L} is [A-Za-z], \p{Lu} [A-Z], \p{Ll} [a-z], \p{N} [0-9], \p{Lt}\p{Lm}\p{Lo}\p{M} are
# empty, and `regex`'s \s is [\t\n\v\f\r ] (`re`'s \s would add \x1c-\x1f, so it is spelled out). Used only
# when `text.isascii()`; a test checks every twin against its original on random ASCII text.
_WS = r"\t\n\x0b\x0c\r "
_ASCII_TWINS = {
    GPT2: (
        rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]++| ?[0-9]++| ?[^{_WS}A-Za-z0-9]++|"""
        rf"""[{_WS}]++$|[{_WS}]+(?![^{_WS}])|[{_WS}]"""
    ),
    GPT4: (
        rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]++|[0-9]{{1,3}}+| ?[^{_WS}A-Za-z0-9]++[\r\n]*+|"""
        rf"""[{_WS}]++$|[{_WS}]*[\r\n]|[{_WS}]+(?![^{_WS}])|[{_WS}]"""
    ),
    O200K: (
        r"""[^\r\nA-Za-z0-9]?[A-Z]*[a-z]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
        r"""[^\r\nA-Za-z0-9]?[A-Z]+[a-z]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
        rf"""[0-9]{{1,3}}| ?[^{_WS}A-Za-z0-9]+[\r\n/]*|[{_WS}]*[\r\n]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
    ),
    DIGITS: "[0-9]",
}
# the same regexes as written into / read back from HF tokenizer.json (see hf_format.onig_compatible)
_ASCII_TWINS[GPT2_HF] = _ASCII_TWINS[GPT2]
_ASCII_TWINS[GPT4.replace("{1,3}+", "{1,3}")] = _ASCII_TWINS[GPT4]


def ascii_twin(pattern: str) -> str | None:
    """The stdlib-`re` regex that splits ASCII text exactly as `pattern` does, if we have one."""
    return _ASCII_TWINS.get(pattern)


# Named split sequences accepted wherever a pattern is asked for (`--pattern gpt4`).
NAMED: dict[str, list[str]] = {
    "gpt2": [GPT2],
    "gpt4": [GPT4],
    "cl100k": [GPT4],
    "o200k": [O200K],
    "smollm": [DIGITS, GPT2],
}


CUSTOM = "regex:"  # a custom split regex is spelled "regex:<pattern>", so a typo'd name is never taken as one


def resolve_stages(pattern: str | list[str]) -> list[str]:
    """A name from NAMED, "regex:<one regex>", or an ordered list of regexes -> the split stages (validated)."""
    if isinstance(pattern, str):
        if pattern in NAMED:
            stages = list(NAMED[pattern]) if not isinstance(NAMED[pattern], str) else [NAMED[pattern]]
        elif pattern.startswith(CUSTOM):
            stages = [pattern[len(CUSTOM) :]]
        else:
            close = difflib.get_close_matches(pattern, list(NAMED), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"pattern {pattern!r} is not a named pattern ({', '.join(sorted(NAMED))}); {hint}"
                             f"a custom split regex is written '{CUSTOM}<regex>'")  # fmt: skip
    elif isinstance(pattern, (list, tuple)) and all(isinstance(p, str) for p in pattern):
        stages = list(pattern)
    else:
        raise ValueError(f"pattern: expected a name, '{CUSTOM}<regex>' or a list of regexes, got {pattern!r}")
    if not stages:
        raise ValueError("pattern: need at least one split regex")
    for s in stages:
        try:
            compiled = regex.compile(s)
        except regex.error as e:
            raise ValueError(f"pattern {s!r} is not a valid regex ({e}); names are {sorted(NAMED)}") from None
        if compiled.search("") is not None:
            raise ValueError(f"pattern {s!r} matches the empty string; every chunk must be non-empty")
    return stages


def _isolated(pattern: str) -> Callable[[str], list[str]]:
    """Split one string by one regex, keeping both the matches and the text between them, in order."""
    compiled = regex.compile(pattern)
    findall, finditer = compiled.findall, compiled.finditer
    twin = ascii_twin(pattern)
    ascii_findall = re.compile(twin).findall if twin is not None else None

    def split(text: str) -> list[str]:
        chunks = ascii_findall(text) if ascii_findall is not None and text.isascii() else findall(text)
        # Fast path: the built-in patterns match every character, so the matches already tile the text.
        if sum(map(len, chunks)) == len(text):
            return chunks
        out, pos = [], 0
        for m in finditer(text):
            if m.start() > pos:
                out.append(text[pos : m.start()])
            if m.end() > m.start():
                out.append(m.group())
            pos = m.end()
        if pos < len(text):
            out.append(text[pos:])
        return out

    return split


def make_splitter(stages: list[str]) -> Callable[[str], list[str]]:
    """text -> chunks, applying each stage to every chunk of the previous one.

    >>> make_splitter([DIGITS, GPT2])("at 12pm")
    ['at', ' ', '1', '2', 'pm']
    """
    splits = [_isolated(s) for s in stages]
    if len(splits) == 1:
        return splits[0]

    def split(text: str) -> list[str]:
        chunks = [text] if text else []
        for one in splits:
            chunks = [c for chunk in chunks for c in one(chunk)]
        return chunks

    return split
