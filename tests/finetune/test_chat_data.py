"""SFT records: formats, errors naming file and line, skip counts, rendering and masks with and without ChatML."""

from __future__ import annotations

import json

import pytest

from lmstack.finetune.chat_data import prompt_and_answer, read_jsonl, render_all, render_example
from tests.finetune.tiny import tiny_base


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    from lmstack.tokenizer import Tokenizer

    d = tmp_path_factory.mktemp("tok")
    return Tokenizer.load(tiny_base(d / "chatml")), Tokenizer.load(tiny_base(d / "plain", chatml=False))


def write(tmp_path, lines: list[str]):
    p = tmp_path / "data.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


GOOD = json.dumps({"messages": [{"role": "user", "content": "1 + 2 ="}, {"role": "assistant", "content": "3"}]})
ALPACA = json.dumps({"instruction": "Add.", "input": "1 + 2", "output": "3"})


def test_reads_both_formats(tmp_path):
    convs, skipped = read_jsonl(write(tmp_path, [GOOD, "", ALPACA]))
    assert skipped == 0 and len(convs) == 2
    assert convs[1] == [{"role": "user", "content": "Add.\n\n1 + 2"}, {"role": "assistant", "content": "3"}]


@pytest.mark.parametrize(
    "bad, why",
    [
        ("{not json", "Expecting"),
        (json.dumps({"messages": []}), "non-empty"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "no assistant"),
        (json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), "role"),
        (json.dumps({"prompt": "x"}), "expected a 'messages' list"),
        (json.dumps({"instruction": "x", "output": 3}), "'output' must be a string"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, why):
    path = write(tmp_path, [GOOD, bad, GOOD])
    with pytest.raises(ValueError, match=why) as e:
        read_jsonl(path)
    assert f"{path}:2:" in str(e.value)
    convs, skipped = read_jsonl(path, skip_invalid=True)
    assert (len(convs), skipped) == (2, 1)


def test_missing_file_and_empty_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data"):
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no valid record"):
        read_jsonl(write(tmp_path, [""]))


def test_chatml_mask_is_assistant_content_and_end(toks):
    tok = toks[0]
    msgs = json.loads(GOOD)["messages"]
    r = render_example(tok, msgs)
    learned = [i for i, m in zip(r.ids, r.mask) if m]
    assert tok.decode(learned) == "3<|im_end|>"
    prompt, answer = prompt_and_answer(tok, msgs)
    assert prompt + answer == r.ids[: len(prompt) + len(answer)]
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")


def test_plain_transcript_for_tokenizers_without_chatml(toks):
    tok = toks[1]
    r = render_example(tok, json.loads(GOOD)["messages"])
    assert tok.decode(r.ids) == "User: 1 + 2 =\nAssistant: 3<|endoftext|>"
    assert tok.decode([i for i, m in zip(r.ids, r.mask) if m]) == " 3<|endoftext|>"


def test_truncation_counted(toks):
    long = [{"role": "user", "content": "1 + 2 = " * 30}, {"role": "assistant", "content": "3"}]
    out, counts = render_all(toks[0], [long, json.loads(GOOD)["messages"]], max_len=20)
    assert counts == {"truncated": 1, "dropped": 1} and len(out) == 1
