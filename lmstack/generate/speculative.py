"""Speculative decoding: a cheap drafter proposes k tokens, one target forward checks them all.

Acceptance rule (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding"; Chen et al.
2023, "Accelerating LLM Decoding with Speculative Sampling"): for draft token d_i drawn from the drafter's q_i,
accept it with probability min(1, p_i(d_i) / q_i(d_i)), where p_i is the target's distribution at that
position (after the same processors and warpers). At the first rejection, sample from the residual
    r(x) = max(0, p_i(x) - q_i(x)) / sum_y max(0, p_i(y) - q_i(y))
and stop; if all k are accepted, sample a bonus token from p_{k+1}. Every emitted token is then distributed
exactly as the target's p (tests/generate/test_speculative.py checks this with a chi-square test). Greedy is
the T -> 0 limit: accept while d_i == argmax p_i, then emit the argmax — identical to plain greedy.

Drafters: a small draft model sharing the vocabulary (its own KV cache, rolled back with `truncate`), or prompt
lookup (Saxena 2023, "Prompt Lookup Decoding"): find the latest earlier occurrence of the context's last n
tokens (n = max_ngram .. 1) and propose the k tokens that followed. Lookup drafts are deterministic, i.e.
q = one-hot, so the rule becomes: accept with probability p_i(d_i), residual = p_i without d_i.

Cache invariant: both caches hold every accepted token except the last one (`last`); an iteration feeds
[last, d_1..d_k] to the target (k + 1 positions) and truncates its cache to the accepted prefix.
Left out: batching (one sequence at a time; `n` samples run one after another), tree/Medusa/EAGLE drafting,
constrained output (use the plain loop), draft models with a different tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from lmstack.generate.decode import GenerationStats, StreamEvent, check_prompts, eos_ids_of, make_generator
from lmstack.generate.fast_forward import Logits, forward_fn
from lmstack.generate.kv_cache import ContiguousKVCache, new_cache
from lmstack.generate.params import SamplingParams
from lmstack.generate.processors import LogitsPipeline, fork
from lmstack.generate.stop import TextTracker
from lmstack.model.causal_lm import CausalLM


def accept(
    p: torch.Tensor, q: torch.Tensor, draft: torch.Tensor, gen: torch.Generator | None, greedy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The acceptance rule on N independent drafts.

    p (N, k+1, V) target probabilities, q (N, k, V) draft probabilities, draft (N, k) draft tokens
    -> accepted count m (N,) in [0, k], and the next token (N,) (residual sample, or bonus when m == k).
    """
    N, k = draft.shape
    rows = torch.arange(N, device=p.device)
    if greedy:
        ok = p[:, :k].argmax(-1) == draft  # (N, k)
    else:
        p_d = p[:, :k].gather(-1, draft[..., None]).squeeze(-1)  # (N, k) p_i(d_i)
        q_d = q.gather(-1, draft[..., None]).squeeze(-1)
        u = torch.rand(N, k, generator=gen, device=p.device)
        ok = u * q_d < p_d  # u < p/q without dividing by a zero q
    m = torch.cumprod(ok.long(), dim=-1).sum(-1)  # (N,) accepted prefix length
    target = p[rows, m]  # (N, V) distribution at the first rejected position (or the bonus one)
    if greedy:
        return m, target.argmax(-1)
    q_pad = torch.cat([q, torch.zeros_like(q[:, :1])], dim=1)  # bonus position: residual of p - 0 = p
    resid = (target - q_pad[rows, m]).clamp_(min=0)
    mass = resid.sum(-1, keepdim=True)
    resid = torch.where(mass > 0, resid / mass.clamp(min=1e-30), target)  # p == q exactly: any rejection is moot
    return m, torch.multinomial(resid, 1, generator=gen).squeeze(-1)


def lookup_draft(context: list[int], k: int, max_ngram: int) -> list[int]:
    """Prompt lookup: the tokens after the latest earlier match of the longest suffix n-gram (may be < k or [])."""
    L = len(context)
    for n in range(min(max_ngram, L - 1), 0, -1):
        suffix = context[L - n :]
        for start in range(L - n - 1, -1, -1):  # latest match first, excluding the suffix itself
            if context[start : start + n] == suffix:
                return context[start + n : start + n + k]
    return []


def _probs(pipe: LogitsPipeline, logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """Processed + warped distributions for consecutive positions. logits (T, V) -> probs (T, V).

    Position i sees the history extended by tokens[:i], on a fork so the real pipeline is untouched."""
    f = fork(pipe)
    out = []
    for i in range(logits.shape[0]):
        scores = f.process(logits[i : i + 1]) if f.active else logits[i : i + 1]
        out.append(scores if f.p.greedy else f.warp(scores).softmax(-1))
        if i < len(tokens):
            f.append(torch.tensor(tokens[i : i + 1], device=logits.device))
    return torch.cat(out).float()


class Drafter:
    """A draft model with its own cache; `pending` are accepted tokens it has not read yet."""

    def __init__(
        self, model: CausalLM, prompt: list[int], params: SamplingParams, max_len: int, eos: list[int]
    ) -> None:
        self.model, self.params, self.forward = model, params, forward_fn(model)
        self.cache = new_cache(model, 1, max_len, params.kv_cache_dtype)
        dev = next(model.parameters()).device
        if len(prompt) > 1:
            ids = torch.tensor([prompt[:-1]], device=dev)
            self.forward(ids, torch.arange(len(prompt) - 1, device=dev)[None], self.cache, True)
        self.pending = [prompt[-1]]
        self.pipe = LogitsPipeline(params, model.config.vocab_size, eos, [prompt], dev)
        self.forwards = 1 if len(prompt) > 1 else 0

    def draft(self, k: int, gen: torch.Generator | None) -> tuple[list[int], torch.Tensor]:
        """k tokens and their draft distributions q (k, V)."""
        dev = self.cache.pos.device
        tokens, qs, f = [], [], fork(self.pipe)
        feed = self.pending
        for _ in range(k):
            start = self.cache.length
            pos = torch.arange(start, start + len(feed), device=dev)[None]
            logits = self.forward(torch.tensor([feed], device=dev), pos, self.cache, True)[0, -1:]
            self.forwards += 1
            scores = f.process(logits) if f.active else logits
            q = torch.zeros_like(scores).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)
            if not self.params.greedy:
                q = f.warp(scores).softmax(-1).float()
            t = int(scores.argmax(-1)) if self.params.greedy else int(torch.multinomial(q, 1, generator=gen))
            tokens.append(t)
            qs.append(q)
            f.append(torch.tensor([t], device=dev))
            feed = [t]
        return tokens, torch.cat(qs)

    def commit(self, base: int, drafted: list[int], m: int, nxt: int) -> None:
        """Keep the first m drafted tokens; `base` = cache length when drafting started."""
        if not drafted:  # nothing was fed this round
            self.pending = self.pending + [nxt]
            self.pipe.append(torch.tensor([nxt], device=self.cache.pos.device))
            return
        kept = base + len(self.pending) + min(m, len(drafted) - 1)  # the last drafted token was never fed
        self.cache.truncate(min(kept, self.cache.length))
        self.pending = (drafted[m - 1 : m] if m == len(drafted) else []) + [nxt]
        for t in drafted[:m] + [nxt]:
            self.pipe.append(torch.tensor([t], device=self.cache.pos.device))


def _one_sequence(
    model: CausalLM,
    prompt: list[int],
    params: SamplingParams,
    draft_model: CausalLM,
    gen: torch.Generator | None,
    stats: GenerationStats,
) -> Iterator[int]:
    """Yield accepted tokens of one sequence (EOS excluded; stops at EOS or max_new_tokens)."""
    dev = next(model.parameters()).device
    eos = set(eos_ids_of(model, params))
    max_len = len(prompt) + params.max_new_tokens + params.num_draft_tokens + 1
    cache = new_cache(model, 1, max_len, params.kv_cache_dtype)
    forward = forward_fn(model)
    if len(prompt) > 1:
        forward(torch.tensor([prompt[:-1]], device=dev), torch.arange(len(prompt) - 1, device=dev)[None], cache, True)
        stats.forwards += 1
    pipe = LogitsPipeline(params, model.config.vocab_size, sorted(eos), [prompt], dev)
    drafter = Drafter(draft_model, prompt, params, max_len, sorted(eos)) if draft_model is not None else None
    try:
        yield from _rounds(model, forward, prompt, params, drafter, cache, pipe, gen, stats, eos)
    finally:
        if drafter is not None:
            stats.draft_forwards += drafter.forwards


def _rounds(
    model: CausalLM,
    forward: Logits,
    prompt: list[int],
    params: SamplingParams,
    drafter: Drafter | None,
    cache: ContiguousKVCache,
    pipe: LogitsPipeline,
    gen: torch.Generator | None,
    stats: GenerationStats,
    eos: set[int],
) -> Iterator[int]:
    """Draft -> verify -> accept rounds until EOS or max_new_tokens."""
    dev, k = cache.pos.device, params.num_draft_tokens
    context, last, emitted = list(prompt), prompt[-1], 0
    while emitted < params.max_new_tokens:
        budget = min(k, params.max_new_tokens - emitted - 1)
        if drafter is not None:
            base = drafter.cache.length
            drafted, q = drafter.draft(budget, gen) if budget > 0 else ([], None)
        else:
            drafted = lookup_draft(context, budget, params.prompt_lookup_max_ngram) if budget > 0 else []
            q = torch.zeros(len(drafted), model.config.vocab_size, device=dev)
            q[torch.arange(len(drafted)), torch.tensor(drafted, dtype=torch.long)] = 1.0
        start = cache.length
        feed = torch.tensor([[last] + drafted], device=dev)  # (1, k+1)
        pos = torch.arange(start, start + feed.shape[1], device=dev)[None]
        logits = forward(feed, pos, cache)[0]  # (k+1, V)
        stats.forwards += 1
        p = _probs(pipe, logits, drafted)
        if drafted:
            m_t, x_t = accept(p[None], q[None], torch.tensor([drafted], device=dev), gen, params.greedy)
            m, nxt = int(m_t), int(x_t)
        else:
            m = 0
            nxt = int(p[0].argmax()) if params.greedy else int(torch.multinomial(p[0], 1, generator=gen))
        stats.drafted += len(drafted)
        stats.accepted += m
        cache.truncate(start + 1 + m)  # keeps last + d_1..d_m; nxt becomes the new `last`
        if drafter is not None:
            drafter.commit(base, drafted, m, nxt)
        for t in drafted[:m] + [nxt]:
            if t in eos or emitted >= params.max_new_tokens:
                return
            pipe.append(torch.tensor([t], device=dev))
            context.append(t)
            emitted += 1
            yield t
        last = nxt


@torch.inference_mode()
def speculative_stream(
    model: CausalLM,
    prompts: list[list[int]],
    params: SamplingParams,
    draft_model: CausalLM | None = None,
    tokenizer: Any = None,
    stats: GenerationStats | None = None,
    constraint: Any = None,
) -> Iterator[StreamEvent]:
    """Same events as `decode.sample_stream`, produced by speculative decoding one row at a time."""
    check_prompts(model, prompts, params)
    if constraint is not None:
        raise ValueError("constrained output (json/regex/choices) is not supported with speculative decoding")
    if params.stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer: pass tokenizer=")
    if draft_model is not None and draft_model.config.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"draft_model vocab_size={draft_model.config.vocab_size} != target vocab_size="
            f"{model.config.vocab_size}: the draft must share the tokenizer"
        )
    stats = stats if stats is not None else GenerationStats()
    gen = make_generator(params, next(model.parameters()).device)
    row, trackers = 0, []
    for prompt in prompts:
        stats.prompt_tokens += len(prompt)
        for _ in range(params.n):
            tracker = TextTracker(tokenizer, params.stop) if tokenizer is not None else None
            count, stopped = 0, False
            for t in _one_sequence(model, prompt, params, draft_model, gen, stats):
                text, stopped = tracker.feed(t) if tracker is not None else ("", False)
                stats.new_tokens += 1
                count += 1
                yield StreamEvent(row, t, text)
                if stopped:
                    break
            reason = "stop" if stopped or count < params.max_new_tokens else "length"  # fewer tokens: EOS came
            stats.finish_reasons.append(reason)
            yield StreamEvent(row, -1, tracker.flush() if tracker is not None else "", reason)
            trackers.append(tracker)
            row += 1
    if tokenizer is not None:
        stats.texts = [t.final_text for t in trackers]
        stats.kept = [t.kept_tokens() for t in trackers]
