"""Split stages: the ASCII fast path (stdlib `re`) splits exactly like the `regex` originals; splitting keeps
every character; named patterns and bad patterns."""

from __future__ import annotations

import re

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from lmstack.tokenizer.hf_format import onig_compatible
from lmstack.tokenizer.patterns import DIGITS, GPT2, GPT2_HF, GPT4, O200K, ascii_twin, make_splitter, resolve_stages

# ASCII with the characters the regexes care about over-represented: contractions, case, digits, whitespace.
PIECES = [
    "'s",
    "'T",
    "'ll",
    "'Re",
    "'ve",
    "'M",
    "'d",
    "'",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1f",
    "\x00",
    "a",
    "Z",
    "abc",
    "ABC",
    "aB",
    "Ab",
    "0",
    "12",
    "1234",
    "!",
    "?!",
    "/",
    "_",
]
ASCII_TEXT = st.lists(st.sampled_from(PIECES), max_size=30).map("".join) | st.text(
    alphabet=st.characters(max_codepoint=127), max_size=60
)


TWINNED = {"gpt2": GPT2, "gpt2_hf": GPT2_HF, "gpt4": GPT4, "gpt4_onig": onig_compatible(GPT4), "o200k": O200K,
           "digits": DIGITS}  # fmt: skip
SPLITTERS = {name: make_splitter(resolve_stages(name)) for name in ("gpt2", "gpt4", "o200k", "smollm")}


@pytest.mark.parametrize("pattern", TWINNED.values(), ids=TWINNED.keys())
@settings(max_examples=400, deadline=None)
@given(text=ASCII_TEXT)
def test_ascii_twin_splits_like_the_regex_original(pattern, text):
    twin = ascii_twin(pattern)
    assert twin is not None
    assert re.findall(twin, text) == regex.findall(pattern, text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_split_keeps_every_character(text):
    for split in SPLITTERS.values():
        chunks = split(text)
        assert "".join(chunks) == text and all(chunks)


def test_sequence_of_stages_and_gaps():
    assert make_splitter([DIGITS, GPT2])("at 12pm") == ["at", " ", "1", "2", "pm"]
    assert make_splitter([r"\p{L}+"])("ab, cd!") == ["ab", ", ", "cd", "!"]  # text between matches is kept


def test_bad_patterns_are_named():
    with pytest.raises(ValueError, match="not a valid regex"):
        resolve_stages("regex:([")
    with pytest.raises(ValueError, match="empty string"):
        resolve_stages(r"regex:\s*")


def test_regression_typo_is_not_a_literal_regex():
    # "gpt5" used to be compiled as the regex /gpt5/ and silently split text on that literal
    with pytest.raises(ValueError, match=r"'gpt5' is not a named pattern.*did you mean 'gpt4'.*regex:<regex>"):
        resolve_stages("gpt5")
    assert resolve_stages(r"regex:\S+") == [r"\S+"]  # the explicit spelling of a custom regex
    assert resolve_stages([r"\S+"]) == [r"\S+"]  # a list of stages is explicit too (loaders pass these)
