"""Hand-derived values of every loss (the worked examples in the modules' docstrings) and their basic properties."""

from __future__ import annotations

import math

import pytest
import torch

from lmstack.align.dpo_loss import check_dpo_args, dpo_loss
from lmstack.align.grpo_loss import group_advantages, grpo_loss
from lmstack.align.orpo_loss import log1mexp, orpo_loss
from lmstack.align.reward_model import bradley_terry_loss


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_dpo_hand_derived_value_and_gradient():
    """beta 0.1, log-ratios +2 (chosen) and -1 (rejected): h = 3, L = log(1 + e^-0.3) = 0.554355,
    dL/dlogpi(y_w) = -0.1 * sigmoid(-0.3) = -0.0425557."""
    pc = t(-10.0).requires_grad_(True)
    out = dpo_loss(pc, t(-15.0), t(-12.0), t(-14.0), beta=0.1)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-0.3)), abs=1e-12)
    assert out.losses.item() == pytest.approx(0.554355, abs=1e-6)
    out.losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.0425557, abs=1e-7)
    assert out.chosen_rewards.item() == pytest.approx(0.2) and out.rejected_rewards.item() == pytest.approx(-0.1)
    m = out.metrics(pc, t(-15.0))
    assert m["reward_accuracy"] == 1.0 and m["reward_margin"] == pytest.approx(0.3)


def test_cdpo_and_ipo_hand_derived_values():
    """cDPO eps 0.1: 0.9 * 0.554355 + 0.1 * 0.854355 = 0.584355; IPO lengths 4 and 2: (2/4 + 1/2 - 5)^2 = 16."""
    args = (t(-10.0), t(-15.0), t(-12.0), t(-14.0))
    cdpo = dpo_loss(*args, beta=0.1, loss_type="cdpo", label_smoothing=0.1)
    assert cdpo.losses.item() == pytest.approx(0.584355, abs=1e-6)
    ipo = dpo_loss(*args, beta=0.1, loss_type="ipo", chosen_lengths=t(4.0), rejected_lengths=t(2.0))
    assert ipo.losses.item() == pytest.approx(16.0)


def test_dpo_is_log2_when_policy_equals_reference():
    logps = -torch.rand(5, dtype=torch.float64) * 9
    out = dpo_loss(logps, logps.flip(0), logps, logps.flip(0), beta=0.5)
    torch.testing.assert_close(out.losses, torch.full((5,), math.log(2), dtype=torch.float64))


def test_orpo_hand_derived_value():
    """P_w = 1/2, P_l = 1/5: odds 1 and 1/4, log odds ratio ln 4, L_OR = ln(5/4); lambda 0.1, NLL 2 -> 2.0223144."""
    total, ratio = orpo_loss(t(math.log(0.5)), t(math.log(0.2)), torch.tensor(2.0, dtype=torch.float64), 0.1)
    assert ratio.losses.item() == pytest.approx(0.1 * math.log(1.25), abs=1e-8)  # float32, as TRL
    assert total.item() == pytest.approx(2.0223144, abs=1e-7)


def test_log1mexp_is_accurate_at_both_ends():
    x = t(-1e-10, -0.5, -1.0, -50.0)
    expected = t(math.log(1e-10), math.log(1 - math.exp(-0.5)), math.log(1 - math.exp(-1.0)), -math.exp(-50.0))
    torch.testing.assert_close(log1mexp(x), expected, rtol=1e-9, atol=0)


def test_group_advantages_hand_derived():
    """Rewards (1, 0, 0, 1): mean 1/2, Bessel std sqrt(1/3); A = +-0.5 / (0.57735 + 1e-4) = +-0.865876."""
    a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3]), group_size=4)
    torch.testing.assert_close(a[:4], torch.tensor([1.0, -1.0, -1.0, 1.0]) * 0.5 / (math.sqrt(1 / 3) + 1e-4))
    assert a[:4].abs()[0].item() == pytest.approx(0.865876, abs=1e-6)
    assert torch.equal(a[4:], torch.zeros(4))  # a group with equal rewards teaches nothing
    assert group_advantages(torch.tensor([1.0, 3.0]), 2, scale="none").tolist() == [-1.0, 1.0]


def test_grpo_first_pass_gradient_is_the_policy_gradient():
    """With pi_old = pi (ratio 1, no clipping) and beta 0, d loss / d logp_t = -A_i / |y_i| / B (grpo reduction)."""
    logps = -torch.rand(2, 3, dtype=torch.float64)
    logps.requires_grad_(True)
    mask = t(1, 1, 0, 1, 1, 1).view(2, 3)
    adv = t(2.0, -1.0)
    loss, stats = grpo_loss(logps, logps.detach(), None, adv, mask)
    assert loss.item() == pytest.approx(-(2.0 - 1.0) / 2)
    loss.backward()
    expected = torch.tensor([[-2 / 2 / 2, -2 / 2 / 2, 0], [1 / 3 / 2] * 3], dtype=torch.float64)
    torch.testing.assert_close(logps.grad, expected)
    assert stats["kl"] == 0.0 and stats["clip_low"] == stats["clip_high"] == 0.0


def test_grpo_kl_is_zero_at_the_reference_and_positive_elsewhere():
    logps = -torch.rand(2, 4, dtype=torch.float64)
    mask = torch.ones(2, 4, dtype=torch.float64)
    _, at_ref = grpo_loss(logps, logps, logps, t(1.0, -1.0), mask, beta=0.1)
    _, away = grpo_loss(logps, logps, logps - 0.3, t(1.0, -1.0), mask, beta=0.1)
    assert at_ref["kl"] == 0.0
    assert away["kl"] == pytest.approx(math.exp(-0.3) + 0.3 - 1)


def test_bradley_terry_hand_derived():
    """r_w = 1, r_l = -1: log(1 + e^-2) = 0.126928."""
    assert bradley_terry_loss(t(1.0), t(-1.0)).item() == pytest.approx(0.126928, abs=1e-6)


@pytest.mark.parametrize("beta,loss_type,eps,match", [(0.0, "sigmoid", 0.0, "--beta"), (0.1, "hinge", 0.0, "loss_type"),
                                                      (0.1, "cdpo", 0.0, "label_smoothing"),
                                                      (0.1, "sigmoid", 0.1, "label_smoothing"),
                                                      (0.1, "robust", 0.5, "label_smoothing")])  # fmt: skip
def test_bad_dpo_flags_name_the_flag(beta, loss_type, eps, match):
    with pytest.raises(ValueError, match=match):
        check_dpo_args(beta, loss_type, eps)
