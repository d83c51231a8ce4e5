"""WordPiece training: the likelihood score picks the merge by hand, counts stay exact under incremental updates,
and a trained vocabulary encodes identically in our WordPieceTokenizer and HF `tokenizers` with no [UNK] on its
training alphabet."""

from __future__ import annotations

import json
from collections import Counter

from tokenizers import Tokenizer as HFTokenizer

from lmstack.tokenizer.wordpiece_trainer import _split, train_wordpiece, train_wordpiece_tokenizer
from tests.tokenizer.texts import stdlib_text


def test_merge_order_by_hand() -> None:
    # counts: "ab" x 5, "ac" x 10, "cc" x 1 -> symbols a 15, ##b 5, ##c 11, c 1; N = 32
    words = Counter({"ab": 5, "ac": 10, "cc": 1})
    # likelihood gain n ln(n N / (n_a n_b)): (a ##b) 5 ln(160/75) = 3.79, (a ##c) 10 ln(320/165) = 6.62,
    # (c ##c) ln(32/11) = 1.07 -> "ac". Then a 5, ##c 1: (a ##b) 5 ln(160/25) = 9.28 > (c ##c) ln 32 = 3.47.
    vocab = train_wordpiece(words, 8, special_tokens=["[UNK]"], show_progress=False)
    assert vocab[:5] == ["[UNK]", "##b", "##c", "a", "c"] and vocab[5:] == ["ac", "ab", "cc"]
    # pmi n / (n_a n_b): (c ##c) 1/11 = 0.091 beats (a ##b) 5/75 and (a ##c) 10/165: the rare pair first. Then
    # count(##c) = 10 and (a ##b) = (a ##c) = 1/15: the tie goes to the more frequent pair (a ##c).
    vocab = train_wordpiece(words, 8, special_tokens=["[UNK]"], show_progress=False, score="pmi")
    assert vocab[5:] == ["cc", "ac", "ab"]


def _recount(words: Counter, vocab: list[str]) -> None:
    """Greedy longest-match over the learned vocabulary reproduces every training word (no [UNK])."""
    pieces = set(vocab)
    for w in words:
        start = 0
        while start < len(w):
            end = len(w)
            while end > start and (w[start:end] if start == 0 else "##" + w[start:end]) not in pieces:
                end -= 1
            assert end > start, (w, start)
            start = end


def test_trained_vocabulary_covers_its_words_and_matches_tokenizers() -> None:
    texts = stdlib_text(60_000)
    tok = train_wordpiece_tokenizer(texts, 900, show_progress=False)
    assert tok.vocab_size == 900 and len(set(tok.vocab)) == 900
    words = Counter(w for w in "".join(texts).lower().split() if w.isalpha())
    _recount(words, list(tok.vocab))
    assert _split("hug", "##") == ["h", "##u", "##g"]
    hf = HFTokenizer.from_str(json.dumps(tok.to_hf_json()))
    for text in texts[:5] + ["Unaffable HTTPServerError naïve café, 東京!"]:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False).ids
    assert tok.unk_id not in tok.encode(texts[0])
