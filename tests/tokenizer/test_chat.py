"""ChatML rendering: ids equal transformers' apply_chat_template with our saved template; the loss mask is 1
exactly on assistant content and its <|im_end|>."""

from __future__ import annotations

import pytest

from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.chat import render_chat_text

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "42."},
    {"role": "user", "content": "Und auf Deutsch? 日本語も"},
    {"role": "assistant", "content": "\nZweiundvierzig 😀"},
]


def test_mask_is_one_exactly_on_assistant_content_and_end(trained: Tokenizer):
    ids, mask = trained.render_chat(MESSAGES)
    assert len(ids) == len(mask)
    learned = trained.decode([i for i, m in zip(ids, mask) if m])
    im_end = trained.special_tokens["<|im_end|>"]
    # content "\nZweiundvierzig" may share a "\n\n" token with its header's newline: that token counts as content
    assert learned in ("42.<|im_end|>\nZweiundvierzig 😀<|im_end|>", "42.<|im_end|>\n\nZweiundvierzig 😀<|im_end|>")
    assert learned.count("<|im_end|>") == 2
    # every <|im_end|> closing an assistant turn is learned, the others are not
    ends = [m for i, m in zip(ids, mask) if i == im_end]
    assert ends == [0, 0, 1, 0, 1]
    assert trained.decode(ids) == render_chat_text(MESSAGES)
    assert ids == trained.encode(render_chat_text(MESSAGES), allowed_special="all")


def test_generation_prompt_is_unmasked(trained: Tokenizer):
    ids, mask = trained.render_chat(MESSAGES[:2], add_generation_prompt=True)
    assert trained.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert sum(mask) == 0


def test_matches_transformers_apply_chat_template(trained: Tokenizer, tmp_path):
    from transformers import PreTrainedTokenizerFast

    trained.save(tmp_path)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    for gen in (False, True):
        ours, _ = trained.render_chat(MESSAGES, add_generation_prompt=gen)
        text = hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=gen)
        assert text == render_chat_text(MESSAGES, add_generation_prompt=gen)
        theirs = hf.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=gen)
        theirs = theirs["input_ids"] if hasattr(theirs, "keys") else theirs
        assert list(theirs) == ours
    assert hf.eos_token == "<|endoftext|>"
    assert trained.chat_template == Tokenizer.load(tmp_path).chat_template == hf.chat_template


def test_bad_messages_and_missing_tokens_are_clear_errors(trained: Tokenizer, gpt2_ranks):
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        trained.render_chat([{"content": "no role"}])
    with pytest.raises(ValueError, match="im_start"):
        Tokenizer.from_tiktoken(gpt2_ranks, "gpt2", {}).render_chat(MESSAGES)
