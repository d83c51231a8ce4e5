"""The same recipe under `torchrun`: DDP with 2 gloo processes matches one process with the same global batch;
FSDP2 trains, and its checkpoint (saved by 2 processes) resumes in 1 process on the same loss curve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lmstack.common.log import read_jsonl
from lmstack.train.pretrain import train

from .conftest import tiny_pretrain

FLAGS = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, seq_len=32, batch_size=8, max_steps=6,
             lr=3e-3, warmup_frac=0.25, eval_every=3, eval_tokens=512, log_every=1, sample_tokens=8,
             threads=1, device="cpu", seed=7)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(data_dir: Path, out_dir: Path, nproc: int = 2, **overrides: object) -> str:
    flags = {**FLAGS, "data_dir": data_dir, "out_dir": out_dir, **overrides}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "lmstack.train.pretrain"]  # fmt: skip
    model_keys = ("n_layers", "d_model", "n_heads", "n_kv_heads")
    cmd += [f"--model.{k}={v}" if k in model_keys else f"--{k}={v}" for k, v in flags.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def _losses(out_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(out_dir / "metrics.jsonl") if "loss" in r}


def _single(data_dir: Path, out_dir: Path, **overrides: object) -> dict:
    kw = {k: v for k, v in FLAGS.items() if k not in ("data_dir", "out_dir")}
    return train(tiny_pretrain(data_dir, out_dir, **{**kw, **overrides}))


def test_ddp_matches_single_process(tiny_data, tmp_path):
    single = _single(tiny_data, tmp_path / "one")
    assert "2 process(es) (DDP)" in torchrun(tiny_data, tmp_path / "ddp")
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "ddp")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:  # same global batch and update; only the all-reduce's summation order differs
        assert b[step] == pytest.approx(a[step], rel=1e-5), (step, a[step], b[step])
    final = [r for r in read_jsonl(tmp_path / "ddp" / "metrics.jsonl") if r.get("final")][0]
    assert final["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)


def test_fsdp_checkpoint_resumes_in_one_process(tiny_data, tmp_path):
    _single(tiny_data, tmp_path / "one")
    log = torchrun(tiny_data, tmp_path / "fsdp", fsdp=True, stop_after=3)  # 2 processes, sharded, checkpoint at 3
    assert "2 process(es) (FSDP2 fully_shard)" in log
    _single(tiny_data, tmp_path / "fsdp", resume=True)  # 1 process continues to step 6
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "fsdp")
    assert sorted(b) == list(range(1, 7))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), (step, a[step], b[step])
