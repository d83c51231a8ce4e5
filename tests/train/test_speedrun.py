"""The speedrun end to end on a tiny config (the whole pipeline in seconds), and every shipped config loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmstack.common.config import ConfigError, load_config
from lmstack.train.speedrun import SpeedrunConfig, main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["speedrun_cpu.yaml", "speedrun_gpu.yaml", "tiny.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(SpeedrunConfig, [str(CONFIGS / name)])
    assert cfg.corpus == "shakespeare"


def test_bad_speedrun_value_names_the_flag():
    with pytest.raises(ConfigError, match="--vocab_size"):
        load_config(SpeedrunConfig, [str(CONFIGS / "tiny.yaml"), "--vocab_size=100"])
    with pytest.raises(ConfigError, match="--batch_size"):
        load_config(SpeedrunConfig, [str(CONFIGS / "tiny.yaml"), "--batch_size=-1"])


def test_tiny_speedrun_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config(SpeedrunConfig, [str(CONFIGS / "tiny.yaml"), f"--out_dir={out}"])
    assert main(cfg) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("val_bpb", "val_loss", "params", "tokens_seen", "tokens_per_s", "wall_s", "train_s"):
        assert isinstance(report[key], (int, float)) and report[key] > 0, key
    assert report["tokens_seen"] == 120 * 8 * 64
    # it learned: far below the same network untrained (~5.9), and below a unigram model of the training tokens
    # (~4.4), so it uses context, not just token frequencies
    untrained, unigram = untrained_bpb(out), unigram_bpb(out)
    assert report["val_bpb"] < min(0.75 * untrained, unigram - 0.1), (report["val_bpb"], untrained, unigram)
    assert report["tokenizer"]["vocab_size"] == 300 and len(report["samples"]) == 2
    assert report["data"]["val_documents"] == 5  # shakespeare's fixed split: files 0, 10, 20, 30, 40
    md = (out / "report.md").read_text()
    assert "val_bpb" in md and "![loss curve](loss.png)" in md
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "val_bpb=" in capsys.readouterr().out
    # a second run refuses to clobber the first without --overwrite; --overwrite removes only the run's own files
    with pytest.raises(ValueError, match="--overwrite"):
        main(cfg)
    (out / "notes.txt").write_text("mine")
    assert (
        main(
            load_config(
                SpeedrunConfig,
                [str(CONFIGS / "tiny.yaml"), f"--out_dir={out}", "--overwrite", "--max_steps=2", "--n_samples=1"],
            )
        )
        == 0
    )
    assert (out / "notes.txt").read_text() == "mine"


def untrained_bpb(out: Path) -> float:
    """Bits per byte of the same network at its initialization, on the same validation shards."""
    import torch

    from lmstack.data.shards import ShardDataset
    from lmstack.model import Transformer
    from lmstack.train.evaluate import evaluate

    trained = Transformer.from_pretrained(out / "checkpoint")
    torch.manual_seed(1337)
    model = Transformer(trained.config).eval()
    val = ShardDataset(out / "data", "val")
    return evaluate(model, val.tokens, val.n_bytes, 64, 64, "cpu")["val_bpb"]


def unigram_bpb(out: Path) -> float:
    """Bits per byte of token frequencies counted on the training shard (add-one smoothed)."""
    import math

    import numpy as np

    from lmstack.data.shards import ShardDataset

    train, val = ShardDataset(out / "data", "train"), ShardDataset(out / "data", "val")
    counts = np.bincount(train.tokens, minlength=int(train.manifest["vocab_size"])) + 1
    nll = -np.log(counts / counts.sum())[val.tokens[1:]].sum()
    return float(nll / (math.log(2) * val.n_bytes))


def test_tokenizer_never_sees_validation_text(tmp_path, monkeypatch):
    from lmstack.data.corpus import load_corpus
    from lmstack.tokenizer import Tokenizer
    from lmstack.train import corpus_shards

    seen: list[str] = []
    real_train = Tokenizer.train

    def spy(texts, *args, **kwargs):
        seen.extend(texts)
        return real_train(texts, *args, **kwargs)

    monkeypatch.setattr(Tokenizer, "train", spy)
    corpus_shards.corpus_shards("shakespeare", 260, "gpt4", tmp_path, tokenizer_max_chars=0)
    val = load_corpus("shakespeare", "val")
    assert seen == load_corpus("shakespeare", "train")
    text = "\n".join(seen)
    assert not any(doc[1000:1200] in text for doc in val)  # no validation passage reached the trainer
