"""Every variant learns: one fixed batch is memorized in a few hundred steps; training switches behave."""

from __future__ import annotations

import pytest
import torch

from lmstack.model import ModelConfig, Transformer
from lmstack.model.presets import GPT2_STYLE

VARIANTS = {
    "gpt2-style": dict(GPT2_STYLE),
    "llama-style": dict(),
    "sinusoidal": dict(position="sinusoidal"),
    "alibi": dict(position="alibi"),
    "no-positions": dict(position="none"),
    "post-norm": dict(norm_placement="post", norm="layernorm"),
    "mqa-window-qknorm": dict(n_kv_heads=1, sliding_window=6, qk_norm=True),
    "moe-capacity": dict(n_experts=4, experts_per_token=2, capacity_factor=1.5, router_noise=0.1, moe_z_loss_coef=1e-3),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_overfits_one_batch(name: str, tiny_model_kwargs: dict) -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**tiny_model_kwargs, **VARIANTS[name]}))
    ids = torch.randint(0, 101, (2, 17), generator=torch.Generator().manual_seed(1))
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    first = None
    for _ in range(200):
        loss = model(x, targets=y).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm_loss = model.eval()(x, targets=y)
    final = (lm_loss.loss - (lm_loss.aux_loss if lm_loss.aux_loss is not None else 0)).item()
    assert first > 4.0 and final < 0.2, (first, final)


def test_targets_minus_100_are_ignored(tiny_model_kwargs: dict) -> None:
    model = Transformer(ModelConfig(**tiny_model_kwargs))
    ids = torch.randint(0, 101, (2, 6))
    targets = ids.clone()
    targets[:, :3] = -100
    out = model(ids, targets=targets)
    expected = torch.nn.functional.cross_entropy(out.logits[:, 3:].reshape(-1, 101), ids[:, 3:].reshape(-1))
    torch.testing.assert_close(out.loss, expected)


def test_activation_checkpointing_gives_the_same_gradients(tiny_model_kwargs: dict) -> None:
    torch.manual_seed(0)
    plain = Transformer(ModelConfig(**tiny_model_kwargs))
    ckpt = Transformer(ModelConfig(**tiny_model_kwargs, activation_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 101, (2, 12))
    for m in (plain, ckpt):
        m(ids, targets=ids).loss.backward()
    for (n, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=lambda m, n=n: f"{n}: {m}")


def test_scaled_residual_init(tiny_model_kwargs: dict) -> None:
    """GPT-2: residual projections start with std 0.02 / sqrt(2 L); others with 0.02 (checked on a wide model)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**tiny_model_kwargs, "d_model": 256, "n_heads": 4, "n_layers": 8}))
    o, q = model.blocks[0].attn.o_proj.weight, model.blocks[0].attn.q_proj.weight
    assert o.std().item() == pytest.approx(0.02 / 4, rel=0.05)
    assert q.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.lm_head.weight is not model.embed.weight


def test_tied_embeddings_share_storage(tiny_model_kwargs: dict) -> None:
    model = Transformer(ModelConfig(**tiny_model_kwargs, tie_embeddings=True))
    assert model.lm_head.weight is model.embed.weight
    untied = Transformer(ModelConfig(**tiny_model_kwargs))
    assert model.num_parameters() == untied.num_parameters() - 101 * 32


def test_bfloat16_model_runs(tiny_model_kwargs: dict) -> None:
    model = Transformer(ModelConfig(**tiny_model_kwargs, dtype="bfloat16"))
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ids = torch.randint(0, 101, (2, 8))
    out = model(ids, targets=ids)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    out.loss.backward()


def test_dropout_only_in_training(tiny_model_kwargs: dict) -> None:
    model = Transformer(ModelConfig(**tiny_model_kwargs, dropout=0.5))
    ids = torch.randint(0, 101, (1, 8))
    assert not torch.allclose(model(ids).logits, model(ids).logits)
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)


@pytest.mark.parametrize("position", ["rope", "alibi"])
def test_position_buffers_survive_casts_and_empty_allocation(position: str, tiny_model_kwargs: dict) -> None:
    """RoPE frequencies stay float32 under `.to(bfloat16)` (bf16 would round them by ~0.4%), and a model built
    with `without_init` (meta device, then `to_empty`) has real buffers, not uninitialized memory."""
    cfg = ModelConfig(**tiny_model_kwargs, position=position, rope_scaling={"rope_type": "linear", "factor": 2.0})
    reference = Transformer(cfg)
    for model in (Transformer(cfg).to(torch.bfloat16), Transformer.without_init(cfg)):
        for (name, buf), ref in zip(model.named_buffers(), reference.buffers()):
            assert buf.dtype == torch.float32 and torch.equal(buf, ref), name
    empty = Transformer.without_init(cfg)
    empty.load_state_dict(reference.state_dict())
    ids = torch.randint(0, 101, (1, 9))
    torch.testing.assert_close(empty(ids).logits, reference(ids).logits, atol=0, rtol=0)
