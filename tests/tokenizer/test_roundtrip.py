"""decode(encode(s)) == s for arbitrary Unicode (property tests), on a trained and on a real vocabulary."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.bpe import merge_by_pair, merge_by_token, merge_long, merge_reference, splits_of_vocab

# Every code point except lone surrogates (those are tested separately: they become U+FFFD, like tiktoken).
ANY_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=200)
RUNS = st.lists(st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "1", "99", "a", "😀", "é", "日本", "مرحبا", "'s"]))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(text=ANY_TEXT)
def test_round_trip_trained(trained: Tokenizer, text: str):
    ids = trained.encode(text, disallowed_special=())
    assert trained.decode(ids) == text
    assert all(0 <= i < trained.vocab_size for i in ids)


@SETTINGS
@given(parts=RUNS)
def test_round_trip_runs_of_spaces_digits_scripts(trained: Tokenizer, parts: list[str]):
    text = "".join(parts)
    assert trained.decode(trained.encode_ordinary(text)) == text
    assert trained.encode_ordinary(text) == trained.encode_ordinary(text, fast=False)


@SETTINGS
@given(text=ANY_TEXT | st.text(alphabet=st.characters(), max_size=50))
def test_round_trip_gpt2_any_string(gpt2_ranks, text: str):
    tok = _gpt2(gpt2_ranks)
    expected = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # lone surrogate -> U+FFFD
    assert tok.decode(tok.encode_ordinary(text)) == expected


@SETTINGS
@given(data=st.binary(min_size=1, max_size=40) | st.text(alphabet="ab c", max_size=80).map(str.encode))
def test_fast_merge_loops_equal_reference(trained: Tokenizer, data: bytes):
    ranks = trained.mergeable_ranks
    ref = merge_reference(data, lambda a, b: ranks.get(a + b))
    assert merge_by_token(data, ranks) == ref
    assert merge_long(data, lambda a, b: ranks.get(a + b)) == ref
    assert b"".join(ref) == data
    pairs = {p: r for r, p in enumerate(_splits(trained))}
    ref_pairs = merge_reference(data, lambda a, b: pairs.get((a, b)))
    assert merge_by_pair(data, pairs) == ref_pairs == merge_long(data, lambda a, b: pairs.get((a, b)))


_CACHE: dict = {}


def _gpt2(ranks: dict[bytes, int]) -> Tokenizer:
    if "gpt2" not in _CACHE:
        _CACHE["gpt2"] = Tokenizer.from_tiktoken(ranks, "gpt2", {"<|endoftext|>": 50256})
    return _CACHE["gpt2"]


def _splits(tok: Tokenizer) -> list[tuple[bytes, bytes]]:
    if "splits" not in _CACHE:
        _CACHE["splits"] = splits_of_vocab(tok.mergeable_ranks)
    return _CACHE["splits"]
