"""Held-out preference metrics: does the model prefer the chosen completion, and by how much.

    preference accuracy  fraction of held-out pairs with log pi(chosen | prompt) > log pi(rejected | prompt)
                         (summed completion log-probs: the model's own ranking of the two answers)
    logp margin          mean of log pi(chosen) - log pi(rejected)

These need no reference model, so they compare any two checkpoints (the base model, after SFT, after DPO) on the
same pairs; DPO's implicit-reward metrics (reward accuracy / margins, which are 0 at step 0 by construction) are
reported next to them by the DPO recipe. Rows come from `preferences.encode_pairs` (chosen rows, then rejected).
Left out: length-normalized accuracy (ORPO logs its odds ratio instead), per-category breakdowns.
"""

from __future__ import annotations

import torch

from lmstack.align.batching import Rows
from lmstack.align.logprobs import batched_sequence_logprobs
from lmstack.model.causal_lm import CausalLM


@torch.no_grad()
def pair_logps(model: CausalLM, rows: Rows, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen (N,), rejected (N,)) summed completion log-probs of `encode_pairs` rows."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    logps = batched_sequence_logprobs(model, rows, batch_size)
    if was_training:
        model.train()
    n = logps.shape[0] // 2
    return logps[:n], logps[n:]


def preference_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    margin = chosen - rejected
    return {
        "pref_accuracy": float((margin > 0).float().mean()),
        "logp_margin": float(margin.mean()),
        "chosen_logp": float(chosen.mean()),
        "rejected_logp": float(rejected.mean()),
    }
