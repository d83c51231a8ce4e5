"""`SamplingParams`: everything one generation request asks for, validated once.

The same object drives `lmstack.generate.generate`, the streaming iterator, beam search, speculative decoding
and (later) the serving engine, so it holds plain values only (no model, no tokenizer): a draft model is a
separate argument of `generate`. Field names follow Hugging Face `GenerationConfig` where HF has the knob
(`top_k`, `top_p`, `typical_p`, `repetition_penalty`, `no_repeat_ngram_size`, `length_penalty`, ...) and the
OpenAI API where it does not (`frequency_penalty`, `presence_penalty`, `logit_bias`, `stop`, `n`).

Neutral values switch a knob off: `top_k=0`, `top_p=1`, `min_p=0`, `typical_p=1`, penalties 1 / 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SamplingParams:
    max_new_tokens: int = 64  # stop after this many new tokens
    temperature: float = 1.0  # softmax temperature; 0 = greedy (argmax)
    top_k: int = 0  # keep the k most likely tokens (0 = off)
    top_p: float = 1.0  # nucleus: keep the smallest set with probability >= top_p (1 = off)
    min_p: float = 0.0  # drop tokens with p < min_p * p_max (0 = off)
    typical_p: float = 1.0  # locally typical sampling mass (1 = off)
    repetition_penalty: float = 1.0  # CTRL rule on every seen token: positive logits / r, negative * r (1 = off)
    frequency_penalty: float = 0.0  # OpenAI: logit -= f * count of the token in the output so far
    presence_penalty: float = 0.0  # OpenAI: logit -= p if the token occurs in the output so far
    no_repeat_ngram_size: int = 0  # never repeat an n-gram of this size (0 = off)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> value added to its logit
    bad_words_ids: list[list[int]] = field(default_factory=list)  # token sequences that must never be completed
    min_new_tokens: int = 0  # EOS / stop ids are banned until this many tokens are out
    stop: list[str] = field(default_factory=list)  # stop strings (need a tokenizer); not included in the output
    stop_token_ids: list[int] = field(default_factory=list)  # extra EOS ids; not included in the output
    ignore_eos: bool = False  # keep going past the model's EOS ids (stop_token_ids still stop)
    seed: int | None = None  # seed of the explicit torch.Generator (None = nondeterministic)
    n: int = 1  # samples per prompt; they share the prompt's prefill
    beam_width: int = 1  # beam search when > 1 (deterministic; sampling knobs are ignored)
    length_penalty: float = 1.0  # beam score = sum logprob / length ** length_penalty
    early_stopping: bool | str = False  # beam: True, False (HF heuristic) or "never"
    num_return_sequences: int = 1  # beam: best hypotheses returned per prompt (<= beam_width)
    json_mode: bool = False  # output is one JSON object
    json_schema: dict[str, Any] | None = None  # output matches this JSON-Schema subset
    regex: str | None = None  # output fully matches this regular expression
    choices: list[str] | None = None  # output is exactly one of these strings
    num_draft_tokens: int = 4  # speculative: tokens drafted per target call
    prompt_lookup: bool = False  # speculative: draft by n-gram lookup in the context (no draft model)
    prompt_lookup_max_ngram: int = 3  # prompt lookup: longest suffix n-gram matched
    kv_cache_dtype: str = "auto"  # auto (the model's dtype) | int8 (per-head scales, lmstack.quant.kv_cache)

    def __post_init__(self) -> None:
        _check_int(self, "max_new_tokens", 0)
        _check_float(self, "temperature", 0.0)
        _check_int(self, "top_k", 0)
        _check_float(self, "top_p", 0.0, 1.0, open_low=True)
        _check_float(self, "min_p", 0.0, 1.0)
        _check_float(self, "typical_p", 0.0, 1.0, open_low=True)
        _check_float(self, "repetition_penalty", 0.0, open_low=True)
        _check_float(self, "frequency_penalty", -2.0, 2.0)
        _check_float(self, "presence_penalty", -2.0, 2.0)
        _check_int(self, "no_repeat_ngram_size", 0)
        _check_int(self, "min_new_tokens", 0)
        _check_int(self, "n", 1)
        _check_int(self, "beam_width", 1)
        _check_float(self, "length_penalty", -math.inf)
        _check_int(self, "num_return_sequences", 1)
        _check_int(self, "num_draft_tokens", 1)
        _check_int(self, "prompt_lookup_max_ngram", 1)
        if self.kv_cache_dtype not in ("auto", "int8"):
            raise ValueError(f"kv_cache_dtype={self.kv_cache_dtype!r}: expected 'auto' or 'int8'")
        if self.early_stopping not in (True, False, "never"):
            raise ValueError(f"early_stopping={self.early_stopping!r}: expected true, false or 'never'")
        if self.num_return_sequences > self.beam_width and self.beam_width > 1:
            raise ValueError(f"num_return_sequences={self.num_return_sequences} exceeds beam_width={self.beam_width}")
        if self.beam_width > 1 and self.n > 1:
            raise ValueError(f"n={self.n} with beam_width={self.beam_width}: use num_return_sequences for beams")
        for name in ("stop", "stop_token_ids", "bad_words_ids", "choices"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (list, tuple)):  # "ee" would stop at every "e"
                raise ValueError(f"{name}={value!r}: expected a list (e.g. {name}=[{value!r}])")
        if not isinstance(self.logit_bias, dict):
            raise ValueError(f"logit_bias={self.logit_bias!r}: expected a mapping {{token_id: bias}}")
        for tok, bias in self.logit_bias.items():
            if not isinstance(tok, int) or isinstance(tok, bool) or tok < 0 or not isinstance(bias, (int, float)):
                raise ValueError(f"logit_bias: expected {{token_id: float}}, got {tok!r}: {bias!r}")
        for seq in self.bad_words_ids:
            if not isinstance(seq, (list, tuple)) or not seq or not all(isinstance(t, int) and t >= 0 for t in seq):
                raise ValueError(f"bad_words_ids: each entry must be a non-empty list of token ids, got {seq!r}")
        if not all(isinstance(t, int) and t >= 0 for t in self.stop_token_ids):
            raise ValueError(f"stop_token_ids: expected token ids, got {self.stop_token_ids!r}")
        if not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop: expected non-empty strings, got {self.stop!r}")
        constraints = [self.json_mode, self.json_schema is not None, self.regex is not None, self.choices is not None]
        if sum(constraints) > 1:
            raise ValueError("json_mode, json_schema, regex and choices are exclusive: set at most one")
        if self.choices is not None and (not self.choices or not all(isinstance(c, str) and c for c in self.choices)):
            raise ValueError(f"choices: expected a non-empty list of non-empty strings, got {self.choices!r}")
        if self.beam_width > 1 and any(constraints):
            raise ValueError("beam search with json_mode/json_schema/regex/choices is not supported")

    @property
    def greedy(self) -> bool:
        """True when the next token is the argmax (temperature 0)."""
        return self.temperature == 0.0

    @property
    def constrained(self) -> bool:
        """True when a JSON / schema / regex / choice automaton restricts the output."""
        return self.json_mode or self.json_schema is not None or self.regex is not None or self.choices is not None

    def replace(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def _check_int(p: SamplingParams, name: str, low: int) -> None:
    v = getattr(p, name)
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        raise ValueError(f"{name}={v!r}: expected an integer >= {low}")


def _check_float(p: SamplingParams, name: str, low: float, high: float = math.inf, open_low: bool = False) -> None:
    v = getattr(p, name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ValueError(f"{name}={v!r}: expected a number")
    if v < low or (open_low and v == low) or v > high:
        lo = "(" if open_low else "["
        raise ValueError(f"{name}={v!r}: expected a value in {lo}{low}, {high}]")
    setattr(p, name, float(v))
