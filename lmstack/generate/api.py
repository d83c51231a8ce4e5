"""The public entry points: `generate`, `stream_generate`, `generate_text`. They only pick a strategy.

    generate(model, prompts, params)            -> new token ids per output row
      beam_width > 1                             -> beam.beam_search (len = len(prompts) * num_return_sequences)
      draft_model given or params.prompt_lookup  -> speculative.speculative_generate (one prompt at a time)
      otherwise                                  -> decode.sample_stream (len = len(prompts) * n)
    Rows are ordered prompt-major: row i * n + j is sample j of prompt i. EOS / stop ids are not included.

A constraint (json_mode / json_schema / regex / choices) needs the tokenizer to know every token's text.
`stats=GenerationStats()` collects counts (forwards, acceptance rate, decoded texts) and each row's
finish_reason ("stop" | "length") when passed in. A constrained output that ran out of tokens before it was valid
is never returned silently: `generate` raises `IncompleteOutputError` (unless `allow_incomplete=True`), streams
end the row with finish_reason "length".
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lmstack.generate.decode import (
    GenerationStats,
    IncompleteOutputError,
    StreamEvent,
    collect,
    eos_ids_of,
    sample_stream,
)
from lmstack.generate.params import SamplingParams
from lmstack.model.causal_lm import CausalLM


def build_constraint(model: CausalLM, params: SamplingParams, tokenizer: Any) -> Any:
    """The token-level automaton for a constrained request, or None."""
    if not params.constrained:
        return None
    if tokenizer is None:
        raise ValueError("json_mode / json_schema / regex / choices need a tokenizer: pass tokenizer=")
    from lmstack.generate.constrained import TokenConstraint

    return TokenConstraint.from_params(params, tokenizer, model.config.vocab_size, eos_ids_of(model, params))


def _events(
    model: CausalLM,
    prompts: list[list[int]],
    params: SamplingParams,
    tokenizer: Any,
    draft_model: CausalLM,
    stats: GenerationStats,
) -> Iterator[StreamEvent]:
    constraint = build_constraint(model, params, tokenizer)
    if draft_model is not None or params.prompt_lookup:
        from lmstack.generate.speculative import speculative_stream

        return speculative_stream(model, prompts, params, draft_model, tokenizer, stats, constraint)
    return sample_stream(model, prompts, params, tokenizer, stats, constraint)


def generate(
    model: CausalLM,
    prompts: list[list[int]],
    params: SamplingParams,
    *,
    tokenizer: Any = None,
    draft_model: CausalLM | None = None,
    stats: GenerationStats | None = None,
    allow_incomplete: bool = False,
) -> list[list[int]]:
    """New token ids per output row (see the module docstring for the row layout).

    A constrained request whose output could not be completed within `max_new_tokens` raises
    `IncompleteOutputError` (carrying the outputs), unless `allow_incomplete=True`: then check
    `stats.finish_reasons` ("length" = incomplete)."""
    stats = stats if stats is not None else GenerationStats()
    if params.beam_width > 1:
        from lmstack.generate.beam import beam_search

        return beam_search(model, prompts, params, tokenizer=tokenizer, stats=stats)
    rows = len(prompts) * params.n
    out = collect(_events(model, prompts, params, tokenizer, draft_model, stats), rows, stats)
    if params.constrained and not allow_incomplete and any(r != "stop" for r in stats.finish_reasons):
        raise IncompleteOutputError(out, stats.finish_reasons)
    return out


def generate_text(
    model: CausalLM,
    tokenizer: Any,
    prompts: list[str],
    params: SamplingParams,
    *,
    draft_model: CausalLM | None = None,
    stats: GenerationStats | None = None,
    allow_incomplete: bool = False,
) -> list[str]:
    """Text in, text out: each output decoded and cut right before the first stop string (incomplete
    constrained outputs: as in `generate`)."""
    stats = stats if stats is not None else GenerationStats()
    ids = generate(model, [tokenizer.encode(p) for p in prompts], params, tokenizer=tokenizer,
                   draft_model=draft_model, stats=stats, allow_incomplete=allow_incomplete)  # fmt: skip
    return stats.texts if stats.texts else [tokenizer.decode(x) for x in ids]


def stream_generate(
    model: CausalLM,
    prompt: list[int],
    params: SamplingParams,
    *,
    tokenizer: Any = None,
    draft_model: CausalLM | None = None,
    stats: GenerationStats | None = None,
) -> Iterator[StreamEvent]:
    """Yield `StreamEvent(row, token, text)` as tokens are produced for one prompt (rows 0..n-1).

    Text chunks never split a UTF-8 character and never show part of a stop string; the last event of each
    row has token -1 and carries any held-back text. Beam search cannot stream (the best beam is known last).
    """
    if params.beam_width > 1:
        raise ValueError("beam_width > 1 cannot stream: the best hypothesis is only known at the end")
    stats = stats if stats is not None else GenerationStats()
    yield from _events(model, [prompt], params, tokenizer, draft_model, stats)
