"""The SFT recipe on a tiny model: every method lowers its loss in seconds, resume is exact, outputs load."""

from __future__ import annotations

import json

import pytest
import torch

from lmstack.common.config import load_config
from lmstack.common.log import read_jsonl
from lmstack.finetune.sft import SFTConfig, train
from tests.finetune.tiny import arithmetic, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_base_dir):
    d = tmp_path_factory.mktemp("sft")
    base = tiny_base_dir
    data = write_jsonl(d / "train.jsonl", arithmetic(64, 0))
    held = write_jsonl(d / "held.jsonl", arithmetic(16, 99))
    return d, base, data, held


def config(setup, method: str, out: str, **kw) -> SFTConfig:
    d, base, data, held = setup
    defaults = dict(model=str(base), data=str(data), eval_data=str(held), n_eval=16, method=method,
                    out_dir=str(d / out), max_len=48, batch_size=8, max_steps=12, forgetting_tokens=0,
                    pack=method not in ("prompt", "prefix"), num_virtual_tokens=4, r=4, threads=1)  # fmt: skip
    lr = {"full": 3e-3, "lora": 1e-2, "qlora": 1e-2, "prompt": 3e-1, "prefix": 3e-2}.get(method, 1e-3)
    return SFTConfig(**{**defaults, "lr": lr, **kw})


@pytest.mark.parametrize("method", ["full", "lora", "qlora", "prompt", "prefix"])
def test_smoke_lowers_heldout_loss_and_writes_output(setup, method):
    result = train(config(setup, method, f"run_{method}"))
    assert result["after_heldout_loss"] < result["before_heldout_loss"] - 0.05, result
    out = json.loads((setup[0] / f"run_{method}" / "metrics.jsonl").read_text().splitlines()[-1])
    assert out["final"] and "after_exact_match" in out
    product = setup[0] / f"run_{method}" / ("model" if method == "full" else "adapter")
    assert (product / ("config.json" if method == "full" else "adapter_config.json")).is_file()


def test_resume_is_exact(setup):
    full = train(config(setup, "lora", "straight", max_steps=6, n_eval=0))
    assert full["steps"] == 6
    part = train(config(setup, "lora", "resumed", max_steps=6, n_eval=0, stop_after=3))
    assert part["stopped"] and part["step"] == 3
    train(config(setup, "lora", "resumed", max_steps=6, n_eval=0, resume=True))
    losses = [[r["loss"] for r in read_jsonl(setup[0] / run / "metrics.jsonl") if "loss" in r]
              for run in ("straight", "resumed")]  # fmt: skip
    assert losses[0] == losses[1]


def test_merge_writes_hf_model_equal_to_adapter(setup):
    from lmstack.finetune.peft_format import load_adapter
    from lmstack.model import Transformer

    d, base, _, _ = setup
    train(config(setup, "lora", "merge", max_steps=4, n_eval=0, merge=True))
    merged = Transformer.from_pretrained(d / "merge" / "merged").eval()
    adapted = load_adapter(Transformer.from_pretrained(base).eval(), d / "merge" / "adapter")
    x = torch.randint(0, 200, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, adapted(x).logits, atol=1e-5, rtol=1e-5)


def test_refuses_overwrite_and_bad_config(setup):
    train(config(setup, "lora", "refused", max_steps=1, n_eval=0))  # its own run: tests may run on other workers
    with pytest.raises(ValueError, match="already has a checkpoint"):
        train(config(setup, "lora", "refused", max_steps=1, n_eval=0))
    with pytest.raises(ValueError, match="--pack"):
        config(setup, "prefix", "x", pack=True)
    with pytest.raises(ValueError, match="--method"):
        config(setup, "dora", "x")
    with pytest.raises(ValueError, match="--replay_ratio"):
        config(setup, "full", "x", replay_ratio=1.5)


def test_cli_commands_resolve_with_their_defaults():
    from lmstack.cli import resolve

    for name, method in (("lora", "lora"), ("qlora", "qlora"), ("prompt-tune", "prompt"), ("prefix-tune", "prefix")):
        cls, _ = resolve(name)
        assert load_config(cls, []).method == method


def test_sigterm_saves_adapter_checkpoint_and_exits_130(setup):
    import os
    import signal
    import subprocess
    import sys
    import time

    d, base, data, _ = setup
    out = d / "sigterm"
    flags = [f"--model={base}", f"--data={data}", "--n_eval=0", "--forgetting_tokens=0", f"--out_dir={out}",
             "--max_len=48", "--batch_size=8", "--max_steps=100000", "--log_every=1", "--threads=1"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "lmstack.cli", "lora", *flags], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 4):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    state = json.loads((out / "checkpoint" / "trainer_state" / "state.json").read_text())
    assert state["step"] >= 3 and (out / "checkpoint" / "adapter_model.safetensors").is_file()
