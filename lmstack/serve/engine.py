"""The `Engine`: continuous batching over a paged KV cache, one `step()` at a time.

    engine = Engine(model, tokenizer, EngineConfig(kv_cache_bytes=1 << 30))
    engine.add_request("req-1", prompt_ids, SamplingParams(max_new_tokens=64, temperature=0))
    while engine.has_unfinished():
        for out in engine.step():            # RequestOutputs with the new tokens / text of this step
            ...
    engine.generate(prompts, params)         # offline: run everything, return one RequestOutput per prompt

One step = scheduler.schedule() (who runs, how many tokens each: `scheduler.py`) -> runner.execute() (one or
two model forwards through the paged cache: `runner.py`) -> scheduler.update() (computed counts, prefix cache)
-> for every sequence that caught up, choose its next token (`sampling.py`: the same processors, constraints and
stop strings as `lmstack.generate`), append it or finish the sequence. A request with n > 1 forks into n
sequences once its prompt is computed, sharing the prompt's blocks.

Failures stay local: an exception while sampling one request fails that request only (finish reason "error");
an exception in the model forward fails the requests of that step and the engine goes on.
Not supported here (ValueError at `add_request`): beam search and speculative decoding (use `lmstack.generate`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from lmstack.generate.api import build_constraint
from lmstack.generate.decode import check_prompts, eos_ids_of
from lmstack.generate.params import SamplingParams
from lmstack.model.causal_lm import CausalLM
from lmstack.serve.outputs import CompletionOutput, EngineMetrics, RequestOutput, TokenLogprob, percentile
from lmstack.serve.paged_cache import PagedKVCache, kv_bytes_per_token
from lmstack.serve.runner import ModelRunner
from lmstack.serve.sampling import SequenceSampler
from lmstack.serve.scheduler import Scheduler, SchedulerConfig
from lmstack.serve.sequence import Sequence


@dataclass
class EngineConfig:
    kv_cache_bytes: int = 1 << 30  # KV-cache memory budget in bytes, preallocated as blocks
    num_blocks: int = 0  # exact number of KV blocks, null block included (0 = from kv_cache_bytes)
    block_size: int = 8  # tokens per KV block (8: half the last-block waste of 16 at no measured cost on CPU)
    max_num_seqs: int = 64  # sequences running at once
    max_num_batched_tokens: int = 512  # token budget of one step (prefill chunks + decodes)
    max_prefill_chunk: int = 0  # most prompt tokens one sequence computes per step (0 = the whole budget)
    chunked_prefill: bool = True  # split long prompts over steps so running decodes are not stalled
    prefix_caching: bool = True  # reuse the KV blocks of earlier requests that share a prefix

    def __post_init__(self) -> None:
        if self.kv_cache_bytes <= 0 and self.num_blocks <= 0:
            raise ValueError(f"--kv_cache_bytes={self.kv_cache_bytes}: must be > 0")
        if self.num_blocks < 0:
            raise ValueError(f"--num_blocks={self.num_blocks}: must be >= 0")


@dataclass
class _Sample:
    index: int
    seq: Sequence
    sampler: SequenceSampler
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    sent_tokens: int = 0  # tokens already reported
    sent_text: int = 0  # characters already reported
    finish_reason: str | None = None
    token_times: list[float] = field(default_factory=list)


@dataclass
class _Request:
    request_id: str
    prompt: list[int]
    params: SamplingParams
    logprobs: int | None
    samples: list[_Sample]
    arrival_time: float
    first_token_time: float | None = None
    finish_time: float | None = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples) and len(self.samples) == self.params.n


class Engine:
    def __init__(self, model: CausalLM, tokenizer: Any = None, config: EngineConfig | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.config = config = config or EngineConfig()
        per_block = kv_bytes_per_token(model) * config.block_size
        # never more blocks than max_num_seqs full-context sequences can use (a tiny model would get millions)
        most = config.max_num_seqs * -(-model.config.max_seq_len // config.block_size) + 1
        num_blocks = config.num_blocks or min(config.kv_cache_bytes // per_block, most)
        if num_blocks < 2:
            raise ValueError(f"--kv_cache_bytes={config.kv_cache_bytes}: less than one block ({per_block} bytes)")
        self.scheduler = Scheduler(
            SchedulerConfig(
                num_blocks=num_blocks,
                block_size=config.block_size,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                max_prefill_chunk=config.max_prefill_chunk,
                chunked_prefill=config.chunked_prefill,
                prefix_caching=config.prefix_caching,
            )
        )
        self.cache = PagedKVCache.for_model(model, num_blocks, config.block_size)
        self.runner = ModelRunner(model, self.cache)
        self.device = self.runner.device
        self.requests: dict[str, _Request] = {}
        self._constraints: dict[str, Any] = {}  # one automaton + vocabulary trie per distinct constraint
        self._done: list[RequestOutput] = []  # finished outside step() (max_new_tokens=0, abort), reported next
        self._next_id = 0
        self.stats = {"prompt_tokens": 0, "generation_tokens": 0}
        self.finished_by_reason: dict[str, int] = {}
        self.ttft: deque[float] = deque(maxlen=1000)  # recent samples for metrics()
        self.itl: deque[float] = deque(maxlen=10_000)

    # ---- requests ------------------------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return self.scheduler.pool.num_usable

    @property
    def max_model_len(self) -> int:
        return self.model.config.max_seq_len

    def add_request(
        self,
        request_id: str | None,
        prompt: list[int] | str,
        params: SamplingParams,
        logprobs: int | None = None,
        extra_key: object = None,
    ) -> str:
        """Queue a request; returns its id. Errors (ValueError) name what is wrong; nothing is queued then."""
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs a tokenizer: pass token ids or give the Engine a tokenizer")
            prompt = self.tokenizer.encode(prompt)
        if params.beam_width > 1 or params.prompt_lookup:
            raise ValueError("beam search and speculative decoding are not served by the engine: use lmstack.generate")
        check_prompts(self.model, [prompt], params)
        if params.stop and self.tokenizer is None:
            raise ValueError("stop strings need a tokenizer: give the Engine a tokenizer")
        if logprobs is not None and not 0 <= logprobs <= 20:
            raise ValueError(f"logprobs={logprobs}: expected 0..20 top tokens")
        if request_id is None:
            request_id = f"req-{self._next_id}"
            self._next_id += 1
        if request_id in self.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        constraint = self._constraint(params)
        V = self.model.config.vocab_size
        sampler = SequenceSampler(
            params, prompt, V, eos_ids_of(self.model, params), self.tokenizer, constraint, self.device
        )
        seq = Sequence(
            request_id, request_id, list(prompt), len(prompt), params.max_new_tokens,
            self.config.block_size, n=params.n, extra_key=extra_key,
        )  # fmt: skip
        req = _Request(request_id, list(prompt), params, logprobs, [_Sample(0, seq, sampler)], time.perf_counter())
        if params.max_new_tokens == 0:  # nothing to compute
            req.samples = [_Sample(i, seq, sampler, finish_reason="length") for i in range(params.n)]
            req.finish_time = time.perf_counter()
            self._done.append(self._output(req))
            return request_id
        self.scheduler.add(seq)
        self.requests[request_id] = req
        return request_id

    def _constraint(self, params: SamplingParams) -> Any:
        """The shared token automaton for a constrained request (building the vocabulary trie costs ~1 s on a
        49k vocabulary, so one per distinct constraint is kept)."""
        if not params.constrained:
            return None
        import json

        key = json.dumps([params.json_mode, params.json_schema, params.regex, params.choices], sort_keys=True)
        if key not in self._constraints:
            if len(self._constraints) >= 32:
                self._constraints.pop(next(iter(self._constraints)))
            self._constraints[key] = build_constraint(self.model, params, self.tokenizer)
        return self._constraints[key]

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its blocks. False if it is unknown or already finished."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        self.scheduler.abort(request_id)
        for s in req.samples:
            s.finish_reason = s.finish_reason or "abort"
        self._finish_request(req)
        return True

    def has_unfinished(self) -> bool:
        return bool(self.requests) or bool(self._done)

    # ---- one step ------------------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Schedule, run the model, sample; returns an output for every request that changed."""
        done, self._done = self._done, []
        out = self.scheduler.schedule()
        if not out.seqs:
            return done
        try:
            ready, logits = self.runner.execute(out)
        except Exception as e:  # the whole batch's forward failed: fail its requests, keep serving
            failed = {s.request_id for s in out.seqs}
            return done + [self._fail(self.requests[r], f"model forward failed: {e!r}") for r in failed]
        caught_up = self.scheduler.update(out)
        changed: dict[str, _Request] = {}
        rows = {id(s): i for i, s in enumerate(ready)}
        plain = [i for i, s in enumerate(ready) if self._sample_of(s).sampler.plain_greedy]
        greedy = dict(zip(plain, logits[plain].argmax(-1).tolist())) if plain else {}
        now = time.perf_counter()
        for seq in caught_up:
            req = self.requests.get(seq.request_id)
            if req is None or req.error is not None:
                continue
            row = rows[id(seq)]
            try:
                self._advance(req, seq, logits[row], greedy.get(row), now)
            except Exception as e:  # this request only
                done.append(self._fail(req, f"{type(e).__name__}: {e}"))
                continue
            changed[req.request_id] = req
        for req in changed.values():
            if req.finished:
                self._finish_request(req)
            done.append(self._output(req))
        return done

    def _sample_of(self, seq: Sequence) -> _Sample:
        return next(s for s in self.requests[seq.request_id].samples if s.seq is seq)

    def _advance(self, req: _Request, seq: Sequence, logits: torch.Tensor, greedy: int | None, now: float) -> None:
        """Choose and record the next token of `seq` (and fork it first if its request wants n > 1)."""
        sample = self._sample_of(seq)
        targets = [sample]
        if seq.n > 1:  # prompt done: fork n - 1 siblings that share its blocks
            children = [seq.fork(i) for i in range(1, seq.n)]
            self.scheduler.fork(seq, children)
            new = [_Sample(c.index, c, sample.sampler.fork(c.index)) for c in children]
            req.samples.extend(new)
            targets += new
        logp = torch.log_softmax(logits, -1) if req.logprobs is not None else None
        for s in targets:
            token = greedy if greedy is not None else s.sampler.choose(logits)
            text, finished = s.sampler.accept(token)
            if req.first_token_time is None:
                req.first_token_time = now
                self.ttft.append(now - req.arrival_time)
            if s.token_times:
                self.itl.append(now - s.token_times[-1])
            s.token_times.append(now)
            if token in s.sampler.eos:
                self._finish_sample(s, "stop")
                continue
            s.tokens.append(token)
            s.text += text
            s.seq.append(token)
            self.stats["generation_tokens"] += 1
            if logp is not None:
                top = logp.topk(req.logprobs) if req.logprobs else None
                pairs = list(zip(top.indices.tolist(), top.values.tolist())) if top is not None else []
                s.logprobs.append(TokenLogprob(token, float(logp[token]), pairs))
            if finished:
                self._finish_sample(s, "stop")
            elif len(s.tokens) >= req.params.max_new_tokens:
                self._finish_sample(s, "length")

    def _finish_sample(self, s: _Sample, reason: str) -> None:
        s.text += s.sampler.flush()
        if s.sampler.tracker is not None:
            s.text = s.sampler.final_text
        kept = s.sampler.kept_tokens(len(s.tokens))
        s.tokens, s.logprobs = s.tokens[:kept], s.logprobs[:kept]
        s.finish_reason = reason
        if not s.seq.finished:
            self.scheduler.finish(s.seq, reason)

    def _fail(self, req: _Request, message: str) -> RequestOutput:
        req.error = message
        self.scheduler.abort(req.request_id)
        for s in req.samples:
            s.finish_reason = s.finish_reason or "error"
        while len(req.samples) < req.params.n:  # failed before the fork
            s0 = req.samples[0]
            req.samples.append(_Sample(len(req.samples), s0.seq, s0.sampler, finish_reason="error"))
        self.requests.pop(req.request_id, None)
        self._finish_request(req)
        return self._output(req)

    def _finish_request(self, req: _Request) -> None:
        req.finish_time = time.perf_counter()
        self.requests.pop(req.request_id, None)
        self.stats["prompt_tokens"] += len(req.prompt)
        reason = "error" if req.error else max((s.finish_reason or "abort" for s in req.samples), key=_REASONS.index)
        self.finished_by_reason[reason] = self.finished_by_reason.get(reason, 0) + 1

    def _output(self, req: _Request) -> RequestOutput:
        """The request's state, with what is new since its previous output."""
        outs = []
        for s in sorted(req.samples, key=lambda s: s.index):
            new_tokens, new_text = s.tokens[s.sent_tokens :], s.text[s.sent_text :]
            new_lp = s.logprobs[s.sent_tokens :] if req.logprobs is not None else None
            s.sent_tokens, s.sent_text = len(s.tokens), len(s.text)
            lp = list(s.logprobs) if req.logprobs is not None else None
            outs.append(
                CompletionOutput(s.index, list(s.tokens), s.text, new_tokens, new_text, s.finish_reason, lp, new_lp)
            )
        finished = req.error is not None or all(o.finish_reason is not None for o in outs) and len(outs) == req.params.n
        return RequestOutput(
            req.request_id, req.prompt, outs, finished, req.error, req.arrival_time, req.first_token_time,
            req.finish_time, req.samples[0].seq.num_cached_tokens,
        )  # fmt: skip

    # ---- offline use and metrics ---------------------------------------------------------------------------

    def generate(
        self, prompts: list[list[int]] | list[str], params: SamplingParams | list[SamplingParams]
    ) -> list[RequestOutput]:
        """Run every prompt to completion (continuous batching); one finished RequestOutput per prompt."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        if len(plist) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(plist)} SamplingParams")
        ids = [self.add_request(None, p, sp) for p, sp in zip(prompts, plist)]
        results: dict[str, RequestOutput] = {}
        while self.has_unfinished():
            for o in self.step():
                if o.finished:
                    results[o.request_id] = o
        return [results[i] for i in ids]

    def metrics(self) -> EngineMetrics:
        s = self.scheduler
        return EngineMetrics(
            num_running=s.num_running,
            num_waiting=s.num_waiting,
            num_blocks=s.pool.num_usable,
            block_size=self.config.block_size,
            kv_usage=s.pool.usage,
            prefix_cache_queries=s.tables.query_tokens,
            prefix_cache_hits=s.tables.hit_tokens,
            num_preemptions=s.num_preemptions,
            prompt_tokens=self.stats["prompt_tokens"],
            generation_tokens=self.stats["generation_tokens"],
            finished=dict(self.finished_by_reason),
            blocks_used=s.pool.num_usable - s.pool.num_free,
            ttft_p50=percentile(self.ttft, 50),
            ttft_p99=percentile(self.ttft, 99),
            itl_p50=percentile(self.itl, 50),
            itl_p99=percentile(self.itl, 99),
        )


_REASONS = ["stop", "length", "abort", "error"]  # a request's reason: the "worst" of its samples'
