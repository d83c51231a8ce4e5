"""Log-likelihood of (context, continuation) pairs: the primitive behind multiple-choice benchmarks, equal to
lm-eval's `HFLM.loglikelihood` on the same pairs and the same model.

For each pair the result is (sum over continuation tokens of log p(token | everything before it), whether every
continuation token is the argmax at its position, number of continuation tokens). Tokenization follows
lm-eval exactly, because the split between context and continuation decides which tokens are scored:

  1. trailing whitespace of the context moves to the front of the continuation ("Answer: " + "Paris" is scored
     as "Answer:" + " Paris", so the space joins the answer's first token as BPE would merge it);
  2. whole = encode(context + continuation), ctx = encode(context), continuation tokens = whole[len(ctx):]
     (so a merge across the boundary is scored as part of the continuation);
  3. an empty context becomes the BOS token (EOS if there is none), unless the continuation starts with it;
  4. a pair longer than the model's window keeps its last max_seq_len + 1 tokens (left truncation).

Computation (`score_groups`): pairs that share a context (the choices of one question) are one group. The contexts of
a batch of groups are left-padded and prefilled once through a KV cache, in chunks of `chunk_tokens` (long
contexts never materialize (T, V) logits at once); the logits at the last context token score every choice's first
token; the cache rows are then duplicated per choice (`ContiguousKVCache.select`) and one more forward over the
right-padded continuations scores the rest. lm-eval instead runs context + continuation once per choice; the
numbers agree to float rounding (tests/eval/test_loglikelihood_parity.py) and a 4-choice question costs about
one context instead of four.
Left out: rolling (whole-document) log-likelihood (`lmstack.eval.perplexity` reuses train/evaluate.py for that).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from lmstack.common.log import progress
from lmstack.generate.decode import left_pad
from lmstack.generate.kv_cache import ContiguousKVCache
from lmstack.model.causal_lm import CausalLM, model_device


@dataclass
class Loglik:
    logprob: float  # sum of log p over the continuation tokens (nats)
    is_greedy: bool  # every continuation token is the argmax given what precedes it
    n_tokens: int  # continuation tokens scored


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text`; special-token text becomes the special token, as an HF tokenizer does."""
    return tokenizer.encode(text, allowed_special="all")


def prefix_id(tokenizer: Any) -> int:
    """The token an empty context is replaced by: BOS, else EOS (lm-eval's `prefix_token_id`)."""
    tid = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    if tid is None:
        raise ValueError("an empty context needs a BOS or EOS token; the tokenizer has neither")
    return tid


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split the way lm-eval splits them (rules 1-3 of the module docstring)."""
    if context == "":
        cont = encode(tokenizer, continuation)
        p = prefix_id(tokenizer)
        return ([p], cont) if not cont or cont[0] != p else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole, ctx = encode(tokenizer, context + continuation), encode(tokenizer, context)
    return ctx, whole[len(ctx) :]


def truncate(ctx: list[int], cont: list[int], max_len: int) -> list[int]:
    """The context lm-eval keeps when context + continuation exceed the window: the input (ctx + cont)[:-1] is cut to
    its last `max_len` tokens."""
    if len(cont) > max_len:
        raise ValueError(f"a continuation of {len(cont)} tokens does not fit the model's window of {max_len}")
    keep = max_len + 1 - len(cont)
    return ctx[-keep:] if len(ctx) > keep else ctx


@torch.inference_mode()
def score_groups(
    model: CausalLM, groups: Sequence[tuple[list[int], list[list[int]]]], chunk_tokens: int = 512
) -> list[list[Loglik]]:
    """Score every continuation of every (context ids, [continuation ids, ...]) group in one batch."""
    device = model_device(model)
    ids, pos = left_pad([ctx for ctx, _ in groups], device)  # (B, P), -1 positions on the left padding
    B, P = ids.shape
    C = max(len(c) for _, conts in groups for c in conts)  # longest continuation
    cache = ContiguousKVCache.for_model(model, B, max_len=P + C)
    for s in range(0, P, chunk_tokens):  # chunked prefill: at most (B, chunk, V) logits at a time
        last = model(ids[:, s : s + chunk_tokens], positions=pos[:, s : s + chunk_tokens], cache=cache).logits[:, -1]
    first_lp = F.log_softmax(last.float(), dim=-1)  # (B, V): the last context token predicts each first token
    rows = [(g, cont) for g, (_, conts) in enumerate(groups) for cont in conts]
    rest_lp = None
    if C > 1:  # the continuation tokens but the last are inputs; they predict tokens 1..len-1
        cache.select(torch.tensor([g for g, _ in rows], device=device))
        x = torch.zeros(len(rows), C - 1, dtype=torch.long)
        xp = torch.full((len(rows), C - 1), -1, dtype=torch.long)  # right padding: position -1, never read
        for r, (g, cont) in enumerate(rows):
            x[r, : len(cont) - 1] = torch.tensor(cont[:-1])
            xp[r, : len(cont) - 1] = torch.arange(len(groups[g][0]), len(groups[g][0]) + len(cont) - 1)
        rest_lp = F.log_softmax(model(x.to(device), positions=xp.to(device), cache=cache).logits.float(), dim=-1)
    out: list[list[Loglik]] = [[] for _ in groups]
    for r, (g, cont) in enumerate(rows):
        lp = first_lp[g, cont[0]].item()
        greedy = int(first_lp[g].argmax()) == cont[0]
        if len(cont) > 1:
            steps = rest_lp[r, : len(cont) - 1]  # (len-1, V)
            target = torch.tensor(cont[1:], device=steps.device)
            lp += steps.gather(1, target[:, None]).sum().item()
            greedy = greedy and bool((steps.argmax(-1) == target).all())
        out[g].append(Loglik(lp, greedy, len(cont)))
    return out


def _batches(order: list[int], cost: list[int], budget: int) -> list[list[int]]:
    """Consecutive runs of `order` whose summed cost stays within `budget` (a single item may exceed it)."""
    batches, cur, used = [], [], 0
    for i in order:
        if cur and used + cost[i] > budget:
            batches.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += cost[i]
    return batches + ([cur] if cur else [])


def loglikelihood_tokens(
    model: CausalLM,
    requests: Sequence[tuple[list[int], list[int]]],
    batch_tokens: int = 4096,
    chunk_tokens: int = 512,
    show_progress: bool = False,
) -> list[Loglik]:
    """Score (context ids, continuation ids) pairs; pairs with the same context share its prefill.

    batch_tokens bounds the KV cache of one batch: sum over its choices of (padded context + continuation)."""
    max_len = model.config.max_seq_len
    groups: dict[tuple[int, ...], list[int]] = {}  # context ids -> request indices
    for i, (ctx, cont) in enumerate(requests):
        if not ctx or not cont:
            raise ValueError(f"request {i}: context and continuation must both be non-empty token lists")
        if len(ctx) + len(cont) > max_len + 1:
            ctx = truncate(ctx, cont, max_len)
        groups.setdefault(tuple(ctx), []).append(i)
    keys = list(groups)
    order = sorted(range(len(keys)), key=lambda k: -len(keys[k]))  # longest first: little padding per batch
    cost = [
        len(groups[keys[k]]) * (len(keys[k]) + max(len(requests[i][1]) for i in groups[keys[k]]))
        for k in range(len(keys))
    ]
    results: list[Loglik | None] = [None] * len(requests)
    bar = progress(total=len(requests), desc="loglikelihood", unit="choice", disable=not show_progress or None)
    for batch in _batches(order, cost, batch_tokens):
        todo = [(list(keys[k]), [requests[i][1] for i in groups[keys[k]]]) for k in batch]
        for k, scored in zip(batch, score_groups(model, todo, chunk_tokens)):
            for i, res in zip(groups[keys[k]], scored):
                results[i] = res
        bar.update(sum(len(groups[keys[k]]) for k in batch))
    bar.close()
    return results  # type: ignore[return-value]


def loglikelihood(
    model: CausalLM, tokenizer: Any, requests: Sequence[tuple[str, str]], show_progress: bool = False, **kw: Any
) -> list[Loglik]:
    """Score (context, continuation) strings: `encode_pair` then `loglikelihood_tokens`."""
    return loglikelihood_tokens(
        model, [encode_pair(tokenizer, c, x) for c, x in requests], show_progress=show_progress, **kw
    )
