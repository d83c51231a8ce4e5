"""Contamination: an evaluation item planted in a training shard is flagged; the others are not."""

from __future__ import annotations

import random

import pytest

from lmstack.eval.contamination import NgramIndex, check_item, check_items, ngram_hashes, shard_documents, short_lengths
from lmstack.eval.multiple_choice import item_text, load_items

FILLER = "the king and queen of france speak to a lord in the castle while the fool sings of love and war".split()


def filler_docs(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(FILLER) for _ in range(rng.randint(40, 120))) + "\n" for _ in range(n)]


@pytest.fixture(scope="module")
def planted_shards(tmp_path_factory, tiny_tok):
    from lmstack.data.shards import write_shards

    items = load_items("social_iqa")[:20]
    train = filler_docs(30, seed=0)
    train[7] += " Some preamble. " + item_text("social_iqa", items[3]).upper() + " and then more filler text."
    out = tmp_path_factory.mktemp("shards")
    tiny_tok.save(out / "tokenizer")
    write_shards(train, filler_docs(3, seed=1), tiny_tok, out, workers=1)
    return out, items


def test_planted_item_is_flagged_and_others_are_not(planted_shards) -> None:
    out, items = planted_shards
    texts = {it.id: item_text("social_iqa", it) for it in items}
    docs = list(shard_documents(out))
    assert len(docs) == 30 and "PREAMBLE" not in docs[7] and "Some preamble." in docs[7]  # decoded exactly
    index = NgramIndex(docs, 13, short_lengths(texts.values()), name="shards")
    found = check_items(texts, [index])
    flagged = [k for k, o in found.items() if o.flagged]
    assert flagged == [items[3].id]  # case and spacing differences do not hide it
    assert found[items[3].id].overlap == 1.0 and found[items[3].id].source == "shards"
    clean = NgramIndex(filler_docs(30, seed=0), 13, name="clean")
    assert not any(o.flagged for o in check_items(texts, [clean]).values())


def test_partial_overlap_and_short_items() -> None:
    doc = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi"
    index = NgramIndex([doc], 13, short_lengths(["beta gamma delta", "x y"]))
    half = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu QQ RR SS TT UU VV WW XX"
    o = check_item(half, [index])
    assert o.flagged and 0 < o.overlap < 1  # one 13-gram shared, the rest not
    assert check_item("Beta  GAMMA delta", [index]).flagged  # a short item inside a document
    assert not check_item("x y", [index]).flagged


def test_ngram_hashes_are_positional() -> None:
    a = ngram_hashes("a b c d", 2)
    assert len(a) == 3 and len(set(a.tolist())) == 3
    assert not set(ngram_hashes("b a", 2).tolist()) & set(a.tolist())  # "b a" is not "a b"
