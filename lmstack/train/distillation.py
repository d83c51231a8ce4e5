"""Knowledge distillation (Hinton et al. 2015): a student learns the teacher's whole next-token distribution, not
just the one observed token.

    loss = alpha * tau^2 * KL(p_teacher^tau || p_student^tau) + (1 - alpha) * CE(student, observed token)

where p^tau = softmax(logits / tau). A temperature tau > 1 flattens both distributions so the student also learns
how the teacher ranks the unlikely tokens ("dark knowledge"); the tau^2 factor keeps the soft term's gradient on
the scale of the hard one as tau changes (the gradient of the softened KL shrinks as 1/tau^2).

Storing a 49k-token teacher distribution per position is 100 KB; we store the teacher's top-k logits instead
(`teacher_topk`, computed once for the training tokens) and distill against the teacher renormalized over those k
tokens: KL(q || p_student^tau) with q = softmax(top-k logits / tau) over the k ids (mass outside the top-k is
dropped; k = 64 keeps > 0.95 of SmolLM2's probability on natural text, see docs/train.md). With k = V it is the
exact KL (tests/train/test_distill.py ties it to `torch.nn.functional.kl_div`).
Left out: sequence-level KD (training on teacher samples), intermediate-layer matching, on-policy (student-sampled)
distillation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def teacher_topk(
    teacher: torch.nn.Module, windows: torch.Tensor, k: int, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top-k next-token logits for each input window (N, T): values (N, T, k) fp32, ids (N, T, k)."""
    values, ids = [], []
    for i in range(0, windows.shape[0], batch_size):
        logits = teacher(windows[i : i + batch_size]).logits.float()  # (b, T, V)
        top = logits.topk(k, dim=-1)
        values.append(top.values)
        ids.append(top.indices.to(torch.int32))
    return torch.cat(values), torch.cat(ids)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_values: torch.Tensor,
    teacher_ids: torch.Tensor,
    targets: torch.Tensor,
    tau: float = 2.0,
    alpha: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, soft KL term, hard CE term) for student logits (B, T, V), teacher top-k (B, T, k), targets (B, T).

    The KL is averaged over positions, each position's KL summed over the k teacher ids."""
    s = student_logits.float()
    log_p = F.log_softmax(s / tau, dim=-1).gather(-1, teacher_ids.long())  # (B, T, k): student at the teacher's ids
    q = F.softmax(teacher_values.float() / tau, dim=-1)  # (B, T, k) teacher, renormalized over its top-k
    soft = (q * (q.clamp_min(1e-30).log() - log_p)).sum(-1).mean()  # KL(q || p_student)
    hard = F.cross_entropy(s.flatten(0, 1), targets.reshape(-1), ignore_index=-100)
    return alpha * tau**2 * soft + (1 - alpha) * hard, soft, hard
