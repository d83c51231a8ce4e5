"""Our preference and GRPO losses equal TRL 1.16's own loss code on the same log-prob tensors, values and gradients.

TRL computes its losses inside trainer methods; each test calls that method unbound, with a stand-in `self`
holding only the attributes the method reads, and a stand-in model whose output carries our per-token log-probs.
So the formulas under test are TRL's source as installed, not a restatement:
  DPO sigmoid / robust / IPO   trl/trainer/dpo_trainer.py        DPOTrainer._compute_loss
  conservative DPO             trl/experimental/cpo/cpo_trainer.py   CPOTrainer.cpo_loss ("sigmoid", label_smoothing)
  ORPO odds ratio              trl/experimental/orpo/orpo_trainer.py ORPOTrainer.odds_ratio_loss
  reward model                 trl/trainer/reward_trainer.py     RewardTrainer.compute_loss
  GRPO loss                    trl/trainer/grpo_trainer.py       GRPOTrainer._compute_loss
Tolerance: float64 inputs, 1e-10 (the same operations in a different order).
"""

from __future__ import annotations

import os
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.cpo.cpo_trainer import CPOTrainer
from trl.experimental.orpo.orpo_trainer import ORPOTrainer
from trl.trainer.dpo_trainer import DPOTrainer
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.reward_trainer import RewardTrainer

from lmstack.align.dpo_loss import dpo_loss
from lmstack.align.grpo_loss import grpo_loss
from lmstack.align.orpo_loss import odds_ratio_loss, orpo_loss
from lmstack.align.reward_model import bradley_terry_loss

pytestmark = pytest.mark.xdist_group("trl")  # one worker pays TRL's import
TOL = dict(rtol=1e-10, atol=1e-10)


def _accelerator() -> SimpleNamespace:
    same = lambda x, **kw: x  # noqa: E731  one process: gather / reduce are the identity
    return SimpleNamespace(device=torch.device("cpu"), gather=same, gather_for_metrics=same, reduce=same,
                           process_index=0, num_processes=1, sync_gradients=True)  # fmt: skip


def _per_token(B: int, T: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (B, T - 1) already zero outside the completion, and the completion mask (B, T)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        start = int(torch.randint(1, T // 2, (1,), generator=g))
        end = int(torch.randint(start + 1, T + 1, (1,), generator=g))
        mask[b, start:end] = 1
    logps = -torch.rand(B, T - 1, generator=g, dtype=torch.float64) * 3 * mask[:, 1:]
    return logps, mask


def _trl_dpo(per_token: torch.Tensor, mask: torch.Tensor, ref_c, ref_r, beta: float, loss_type: str, eps: float):
    B2, T1 = per_token.shape
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros(B2, T1), mean_logits=torch.zeros(B2, T1),
                              is_top1=torch.zeros(B2, T1, dtype=torch.bool))  # fmt: skip
    model = lambda **kw: outputs  # noqa: E731
    fake = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=_accelerator(), aux_loss_enabled=False,
                           ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
                           loss_types=[loss_type], loss_weights=[1.0], beta=beta, label_smoothing=eps,
                           use_weighting=False, _metrics=defaultdict(lambda: defaultdict(list)),
                           _total_train_tokens=0, _tp_size=1)  # fmt: skip
    inputs = {"input_ids": torch.ones(B2, T1 + 1, dtype=torch.long), "attention_mask": torch.ones(B2, T1 + 1),
              "completion_mask": mask, "ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r}  # fmt: skip
    return DPOTrainer._compute_loss(fake, model, inputs, False)


@pytest.mark.parametrize("loss_type,eps", [("sigmoid", 0.0), ("robust", 0.2), ("ipo", 0.0)])
def test_matches_trl_dpo_loss_and_gradients(loss_type, eps):
    B, T, beta = 6, 12, 0.3
    per_token, mask = _per_token(2 * B, T, seed=1)
    ref = -torch.rand(2 * B, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 20
    ours_in = per_token.clone().requires_grad_(True)
    theirs_in = per_token.clone().requires_grad_(True)
    logps = ours_in.sum(-1)
    lengths = mask.sum(-1).double()
    out = dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:], beta, loss_type, eps, lengths[:B], lengths[B:])
    ours = out.losses.mean()
    theirs = _trl_dpo(theirs_in, mask, ref[:B], ref[B:], beta, loss_type, eps)
    torch.testing.assert_close(ours, theirs, **TOL)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, **TOL)
    assert ours_in.grad.abs().sum() > 0


def test_matches_trl_conservative_dpo():
    """cDPO is DPO's sigmoid loss with a smoothed target; TRL's CPO loss computes exactly that on the margin."""
    g = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = (-torch.rand(8, generator=g, dtype=torch.float64) * 10 for _ in range(4))
    pc.requires_grad_(True)
    beta, eps = 0.25, 0.15
    ours = dpo_loss(pc, pr, rc, rr, beta, "cdpo", eps).losses
    fake = SimpleNamespace(alpha=0.0, loss_type="sigmoid", beta=beta, label_smoothing=eps, accelerator=_accelerator())
    pc2 = pc.detach().clone().requires_grad_(True)
    theirs = CPOTrainer.cpo_loss(fake, pc2 - rc, pr - rr)[0]
    torch.testing.assert_close(ours, theirs, **TOL)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(pc.grad, pc2.grad, **TOL)


def test_matches_trl_orpo_odds_ratio_and_total():
    g = torch.Generator().manual_seed(4)
    chosen = (-torch.rand(8, generator=g, dtype=torch.float64) * 4).requires_grad_(True)  # avg log-probs < 0
    rejected = (-torch.rand(8, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    chosen[0].data.fill_(-1e-6)  # near 0: log1mexp's accurate branch
    nll = torch.tensor(1.7, dtype=torch.float64)
    lam = 0.1
    fake = SimpleNamespace(beta=lam, accelerator=_accelerator())
    c2, r2 = (t.detach().clone().requires_grad_(True) for t in (chosen, rejected))
    trl_losses = ORPOTrainer.odds_ratio_loss(fake, c2, r2)[0]
    ours_total, ratio = orpo_loss(chosen, rejected, nll, lam)
    torch.testing.assert_close(ratio.losses, -trl_losses, **TOL)
    torch.testing.assert_close(ours_total, nll - trl_losses.mean(), **TOL)  # TRL: loss = nll - losses.mean()
    ours_total.backward()
    (nll - trl_losses.mean()).backward()
    torch.testing.assert_close(chosen.grad, c2.grad, **TOL)
    torch.testing.assert_close(rejected.grad, r2.grad, **TOL)
    assert odds_ratio_loss(chosen, rejected, lam).chosen_rewards.shape == (8,)


@pytest.mark.parametrize("center", [0.0, 0.01])
def test_matches_trl_reward_loss(center):
    g = torch.Generator().manual_seed(5)
    rewards = torch.randn(10, 1, generator=g, dtype=torch.float64, requires_grad=True)
    margin = torch.rand(5, generator=g, dtype=torch.float64)
    outputs = SimpleNamespace(logits=rewards)
    fake = SimpleNamespace(model=SimpleNamespace(training=False), accelerator=_accelerator(), _total_train_tokens=0,
                           _tp_size=1, _metrics=defaultdict(lambda: defaultdict(list)),
                           args=SimpleNamespace(center_rewards_coefficient=center or None))  # fmt: skip
    theirs = RewardTrainer.compute_loss(fake, lambda **kw: outputs, {"attention_mask": torch.ones(10, 3),
                                                                      "margin": margin})  # fmt: skip
    r = rewards.squeeze(-1)
    ours = bradley_terry_loss(r[:5], r[5:], margin, center)
    torch.testing.assert_close(ours, theirs, **TOL)


def _trl_grpo(logps, old, ref, adv, mask, beta, loss_type, eps_low, eps_high, max_len):
    B, T = logps.shape
    fake = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **kw: (logps, torch.zeros(B, T, dtype=logps.dtype), None),
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None), loss_type=loss_type, epsilon_low=eps_low,
        epsilon_high=eps_high, use_vllm=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        accelerator=_accelerator(), _metrics=defaultdict(lambda: defaultdict(list)), max_completion_length=max_len,
    )  # fmt: skip
    inputs = {"prompt_ids": torch.ones(B, 3, dtype=torch.long), "prompt_mask": torch.ones(B, 3),
              "completion_ids": torch.ones(B, T, dtype=torch.long), "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref}  # fmt: skip
    return GRPOTrainer._compute_loss(fake, None, inputs)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_matches_trl_grpo_loss_and_gradients(loss_type, beta):
    B, T = 8, 7
    g = torch.Generator().manual_seed(6)
    mask = (torch.rand(B, T, generator=g) > 0.2).double()
    mask[:, 0] = 1
    old = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    logps = (old + 0.4 * torch.randn(B, T, generator=g, dtype=torch.float64)).requires_grad_(True)  # some clip
    ref = old + 0.1 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    ours, stats = grpo_loss(logps, old, ref, adv, mask, beta, 0.2, 0.28, loss_type, max_completion_length=T)
    logps2 = logps.detach().clone().requires_grad_(True)
    theirs = _trl_grpo(logps2, old, ref, adv, mask, beta, loss_type, 0.2, 0.28, T)
    torch.testing.assert_close(ours, theirs, **TOL)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(logps.grad, logps2.grad, **TOL)
    assert stats["clip_low"] + stats["clip_high"] > 0  # the clipped branch was exercised
