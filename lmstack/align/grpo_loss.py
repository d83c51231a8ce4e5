"""GRPO: group-normalized advantages and the clipped policy-gradient loss with a KL penalty to the reference.

GRPO (Shao et al. 2024, "DeepSeekMath", Sec. 4.1) is PPO without a value network: for each prompt, sample a
group of G completions, score each with a reward r_i, and use the group's own statistics as the baseline:

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + 1e-4)        (std with Bessel's correction, as TRL)

Every token of completion i gets advantage A_i. With ratio rho_t = pi(y_t) / pi_old(y_t) (pi_old = the policy
that sampled; equal to pi on the first pass over a batch, so rho = 1 but its gradient is the policy gradient):

    l_t  = -min(rho_t A_i, clip(rho_t, 1 - eps_low, 1 + eps_high) A_i) + beta * KL_t
    KL_t = pi_ref(y_t) / pi(y_t) - log(pi_ref(y_t) / pi(y_t)) - 1       (Schulman's k3 estimator: unbiased, >= 0)

Reductions over the completion tokens (mask m):
    grpo     mean over sequences of (sum_t m l_t / sum_t m)        (the paper; long answers weigh less per token)
    bnpo     sum m l / sum m                                      (token-level mean over the batch)
    dr_grpo  sum m l / (B * max_completion_length)                (Liu et al. 2025, "Dr. GRPO": no length bias)

Worked example (tests/align/test_grpo_loss.py): rewards (1, 0, 0, 1) in one group have mean 1/2 and Bessel std
sqrt(1/3) = 0.57735, so A = (+-0.5) / 0.57745 = +-0.865876.
Matches TRL 1.16: advantages as in `GRPOTrainer._generate_and_score_completions` (`trl/trainer/grpo_trainer.py`,
`scale_rewards="group"|"batch"|"none"`, eps 1e-4) and the loss as `GRPOTrainer._compute_loss` (token-level
importance sampling, two-sided clip, k3 KL); the test runs TRL's `_compute_loss` on the same tensors.
Left out: sequence-level importance sampling (GSPO), entropy bonuses, multiple reward functions' weights.
"""

from __future__ import annotations

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo")
SCALES = ("group", "batch", "none")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """rewards (N,) laid out group after group (N = prompts * group_size) -> advantages (N,)."""
    if scale not in SCALES:
        raise ValueError(f"--scale_rewards: got {scale!r}, expected one of {', '.join(SCALES)}")
    assert group_size >= 2 and rewards.numel() % group_size == 0, f"{rewards.numel()} rewards, groups of {group_size}"
    grouped = rewards.view(-1, group_size)  # (P, G)
    mean = grouped.mean(dim=1, keepdim=True).expand_as(grouped).reshape(-1)  # (N,)
    if scale == "group":
        std = grouped.std(dim=1, keepdim=True).expand_as(grouped).reshape(-1)  # Bessel-corrected
    elif scale == "batch":
        std = rewards.std().expand_as(rewards)
    else:
        return rewards - mean
    return (rewards - mean) / (std + 1e-4)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.0,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    loss_type: str = "grpo",
    max_completion_length: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token log-probs (B, T) of the policy, the sampling policy and the reference, advantages (B,) and the
    completion mask (B, T) -> (scalar loss, stats: kl, clip fractions)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"--loss_type: got {loss_type!r}, expected one of {', '.join(LOSS_TYPES)}")
    adv = advantages[:, None]  # (B, 1): one advantage for every token of a completion
    ratio = torch.exp(logps - old_logps)  # (B, T)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)  # (B, T) pessimistic (clipped) surrogate
    kl = torch.zeros_like(per_token)
    if beta != 0.0:
        assert ref_logps is not None, "beta > 0 needs the reference log-probs"
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1  # (B, T) k3 estimate of KL(pi || pi_ref)
        per_token = per_token + beta * kl
    tokens = mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * mask).sum() / tokens
    else:
        assert max_completion_length > 0, "dr_grpo needs max_completion_length"
        loss = (per_token * mask).sum() / (per_token.shape[0] * max_completion_length)
    with torch.no_grad():
        low = ((ratio < 1 - epsilon_low) & (adv < 0)).float()
        high = ((ratio > 1 + epsilon_high) & (adv > 0)).float()
        stats = {
            "kl": float((kl * mask).sum() / tokens),
            "clip_low": float((low * mask).sum() / tokens),
            "clip_high": float((high * mask).sum() / tokens),
        }
    return loss, stats
