"""The pretraining recipe: overfitting, accumulation == big batch, exact resume, errors that name the flag."""

from __future__ import annotations

import pytest
import torch

from lmstack.common.log import read_jsonl
from lmstack.model import Transformer
from lmstack.train.optim import build_optimizer
from lmstack.train.pretrain import PretrainConfig, train, train_step

from .conftest import tiny_pretrain


def _model_and_batch(tiny_model, seed: int = 0) -> tuple[Transformer, torch.Tensor, torch.Tensor]:
    model = tiny_model(seed, max_seq_len=16, tie_embeddings=True).train()
    xy = torch.randint(0, 101, (8, 17), generator=torch.Generator().manual_seed(seed))
    return model, xy[:, :-1], xy[:, 1:]


def test_overfits_one_batch(tmp_path, tiny_model):
    model, x, y = _model_and_batch(tiny_model)
    cfg = PretrainConfig(data_dir=str(tmp_path), lr=1e-2, weight_decay=0.0, warmup_frac=0.0)
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
    first = train_step(model, model, opt, x, y, cfg, lr=1e-2)[0]
    for _ in range(150):
        loss, _ = train_step(model, model, opt, x, y, cfg, lr=1e-2)
    assert first > 4.0  # ~ln(101) = 4.6 at init
    assert loss < 0.05, f"128 random tokens not memorised: loss {loss:.3f}"


def test_grad_accumulation_equals_big_batch(tmp_path, tiny_model):
    results = []
    for accum in (1, 4):
        model, x, y = _model_and_batch(tiny_model)
        cfg = PretrainConfig(data_dir=str(tmp_path), grad_accum=accum, batch_size=8, grad_clip=0.5)
        opt = build_optimizer(model, 1e-2, 0.1)
        losses = [train_step(model, model, opt, x, y, cfg, lr=1e-2) for _ in range(3)]
        results.append((losses, [p.detach().clone() for p in model.parameters()]))
    (l1, p1), (l4, p4) = results
    for (a, na), (b, nb) in zip(l1, l4):
        assert a == pytest.approx(b, rel=1e-5) and na == pytest.approx(nb, rel=1e-5)
    for a, b in zip(p1, p4):
        # fp32 summation order differs, nothing else; Adam divides by sqrt(v), which amplifies rounding where
        # a gradient is ~0, so allow 1e-5 absolute: 0.1% of one step (lr = 1e-2)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _losses(out_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(out_dir / "metrics.jsonl") if "loss" in r}


def test_resume_is_exact(tiny_data, tmp_path):
    straight = train(tiny_pretrain(tiny_data, tmp_path / "a", max_steps=8))
    first = train(tiny_pretrain(tiny_data, tmp_path / "b", max_steps=8, stop_after=4))
    assert first.get("stopped") and first["step"] == 4
    resumed = train(tiny_pretrain(tiny_data, tmp_path / "b", max_steps=8, resume=True))
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 9)) and a == b  # exact equality, step by step
    assert resumed["val_loss"] == straight["val_loss"] and resumed["tokens_seen"] == straight["tokens_seen"]


def test_resume_refuses_a_different_run(tiny_data, tmp_path):
    train(tiny_pretrain(tiny_data, tmp_path, max_steps=4, stop_after=2))
    with pytest.raises(ValueError, match="model.d_model: checkpoint has 32, this run has 64"):
        train(tiny_pretrain(tiny_data, tmp_path, max_steps=4, d_model=64, resume=True))
    with pytest.raises(ValueError, match="already holds a run"):
        train(tiny_pretrain(tiny_data, tmp_path, max_steps=4))
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        train(tiny_pretrain(tiny_data, tmp_path / "fresh", resume=True))


def test_checkpoint_is_an_hf_directory(tiny_data, tmp_path):
    train(tiny_pretrain(tiny_data, tmp_path, max_steps=2))
    ckpt = tmp_path / "checkpoint"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in ckpt.iterdir()}
    loaded = Transformer.from_pretrained(ckpt)
    assert loaded.config.d_model == 32 and loaded.config.vocab_size == 300
    from transformers import AutoModelForCausalLM  # the trained checkpoint is a Llama to transformers

    hf = AutoModelForCausalLM.from_pretrained(ckpt)
    x = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=x).logits, loaded(x).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "overrides, flag",
    [
        (dict(batch_size=0), "--batch_size"),
        (dict(batch_size=8, grad_accum=3), "--grad_accum"),
        (dict(dtype="float16"), "--dtype"),
        (dict(schedule="linear"), "--schedule"),
        (dict(lr=-1.0), "--lr"),
        (dict(train_seconds=-5.0), "--train_seconds"),
        (dict(threads=-1), "--threads"),
    ],
)
def test_bad_values_name_the_flag(overrides, flag):
    with pytest.raises(ValueError, match=flag):
        PretrainConfig(**overrides)


def test_bad_model_shape_names_the_section_flag():
    from lmstack.common.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"--model: .*d_model=30"):
        load_config(PretrainConfig, ["--model.d_model=30", "--model.n_heads=4"])
    with pytest.raises(ConfigError, match=r"--model\.vocab_size is set by the program"):
        load_config(PretrainConfig, ["--model.vocab_size=100"])


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data_dir"):
        train(tiny_pretrain(tmp_path / "nowhere", tmp_path / "out"))


def test_activation_checkpointing_changes_memory_not_math(tmp_path, tiny_model):
    # recomputing blocks in backward must give the same loss and the same update
    results = []
    for ckpt in (False, True):
        model, x, y = _model_and_batch(tiny_model)
        model.config.activation_checkpointing = ckpt
        cfg = PretrainConfig(data_dir=str(tmp_path))
        opt = build_optimizer(model, 1e-2, 0.1)
        loss = train_step(model, model, opt, x, y, cfg, lr=1e-2)
        results.append((loss, [p.detach().clone() for p in model.parameters()]))
    (l0, p0), (l1, p1) = results
    assert l0 == pytest.approx(l1, rel=1e-6)
    for a, b in zip(p0, p1):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
