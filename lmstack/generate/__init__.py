"""Generation: logits processors, greedy / sampled / beam / speculative / constrained decoding with a KV cache.

    from lmstack.generate import generate, SamplingParams, stream_generate
    out = generate(model, [[1, 2, 3]], SamplingParams(max_new_tokens=20, temperature=0))

See docs/generate.md for each strategy, when to use it, and the benchmarks.
"""

from lmstack.generate.api import generate, generate_text, stream_generate
from lmstack.generate.decode import GenerationStats, IncompleteOutputError, StreamEvent
from lmstack.generate.kv_cache import ContiguousKVCache
from lmstack.generate.params import SamplingParams

__all__ = [
    "ContiguousKVCache",
    "GenerationStats",
    "IncompleteOutputError",
    "SamplingParams",
    "StreamEvent",
    "generate",
    "generate_text",
    "stream_generate",
]
