"""Log-probabilities of completions given prompts: the one quantity DPO, ORPO, GRPO and their metrics share.

For a row x = (prompt, completion) the model gives, at every position t, a distribution over the next token;
the log-probability of the completion is the sum over its tokens:

    log pi(y | x) = sum_{t in completion} log softmax(logits[t - 1])[x[t]]

`token_logprobs` returns the per-token terms (B, T - 1) with everything outside the completion set to 0 (GRPO
needs them per token for its ratio and KL); `sequence_logprobs` sums them (DPO, the reward of a pair) or averages
them over the completion's tokens (ORPO, IPO's length normalization). The cross-entropy kernel computes each term
as `logits[target] - logsumexp(logits)` in float32 without materializing a second (B, T, V) tensor.

Worked example: logits (0, ln 3) over a 2-token vocabulary give p = (1/4, 3/4); a completion of two tokens
[1, 1] after a one-token prompt scores log(3/4) + log(3/4) = -0.575 (tests/align/test_logprobs.py).
Left out: chunking the vocabulary for very large V (TRL's `selective_log_softmax` loops over rows for memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmstack.align.batching import Rows
from lmstack.model.causal_lm import CausalLM


def gather_logprobs(logits: torch.Tensor, input_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """logits (B, T, V), input_ids (B, T) -> (B, T - 1): log p(input_ids[:, t + 1] | input_ids[:, :t + 1]) under
    softmax(logits / temperature)."""
    B, T, V = logits.shape
    scaled = logits[:, :-1].float() / temperature
    nll = F.cross_entropy(scaled.reshape(-1, V), input_ids[:, 1:].reshape(-1), reduction="none")
    return -nll.view(B, T - 1)


def token_logprobs(model: CausalLM, rows: Rows, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-token log-probs (B, T - 1) zeroed outside the completion, the completion mask (B, T - 1)).

    `temperature` scores under the tempered policy softmax(logits / T), the distribution GRPO's rollouts were
    sampled from (TRL divides the logits the same way)."""
    logits = model(rows.input_ids, positions=rows.positions).logits  # (B, T, V)
    mask = rows.completion_mask[:, 1:]  # token t + 1 is predicted at position t
    return gather_logprobs(logits, rows.input_ids, temperature) * mask, mask


def sequence_logprobs(model: CausalLM, rows: Rows, average: bool = False) -> torch.Tensor:
    """(B,) summed (or, with `average`, mean per token) log-probability of each row's completion."""
    per_token, mask = token_logprobs(model, rows)
    total = per_token.sum(-1)
    return total / mask.sum(-1).clamp(min=1.0) if average else total


@torch.no_grad()
def batched_sequence_logprobs(model: CausalLM, rows: Rows, batch_size: int, average: bool = False) -> torch.Tensor:
    """`sequence_logprobs` over many rows in chunks of `batch_size`, without gradients (reference log-probs,
    evaluation). Chunks are re-trimmed to their own longest row so short rows do not pay for long ones."""
    out = []
    for i in range(0, rows.input_ids.shape[0], batch_size):
        chunk = Rows(*(t[i : i + batch_size] for t in (rows.input_ids, rows.positions, rows.completion_mask)))
        out.append(sequence_logprobs(model, trim(chunk), average))
    return torch.cat(out)


def trim(rows: Rows) -> Rows:
    """Drop the padding columns every row of `rows` has."""
    T = int((rows.positions >= 0).sum(-1).max())
    return Rows(rows.input_ids[:, :T], rows.positions[:, :T], rows.completion_mask[:, :T])
