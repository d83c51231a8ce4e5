"""The four recipes end to end on a tiny model: smoke configs learn, resume is exact, SIGTERM saves, bad input errs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmstack.align.dpo import DPOConfig
from lmstack.align.grpo import GRPOConfig
from lmstack.align.orpo import ORPOConfig
from lmstack.align.reward import RewardConfig
from lmstack.common.config import load_config
from lmstack.common.log import read_jsonl

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RECIPES = {"reward": RewardConfig, "dpo": DPOConfig, "orpo": ORPOConfig, "grpo": GRPOConfig}


def run(name: str, *flags: str):
    """Load configs/align_<name>_smoke.yaml with flags and run the recipe's `train`; returns (result, metrics)."""
    import importlib

    cfg = load_config(RECIPES[name], [str(CONFIGS / f"align_{name}_smoke.yaml"), "--device=cpu", "--threads=1", *flags])
    result = importlib.import_module(f"lmstack.align.{name}").train(cfg)
    return result, read_jsonl(Path(cfg.out_dir) / "metrics.jsonl")


def steps(metrics: list[dict], key: str) -> list[float]:
    return [m[key] for m in metrics if key in m and "elapsed_s" in m]


def tiny(model: Path, out: Path, lr: float = 3e-3, **extra: object) -> list[str]:
    flags = [f"--model={model}", f"--out_dir={out}", f"--lr={lr}", "--train_layers=0"]
    return flags + [f"--{k}={v}" for k, v in extra.items()]


@pytest.mark.parametrize("name", ["reward", "dpo", "orpo"])
def test_smoke_config_lowers_the_loss(name, tiny_policy, tmp_path):
    result, metrics = run(name, *tiny(tiny_policy, tmp_path / name, max_steps=30, batch_size=16))
    loss = steps(metrics, "loss")
    assert len(loss) == 30
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 0.02, loss
    assert result["steps"] == 30 and Path(result["checkpoint"], "config.json").is_file()


def test_grpo_smoke_config_raises_the_reward(tiny_policy, tmp_path):
    result, metrics = run("grpo", *tiny(tiny_policy, tmp_path / "grpo", max_steps=16, rewards="numeric",
                                        reward_weights="1.0"))  # fmt: skip
    reward = steps(metrics, "reward")
    assert sum(reward[-4:]) / 4 > sum(reward[:4]) / 4 + 0.05, reward
    assert result["after"]["eval_reward"] > result["before"]["eval_reward"]
    assert Path(result["plot"]).is_file()


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


@pytest.mark.parametrize("name", ["dpo", "grpo"])
def test_resume_is_exact(name, tiny_policy, tmp_path):
    extra = {"rewards": "numeric", "reward_weights": "1.0"} if name == "grpo" else {}
    flags = tiny(tiny_policy, tmp_path / "straight", max_steps=6, eval_every=0, **extra)
    straight, m1 = run(name, *flags)
    flags = tiny(tiny_policy, tmp_path / "resumed", max_steps=6, eval_every=0, **extra)
    stopped, _ = run(name, *flags, "--stop_after=3")
    assert stopped["stopped"] and stopped["step"] == 3
    resumed, m2 = run(name, *flags, "--resume")
    a, b = _weights(tmp_path / "straight" / "checkpoint"), _weights(tmp_path / "resumed" / "checkpoint")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    key = "reward" if name == "grpo" else "loss"
    assert steps(m1, key)[3:] == steps(m2, key)[3:]


def test_dpo_precomputed_reference_equals_frozen_copy(tiny_policy, tmp_path):
    _, pre = run("dpo", *tiny(tiny_policy, tmp_path / "pre", max_steps=4, eval_every=0, reference="precompute"))
    _, fro = run("dpo", *tiny(tiny_policy, tmp_path / "fro", max_steps=4, eval_every=0, reference="frozen"))
    for key in ("loss", "reward_margin", "chosen_logp"):
        torch.testing.assert_close(torch.tensor(steps(pre, key)), torch.tensor(steps(fro, key)), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["dpo", "grpo"])
def test_plain_transcript_base_model(name, tiny_plain_policy, tmp_path):
    """A model without ChatML tokens (the speedrun's) trains with the plain User/Assistant rendering."""
    result, _ = run(name, *tiny(tiny_plain_policy, tmp_path / name, max_steps=2, eval_every=0))
    assert result["steps"] == 2


def test_sigterm_saves_a_checkpoint_and_exits_130(tiny_policy, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lmstack.cli", "dpo", str(CONFIGS / "align_dpo_smoke.yaml"), f"--model={tiny_policy}",
           f"--out_dir={out}", "--max_steps=100000", "--eval_every=0", "--device=cpu", "--threads=1", "--lr=1e-3",
           "--train_layers=0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    saved = json.loads((out / "checkpoint" / "trainer_state" / "state.json").read_text())
    assert saved["step"] >= 3
    assert "interrupted at step" in err


def test_refuses_to_overwrite_and_to_resume_nothing(tiny_policy, tmp_path):
    flags = tiny(tiny_policy, tmp_path / "r", max_steps=1, eval_every=0)
    run("orpo", *flags)
    with pytest.raises(ValueError, match="--out_dir.*already holds a run"):
        run("orpo", *flags)
    run("orpo", *flags, "--overwrite")
    with pytest.raises(FileNotFoundError, match="--resume"):
        run("orpo", *tiny(tiny_policy, tmp_path / "empty", max_steps=1), "--resume")
    with pytest.raises(ValueError, match="does not match this run"):
        run("orpo", *flags[:-1], "--max_steps=2", "--resume")


@pytest.mark.parametrize("name,flag,match", [
    ("dpo", "--reference=nope", "--reference"),
    ("dpo", "--loss_type=cdpo", "--label_smoothing"),
    ("dpo", "--grad_accum=3", "--grad_accum"),
    ("grpo", "--group_size=1", "--group_size"),
    ("grpo", "--rewards=vibes", "--rewards"),
    ("grpo", "--reward_weights=1", "--reward_weights"),
    ("grpo", "--sampling.temperature=0", "temperature"),
    ("grpo", "--sampling.n=4", "set by the program"),
    ("reward", "--eval_frac=1.5", "--eval_frac"),
    ("orpo", "--lam=-1", "--lam"),
])  # fmt: skip
def test_bad_flags_name_the_flag(name, flag, match):
    with pytest.raises(ValueError, match=match):
        load_config(RECIPES[name], [str(CONFIGS / f"align_{name}_smoke.yaml"), flag])


def test_bad_data_and_model_paths(tiny_policy, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing field 'chosen'"):
        run("dpo", *tiny(tiny_policy, tmp_path / "d", data=bad))
    with pytest.raises(FileNotFoundError, match="--model"):
        run("reward", *tiny(tmp_path / "no_such_model", tmp_path / "e"))
    with pytest.raises(ValueError, match="--train_layers"):
        run("grpo", *tiny(tiny_policy, tmp_path / "f"), "--train_layers=99")


def test_every_align_config_loads():
    for path in sorted(CONFIGS.glob("align_*.yaml")):
        name = path.stem.split("_")[1]
        cfg = load_config(RECIPES[name], [str(path)])
        assert cfg.model, path
