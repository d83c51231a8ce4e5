"""StreamDecoder never emits half a UTF-8 character, and its chunks add up to decode(ids)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmstack.tokenizer import StreamDecoder, Tokenizer


def test_waits_for_the_rest_of_a_multibyte_character(gpt2_ranks):
    tok = Tokenizer.from_tiktoken(gpt2_ranks, "gpt2", {})
    ids = tok.encode("hi 😀!")
    dec = StreamDecoder(tok)
    chunks = [dec.feed(i) for i in ids]
    assert "".join(chunks) + dec.flush() == "hi 😀!"
    assert all("\ufffd" not in c for c in chunks)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some token alone is half a character
    dec.feed(tok.encode("😀")[0])
    assert dec.pending > 0
    assert dec.flush() == "\ufffd" and dec.pending == 0  # an unfinished character at the end is U+FFFD


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.integers(0, 1023), max_size=60))
def test_chunks_concatenate_to_decode_for_any_ids(trained: Tokenizer, ids: list[int]):
    # random ids produce arbitrary byte soup, including invalid UTF-8
    dec = StreamDecoder(trained)
    chunks = [dec.feed(i) for i in ids]
    assert "".join(chunks) + dec.flush() == trained.decode(ids)
    for c in chunks:  # each chunk is complete text: re-encoding it as UTF-8 never fails
        c.encode("utf-8")
