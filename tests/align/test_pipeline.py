"""`lmstack pipeline`: pretrain -> sft -> dpo on tiny data, each stage's model feeding the next, one report."""

from __future__ import annotations

import json

import pytest
import yaml

from lmstack.align.pipeline import PipelineConfig, figures, main
from lmstack.common.config import load_config


def write_pipeline(tmp_path, tiny_shards, **dpo_overrides) -> list[str]:
    pretrain = {"data_dir": str(tiny_shards), "model": {"n_layers": 2, "d_model": 32, "n_heads": 4},
                "seq_len": 128, "batch_size": 8, "max_steps": 6, "lr": 3e-3, "eval_every": 0, "eval_tokens": 512,
                "final_eval_tokens": 512, "sample_tokens": 4, "device": "cpu", "threads": 1, "seed": 7}  # fmt: skip
    sft = {"data": "arithmetic", "n_train": 64, "n_eval": 8, "max_len": 64, "batch_size": 8, "max_steps": 6,
           "lr": 3e-3, "forgetting_tokens": 0, "device": "cpu", "threads": 1}  # fmt: skip
    dpo = {"n_train": 16, "n_eval": 8, "max_len": 64, "batch_size": 4, "max_steps": 4, "lr": 1e-3, "eval_every": 0,
           "train_layers": 0, "device": "cpu", "threads": 1, **dpo_overrides}  # fmt: skip
    files = []
    for name, values in (("pretrain", pretrain), ("sft", sft), ("dpo", dpo)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        files.append({"name": name, "config": str(path)})
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump({"out_dir": str(tmp_path / "run"), "stages": files}))
    return [str(cfg)]


def test_pretrain_sft_dpo_in_one_command(tmp_path, tiny_shards):
    argv = write_pipeline(tmp_path, tiny_shards)
    assert main(load_config(PipelineConfig, argv)) == 0
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())["stages"]
    assert [s["name"] for s in report] == ["pretrain", "sft", "dpo"]
    assert report[1]["model"].endswith("2_sft/model") and report[2]["model"].endswith("3_dpo/checkpoint")
    # each stage trained the model the previous one wrote
    assert yaml.safe_load((run / "2_sft" / "config.yaml").read_text())["model"] == report[0]["model"]
    assert yaml.safe_load((run / "3_dpo" / "config.yaml").read_text())["model"] == report[1]["model"]
    md = (run / "report.md").read_text()
    for figure in ("val_bpb", "after_exact_match", "after.pref_accuracy", "before.pref_accuracy"):
        assert figure in md, figure
    assert "![dpo curves.png](3_dpo/curves.png)" in md
    with pytest.raises(ValueError, match="holds a pipeline"):
        main(load_config(PipelineConfig, argv))
    assert main(load_config(PipelineConfig, [*argv, "--resume"])) == 0  # everything finished: nothing to redo


def test_stopped_stage_resumes(tmp_path, tiny_shards):
    """A stage that stops (as if interrupted) stops the pipeline; --resume finishes it from its checkpoint."""
    argv = write_pipeline(tmp_path, tiny_shards)
    cfg = load_config(PipelineConfig, argv)
    cfg.stages = cfg.stages[:1]
    cfg.stages[0]["overrides"] = {"stop_after": 3}
    assert main(cfg) == 0
    assert not (tmp_path / "run" / "pipeline.json").exists()
    cfg.stages[0]["overrides"] = {}
    cfg.resume = True
    assert main(cfg) == 0
    done = json.loads((tmp_path / "run" / "pipeline.json").read_text())["done"]
    assert done[0]["figures"]["steps"] == 6


@pytest.mark.parametrize("stages,match", [
    ([], "at least one stage"),
    ([{"name": "nope"}], "not one of"),
    ([{"name": "dpo", "cfg": "x"}], "expected keys"),
    ([{"name": "dpo", "config": "missing.yaml"}], "no such file"),
    ([{"name": "dpo"}, {"name": "pretrain"}], "only be the first"),
    ([{"name": "reward"}, {"name": "dpo"}], "put reward last"),
])  # fmt: skip
def test_bad_pipelines_are_refused(stages, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        PipelineConfig(stages=stages)


def test_figures_flatten_nested_results():
    assert figures({"before": {"a": 1.0}, "steps": 3, "ok": True, "s": "x", "config": {"lr": 1}}) == {
        "before.a": 1.0, "steps": 3}  # fmt: skip
