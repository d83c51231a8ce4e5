"""Bad evaluation input is one line naming the flag or value (exit 2); a failing environment is one line (exit 1)."""

from __future__ import annotations

import pytest

from lmstack.cli import main
from lmstack.eval import sandbox


@pytest.mark.parametrize("args, match", [
    (["--tasks=social_iqa,hellaswag"], "unknown \\['hellaswag'\\]; choose from social_iqa"),
    (["--tasks="], "unknown empty"),
    (["--limit=-1"], "--limit=-1: expected >= 0"),
    (["--sandbox=docker"], "--sandbox='docker'"),
    (["--humaneval_samples=0"], "--humaneval_samples=0"),
    (["--model=/no/such/model"], "--model /no/such/model: not a model directory"),
])  # fmt: skip
def test_eval_rejects_bad_flags(args: list[str], match: str, capsys) -> None:
    import re

    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.count("\n") == 1 and "Traceback" not in err


def test_out_dir_that_is_not_ours_needs_overwrite(tiny_model_dir, tmp_path, private_cache, capsys) -> None:
    busy = tmp_path / "project"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    args = ["eval", f"--model={tiny_model_dir}", "--tasks=quartz", "--limit=2", f"--out_dir={busy}"]
    assert main(args) == 2 and "holds no earlier results" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt", "results.json", "results.md"]
    assert main(args) == 0  # earlier results: rewritten without asking, like any lmstack save
    assert (busy / "notes.txt").read_text() == "mine"


def test_report_out_dir_that_is_not_ours_needs_overwrite(tiny_model_dir, tmp_path, private_cache, capsys) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("mine")
    assert main(["report", f"--model={tiny_model_dir}", f"--out_dir={busy}", "--speed=false"]) == 2
    assert "holds no earlier card" in capsys.readouterr().err


def test_no_namespaces_means_no_humaneval_without_consent(monkeypatch, tiny_model_dir, private_cache, capsys) -> None:
    monkeypatch.setattr(sandbox, "isolation", lambda: "rlimits")
    args = ["eval", f"--model={tiny_model_dir}", "--tasks=humaneval", "--limit=1", "--max_new_tokens=4"]
    assert main([*args, "--cache=false"]) == 1
    assert "cannot create namespaces" in capsys.readouterr().err and "--sandbox=rlimits" not in ""
    assert main([*args, "--cache=false", "--sandbox=rlimits"]) == 0  # limits only, as the user asked
