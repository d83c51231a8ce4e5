"""A tiny uncached sampler for progress samples during training.

Each new token re-runs the whole (cropped) context through the model: O(T^2) work per token, fine for a few
hundred tokens from a small model. The real decoder (KV cache, top-p, beam search, ...) lives in
`lmstack.generate`, which sits to the right of `train` in the stage order and so may not be imported here.
Temperature + top-k only (Fan et al. 2018 for top-k); no cache, no batching, no stop strings.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def sample_ids(
    model: nn.Module,
    prompt: list[int],
    max_new_tokens: int,
    context: int,
    temperature: float = 0.8,
    top_k: int | None = 40,
    generator: torch.Generator | None = None,
    device: str = "cpu",
    stop_id: int | None = None,
) -> list[int]:
    """Continue `prompt` by up to `max_new_tokens` ids (temperature 0 = greedy); returns only the new ids."""
    if not prompt:
        raise ValueError("sample: the prompt must have at least one token")
    was_training = model.training
    model.eval()
    ids = torch.tensor([prompt], dtype=torch.long, device=device)  # (1, T)
    new: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(ids[:, -context:]).logits[0, -1].float()  # (V,) next-token logits
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k is not None and top_k < logits.numel():
                kth = torch.topk(logits, top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))  # keep the k most likely
            probs = torch.softmax(logits, dim=-1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        if stop_id is not None and nxt == stop_id:
            break
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
    model.train(was_training)
    return new
