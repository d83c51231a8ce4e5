"""Unigram tokenizer: lattice algorithms against brute force, encode parity with sentencepiece and HF `tokenizers`
on the same pieces and scores, file round trips, and training compared with sentencepiece's trainer."""

from __future__ import annotations

import io
import itertools
import math
import random
from collections import Counter

import pytest
import sentencepiece as spm
from tokenizers import Tokenizer as HFTokenizer

from lmstack.data.corpus import load_corpus
from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.lattice import build_lattice, make_trie, marginals, sample, viterbi
from lmstack.tokenizer.unigram import UnigramTokenizer
from lmstack.tokenizer.unigram_format import from_sentencepiece, to_hf_json, to_sentencepiece
from lmstack.tokenizer.unigram_trainer import digamma
from tests.tokenizer.texts import VARIED

# texts without sentencepiece's control-piece spellings (HF matches added tokens inside text; we raise)
TEXTS = [t for t in VARIED if "<s>" not in t and "</s>" not in t and "<unk>" not in t] + [" lead", "x  y  ", "\u2581"]
TOY = {"a": -2.0, "b": -2.5, "ab": -3.0, "ba": -3.2, "aba": -4.5, "bab": -5.0, "c": -4.0}


def _train_text(chars: int) -> list[str]:
    return [t for t in "".join(load_corpus("shakespeare", "train"))[:chars].split("\n") if t]


def _spm(texts: list[str], vocab: int, byte_fallback: bool) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab, model_type="unigram",
        normalization_rule_name="identity", remove_extra_whitespaces=False, byte_fallback=byte_fallback,
        split_by_unicode_script=False, split_by_number=False, num_threads=1, minloglevel=2,
    )  # fmt: skip
    return model.getvalue()


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _train_text(120_000)


@pytest.fixture(scope="module")
def ours(corpus: list[str]) -> UnigramTokenizer:
    return UnigramTokenizer.train(corpus, 700, show_progress=False)


def _segmentations(word: str) -> list[tuple[list[str], float]]:
    """Every segmentation of `word` into TOY pieces with its score (brute force)."""
    out = []
    for cuts in itertools.product([0, 1], repeat=len(word) - 1):
        parts, start = [], 0
        for k, c in enumerate(cuts, start=1):
            if c:
                parts.append(word[start:k])
                start = k
        parts.append(word[start:])
        if all(p in TOY for p in parts):
            out.append((parts, sum(TOY[p] for p in parts)))
    return out


def _toy_edges(word: str) -> list:
    return build_lattice(word, make_trie({p: (i, s) for i, (p, s) in enumerate(TOY.items())}), -20.0)


@pytest.mark.parametrize("word", ["ababab", "abcab", "babab", "aabba"])
def test_lattice_viterbi_marginals_and_sampling_match_brute_force(word: str) -> None:
    names = list(TOY)
    segs = _segmentations(word)
    edges = _toy_edges(word)
    best = viterbi(edges)
    assert [names[i] for _, i, _ in best] == max(segs, key=lambda s: s[1])[0]
    log_z, marg = marginals(edges)
    z = sum(math.exp(s) for _, s in segs)
    assert log_z == pytest.approx(math.log(z), rel=1e-12)
    expected: Counter[str] = Counter()
    for parts, s in segs:
        for p in parts:
            expected[p] += math.exp(s) / z
    got: Counter[str] = Counter()
    for i, m in marg:
        got[names[i]] += m
    assert {p: pytest.approx(v, abs=1e-12) for p, v in expected.items()} == {p: v for p, v in got.items() if v > 0}
    theta, rng, n = 0.5, random.Random(0), 4000  # sampling: P(seg) ~ exp(theta * score)
    exact = {tuple(p): math.exp(theta * s) for p, s in segs}
    total = sum(exact.values())
    drawn = Counter(tuple(names[i] for _, i, _ in sample(edges, theta, rng)) for _ in range(n))
    tv = 0.5 * sum(abs(drawn[k] / n - v / total) for k, v in exact.items())
    assert tv < 0.04, f"total variation {tv:.3f} between sampled and exact segmentation frequencies"


def test_digamma_known_values() -> None:
    assert digamma(1.0) == pytest.approx(-0.5772156649015329, abs=1e-10)
    assert digamma(0.5) == pytest.approx(-1.9635100260214235, abs=1e-10)
    assert digamma(100.0) == pytest.approx(4.600161852738087, abs=1e-10)


@pytest.mark.parametrize("byte_fallback", [True, False], ids=["byte-fallback", "unk"])
def test_matches_sentencepiece_on_its_own_pieces(corpus: list[str], byte_fallback: bool) -> None:
    proto = _spm(corpus, 450, byte_fallback)
    sp = spm.SentencePieceProcessor(model_proto=proto)
    tok = from_sentencepiece(proto, "spm")  # our reader of the .model protobuf
    assert tok.pieces == [(sp.id_to_piece(i), pytest.approx(sp.get_score(i))) for i in range(sp.get_piece_size())]
    for text in TEXTS:
        ids = tok.encode(text, disallowed_special=())
        assert ids == sp.encode(text), text
        assert tok.decode(ids) == sp.decode(ids)
        if byte_fallback:  # every text comes back, except that a literal "▁" decodes as a space (as in spm)
            assert tok.decode(ids) == text.replace("\u2581", " ")


def test_matches_hf_tokenizers_and_sentencepiece_on_our_pieces(ours: UnigramTokenizer) -> None:
    hf = HFTokenizer.from_str(__import__("json").dumps(to_hf_json(ours)))
    sp = spm.SentencePieceProcessor(model_proto=to_sentencepiece(ours))
    for text in TEXTS:
        ids = ours.encode(text, disallowed_special=())
        assert ids == hf.encode(text, add_special_tokens=False).ids, text
        assert ids == sp.encode(text), text
        assert ours.decode(ids) == hf.decode(ids) == sp.decode(ids) == text.replace("\u2581", " ")


def test_round_trip_every_edge_string(ours: UnigramTokenizer, edge_strings: list[str]) -> None:
    for text in edge_strings + ["\ud800 lone surrogate"]:
        expect = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        assert ours.decode(ours.encode(text, disallowed_special=())) == expect


def test_special_tokens_and_save_load(ours: UnigramTokenizer, tmp_path) -> None:
    assert ours.encode("<s>hi</s>", allowed_special="all")[0] == ours.bos_id == 1
    assert ours.encode("<s>hi</s>", allowed_special="all")[-1] == ours.eos_id == 2
    with pytest.raises(ValueError, match="special token"):
        ours.encode("<s>")
    ours.save(tmp_path)
    for loaded in (Tokenizer.load(tmp_path), UnigramTokenizer.load(tmp_path / "tokenizer.model")):
        assert isinstance(loaded, UnigramTokenizer)
        assert loaded.pieces == [(p, pytest.approx(s, rel=1e-6)) for p, s in ours.pieces]
        assert loaded.encode(TEXTS[4]) == ours.encode(TEXTS[4])
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf(TEXTS[4], add_special_tokens=False)["input_ids"] == ours.encode(TEXTS[4])


def test_subword_regularization_varies_and_decodes(ours: UnigramTokenizer) -> None:
    text = "Shall I compare thee to a summer's day?"
    draws = {tuple(ours.sample_encode(text, theta=0.2, seed=s)) for s in range(20)}
    assert len(draws) > 5
    assert all(ours.decode(list(d)) == text for d in draws)
    assert ours.sample_encode(text, theta=50.0, seed=1) == ours.encode(text)  # a high theta concentrates on Viterbi


def _likelihood_and_compression(tok: UnigramTokenizer, texts: list[str]) -> tuple[float, float]:
    """(nats per byte of the corpus under the model's own unigram probabilities, bytes per token)."""
    n_bytes = sum(len(t.encode()) for t in texts)
    log_z = sum(marginals(build_lattice(w, tok._trie, tok._unk_score))[0]
                for t in texts for w in tok._words(tok.normalize(t)))  # fmt: skip
    return log_z / n_bytes, n_bytes / sum(len(tok.encode(t)) for t in texts)


def test_training_is_on_par_with_sentencepiece(corpus: list[str], ours: UnigramTokenizer) -> None:
    val = [t for t in "".join(load_corpus("shakespeare", "val"))[:60_000].split("\n") if t]
    theirs = from_sentencepiece(_spm(corpus, 700, True), "spm")
    ll_ours, bpt_ours = _likelihood_and_compression(ours, val)
    ll_spm, bpt_spm = _likelihood_and_compression(theirs, val)
    assert bpt_ours > 0.97 * bpt_spm, (bpt_ours, bpt_spm)
    assert ll_ours > ll_spm - 0.05, (ll_ours, ll_spm)
    shared = {p for p, _ in ours.pieces} & {p for p, _ in theirs.pieces}
    assert len(shared) > 0.7 * ours.vocab_size
