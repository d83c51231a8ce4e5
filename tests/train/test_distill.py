"""Knowledge distillation: the top-k soft loss is the exact temperature-scaled KL when k = V, and the `distill`
recipe trains a KD and a CE student from one teacher directory and reports both."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lmstack.model import ModelConfig, Transformer
from lmstack.train.distill import DistillConfig, main
from lmstack.train.distillation import kd_loss, teacher_topk


def test_full_k_soft_loss_is_the_temperature_scaled_kl() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 11, generator=g, requires_grad=True), torch.randn(2, 5, 11, generator=g)
    y = torch.randint(0, 11, (2, 5), generator=g)
    values, ids = t.topk(11, dim=-1)
    total, soft, hard = kd_loss(s, values, ids, y, tau=3.0, alpha=0.7)
    kl = F.kl_div(F.log_softmax(s / 3.0, -1).flatten(0, 1), F.softmax(t / 3.0, -1).flatten(0, 1), reduction="batchmean")
    torch.testing.assert_close(soft, kl)
    torch.testing.assert_close(hard, F.cross_entropy(s.flatten(0, 1), y.flatten()))
    torch.testing.assert_close(total, 0.7 * 9.0 * kl + 0.3 * hard)
    (grad,) = torch.autograd.grad(soft, s)  # d KL / d s = (p_student - p_teacher) / tau, per position / positions
    expect = (F.softmax(s / 3.0, -1) - F.softmax(t / 3.0, -1)) / 3.0 / 10
    torch.testing.assert_close(grad, expect)


def test_distill_recipe_trains_and_compares_two_students(tmp_path, capsys) -> None:
    from lmstack.data.corpus import load_corpus
    from lmstack.tokenizer import Tokenizer

    tok = Tokenizer.train(load_corpus("shakespeare", "train")[:2], 300, special_tokens=["<|endoftext|>"],
                          show_progress=False)  # fmt: skip
    torch.manual_seed(0)
    teacher = Transformer(ModelConfig(vocab_size=300, n_layers=2, d_model=32, n_heads=4, max_seq_len=64))
    teacher.save_pretrained(tmp_path / "teacher", tokenizer=tok)
    values, ids = teacher_topk(teacher, torch.randint(0, 300, (3, 16)), k=8, batch_size=2)
    assert values.shape == ids.shape == (3, 16, 8) and bool((values[..., :-1] >= values[..., 1:]).all())
    student = ModelConfig(n_layers=1, d_model=32, n_heads=4, tie_embeddings=True)
    cfg = DistillConfig(teacher=str(tmp_path / "teacher"), out_dir=str(tmp_path / "run"), student=student,
                        seq_len=16, train_windows=16, val_windows=4, top_k=8, steps=6, batch_size=4)  # fmt: skip
    assert main(cfg) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["rows"]) == {"teacher", "kd", "ce"} and results["rows"]["ce"]["alpha"] == 0.0
    for name in ("kd", "ce"):
        assert Transformer.from_pretrained(tmp_path / "run" / name).config.vocab_size == 300
    assert "agree w/ teacher" in capsys.readouterr().out
    with pytest.raises(ValueError, match="--overwrite"):
        main(cfg)
