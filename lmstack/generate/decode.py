"""Greedy and sampled decoding with a KV cache: batched (left padding), `n` samples per prompt, streaming.

The loop (Radford et al. 2019 style autoregressive decoding, with the cache of Pope et al. 2022):
  1. prefill: left-pad the prompts to one length P, positions -1 on pads, one forward fills the cache;
  2. repeat: last logits -> processors -> (argmax | warpers -> softmax -> multinomial) -> feed the token back
     with position = previous + 1; a row stops at an EOS / stop id (not emitted), a stop string, or
     `max_new_tokens`; finished rows keep stepping (cheaper than reshaping the cache) but emit nothing.
With `n > 1` the prompt is prefilled once and its cache rows duplicated (`ContiguousKVCache.select`).

Randomness comes only from an explicit `torch.Generator` seeded with `params.seed`; the same seed, prompts and
params give the same tokens. Every function here runs under `torch.inference_mode()`.

`generate` is the public entry point and dispatches: beam search (`beam.py`) when `beam_width > 1`,
speculative decoding (`speculative.py`) with a draft model or prompt lookup, this loop otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from lmstack.generate.fast_forward import Logits, forward_fn
from lmstack.generate.kv_cache import ContiguousKVCache, new_cache
from lmstack.generate.params import SamplingParams
from lmstack.generate.processors import LogitsPipeline, sample
from lmstack.generate.stop import TextTracker
from lmstack.model.causal_lm import CausalLM


@dataclass
class StreamEvent:
    row: int  # output row (prompt index * n + sample index)
    token: int  # the new token id (-1 on the final flush event, which carries only held-back text)
    text: str  # text safe to show now ("" without a tokenizer)
    finish_reason: str | None = None  # on the final event: "stop" (EOS, stop id or string) | "length" (see below)


class IncompleteOutputError(ValueError):
    """A constrained output (json_mode / json_schema / regex / choices) ran out of tokens before it was valid.

    `outputs` holds every row's ids as generated, `finish_reasons` says which rows are incomplete ("length").
    Raised by `generate` / `generate_text` unless `allow_incomplete=True`; streams report it as the final
    event's finish_reason instead."""

    def __init__(self, outputs: list[list[int]], finish_reasons: list[str]) -> None:
        bad = [i for i, r in enumerate(finish_reasons) if r != "stop"]
        super().__init__(
            f"constrained output incomplete in row(s) {bad}: the token budget ran out before the output matched "
            "its constraint (finish_reason 'length'); raise max_new_tokens"
        )
        self.outputs, self.finish_reasons = outputs, finish_reasons


@dataclass
class GenerationStats:
    prompt_tokens: int = 0  # real prompt tokens (no padding)
    new_tokens: int = 0  # tokens returned
    forwards: int = 0  # target-model forward calls (prefill included)
    draft_forwards: int = 0  # draft-model forward calls (speculative)
    drafted: int = 0  # draft tokens proposed (speculative)
    accepted: int = 0  # draft tokens accepted (speculative)
    texts: list[str] = field(default_factory=list)  # decoded outputs, cut at stop strings (with a tokenizer)
    kept: list[int] = field(default_factory=list)  # per row: tokens before the stop string (with a tokenizer)
    # per row: "stop" = ended by EOS / a stop id / a stop string (a constrained row: its output is complete and
    # valid); "length" = max_new_tokens ran out first (a constrained row: the output is NOT valid)
    finish_reasons: list[str] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def eos_ids_of(model: CausalLM, params: SamplingParams) -> list[int]:
    """The ids that end a row: the model's EOS (config / generation config) unless ignored, plus stop ids."""
    ids = set(params.stop_token_ids)
    if not params.ignore_eos:
        gen = getattr(model, "generation_config", None)
        eos = gen.get("eos_token_id") if isinstance(gen, dict) else getattr(gen, "eos_token_id", None)
        if eos is None:
            eos = getattr(model.config, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
    return sorted(ids)


def left_pad(prompts: list[list[int]], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """prompts -> input ids (B, P) padded with 0 on the left, positions (B, P) with -1 on the padding."""
    P = max(len(x) for x in prompts)
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    pos = torch.full((len(prompts), P), -1, dtype=torch.long)
    for b, x in enumerate(prompts):
        ids[b, P - len(x) :] = torch.tensor(x, dtype=torch.long)
        pos[b, P - len(x) :] = torch.arange(len(x))
    return ids.to(device), pos.to(device)


def check_prompts(model: CausalLM, prompts: list[list[int]], params: SamplingParams) -> None:
    if not prompts or any(len(x) == 0 for x in prompts):
        raise ValueError("prompts: expected a non-empty list of non-empty token id lists")
    V, limit = model.config.vocab_size, model.config.max_seq_len
    encoder_decoder = getattr(model.config, "is_encoder_decoder", False)  # prompt and output have their own limits
    for i, x in enumerate(prompts):
        if min(x) < 0 or max(x) >= V:
            raise ValueError(f"prompts[{i}]: token ids must be in [0, {V}), got min {min(x)} max {max(x)}")
        if (0 if encoder_decoder else len(x)) + params.max_new_tokens > limit:
            raise ValueError(
                f"prompts[{i}]: {len(x)} prompt + {params.max_new_tokens} new tokens exceed the model's "
                f"max_seq_len={limit}; shorten the prompt or lower max_new_tokens"
            )


def make_generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.seed is None:
        return None
    return torch.Generator(device=device).manual_seed(params.seed)


def prefill(
    model: CausalLM,
    prompts: list[list[int]],
    n: int,
    max_new: int,
    stats: GenerationStats,
    kv_dtype: str = "auto",
    forward: Logits | None = None,
) -> tuple[ContiguousKVCache, torch.Tensor, torch.Tensor]:
    """One forward over the left-padded prompts; rows duplicated n times (the samples share the prefill).
    An encoder-decoder encodes the prompts once and prefills its decoder with `decoder_start_token_id`.

    Returns the cache, last logits (B * n, V) and the next position of every row (B * n, 1)."""
    ids, pos = left_pad(prompts, next(model.parameters()).device)
    if getattr(model.config, "is_encoder_decoder", False):
        cache = new_cache(model, len(prompts), 1 + max_new, kv_dtype)
        cache.encoder = model.encode(ids, pos)
        ids = torch.full((len(prompts), 1), model.config.decoder_start_token_id or 0, device=ids.device)
        pos = torch.zeros_like(ids)
    else:
        cache = new_cache(model, len(prompts), ids.shape[1] + max_new, kv_dtype)
    forward = forward if forward is not None else forward_fn(model)
    logits = forward(ids, pos, cache, True)[:, -1]  # (B, V): the LM head runs on the last position only
    stats.forwards += 1
    stats.prompt_tokens += sum(len(x) for x in prompts)
    next_pos = pos[:, -1:] + 1  # (B, 1)
    if n > 1:  # duplicate cache rows instead of recomputing them
        dup = torch.arange(len(prompts), device=ids.device).repeat_interleave(n)
        cache.select(dup)
        logits, next_pos = logits.index_select(0, dup), next_pos.index_select(0, dup)
    return cache, logits, next_pos


@torch.inference_mode()
def sample_stream(
    model: CausalLM,
    prompts: list[list[int]],
    params: SamplingParams,
    tokenizer: Any = None,
    stats: GenerationStats | None = None,
    constraint: Any = None,
) -> Iterator[StreamEvent]:
    """Yield one event per emitted token (rows interleaved), then one flush event per row with held-back text."""
    check_prompts(model, prompts, params)
    if params.stop and tokenizer is None:
        raise ValueError("stop strings need a tokenizer: pass tokenizer=")
    device = next(model.parameters()).device
    stats = stats if stats is not None else GenerationStats()
    eos = eos_ids_of(model, params)
    R = len(prompts) * params.n
    forward = forward_fn(model)  # the module-call-free forward when it covers the model (fast_forward.py)
    cache, logits, next_pos = prefill(
        model, prompts, params.n, params.max_new_tokens, stats, params.kv_cache_dtype, forward
    )
    rows = [x for x in prompts for _ in range(params.n)]
    pipe = LogitsPipeline(params, logits.shape[-1], eos, rows, device)
    gen = make_generator(params, device)
    eos_set = set(eos)
    trackers = [TextTracker(tokenizer, params.stop) for _ in range(R)] if tokenizer is not None else None
    states = [constraint.start() for _ in range(R)] if constraint is not None else None
    done = [False] * R
    reasons = ["length"] * R
    for step in range(params.max_new_tokens):
        scores = pipe.process(logits) if pipe.active else logits
        if constraint is not None:
            left = params.max_new_tokens - step - 1
            scores = scores.masked_fill(~constraint.masks(states, left, scores.device), float("-inf"))
        tok = scores.argmax(-1) if params.greedy else sample(pipe.warp(scores), gen)  # (R,)
        tok_list = tok.tolist()  # the step's one host read
        hit_eos = [t in eos_set for t in tok_list]
        for r in range(R):
            if done[r]:
                continue
            if hit_eos[r]:
                done[r] = True
                # a constraint out of budget forces EOS before its output is valid: that is not a clean stop
                valid = constraint is None or constraint.entry(states[r]).accepting
                reasons[r] = "stop" if valid else "length"
                continue
            text = ""
            if constraint is not None:
                states[r] = constraint.advance(states[r], tok_list[r])
            if trackers is not None:
                text, stopped = trackers[r].feed(tok_list[r])
                if stopped:
                    done[r] = True
                    reasons[r] = "stop"
            stats.new_tokens += 1
            yield StreamEvent(r, tok_list[r], text)
        if all(done) or step == params.max_new_tokens - 1:
            break
        pipe.append(tok)
        logits = forward(tok[:, None], next_pos, cache)[:, -1]
        stats.forwards += 1
        next_pos = next_pos + 1
    if constraint is not None:  # a row that filled its budget exactly and accepts is complete
        reasons = [
            "stop" if not done[r] and constraint.entry(states[r]).accepting else x for r, x in enumerate(reasons)
        ]
    stats.finish_reasons = reasons
    for r in range(R):
        tail = trackers[r].flush() if trackers is not None else ""
        yield StreamEvent(r, -1, tail, reasons[r])
    if trackers is not None:
        stats.texts = [t.final_text for t in trackers]
        stats.kept = [t.kept_tokens() for t in trackers]


def collect(events: Iterator[StreamEvent], rows: int, stats: GenerationStats) -> list[list[int]]:
    """Gather per-row token lists from a stream; rows cut by a stop string drop the tokens that overlap it."""
    out: list[list[int]] = [[] for _ in range(rows)]
    for e in events:
        if e.token >= 0:
            out[e.row].append(e.token)
    if stats.kept:
        out = [x[:k] for x, k in zip(out, stats.kept)]
    return out
