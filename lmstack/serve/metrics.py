"""/metrics in the Prometheus text format (`prometheus-client`), one registry per app.

Engine state is read from a snapshot the engine thread takes between steps (`AsyncEngine.metrics`), so a scrape
never races a step: running / waiting requests, KV blocks used and total, prefix-cache queries and hits (their
ratio is the hit rate), preemptions, prompt and generated tokens, finished requests by reason. Latencies are
histograms fed by the HTTP handlers from each request's outputs: time to first token, inter-token latency,
end-to-end latency. `lmstack_http_responses_total{code}` counts responses by status (the load test reads it).
Names follow vLLM's where it has one (`vllm:num_requests_running` -> `lmstack_num_requests_running`).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lmstack.serve.outputs import EngineMetrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("lmstack_time_to_first_token_seconds", "Time to first token", buckets=LATENCY_BUCKETS,
                              registry=r)  # fmt: skip
        self.itl = Histogram("lmstack_inter_token_latency_seconds", "Time between streamed tokens",
                             buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.e2e = Histogram("lmstack_e2e_request_latency_seconds", "Request latency, arrival to last token",
                             buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.responses = Counter("lmstack_http_responses", "HTTP responses by status code", ["code"], registry=r)
        self.snapshot: EngineMetrics | None = None
        r.register(_EngineCollector(self))

    def render(self) -> tuple[str, str]:
        return generate_latest(self.registry).decode(), CONTENT_TYPE_LATEST


class _EngineCollector:
    def __init__(self, owner: ServeMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        m = self.owner.snapshot
        if m is None:
            return
        gauges = {
            "lmstack_num_requests_running": ("Sequences running", m.num_running),
            "lmstack_num_requests_waiting": ("Sequences waiting", m.num_waiting),
            "lmstack_kv_cache_usage_ratio": ("Fraction of KV blocks in use", m.kv_usage),
            "lmstack_kv_cache_blocks_used": ("KV blocks held by sequences", m.blocks_used),
            "lmstack_kv_cache_blocks_total": ("KV blocks in the pool", m.num_blocks),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "lmstack_prefix_cache_queries": ("Prompt tokens looked up in the prefix cache", m.prefix_cache_queries),
            "lmstack_prefix_cache_hits": ("Prompt tokens found in the prefix cache", m.prefix_cache_hits),
            "lmstack_num_preemptions": ("Sequences preempted (recomputed later)", m.num_preemptions),
            "lmstack_prompt_tokens": ("Prompt tokens of finished requests", m.prompt_tokens),
            "lmstack_generation_tokens": ("Tokens generated", m.generation_tokens),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)
        done = CounterMetricFamily("lmstack_request_finished", "Finished requests by reason", labels=["reason"])
        for reason, count in sorted(m.finished.items()):
            done.add_metric([reason], count)
        yield done
