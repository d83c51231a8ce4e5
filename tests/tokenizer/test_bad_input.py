"""Bad tokenizer input is an error naming the value, never a silent wrong result (issue 9)."""

from __future__ import annotations

import json

import pytest
import torch

from lmstack.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    t = Tokenizer.train(["the cat sat on the mat " * 20], 270, special_tokens=["<|endoftext|>"], show_progress=False)
    path = tmp_path_factory.mktemp("tok")
    t.save(path)
    return t, path


def test_regression_train_on_one_string_is_refused():
    # iterating a str trains on single characters: a 1-character "document" each
    with pytest.raises(ValueError, match=r"got one str; pass \[text\]"):
        Tokenizer.train("some text", 260, show_progress=False)
    with pytest.raises(ValueError, match=r"texts\[1\]: expected str, got int"):
        Tokenizer.train(["ok", 3], 260, show_progress=False)


def test_regression_pattern_typo_is_refused():
    with pytest.raises(ValueError, match="did you mean 'gpt4'"):
        Tokenizer.train(["a b"], 260, pattern="gpt5", show_progress=False)


def test_decode_takes_a_tensor_or_says_it_wants_ints(tok):
    t, _ = tok
    ids = t.encode("the cat")
    assert t.decode(torch.tensor(ids)) == "the cat"
    assert t.decode(torch.tensor(ids[0])) == t.decode(ids[:1])
    with pytest.raises(ValueError, match="flat sequence of int token ids"):
        t.decode(torch.tensor([ids, ids]))
    with pytest.raises(ValueError, match="flat sequence of int token ids"):
        t.decode(["a"])


def _edit(path, out, change) -> None:
    doc = json.loads((path / "tokenizer.json").read_text())
    change(doc)
    out.mkdir()
    (out / "tokenizer.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d["added_tokens"][0].update(id=-3), r"added_tokens '<\|endoftext\|>' has id -3"),
        (lambda d: d["added_tokens"][0].update(id=5), r"added token '<\|endoftext\|>' has id 5, which model.vocab"),
        (lambda d: d["added_tokens"][0].update(id=10**9), "token id 1000000000 is far beyond"),
        (lambda d: d["model"]["vocab"].update({"zz": 2.5}), r"model.vocab 'zz' has id 2.5"),
    ],
)
def test_regression_tokenizer_json_with_bad_ids_is_refused(tok, tmp_path, change, match):
    # an added token with id 5 used to delete byte 0x05 from decoded text; 1e9 made a 1e9-row embedding
    _, path = tok
    _edit(path, tmp_path / "bad", change)
    with pytest.raises(ValueError, match=match):
        Tokenizer.load(tmp_path / "bad")
