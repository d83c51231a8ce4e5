"""Checkpoint round trip (weights, AdamW state, RNG, progress), and clear errors for corrupt or mismatched ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmstack.train.checkpoint import load_checkpoint, read_state, save_checkpoint
from lmstack.train.optim import build_optimizer

from .standin import Bigram


def _save_model(msd: dict, d: Path) -> None:
    save_file({k: v.contiguous() for k, v in msd.items()}, str(d / "model.safetensors"))


def _trained(seed: int) -> tuple[Bigram, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Bigram(9, seed=seed)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        x = torch.randint(0, 9, (4, 6))
        model(x, targets=x.roll(1, 1)).loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(tmp_path: Path, expect: dict | None = None) -> tuple[Path, Bigram, torch.optim.Optimizer]:
    model, opt = _trained(0)
    ckpt = tmp_path / "ckpt"
    state = {"step": 3, "tokens_seen": 72, "data": {"position": 5}}
    save_checkpoint(ckpt, model, opt, state, expect or {"d_model": 9}, _save_model)
    return ckpt, model, opt


def test_round_trip_is_exact(tmp_path):
    ckpt, model, opt = _save(tmp_path)
    rng_after_save = torch.get_rng_state()
    fresh, fresh_opt = _trained(1)  # different weights and moments
    torch.manual_seed(99)
    state = load_checkpoint(ckpt, fresh, fresh_opt, {"d_model": 9}, load_file(str(ckpt / "model.safetensors")))
    assert state["step"] == 3 and state["tokens_seen"] == 72 and state["data"] == {"position": 5}
    for (n, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), n
    for p, q in zip(model.parameters(), fresh.parameters()):
        sa, sb = opt.state[p], fresh_opt.state[q]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert [g["weight_decay"] for g in fresh_opt.param_groups] == [0.1, 0.0]
    assert torch.equal(torch.get_rng_state(), rng_after_save)
    # one more identical step from both gives identical weights
    x = torch.randint(0, 9, (2, 5), generator=torch.Generator().manual_seed(3))
    for m, o in ((model, opt), (fresh, fresh_opt)):
        m(x, targets=x).loss.backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


def test_corrupted_file_is_named(tmp_path):
    ckpt, _, _ = _save(tmp_path)
    f = ckpt / "trainer_state" / "optimizer.safetensors"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="optimizer.safetensors is corrupted"):
        read_state(ckpt)


def test_missing_and_non_checkpoint_dirs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_state(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match="not a training checkpoint"):
        read_state(tmp_path / "plain")
    ckpt, _, _ = _save(tmp_path)
    (ckpt / "trainer_state" / "state.json").write_text("{truncated")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_state(ckpt)


def test_mismatch_names_the_field(tmp_path):
    ckpt, _, _ = _save(tmp_path, expect={"d_model": 9, "batch_size": 4})
    model, opt = _trained(1)
    with pytest.raises(ValueError, match="batch_size: checkpoint has 4, this run has 8"):
        load_checkpoint(ckpt, model, opt, {"d_model": 9, "batch_size": 8}, {})


def test_state_json_is_readable(tmp_path):
    ckpt, _, _ = _save(tmp_path)
    record = json.loads((ckpt / "trainer_state" / "state.json").read_text())
    assert set(record["sha256"]) == {
        "model.safetensors",
        "trainer_state/optimizer.safetensors",
        "trainer_state/rng.safetensors",
    }
    assert not list(tmp_path.glob(".ckpt*")), "temp directories left behind"
