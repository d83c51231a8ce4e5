"""`lmstack report`: the card of a pretraining run (with its evaluation, contamination flags and decode speed) and
of a later stage that started from it (lineage and deltas)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lmstack.cli import main
from lmstack.eval.lineage import lineage, training_data_dirs
from lmstack.eval.multiple_choice import item_text, load_items

from .test_contamination import filler_docs


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, tiny_tok):
    """A speedrun-shaped run directory: data/ (with a Social IQa item planted), checkpoint/, metrics.jsonl,
    config.yaml, report.json."""
    from lmstack.data.shards import write_shards
    from lmstack.train.pretrain import PretrainConfig, train
    from lmstack.train.report import write_report
    from lmstack.train.speedrun import data_stats, report_figures

    run = tmp_path_factory.mktemp("runs") / "speedrun_tiny"
    docs = filler_docs(40, seed=0)
    docs[5] += " " + item_text("social_iqa", load_items("social_iqa")[1])
    tiny_tok.save(run / "data" / "tokenizer")
    manifest = write_shards(docs, filler_docs(4, seed=1), tiny_tok, run / "data", workers=1)
    from lmstack.model import ModelConfig

    shape = ModelConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, tie_embeddings=True)
    cfg = PretrainConfig(data_dir=str(run / "data"), out_dir=str(run), model=shape, seq_len=32, batch_size=4,
                         max_steps=6, eval_every=3, eval_tokens=256, log_every=1, sample_tokens=4, threads=1,
                         device="cpu")  # fmt: skip
    result = train(cfg)
    write_report(run, report_figures(result, manifest, 1.0), yaml.safe_load((run / "config.yaml").read_text()),
                 {"data": data_stats(manifest), "samples": [result["sample"]]})  # fmt: skip
    return run


def test_lineage_finds_the_training_shards(pretrain_run) -> None:
    stages = lineage(pretrain_run / "checkpoint")
    assert len(stages) == 1 and stages[0].run_dir == pretrain_run and "report.json" in stages[0].results
    assert training_data_dirs(stages) == [(pretrain_run / "data").resolve()]


def test_report_card_of_a_run_and_a_later_stage(pretrain_run, private_cache, tmp_path, capsys) -> None:
    ckpt = pretrain_run / "checkpoint"
    common = ["--tasks=social_iqa", "--limit=4", "--contamination=auto"]
    assert main(["eval", f"--model={ckpt}", *common, f"--out_dir={tmp_path / 'e1'}"]) == 0
    assert "1/4 flagged" in capsys.readouterr().out  # the planted item, found through the run's config.yaml
    assert main(["report", f"--model={ckpt}", "--speed_tokens=4"]) == 0
    card_dir = pretrain_run / "card"
    md = (card_dir / "card.md").read_text()
    for section in ("## Model", "## Lineage", "## Stage 0: pretraining", "val_bpb", "## Evaluations",
                    "1/4 items flagged", "## Decode speed", "![training curve](stage0_curve.png)"):  # fmt: skip
        assert section in md, section
    assert (card_dir / "stage0_curve.png").stat().st_size > 1000 and (card_dir / "evals.png").is_file()
    card = json.loads((card_dir / "card.json").read_text())
    assert card["speed"]["decode_tokens_per_s"] > 0 and card["evaluations"][0]["task"] == "social_iqa"

    # a later stage: its own run dir, a config naming the base model, a metrics.jsonl and a results file
    ft = tmp_path / "ft_run"
    shutil.copytree(ckpt, ft / "model")
    weights = load_file(ft / "model" / "model.safetensors")
    weights = {k: (v * 1.5 if k.endswith("norm.weight") else v) for k, v in weights.items()}
    save_file(weights, ft / "model" / "model.safetensors", metadata={"format": "pt"})
    (ft / "config.yaml").write_text(yaml.safe_dump({"stage": "finetune", "base_model": str(ckpt), "lr": 1e-4}))
    lines = [{"step": s, "loss": 3 - s / 10} for s in range(5)]
    lines[-1].update(final=True, before_exact_match=0.1, after_exact_match=0.4)  # what sft.py logs last
    (ft / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (ft / "results.json").write_text(json.dumps({"final": {"train_loss": 2.6}, "samples": ["x"]}))
    assert main(["eval", f"--model={ft / 'model'}", *common, f"--out_dir={tmp_path / 'e2'}"]) == 0
    assert main(["report", f"--model={ft / 'model'}", "--speed=false"]) == 0
    md = (ft / "card" / "card.md").read_text()
    assert "| 1 | pretraining |" in md and "## Stage 0: finetune" in md and "final.train_loss" in md
    assert "## Deltas against the model each stage started from" in md and "## Decode speed" not in md
    assert "| exact_match | 0.1 | 0.4 | +0.3 |" in md
    card = json.loads((ft / "card" / "card.json").read_text())
    assert [d["task"] for d in card["deltas"]] == ["social_iqa"] and (ft / "card" / "stage0_curve.png").is_file()


def test_report_needs_a_model() -> None:
    from lmstack.eval.report_card import ReportConfig

    with pytest.raises(ValueError, match="--model is required"):
        ReportConfig()
    torch.manual_seed(0)


def test_relative_config_paths_resolve_from_the_run_dirs_ancestors(tmp_path, monkeypatch) -> None:
    from lmstack.eval.lineage import resolve_path

    run = tmp_path / "work" / "runs" / "speedrun"
    (run / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # the run was launched from tmp_path/work, we are elsewhere now
    assert resolve_path("runs/speedrun/data", run) == (run / "data").resolve()
    assert resolve_path("runs/elsewhere/data", run) is None
