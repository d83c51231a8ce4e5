"""Muon: Newton-Schulz gives ~U V^T, parameter groups, the AdamW half equals torch's AdamW, one Muon step by hand,
and pretraining with --optimizer=muon learns and resumes exactly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lmstack.common.log import read_jsonl
from lmstack.model import ModelConfig, Transformer
from lmstack.train.muon import Muon, build_muon, muon_groups, orthogonalize
from lmstack.train.optim import set_lr
from lmstack.train.pretrain import train
from tests.train.conftest import tiny_pretrain


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32), (3, 16, 48)])
def test_newton_schulz_approximates_the_polar_factor(shape):
    """Singular values land near 1 (Jordan's iteration: ~[0.7, 1.2]; the few smallest of a random square matrix
    need more than 5 steps) and the result points along U V^T."""
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    o = orthogonalize(g).float()
    assert o.shape == g.shape
    s = torch.linalg.svdvals(o)
    assert s.max() < 1.25 and torch.quantile(s.flatten(), 0.05) > 0.6, s
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    cos = (o * polar).sum((-2, -1)) / (o.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert (cos > 0.97).all(), cos


def test_groups_put_block_matrices_on_muon(tiny_model_kwargs):
    model = Transformer(ModelConfig(**{**tiny_model_kwargs, "tie_embeddings": True}))
    muon, tables, adam = muon_groups(model, weight_decay=0.1, embed_lr_scale=3.0)
    names = {id(p): n for n, p in model.named_parameters()}
    assert muon["muon"] and not adam["muon"] and muon["weight_decay"] == 0.1 and adam["weight_decay"] == 0.0
    assert all(names[id(p)].startswith("blocks.") and p.dim() == 2 for p in muon["params"])
    assert [names[id(p)] for p in tables["params"]] == ["embed.weight"]  # the tied head is the same tensor
    assert not tables["muon"] and tables["weight_decay"] == 0.0 and tables["lr_scale"] == 3.0
    assert all(names[id(p)].endswith("norm.weight") for p in adam["params"]) and adam["lr_scale"] == 1.0
    assert sum(len(g["params"]) for g in (muon, tables, adam)) == len(list(model.parameters()))  # tied: once


def test_adamw_half_equals_torch_adamw():
    torch.manual_seed(0)
    a, b = nn.Linear(8, 4), nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    ours = Muon([{"params": list(a.parameters()), "muon": False, "weight_decay": 0.1}], lr=1e-2)
    ref = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for step in range(5):
        x = torch.randn(16, 8, generator=torch.Generator().manual_seed(step))
        for m, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_one_muon_step_by_hand():
    """First step, momentum buffer empty: m = (1 - mu) g, Nesterov update u = g + mu (m - g) = (1 - mu^2) g, then
    p <- p (1 - lr wd) - lr 0.2 sqrt(max(r, c)) NS(u)."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(16, 48))
    g = torch.randn(16, 48)
    before = p.detach().clone()
    opt = Muon([{"params": [p], "muon": True, "weight_decay": 0.1, "lr_scale": 3.0}], lr=0.01)
    set_lr(opt, 0.01)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.03)  # lr_scale applied by set_lr
    p.grad = g
    opt.step()
    u = g.lerp(0.05 * g, 0.95)  # (1 - 0.95^2) g, computed as the optimizer does
    want = before * (1 - 0.03 * 0.1) - 0.03 * 0.2 * math.sqrt(48) * orthogonalize(u).float()
    torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"], 0.05 * g)


def test_build_muon_trains_a_model(tiny_model_kwargs):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**tiny_model_kwargs))
    opt = build_muon(model, lr=3e-3, weight_decay=0.0, muon_lr_scale=4.0)
    x = torch.randint(0, tiny_model_kwargs["vocab_size"], (4, 16), generator=torch.Generator().manual_seed(1))
    losses = []
    for _ in range(30):
        loss = model(x[:, :-1], targets=x[:, 1:]).loss
        losses.append(loss.item())
        loss.backward()
        set_lr(opt, 3e-3)
        opt.step()
        opt.zero_grad()
    assert losses[-1] < 0.5 * losses[0], losses


def _losses(out_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(out_dir / "metrics.jsonl") if "loss" in r}


def test_pretrain_with_muon_resumes_exactly(tiny_data, tmp_path):
    kw = dict(max_steps=8, optimizer="muon", muon_lr_scale=4.0)
    straight = train(tiny_pretrain(tiny_data, tmp_path / "a", **kw))
    first = train(tiny_pretrain(tiny_data, tmp_path / "b", stop_after=4, **kw))
    assert first.get("stopped") and first["step"] == 4
    resumed = train(tiny_pretrain(tiny_data, tmp_path / "b", resume=True, **kw))
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 9)) and a == b  # exact equality, step by step
    assert resumed["val_loss"] == straight["val_loss"]
    assert straight["val_loss"] < _losses(tmp_path / "a")[1]  # it learned
    with pytest.raises(ValueError, match="optimizer"):  # an AdamW run cannot continue a Muon checkpoint
        train(tiny_pretrain(tiny_data, tmp_path / "b", resume=True, max_steps=8))
