"""Greedy exact-match accuracy in one teacher-forced forward per batch (no decoding loop).

Claim: greedy decoding from a prompt emits exactly the answer tokens a_1..a_k followed by the end token e iff,
in ONE forward pass over prompt + a_1..a_k + e, the argmax of the logits at the position before each of
a_1, ..., a_k, e equals that token.
Proof: greedy step j feeds the prompt plus the tokens it has emitted so far and takes the argmax. If every
teacher-forced argmax matches, then by induction the decoder's inputs at step j are exactly prompt + a_1..a_(j-1)
-- the same tokens the teacher-forced pass saw, with the same causal attention -- so it emits a_j, and finally
e, where it stops. If some argmax differs, the first differing step is where greedy decoding leaves the answer.
So accuracy = mean over items of [all k + 1 argmaxes match], one forward per batch instead of k + 1 cached
decode steps, with no dependency on `lmstack.generate` (which sits to the right of finetune).

It is token-exact: a model that would write the same text through another tokenization counts as wrong (rare:
digits are single tokens in SmolLM2's tokenizer). A tie between two top logits is broken by `argmax`'s first
index here and may differ inside the decoder's float path (measure zero in practice). bench/finetune.py also
scores by real greedy generation for comparison.
"""

from __future__ import annotations

from typing import Any

import torch

from lmstack.finetune.chat_data import Messages, prompt_and_answer


@torch.no_grad()
def greedy_exact_match(
    model: Any, tok: Any, conversations: list[Messages], batch_size: int = 16, device: str = "cpu"
) -> dict[str, Any]:
    """Fraction of conversations whose final assistant answer greedy decoding would reproduce exactly, plus the
    mean loss per answer token from the same forward (`answer_loss`, the held-out SFT loss of single-turn data)."""
    was_training = model.training
    model.eval()
    items = [prompt_and_answer(tok, m) for m in conversations]
    correct: list[bool] = []
    nats, count = 0.0, 0
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        T = max(len(p) + len(a) for p, a in chunk)
        ids = torch.zeros(len(chunk), T, dtype=torch.long)
        pos = torch.full((len(chunk), T), -1, dtype=torch.long)  # right padding, masked by position -1
        for b, (p, a) in enumerate(chunk):
            n = len(p) + len(a)
            ids[b, :n] = torch.tensor(p + a)
            pos[b, :n] = torch.arange(n)
        logits = model(ids.to(device), positions=pos.to(device)).logits.float().cpu()  # (B, T, V)
        pred = logits.argmax(-1)  # (B, T)
        for b, (p, a) in enumerate(chunk):
            # the token at t + 1 is predicted at t: answer tokens sit at len(p) .. len(p) + len(a) - 1
            at = slice(len(p) - 1, len(p) + len(a) - 1)
            correct.append(bool(torch.equal(pred[b, at], torch.tensor(a))))
            nats += float(torch.nn.functional.cross_entropy(logits[b, at], torch.tensor(a), reduction="sum"))
            count += len(a)
    model.train(was_training)
    n = max(len(correct), 1)
    return {"accuracy": sum(correct) / n, "answer_loss": nats / max(count, 1), "n": len(correct), "correct": correct}
