"""BLEU equals sacrebleu (corpus and sentence level, one and several references, both smoothings) on varied text."""

from __future__ import annotations

import random

import pytest
import sacrebleu

from lmstack.eval.bleu import corpus_bleu, sentence_bleu, tokenize_13a

WORDS = ("the a cat dog sat on mat quickly 3.5 1,000 co-operate e-mail (test) [x] {y} 'quote' \"dq\" , . ! ? ; : "
         "-- 12-3 &amp; &lt;tag&gt; naïve café 東京 don't U.S.A. $5 50% x/y a+b").split()  # fmt: skip


def random_sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 25))) for _ in range(n)]


@pytest.mark.parametrize("line", ["Hello, world (2.5-3)!", "3.14, 1,000 and 12-3", "a-\nb\nc", "&quot;x&quot; &amp; y",
                                  "<skipped> e-mail: a@b.com", "", "  spaced   out  ", "naïve café 東京!"])  # fmt: skip
def test_matches_sacrebleu_13a_tokenizer(line: str) -> None:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    assert " ".join(tokenize_13a(line)) == Tokenizer13a()(line)


@pytest.mark.parametrize("smooth", ["exp", "none"])
@pytest.mark.parametrize("n_refs", [1, 3])
def test_matches_sacrebleu_corpus_bleu(smooth: str, n_refs: int) -> None:
    hyps = random_sentences(60, seed=1)
    refs = [[h if random.Random(k * 100 + i).random() < 0.3 else r for i, (h, r) in
             enumerate(zip(hyps, random_sentences(60, seed=10 + k)))] for k in range(n_refs)]  # fmt: skip
    ours = corpus_bleu(hyps, refs, smooth=smooth)
    ref = sacrebleu.corpus_bleu(hyps, refs, smooth_method=smooth)
    assert ours.score == pytest.approx(ref.score, abs=1e-9)
    assert ours.bp == pytest.approx(ref.bp, abs=1e-12)
    assert (ours.sys_len, ours.ref_len) == (ref.sys_len, ref.ref_len)
    assert ours.matches == ref.counts and ours.totals == ref.totals


def test_matches_sacrebleu_sentence_bleu() -> None:
    hyps, refs = random_sentences(80, seed=3), random_sentences(80, seed=4)
    for h, r in zip(hyps, refs):
        mixed = " ".join(h.split()[: len(h.split()) // 2] + r.split())  # partial overlap: every order can match
        assert sentence_bleu(mixed, [r]).score == pytest.approx(sacrebleu.sentence_bleu(mixed, [r]).score, abs=1e-9)


def test_identical_corpus_scores_100_and_empty_hypothesis_0() -> None:
    sents = ["the cat sat on the mat today", "a dog ran in the park quickly"]
    assert corpus_bleu(sents, [sents]).score == pytest.approx(100.0)
    assert corpus_bleu(["", ""], [sents]).score == 0.0


def test_mismatched_reference_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="references\\[0\\] has 1 segments"):
        corpus_bleu(["a", "b"], [["a"]])
