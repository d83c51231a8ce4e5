"""Ctrl-C (SIGINT) during training saves a checkpoint and exits with 130; `--resume` continues from it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from .conftest import tiny_pretrain


def test_ctrl_c_saves_and_resume_continues(tiny_data, tmp_path):
    out = tmp_path / "run"
    flags = [f"--data_dir={tiny_data}", f"--out_dir={out}", "--n_layers=2", "--d_model=32", "--n_heads=4",
             "--n_kv_heads=2", "--seq_len=32", "--batch_size=8", "--max_steps=100000", "--lr=3e-3",
             "--warmup_frac=0.25", "--log_every=1", "--eval_every=0", "--threads=1", "--device=cpu",
             "--seed=7"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmstack.train.pretrain", *flags], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted at step" in err
    saved = json.loads((out / "checkpoint" / "trainer_state" / "state.json").read_text())
    assert saved["step"] >= 3
    # resume with a step budget just past the saved step: it continues from there, not from 0
    from lmstack.train.pretrain import train

    cfg = tiny_pretrain(tiny_data, out, max_steps=100000, stop_after=saved["step"] + 2, resume=True, eval_every=0)
    result = train(cfg)
    assert result["step"] == saved["step"] + 2
