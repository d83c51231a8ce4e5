"""The `train-tokenizer` recipe and the `tokenize` command, run through the CLI table on tiny inputs."""

from __future__ import annotations

import json

from lmstack.cli import main
from lmstack.tokenizer import Tokenizer
from tests.tokenizer.texts import VARIED, stdlib_text


def test_train_tokenizer_recipe_on_input_files(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for k, text in enumerate(stdlib_text(80_000)):
        (corpus / f"doc{k}.txt").write_text(text)
    (corpus / "more.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in VARIED) + "\n")
    out = tmp_path / "tok"
    args = ["train-tokenizer", f"--input={corpus}", "--vocab_size=600", f"--out_dir={out}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "bytes/token" in printed and "gpt2" in printed and "cl100k" in printed and "sample (" in printed
    tok = Tokenizer.load(out)
    assert tok.vocab_size == 600 and tok.eos_id == tok.special_tokens["<|endoftext|>"] == 597
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats) == {"ours", "gpt2", "cl100k (GPT-4)"} and 1.5 < stats["ours"]["bytes_per_token"] < 6
    first = (out / "tokenizer.json").stat().st_mtime_ns
    assert main(args) == 0  # same config: reused, not retrained
    assert (out / "tokenizer.json").stat().st_mtime_ns == first


def test_train_tokenizer_rejects_bad_config(tmp_path, capsys):
    assert main(["train-tokenizer", "--vocab_size=100", f"--out_dir={tmp_path}"]) == 2
    assert "--vocab_size=100" in capsys.readouterr().err
    assert main(["train-tokenizer", f"--input={tmp_path / 'missing.txt'}", f"--out_dir={tmp_path}"]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_tokenize_command_shows_pieces_and_ids(trained, tmp_path, capsys):
    trained.save(tmp_path)
    assert main(["tokenize", f"--tokenizer={tmp_path}", "Hello world <|im_end|>"]) == 0
    out = capsys.readouterr().out
    ids = trained.encode("Hello world <|im_end|>", allowed_special="all")
    assert f"ids: {ids}" in out and "'<|im_end|>'" in out
    assert main(["tokenize", "--tokenizer=gpt2", "Hello world"]) == 0
    assert "ids: [15496, 995]" in capsys.readouterr().out


def test_train_tokenizer_unigram(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(stdlib_text(15_000)))
    out = tmp_path / "uni"
    args = ["train-tokenizer", f"--input={corpus}", "--model=unigram", "--vocab_size=400", f"--out_dir={out}",
            "--baselines=false"]  # fmt: skip
    assert main(args) == 0
    assert "unigram" in capsys.readouterr().out
    from lmstack.tokenizer.unigram import UnigramTokenizer

    tok = Tokenizer.load(out)
    assert isinstance(tok, UnigramTokenizer) and tok.vocab_size == 400
    assert tok.special_tokens["<|endoftext|>"] == 1 and (out / "tokenizer.model").is_file()
    stats = json.loads((out / "stats.json").read_text())
    assert 1.2 < stats["ours"]["bytes_per_token"] < 6  # 140 learned pieces on 15 kB: a smoke test


def test_train_tokenizer_wordpiece(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(stdlib_text(40_000)))
    out = tmp_path / "wp"
    args = ["train-tokenizer", f"--input={corpus}", "--model=wordpiece", "--vocab_size=700", f"--out_dir={out}",
            "--baselines=false"]  # fmt: skip
    assert main(args) == 0
    assert "##" in capsys.readouterr().out  # the sample line shows continuation pieces
    from lmstack.tokenizer import WordPieceTokenizer

    tok = Tokenizer.load(out)
    assert isinstance(tok, WordPieceTokenizer) and tok.vocab_size == 700 and tok.cls_id == 2
