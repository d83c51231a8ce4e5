"""Training: the incremental trainer equals the recount-per-merge reference, is deterministic, round-trips to
tiktoken, and compresses as well as Hugging Face's BpeTrainer."""

from __future__ import annotations

import tiktoken

from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.patterns import GPT4, resolve_stages
from lmstack.tokenizer.trainer import merge_word, train_bpe, train_bpe_reference
from tests.tokenizer.texts import VARIED, multilingual_text, stdlib_text


def test_merge_word_is_left_to_right_non_overlapping():
    assert merge_word([1, 1, 1], 1, 1, 9) == [9, 1]
    assert merge_word([1, 1, 1, 1], 1, 1, 9) == [9, 9]
    assert merge_word([2, 1, 2, 1, 2], 1, 2, 9) == [2, 9, 9]


def test_incremental_trainer_equals_recount_reference():
    texts = stdlib_text(30_000) + multilingual_text()
    stages = resolve_stages("gpt4")
    fast = train_bpe(texts, 500, stages, show_progress=False)
    slow = train_bpe_reference(texts, 500, stages)
    assert len(fast) == 500
    assert fast == slow  # same merges in the same order: the tie rule is implemented identically


def test_tie_break_prefers_smallest_pair():
    # "ab" and "cd" both occur 3 times; (97, 98) < (99, 100) so "ab" is merged first, then "cd"
    ranks = train_bpe(["ab cd ab cd ab cd"], 258, resolve_stages(r"regex:\S+"), show_progress=False)
    assert [t for t, r in sorted(ranks.items(), key=lambda kv: kv[1])][256:] == [b"ab", b"cd"]


def test_training_is_deterministic(training_texts):
    a = Tokenizer.train(training_texts, 700, "gpt4", show_progress=False)
    b = Tokenizer.train(iter(training_texts), 700, "gpt4", show_progress=False)  # any iterable, streamed
    assert a.mergeable_ranks == b.mergeable_ranks


def test_trained_tokenizer_matches_tiktoken_built_from_its_ranks(trained):
    ref = tiktoken.Encoding("ours", pat_str=trained.pattern, mergeable_ranks=trained.mergeable_ranks,
                            special_tokens=trained.special_tokens)  # fmt: skip
    for text in VARIED:
        assert trained.encode(text, allowed_special="all") == ref.encode(text, allowed_special="all"), text
        assert trained.encode_ordinary(text) == trained.encode_ordinary(text, fast=False), text
        assert trained.decode(trained.encode(text, disallowed_special=())) == text


def test_special_ids_follow_the_merges(trained):
    assert trained.vocab_size == 1024
    assert trained.special_tokens == {"<|endoftext|>": 1021, "<|im_start|>": 1022, "<|im_end|>": 1023}
    assert trained.eos_id == 1021 and trained.bos_id is None


def test_compression_matches_hf_bpe_trainer_within_1_percent(training_texts):
    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    from lmstack.tokenizer.hf_format import onig_compatible

    vocab = 1024
    ours = Tokenizer.train(training_texts, vocab, "gpt4", show_progress=False)
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(onig_compatible(GPT4)), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    hf.train_from_iterator(training_texts, trainer)
    assert hf.get_vocab_size() == vocab
    seen = set(training_texts)
    held_out = [t for t in stdlib_text(700_000) if t not in seen]  # stdlib files after the training slice
    assert sum(map(len, held_out)) > 100_000
    n_ours = sum(len(ours.encode_ordinary(t)) for t in held_out)
    n_hf = sum(len(e.ids) for e in hf.encode_batch(held_out, add_special_tokens=False))
    assert abs(n_ours - n_hf) / n_hf < 0.01, (n_ours, n_hf)
