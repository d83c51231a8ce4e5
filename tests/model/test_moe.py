"""Mixture of experts: balance loss values, z-loss, capacity dropping, the load report, router noise."""

from __future__ import annotations

import math

import pytest
import torch

from lmstack.model import ModelConfig, Transformer
from lmstack.model.moe import MoE, capacity_keep


def moe(E: int = 4, k: int = 2, **kw) -> MoE:
    torch.manual_seed(0)
    return MoE(d_model=8, d_ff=16, n_experts=E, k=k, **kw).eval()


def test_balance_loss_is_one_for_a_uniform_router_and_E_when_collapsed() -> None:
    """aux = E * sum_e f_e P_e. Uniform probabilities P_e = 1/E give exactly 1 (Switch's minimum) whatever the
    assignment; a router that sends every token to one expert with probability ~1 gives ~E."""
    m = moe()
    torch.nn.init.zeros_(m.router.weight)
    _, stats = m(torch.randn(2, 5, 8))
    assert stats.aux_loss.item() == pytest.approx(1.0)
    assert stats.z_loss.item() == pytest.approx(math.log(4) ** 2)  # logsumexp of 4 zeros = ln 4
    m = moe(k=1)
    with torch.no_grad():
        m.router.weight.zero_()
        m.router.weight[0, 0] = 100.0
    x = torch.randn(2, 5, 8).abs() + 0.1  # feature 0 positive -> expert 0 wins with probability ~1
    _, stats = m(x)
    assert stats.aux_loss.item() == pytest.approx(4.0, rel=1e-3)
    assert stats.load.tolist() == [10, 0, 0, 0]


def test_balance_loss_is_hf_mixtral_loss_over_k() -> None:
    import transformers
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    m = moe(E=4, k=2)
    x = torch.randn(3, 7, 8)
    _, stats = m(x)
    logits = m.router(x.reshape(-1, 8))
    hf = load_balancing_loss_func((logits,), num_experts=4, top_k=2)
    assert transformers is not None
    assert stats.aux_loss.item() == pytest.approx(hf.item() / 2, rel=1e-5)


def test_capacity_keeps_first_choices_then_earlier_tokens() -> None:
    top_i = torch.tensor([[0, 1], [0, 2], [0, 1]])
    keep = capacity_keep(top_i, n_experts=3, capacity=2)
    assert keep.tolist() == [[True, True], [True, True], [False, True]]
    top_i = torch.tensor([[1, 0], [0, 1], [0, 2]])  # token 0's second choice queues after all first choices
    assert capacity_keep(top_i, 3, 2).tolist() == [[True, False], [True, True], [True, True]]


def test_capacity_drops_overflow_tokens_from_the_output() -> None:
    """E=2, k=1, 4 tokens all routed to expert 0, capacity ceil(1.0 * 4 * 1 / 2) = 2: tokens 0, 1 are processed,
    tokens 2, 3 dropped (their FFN output is zero; the residual carries them), and the report says so."""
    m = moe(E=2, k=1, capacity_factor=1.0)
    with torch.no_grad():
        m.router.weight.zero_()
        m.router.weight[0, 0] = 50.0
    x = torch.rand(1, 4, 8) + 0.1
    out, stats = m(x)
    torch.testing.assert_close(out[0, :2], m.experts[0](x[0, :2]))
    assert torch.equal(out[0, 2:], torch.zeros(2, 8))
    assert stats.load.tolist() == [2, 0] and stats.dropped.item() == 2


@pytest.mark.parametrize("capacity_factor", [None, 0.5, 1.0, 2.0])
def test_load_report_accounts_for_every_assignment(capacity_factor: float | None, tiny_model_kwargs: dict) -> None:
    model = Transformer(
        ModelConfig(**tiny_model_kwargs, n_experts=4, experts_per_token=2, capacity_factor=capacity_factor)
    )
    out = model(torch.randint(0, 101, (3, 10)))
    assert len(out.expert_load) == 2
    for stats in out.expert_load:
        assert stats.load.sum().item() + stats.dropped.item() == 3 * 10 * 2
        if capacity_factor is not None:
            assert stats.load.max().item() <= math.ceil(capacity_factor * 30 * 2 / 4)
        else:
            assert stats.dropped.item() == 0


def test_loss_includes_weighted_aux_losses(tiny_model_kwargs: dict) -> None:
    cfg = ModelConfig(**tiny_model_kwargs, n_experts=4, moe_aux_loss_coef=0.1, moe_z_loss_coef=0.01)
    torch.manual_seed(0)
    model = Transformer(cfg)
    ids = torch.randint(0, 101, (2, 8))
    out = model(ids, targets=ids)
    aux = torch.stack([s.aux_loss for s in out.expert_load]).mean()
    z = torch.stack([s.z_loss for s in out.expert_load]).mean()
    torch.testing.assert_close(out.aux_loss, 0.1 * aux + 0.01 * z)
    ce = torch.nn.functional.cross_entropy(out.logits.view(-1, 101), ids.view(-1))
    torch.testing.assert_close(out.loss, ce + out.aux_loss)


def test_router_noise_only_while_training() -> None:
    m = moe(router_noise=0.5)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(m(x)[0], m(x)[0])  # eval: deterministic
    m.train()
    torch.manual_seed(1)
    a = m.route(x.view(-1, 8))[0]
    torch.manual_seed(2)
    b = m.route(x.view(-1, 8))[0]
    assert not torch.allclose(a, b)
