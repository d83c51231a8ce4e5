"""The DPO family of losses on sequence log-probabilities: DPO (sigmoid), conservative DPO, robust DPO and IPO.

DPO (Rafailov et al. 2023, "Direct Preference Optimization") turns the RLHF objective (maximize a reward minus
beta * KL to a reference policy) into a classification loss on preference pairs. The policy's implicit reward of
a completion is r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)); with the Bradley-Terry preference model the
negative log-likelihood of "chosen beats rejected" is

    h      = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))      (the log-ratio margin)
    sigmoid: L = -log sigmoid(beta * h)
    cdpo:    L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)          labels flipped with prob. eps
             (Mitchell 2023, "A note on DPO with noisy preferences"; label smoothing of the BT target)
    robust:  L = [-(1 - eps) log sigmoid(beta h) + eps log sigmoid(-beta h)] / (1 - 2 eps)
             (Chowdhury et al. 2024, "Provably Robust DPO": an unbiased loss under flip rate eps)
    ipo:     L = (h_w / |y_w| - h_l / |y_l| - 1 / (2 beta))^2                       (Azar et al. 2023, Eq. 17)
             a squared loss that regresses the (per-token) margin to 1/(2 beta) instead of pushing it to
             infinity; the log-ratios are divided by completion lengths as TRL does (agreed with the authors)

Worked example (tests/align/test_dpo_loss.py): beta = 0.1, log pi(y_w) = -10, log pi_ref(y_w) = -12,
log pi(y_l) = -15, log pi_ref(y_l) = -14: h = 2 - (-1) = 3, so L_sigmoid = log(1 + e^-0.3) = 0.554355 and
dL/d log pi(y_w) = -beta * sigmoid(-0.3) = -0.0425557; with eps = 0.1, L_cdpo = 0.9 * 0.554355 + 0.1 * 0.854355
= 0.584355; with lengths 4 and 2, L_ipo = (2/4 + 1/2 - 5)^2 = 16.

The same formulas as TRL 1.16 (`trl/trainer/dpo_trainer.py`, `DPOTrainer._compute_loss`, loss types "sigmoid",
"robust", "ipo"; the conservative form is `trl/experimental/cpo/cpo_trainer.py`, `CPOTrainer.cpo_loss`, "sigmoid"
with `label_smoothing`); tests run TRL's own code on the same tensors.
Left out: hinge, EXO, NCA, BCO, SPPO, APO, AOT and the f-divergence variants TRL also has.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_TYPES = ("sigmoid", "cdpo", "robust", "ipo")


@dataclass
class PreferenceLoss:
    losses: torch.Tensor  # (B,) per-pair loss; the training loss is its mean
    chosen_rewards: torch.Tensor  # (B,) beta * (log pi - log pi_ref) of the chosen completion, detached
    rejected_rewards: torch.Tensor  # (B,) same for the rejected completion

    def metrics(self, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> dict[str, float]:
        """TRL's DPO metrics: loss, reward accuracy and margin, mean rewards and log-probs."""
        margins = self.chosen_rewards - self.rejected_rewards
        return {
            "loss": float(self.losses.detach().mean()),
            "reward_accuracy": float((margins > 0).float().mean()),
            "reward_margin": float(margins.mean()),
            "chosen_reward": float(self.chosen_rewards.mean()),
            "rejected_reward": float(self.rejected_rewards.mean()),
            "chosen_logp": float(chosen_logps.detach().mean()),
            "rejected_logp": float(rejected_logps.detach().mean()),
        }


def dpo_loss(
    chosen_logps: torch.Tensor,
    rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> PreferenceLoss:
    """Per-pair loss from summed completion log-probs, all (B,); lengths (B,) are needed only by IPO."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"--loss_type: got {loss_type!r}, expected one of {', '.join(LOSS_TYPES)}")
    chosen_logratios = chosen_logps - ref_chosen_logps  # (B,) log pi/pi_ref of y_w
    rejected_logratios = rejected_logps - ref_rejected_logps  # (B,) of y_l
    h = chosen_logratios - rejected_logratios
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "cdpo":  # the BT target is 1 - eps instead of 1
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "robust":  # the flipped term is subtracted: unbiased when labels flip with rate eps
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    else:  # ipo, on per-token log-ratios
        assert chosen_lengths is not None and rejected_lengths is not None, "ipo needs completion lengths"
        per_token = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        losses = (per_token - 1 / (2 * beta)) ** 2
    return PreferenceLoss(losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach())


def check_dpo_args(beta: float, loss_type: str, label_smoothing: float) -> None:
    """Validate the loss flags (a recipe config calls this in `__post_init__`)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"--loss_type: got {loss_type!r}, expected one of {', '.join(LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"--beta: got {beta}, expected > 0")
    if loss_type in ("cdpo", "robust") and not 0 < label_smoothing < 0.5:
        raise ValueError(f"--label_smoothing: got {label_smoothing}, expected 0 < eps < 0.5 for {loss_type}")
    if loss_type not in ("cdpo", "robust") and label_smoothing != 0:
        raise ValueError(f"--label_smoothing={label_smoothing} only applies to --loss_type=cdpo or robust")
