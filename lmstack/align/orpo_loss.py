"""ORPO: supervised fine-tuning plus an odds-ratio penalty, in one stage and without a reference model.

ORPO (Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model") adds to the SFT loss
on the chosen completion a term that raises the odds of the chosen completion relative to the rejected one:

    P(y|x)   = exp(mean log-prob of y's tokens)                 (the per-token average, as in the paper)
    odds(y)  = P / (1 - P)        log odds(y) = log P - log(1 - P)
    L_OR     = -log sigmoid(log odds(y_w) - log odds(y_l))
    L        = L_SFT(y_w) + lambda * L_OR

log(1 - P) = log(1 - exp(log P)) is computed stably (`log1mexp`: log(-expm1(a)) near 0, log1p(-exp(a)) below
-ln 2; Maechler 2012, "Accurately computing log(1 - exp(-|a|))").

Worked example (tests/align/test_orpo_loss.py): per-token probabilities P_w = 1/2 and P_l = 1/5 give odds 1 and
1/4, a log odds ratio of ln 4, sigmoid(ln 4) = 4/5 and L_OR = ln(5/4) = 0.223144; with lambda = 0.1 and an SFT
loss of 2.0, L = 2.0223144.

The odds-ratio term equals TRL 1.16's `ORPOTrainer.odds_ratio_loss` (`trl/experimental/orpo/orpo_trainer.py`,
where `beta` is lambda and the returned `losses` is lambda * log sigmoid(...), subtracted from the NLL); the test
runs that function. One difference, on purpose: TRL's NLL term covers prompt *and* completion tokens; here it
covers the completion only, as the paper's L_SFT (the prompt is given, not generated).
Left out: ORPO's use with reward-model-ranked multi-response data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmstack.align.dpo_loss import PreferenceLoss


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and for very negative x."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def odds_ratio_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, lam: float) -> PreferenceLoss:
    """Per-pair lambda * L_OR from per-token average log-probs (B,); rewards are lambda * avg log-prob (TRL's)."""
    chosen, rejected = chosen_avg_logps.float(), rejected_avg_logps.float()
    log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))  # (B,) log odds(y_w) / odds(y_l)
    losses = -lam * F.logsigmoid(log_odds)
    return PreferenceLoss(losses, lam * chosen.detach(), lam * rejected.detach())


def orpo_loss(
    chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, chosen_nll: torch.Tensor, lam: float
) -> tuple[torch.Tensor, PreferenceLoss]:
    """(the scalar ORPO loss L_SFT + lambda * mean L_OR, the odds-ratio part per pair)."""
    ratio = odds_ratio_loss(chosen_avg_logps, rejected_avg_logps, lam)
    return chosen_nll + ratio.losses.mean(), ratio
