"""Rollouts for GRPO: sample a group of completions per prompt with `lmstack.generate`, decode and score them.

One call renders every prompt (`batching.prompt_ids`), asks `generate` for `n = group_size` samples per prompt
(the prompt is prefilled once and its KV-cache rows duplicated), decodes each completion and scores it with the
task's reward functions (`tasks.REWARDS`, weighted sum). Rows come back prompt-major: row i * G + j is sample j of
prompt i, the layout `grpo_loss.group_advantages` expects.

A reply ends at the end-of-reply token (`<|im_end|>` with ChatML, a newline in a plain transcript), passed as the
only stop id (`ignore_eos=True`): `generate` leaves the stop token out, so it is appended back to each reply that
ended, and the policy is trained to stop; a reply cut at `max_new_tokens` gets none. The same function with
temperature 0 is the held-out evaluation (greedy, deterministic).
Left out: multi-turn / tool-use rollouts, batched reward models as rewards, asynchronous generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmstack.align.batching import Rows, end_of_reply_ids, pad_rows, prompt_ids
from lmstack.align.tasks import REWARDS, Problem
from lmstack.generate import SamplingParams, generate
from lmstack.model.causal_lm import CausalLM


@dataclass
class Rollouts:
    rows: Rows  # (P * G, T) prompt + completion rows, completion_mask on the sampled tokens
    texts: list[str]  # (P * G) decoded completions
    rewards: torch.Tensor  # (P * G,) weighted sum of the reward functions
    per_reward: dict[str, torch.Tensor]  # reward name -> (P * G,) its unweighted values
    ended: torch.Tensor  # (P * G,) bool: the reply ended with its end token (not cut at max_new_tokens)


def score(problems: list[Problem], texts: list[str], group: int, rewards: dict[str, float]) -> dict[str, torch.Tensor]:
    """reward name -> (len(texts),) values; text k answers problem k // group."""
    unknown = sorted(set(rewards) - set(REWARDS))
    if unknown:
        raise ValueError(f"--rewards: unknown {unknown}, expected some of {', '.join(REWARDS)}")
    return {
        name: torch.tensor([REWARDS[name](problems[k // group], t) for k, t in enumerate(texts)], dtype=torch.float32)
        for name in rewards
    }


@torch.no_grad()
def rollout(
    model: CausalLM, tok: Any, problems: list[Problem], params: SamplingParams, rewards: dict[str, float],
    max_len: int = 0,
) -> Rollouts:  # fmt: skip
    """Sample `params.n` completions for each problem and score them; `rewards` maps reward name -> weight."""
    was_training = getattr(model, "training", False)
    model.eval()
    end = end_of_reply_ids(tok)
    prompts = [prompt_ids(tok, p.question) for p in problems]
    params = params.replace(stop_token_ids=end, ignore_eos=True)
    new = generate(model, prompts, params)  # (P * n) lists of new ids, end token left out
    if was_training:
        model.train()
    texts = [tok.decode(x) for x in new]
    ended = [len(x) < params.max_new_tokens for x in new]  # stopped early = produced the end token
    completions = [x + end if e else x for x, e in zip(new, ended)]
    rows = pad_rows([p for p in prompts for _ in range(params.n)], completions, max_len)
    values = score(problems, texts, params.n, rewards)
    total = sum(w * values[name] for name, w in rewards.items())
    return Rollouts(rows, texts, total, values, torch.tensor(ended))
