"""Our encode equals tiktoken's ids exactly, on the real GPT-2, cl100k_base and o200k_base vocabularies."""

from __future__ import annotations

import pytest
import tiktoken

from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.patterns import GPT2
from tests.tokenizer.texts import VARIED

GPT2_SPECIAL = {"<|endoftext|>": 50256}


def pair(name: str, pat: str, ranks: dict[bytes, int], special: dict[str, int]) -> tuple[Tokenizer, tiktoken.Encoding]:
    ref = tiktoken.Encoding(name, pat_str=pat, mergeable_ranks=ranks, special_tokens=special)
    return Tokenizer.from_tiktoken(ranks, pat, special), ref


@pytest.fixture(scope="module")
def encoders(gpt2_ranks, cl100k, o200k) -> dict[str, tuple[Tokenizer, tiktoken.Encoding]]:
    return {
        "gpt2": pair("gpt2_test", GPT2, gpt2_ranks, GPT2_SPECIAL),
        "cl100k": pair("cl100k_test", cl100k["pat_str"], cl100k["mergeable_ranks"], cl100k["special_tokens"]),
        "o200k": pair("o200k_test", o200k["pat_str"], o200k["mergeable_ranks"], o200k["special_tokens"]),
    }


def test_matches_tiktoken_gpt2_hello_world(gpt2_ranks):
    tok = Tokenizer.from_tiktoken(gpt2_ranks, "gpt2", GPT2_SPECIAL)
    assert tok.encode("Hello world") == [15496, 995]  # the published GPT-2 ids (ASSETS.md)


@pytest.mark.parametrize("name", ["gpt2", "cl100k", "o200k"])
def test_matches_tiktoken_ids(encoders, name):
    ours, ref = encoders[name]
    for text in VARIED:
        assert ours.encode_ordinary(text) == ref.encode_ordinary(text), text
        assert ours.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all"), text
        assert ours.encode(text, disallowed_special=()) == ref.encode(text, disallowed_special=()), text
    big = "\n".join(VARIED) * 5
    assert ours.encode_ordinary(big) == ref.encode_ordinary(big)
    assert ours.decode(ref.encode_ordinary(big)) == big


@pytest.mark.parametrize("name", ["gpt2", "cl100k", "o200k"])
def test_fast_path_matches_reference_loop(encoders, name):
    ours, _ = encoders[name]
    for text in VARIED:
        assert ours.encode_ordinary(text) == ours.encode_ordinary(text, fast=False), text


def test_special_tokens_follow_tiktoken_rules(encoders):
    ours, ref = encoders["cl100k"]
    text = "a <|endoftext|> b <|fim_prefix|>"
    with pytest.raises(ValueError, match="<|endoftext|>"):
        ours.encode(text)
    with pytest.raises(ValueError):
        ref.encode(text)  # the reference agrees that this is an error
    only_eot = {"<|endoftext|>"}
    with pytest.raises(ValueError, match="fim_prefix"):
        ours.encode(text, allowed_special=only_eot)
    got = ours.encode(text, allowed_special=only_eot, disallowed_special=())
    assert got == ref.encode(text, allowed_special=only_eot, disallowed_special=())
    assert got.count(100257) == 1 and 100258 not in got
    assert ours.encode(text, disallowed_special=()) == ours.encode_ordinary(text)
    with pytest.raises(ValueError, match="not special tokens"):
        ours.encode(text, allowed_special={"<|nope|>"})


def test_lone_surrogates_become_replacement_char_like_tiktoken(encoders):
    ours, ref = encoders["cl100k"]
    for text in ["a\ud800b", "\udfff", "x \ud83d\ude00 y", "end\udc80"]:
        ids = ours.encode(text)
        assert ids == ref.encode(text), repr(text)
        assert ours.decode(ids) == text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert ours.decode(ours.encode("a\ud800b")) == "a\ufffdb"


def test_decode_invalid_utf8_gives_replacement_never_raises(encoders):
    ours, _ = encoders["gpt2"]
    emoji = ours.encode("😀")
    assert len(emoji) > 1  # GPT-2 splits this emoji over several byte tokens
    assert "\ufffd" in ours.decode(emoji[:1])
    assert ours.decode_bytes(emoji) == "😀".encode()
    with pytest.raises(ValueError, match="token id 999999"):
        ours.decode([999999])


def test_regression_long_chunk_is_not_quadratic(encoders):
    """A 100,000-letter chunk once took minutes (quadratic merge loop); merge_long makes it ~0.5 s."""
    import time

    ours, ref = encoders["cl100k"]
    for text in ["a" * 100_000, "ab" * 20_000 + " " + "\u00e9" * 20_000]:
        start = time.perf_counter()
        assert ours.encode_ordinary(text) == ref.encode_ordinary(text)
        assert time.perf_counter() - start < 5
