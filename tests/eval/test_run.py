"""`lmstack eval` end to end on a tiny model: table, results files, cache hits, contamination via the run's shards."""

from __future__ import annotations

import json

import pytest

from lmstack.cli import main
from lmstack.eval import cache
from lmstack.eval.run import EvalConfig, headline_on


def test_eval_command_writes_results_and_reuses_the_cache(tiny_model_dir, private_cache, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["eval", f"--model={tiny_model_dir}", "--tasks=social_iqa,arithmetic,humaneval", "--limit=3",
            "--max_new_tokens=8", f"--out_dir={out}", "--contamination=none"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| social_iqa | acc |" in printed and "| humaneval | pass@1 |" in printed
    record = json.loads((out / "results.json").read_text())
    assert set(record["tasks"]) == {"social_iqa", "arithmetic", "humaneval"}
    assert record["model"]["fingerprint"] == cache.fingerprint(tiny_model_dir)
    assert len(record["tasks"]["social_iqa"]["items"]) == 3 and (out / "results.md").is_file()
    assert main(args) == 0  # earlier results in --out_dir: rewritten, from the cache
    again = json.loads((out / "results.json").read_text())
    assert all(t["cached"] for t in again["tasks"].values())
    assert again["tasks"]["social_iqa"]["metrics"] == record["tasks"]["social_iqa"]["metrics"]


def test_settings_change_the_cache_key(tiny_model_dir, private_cache) -> None:
    fp = cache.fingerprint(tiny_model_dir)
    assert cache.entry_path(fp, "mmlu", {"limit": 3}) != cache.entry_path(fp, "mmlu", {"limit": 4})
    cache.store(fp, "mmlu", {"limit": 3}, {"task": "mmlu", "metrics": {"acc": 0.5}})
    assert cache.load(fp, "mmlu", {"limit": 3})["metrics"] == {"acc": 0.5}
    assert cache.load(fp, "mmlu", {"limit": 4}) is None
    assert [r["task"] for r in cache.all_results(fp)] == ["mmlu"]


def test_fingerprint_follows_the_weights(tiny_tok, tmp_path, private_cache) -> None:
    from .conftest import save_tiny_model

    a = save_tiny_model(tmp_path / "a", tiny_tok, seed=0)
    b = save_tiny_model(tmp_path / "b", tiny_tok, seed=0)
    c = save_tiny_model(tmp_path / "c", tiny_tok, seed=1)
    assert cache.fingerprint(a) == cache.fingerprint(b) != cache.fingerprint(c)  # a copy keeps its cache


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="unknown \\['hellaswag'\\]"):
        EvalConfig(tasks="social_iqa,hellaswag")
    with pytest.raises(ValueError, match="--sandbox"):
        EvalConfig(sandbox="docker")


def test_headline_on_subsets() -> None:
    recs = [{"correct": 1.0, "correct_norm": 0.0, "n": 2, "passed": 1}, {"correct": 0.0, "correct_norm": 0.0, "n": 2,
            "passed": 2}]  # fmt: skip
    assert headline_on("acc", recs) == 0.5 and headline_on("acc_norm", recs) == 0.0
    assert headline_on("pass@1", recs) == pytest.approx(0.75)
