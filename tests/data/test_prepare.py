"""`lmstack prepare-data` end to end on user files and on the default corpus, with a real tokenizer."""

from __future__ import annotations

import json

import pytest

from lmstack.cli import main as cli_main
from lmstack.common.config import ConfigError, load_config
from lmstack.common.log import read_jsonl
from lmstack.data.corpus import load_corpus
from lmstack.data.prepare import PrepareConfig, main
from lmstack.data.shards import ShardDataset

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from lmstack.tokenizer import Tokenizer

    path = tmp_path_factory.mktemp("tok")
    Tokenizer.train(load_corpus("shakespeare", "train")[:2], 400, special_tokens=[EOT]).save(path)
    return path


def test_input_files_dedup_keeps_validation_and_drops_training_copies(tmp_path, tok_dir, capsys):
    plays = load_corpus("shakespeare", "train")[:8]
    docs = [p[:20_000] for p in plays]  # 8 distinct documents
    # rows 0 and 10 are validation; row 8 copies training row 1, row 9 copies validation row 0 (other case
    # and spacing), row 11 is a near copy (3 words changed) of training row 3.
    near = docs[3].replace("the", "thee", 3)
    rows = docs + [docs[1], docs[0].upper().replace(" ", "  "), docs[4][::-1], near]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    out = tmp_path / "shards"
    cfg = PrepareConfig(input=[str(data)], tokenizer=str(tok_dir), out_dir=str(out), workers=1)
    assert main(cfg) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["val"]["documents"] == 2  # rows 0 and 10 both held out whole
    assert manifest["splits"]["train"]["documents"] == 10 - 3
    events = {r["event"]: r for r in read_jsonl(out / "prepare.jsonl")}
    assert events["dedup"]["exact_removed"] == 2 and events["dedup"]["near_removed"] == 1
    from lmstack.tokenizer import Tokenizer

    val = ShardDataset(out, "val")
    assert Tokenizer.load(tok_dir).decode(val.tokens.tolist()) == EOT + docs[0] + EOT + docs[4][::-1]
    assert "train" in capsys.readouterr().out


def test_default_corpus_through_the_cli(tmp_path, tok_dir, capsys):
    out = tmp_path / "sh"
    args = ["prepare-data", f"--tokenizer={tok_dir}", f"--out_dir={out}", "--near_dedup=false"]
    assert cli_main(args) == 0
    val = ShardDataset(out, "val")
    assert val.n_documents == 5 and val.n_bytes == sum(len(d) for d in load_corpus("shakespeare", "val"))
    assert ShardDataset(out, "train").n_documents == 37
    assert "wrote" in capsys.readouterr().out


def test_bad_config_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--near_dup_threshold=1.5"):
        load_config(PrepareConfig, ["--near_dup_threshold=1.5"])
    with pytest.raises(ConfigError, match="--corpus='bible'"):
        load_config(PrepareConfig, ["--corpus=bible"])
    with pytest.raises(ValueError, match="--tokenizer is required"):
        main(PrepareConfig(out_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="no tokenizer.json there"):
        main(PrepareConfig(tokenizer=str(tmp_path), out_dir=str(tmp_path / "o")))
