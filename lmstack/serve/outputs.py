"""What the engine returns: per-request outputs (with the deltas a stream sends) and metrics snapshots.

`Engine.step()` returns a `RequestOutput` for every request that changed in that step. Each sample of the request
(`n` of them) is a `CompletionOutput` holding everything so far (`token_ids`, `text`) and what is new since the
previous output (`new_token_ids`, `new_text`), so a caller can stream or wait for the end with the same object.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    token: int
    logprob: float  # log-probability under the model (raw logits, before any processor)
    top: list[tuple[int, float]] = field(default_factory=list)  # the most likely tokens at this step


@dataclass
class CompletionOutput:
    index: int  # sample index within the request
    token_ids: list[int]  # every output token so far (EOS / stop ids excluded; trimmed at a stop string)
    text: str  # every output character so far (cut before a stop string)
    new_token_ids: list[int]  # tokens added since the previous output of this request
    new_text: str  # text added since the previous output
    finish_reason: str | None = None  # None while running; "stop", "length", "abort" or "error"
    logprobs: list[TokenLogprob] | None = None  # per output token, if asked
    new_logprobs: list[TokenLogprob] | None = None  # those of new_token_ids


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    error: str | None = None  # why the request failed (finish_reason "error")
    arrival_time: float = 0.0  # time.perf_counter() when added
    first_token_time: float | None = None
    finish_time: float | None = None
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache


@dataclass
class EngineMetrics:
    """A snapshot for /metrics and benchmarks."""

    num_running: int
    num_waiting: int
    num_blocks: int  # usable KV blocks
    block_size: int
    kv_usage: float  # fraction of blocks held by running sequences
    prefix_cache_queries: int  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int  # of which found
    num_preemptions: int
    prompt_tokens: int  # prompt tokens of finished requests
    generation_tokens: int  # tokens generated
    finished: dict[str, int]  # requests finished, by reason
    blocks_used: int  # blocks held by some sequence (0 once everything finished: no leak)
    ttft_p50: float  # time to first token over recent requests (s): median and 99th percentile
    ttft_p99: float
    itl_p50: float  # inter-token latency over recent tokens (s)
    itl_p99: float

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`; 0.0 when empty."""
    xs = sorted(values)
    if not xs:
        return 0.0
    return xs[min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))]
