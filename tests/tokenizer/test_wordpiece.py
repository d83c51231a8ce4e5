"""WordPiece encoding equals Hugging Face `tokenizers` on the real all-MiniLM-L6-v2 tokenizer.json: the shared
varied/edge strings, special-token text, and ~400 KB of the Python documentation (the RAG collection)."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer as HFTokenizer

from lmstack.data.corpus import load_corpus
from lmstack.model.local_models import resolve_model
from lmstack.tokenizer.wordpiece import WordPieceTokenizer, bert_normalize, bert_pre_tokenize, wordpiece
from tests.tokenizer.texts import VARIED

EXTRA = [
    "[CLS] a [MASK] b[SEP]c [UNK][PAD]",
    "unaffable Unaffable UNAFFABLE supercalifragilisticexpialidocious",
    "Don't stop! É è ê ë Ç ñ Ø Å ß İstanbul ΣΊΣΥΦΟΣ ﬁ ﬀ",
    "word" * 40 + " " + "x" * 101 + " " + "y" * 100,
    "\x1c\x1d\x1e\x1f separators \u0085 next-line \u2028 line-sep \u00ad soft-hyphen",
]


@pytest.fixture(scope="module")
def paths() -> tuple[WordPieceTokenizer, HFTokenizer]:
    file = resolve_model("all-minilm-l6-v2") / "tokenizer.json"
    ref = HFTokenizer.from_file(str(file))
    ref.no_truncation()
    ref.no_padding()
    return WordPieceTokenizer.load(file), ref


def test_pieces_by_hand() -> None:
    assert bert_normalize("Héllo\tWORLD\x00\u200b!") == "hello world!"
    assert bert_normalize("你好") == " 你  好 "
    assert bert_pre_tokenize("don't  stop!$5") == ["don", "'", "t", "stop", "!", "$", "5"]
    vocab = {"un": 0, "una": 1, "##ffa": 2, "##ble": 3}
    assert wordpiece("unaffable", vocab) == ["una", "##ffa", "##ble"]
    assert wordpiece("unfit", vocab) is None  # "##fit" is missing: the whole word is [UNK]
    assert wordpiece("un" * 60, vocab, max_chars=100) is None


@pytest.mark.parametrize("text", VARIED + EXTRA)
def test_matches_hf_tokenizers(paths, text: str) -> None:
    ours, ref = paths
    assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids
    assert ours.encode(text, add_special_tokens=True) == ref.encode(text).ids


def test_matches_hf_tokenizers_on_python_docs(paths) -> None:
    ours, ref = paths
    docs = load_corpus("pydocs")[::12]  # 42 files, ~0.9 MB of reST prose, code and tables
    expected = [e.ids for e in ref.encode_batch(docs, add_special_tokens=False)]
    assert [ours.encode(d) for d in docs] == expected


def test_pair_encoding_and_truncation_match_hf(paths) -> None:
    ours, ref = paths
    q, p = "How do I read a file line by line?", "Use a for loop over the file object: for line in f: ..."
    ids, types = ours.encode_for_model(q, p)
    enc = ref.encode(q, p)
    assert (ids, types) == (enc.ids, enc.type_ids)
    ids, types = ours.encode_for_model(q, p * 20, max_length=32)
    assert len(ids) == 32 and ids[: len(ours.encode(q)) + 2] == [ours.cls_id, *ours.encode(q), ours.sep_id]
    assert ids[-1] == ours.sep_id and types.count(0) == len(ours.encode(q)) + 2


def test_decode_matches_hf(paths) -> None:
    ours, ref = paths
    for text in ["Hello, world! Don't stop.", "unaffable pieces: tokenization isn't hard", "a [MASK] b"]:
        ids = ref.encode(text).ids
        assert ours.decode(ids) == ref.decode(ids)


def test_save_loads_in_hf_tokenizers(paths, tmp_path) -> None:
    ours, _ = paths
    ours.save(tmp_path)
    again = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = VARIED[4] + " " + EXTRA[2]
    assert again.encode(text).ids == ours.encode(text, add_special_tokens=True)
    assert WordPieceTokenizer.load(tmp_path).encode(text) == ours.encode(text)


def test_load_errors_name_the_file(tmp_path) -> None:
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    with pytest.raises(ValueError, match="expected 'WordPiece'"):
        WordPieceTokenizer.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        WordPieceTokenizer.load(tmp_path / "missing")
