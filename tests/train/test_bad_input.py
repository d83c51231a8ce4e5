"""Pretraining never loses a run or trains on a silent mistake (issue 9): SIGTERM saves like Ctrl-C, a rerun
never truncates a previous run's metrics, a failed checkpoint write is one clear line and leaves the previous
checkpoint intact, a tokenizer that did not write the shards is refused, checkpoints carry the tokenizer's EOS."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from lmstack.model import Transformer
from lmstack.tokenizer import Tokenizer
from lmstack.train.pretrain import train

from .conftest import synthetic_docs, tiny_pretrain

FLAGS = ["--model.n_layers=2", "--model.d_model=32", "--model.n_heads=4", "--model.n_kv_heads=2", "--seq_len=32",
         "--batch_size=8", "--lr=3e-3", "--warmup_frac=0.25", "--log_every=1", "--eval_every=0", "--threads=1",
         "--device=cpu", "--seed=7", "--sample_tokens=4"]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # SIGABRT dumps every thread's stack


def _pretrain(*args: str, **kw: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmstack.cli", "pretrain", *FLAGS, *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


def _as_from_a_shell() -> None:
    """In the child: SIGINT / SIGTERM deliverable with their default dispositions, as a program started from a
    shell gets them. A child inherits its parent's ignored signals and blocked mask across exec, and Python only
    installs its Ctrl-C handler when SIGINT is not ignored at start. Under `make test`'s xdist workers the SIGINT
    case twice went unanswered for 60 s while the trainer sat in a training step (faulthandler's stacks), never
    alone (25 random-time trials, none stuck): inherited signal state is the suspect this rules out."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; `kill`, `docker stop`, schedulers
def test_signal_saves_a_resumable_checkpoint(tiny_data, tmp_path, sig):
    out = tmp_path / "run"
    proc = _pretrain(f"--data_dir={tiny_data}", f"--out_dir={out}", "--max_steps=100000", preexec_fn=_as_from_a_shell)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    steps_before = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # seen once under `make test` load (2026-12-01): say where it was stuck
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(
            f"pretrain ignored {sig.name} for 60 s ({steps_before} metric lines before it); stacks:\n{err[-6000:]}"
        )
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err and "Traceback" not in err
    saved = json.loads((out / "checkpoint" / "trainer_state" / "state.json").read_text())
    assert saved["step"] >= 3
    result = train(tiny_pretrain(tiny_data, out, max_steps=100000, stop_after=saved["step"] + 1, resume=True))
    assert result["step"] == saved["step"] + 1


def test_rerun_never_truncates_previous_metrics(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')  # a run that died before its checkpoint
    with pytest.raises(ValueError, match=r"already holds a run .*metrics\.jsonl.*--overwrite"):
        train(tiny_pretrain(tiny_data, out, max_steps=2))
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 3.0}\n'
    train(tiny_pretrain(tiny_data, out, max_steps=2, overwrite=True))  # asked for: starts over
    assert '"loss": 3.0' not in (out / "metrics.jsonl").read_text()


def _limit_file_size() -> None:  # runs in the child: writes past 100 KB fail (EFBIG), as on a full disk
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))


def test_failed_checkpoint_write_is_one_line_and_keeps_the_previous(tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_pretrain(tiny_data, out, max_steps=4, stop_after=2))
    before = (out / "checkpoint" / "model.safetensors").read_bytes()
    proc = _pretrain(f"--data_dir={tiny_data}", f"--out_dir={out}", "--max_steps=4", "--resume",
                     preexec_fn=_limit_file_size)  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if "error:" in x]
    assert len(line) == 1 and f"cannot write checkpoint {out / 'checkpoint'}" in line[0], err[-2000:]
    assert "File too large" in line[0] and "previous checkpoint" in line[0]
    assert (out / "checkpoint" / "model.safetensors").read_bytes() == before  # intact, still loads
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # no temporary directory left behind
    Transformer.from_pretrained(out / "checkpoint")


def test_tokenizer_that_did_not_write_the_shards_is_refused(tiny_data, tmp_path):
    other = Tokenizer.train(synthetic_docs(40, seed=5), 300, special_tokens=["<|endoftext|>"], show_progress=False)
    other.save(tmp_path / "other_tok")
    with pytest.raises(ValueError, match=r"not the tokenizer that wrote the shards"):
        train(tiny_pretrain(tiny_data, tmp_path / "run", tokenizer_dir=str(tmp_path / "other_tok")))


def test_checkpoint_configs_carry_the_tokenizers_eos(tiny_data, tmp_path):
    train(tiny_pretrain(tiny_data, tmp_path, max_steps=2))
    eot = Tokenizer.load(tiny_data / "tokenizer").special_tokens["<|endoftext|>"]
    ckpt = tmp_path / "checkpoint"
    assert json.loads((ckpt / "config.json").read_text())["eos_token_id"] == eot
    assert json.loads((ckpt / "generation_config.json").read_text())["eos_token_id"] == eot
    assert Transformer.from_pretrained(ckpt).config.eos_token_id == eot
