"""`lmstack generate` and `lmstack chat` on a tiny saved model with a trained tokenizer."""

from __future__ import annotations

import json

import pytest

from lmstack.cli import main
from lmstack.generate.chat import ChatConfig, chat_turn, fit_history
from lmstack.generate.chat import main as chat_main
from lmstack.generate.params import SamplingParams
from lmstack.model import load_model
from lmstack.tokenizer import Tokenizer
from lmstack.tokenizer.chat import render_prompt, template_system_prompt

TEXT = "the quick brown fox jumps over the lazy dog. " * 20 + 'é 你好 😀 {"a": [1, 2]} 0123456789'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer.train([TEXT], 300, special_tokens=specials, show_progress=False)
    model = tiny_model(n_layers=1, vocab_size=tok.vocab_size, max_seq_len=96, eos_token_id=tok.eos_id)
    path = tmp_path_factory.mktemp("tiny")
    model.save_pretrained(path, tokenizer=tok)
    return path


def test_generate_command_streams_text(model_dir, capsys):
    assert (
        main(
            ["generate", "the quick", f"--model={model_dir}", "--sampling.temperature=0", "--sampling.max_new_tokens=5"]
        )
        == 0
    )
    a = capsys.readouterr().out
    assert (
        main(
            ["generate", "the quick", f"--model={model_dir}", "--sampling.temperature=0", "--sampling.max_new_tokens=5"]
        )
        == 0
    )
    assert capsys.readouterr().out == a and a.endswith("\n")


def test_generate_command_json_schema_and_stats(model_dir, tmp_path, capsys):
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}))
    args = ["generate", "x", f"--model={model_dir}", f"--sampling.json_schema={schema}", "--sampling.max_new_tokens=30",
            "--sampling.seed=0"]  # fmt: skip
    assert main([*args, "--print_stats", "--sampling.n=2"]) == 0
    cap = capsys.readouterr()
    outs = [block.split("\n", 1)[1].strip() for block in cap.out.split("--- ")[1:]]
    assert len(outs) == 2 and all(isinstance(json.loads(o)["n"], int) for o in outs)
    assert json.loads(cap.err.strip().splitlines()[-1])["new_tokens"] > 0


def test_generate_command_bad_flags_name_the_field(model_dir, capsys):
    assert main(["generate", "x", f"--model={model_dir}", "--sampling.top_p=0"]) == 2
    assert "--sampling: top_p=0.0" in capsys.readouterr().err
    assert main(["generate", "x", "--sampling.json_schema=/nonexistent.json"]) == 2
    assert "--sampling.json_schema" in capsys.readouterr().err
    assert main(["generate", "x", "--top_p=0.5"]) == 2  # a typo'd or flat flag names the real one
    assert "did you mean 'sampling.top_p'" in capsys.readouterr().err


def test_every_sampling_field_has_a_flag(model_dir, capsys):
    """The flags come from the dataclass: none can be missing (six were, before the section existed)."""
    from dataclasses import fields

    assert main(["generate", "--help"]) == 0
    text = capsys.readouterr().out
    missing = [f.name for f in fields(SamplingParams) if f"--sampling.{f.name} " not in text]
    assert not missing
    args = ["generate", "the", f"--model={model_dir}", "--sampling.temperature=0", "--sampling.max_new_tokens=4",
            '--sampling.logit_bias={"5": -100}', "--sampling.bad_words_ids=[[7, 8]]", "--sampling.stop_token_ids=2,3",
            "--sampling.ignore_eos", "--sampling.early_stopping=never", "--sampling.prompt_lookup_max_ngram=2",
            "--print-config"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    for text in ("logit_bias:\n    5: -100.0", "- - 7\n    - 8", "ignore_eos: true", "early_stopping: never"):
        assert text in printed, text


def test_incomplete_constrained_output_is_flagged(model_dir, capsys):
    # 2 tokens cannot hold a JSON object with a required integer: the command says so and exits non-zero
    schema = '{"type": "object", "properties": {"number": {"type": "integer"}}, "required": ["number"]}'
    args = ["generate", "x", f"--model={model_dir}", f"--sampling.json_schema={schema}", "--sampling.max_new_tokens=2"]
    assert main(args) == 1
    assert "incomplete" in capsys.readouterr().err


def test_fit_history_drops_oldest_turns_keeps_system(model_dir):
    _, tok = load_model(str(model_dir))
    msgs = [{"role": "system", "content": "be brief"}]
    for i in range(6):
        msgs.append({"role": "user", "content": f"question {i} the quick brown fox"})
        msgs.append({"role": "assistant", "content": "ok"})
    msgs.append({"role": "user", "content": "last one"})
    full = len(tok.render_chat(msgs, add_generation_prompt=True)[0])
    kept, ids = fit_history(tok, msgs, full - 1)
    assert kept[0]["role"] == "system" and kept[1]["role"] == "user" and kept[-1]["content"] == "last one"
    assert len(kept) < len(msgs) and len(ids) <= full - 1
    assert ids == tok.render_chat(kept, add_generation_prompt=True)[0]
    with pytest.raises(ValueError, match="context window"):
        fit_history(tok, msgs, 5)


def test_chat_turn_streams_and_appends_reply(model_dir):
    model, tok = load_model(str(model_dir))
    chunks: list[str] = []
    params = SamplingParams(max_new_tokens=8, temperature=0, stop_token_ids=[tok.special_tokens["<|im_end|>"]])
    msgs, reply = chat_turn(model, tok, [{"role": "user", "content": "hi"}], params, 96, chunks.append)
    assert "".join(chunks).strip() == reply and msgs[-1] == {"role": "assistant", "content": reply}


def test_chat_main_reads_stdin(model_dir, monkeypatch, capsys):
    lines = iter(["hello", "/reset", "", "again", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert (
        chat_main(
            ChatConfig(model=str(model_dir), sampling=SamplingParams(max_new_tokens=4, temperature=0), context=96)
        )
        == 0
    )
    assert capsys.readouterr().out.count("bot> ") == 2


def test_template_system_prompt_reads_the_chat_template_default():
    class Tok:
        config = {"chat_template": "{{ '<|im_start|>system\nYou are SmolLM.<|im_end|>\n' }}{% for m in messages %}"}

    assert template_system_prompt(Tok()) == "You are SmolLM."
    Tok.config = {}
    assert template_system_prompt(Tok()) == ""


def test_chat_on_a_base_model_uses_a_plain_transcript(tmp_path, monkeypatch, capsys, tiny_model):
    tok = Tokenizer.train([TEXT], 280, special_tokens=["<|endoftext|>"], show_progress=False)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "x"}]
    assert tok.decode(render_prompt(tok, msgs)) == "User: hi\nAssistant: yo\nUser: x\nAssistant:"
    tiny_model(n_layers=1, vocab_size=tok.vocab_size, max_seq_len=96).save_pretrained(tmp_path, tokenizer=tok)
    lines = iter(["hello", "/exit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert (
        chat_main(
            ChatConfig(
                model=str(tmp_path), sampling=SamplingParams(max_new_tokens=6, temperature=1.0, seed=0), context=96
            )
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("bot> ") == 1 and "\nUser:" not in out.split("bot> ")[1]
