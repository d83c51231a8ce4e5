"""Benchmark: the serving engine vs static batching, sequential generate(), sequential transformers, llama.cpp.

Claims (issue 12): on a workload of mixed prompt and output lengths the engine serves >= 2x the output tokens/s
of static batching at the same concurrency; paged KV wastes < 4 % of what it allocates (a contiguous cache
reserving each request's maximum length wastes far more); prefix caching cuts time to first token by >= 80 % when
every request shares a 1,000-token system prompt; chunked prefill keeps the p99 inter-token latency of running
streams low while a long prompt arrives. Also: prefill vs decode throughput (compute- vs memory-bound), and the
gap to llama.cpp's `llama-server` on the same GGUF, stated with its cause.

Method: SmolLM2-135M-Instruct, the packaged Q4_1 GGUF. lmstack and transformers run its weights dequantized to
fp32 (the same numbers in both); llama.cpp runs the GGUF itself (Q4_1 kernels) and, for a like-for-like row, the
same weights requantized to F32. Greedy decoding with EOS ignored, so every system produces exactly the requested
number of tokens. All requests arrive at t = 0 (an offline burst); TTFT counts queueing. Rows:
  (a) `lmstack serve` (engine behind HTTP, streaming) at max_num_seqs = CONCURRENCY, measured by an HTTP client;
  (b) static batching: `lmstack.generate` on batches of CONCURRENCY requests in arrival order, left-padded to the
      longest prompt, each batch decoding until its longest request is done before the next starts;
  (c) sequential `lmstack.generate`, one request at a time; (d) the same with `transformers.generate`;
  (e) `llama-server -t 2 -np CONCURRENCY` (continuous batching) measured by the same HTTP client as (a).
2 torch threads, OMP_WAIT_POLICY=PASSIVE. The 2-core machine is shared with other engineers' jobs, so absolute
numbers are noisy; (a) and (b) run twice, interleaved, and medians are quoted.
Run: `flock /tmp/bench.lock .venv/bin/python bench/serve.py [--quick]` (~15 minutes; --quick ~5); writes
docs/benchmarks.md (section "serve").
"""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import table, write_section  # noqa: E402
from lmstack.generate import SamplingParams, stream_generate  # noqa: E402
from lmstack.generate.decode import sample_stream  # noqa: E402
from lmstack.generate.fast_forward import decode_layout  # noqa: E402
from lmstack.model import load_model  # noqa: E402
from lmstack.model.local_models import resolve_model, source_path  # noqa: E402
from lmstack.serve.engine import Engine, EngineConfig  # noqa: E402

THREADS = 2
QUICK = "--quick" in sys.argv
N_REQUESTS = 12 if QUICK else 32
CONCURRENCY = 4 if QUICK else 8
PROMPT_RANGE = (32, 512)  # tokens, log-uniform
OUTPUT_RANGE = (8, 64) if QUICK else (8, 128)
MODEL = "smollm2-135m"


@dataclass
class Req:
    prompt: list[int]
    out: int  # tokens to generate


@dataclass
class Trace:
    """When each token of each request arrived (seconds since the burst started)."""

    times: list[list[float]] = field(default_factory=list)
    wall: float = 0.0
    counts: list[int] | None = None  # tokens per request when a chunk may carry several (HTTP usage)

    def row(self, name: str, reqs: list[Req]) -> list[object]:
        tokens = sum(self.counts) if self.counts is not None else sum(len(t) for t in self.times)
        assert tokens == sum(r.out for r in reqs), f"{name}: {tokens} tokens, expected {sum(r.out for r in reqs)}"
        ttft = [t[0] for t in self.times]
        itl = [b - a for t in self.times for a, b in zip(t, t[1:])]
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1)]  # noqa: E731
        return [name, round(len(reqs) / self.wall, 3), round(tokens / self.wall, 1), round(q(ttft, 50), 2),
                round(q(ttft, 99), 2), round(1e3 * q(itl, 50)), round(1e3 * q(itl, 99))]  # fmt: skip


def workload(n: int, seed: int, vocab: int) -> list[Req]:
    rng = random.Random(seed)
    log_uniform = lambda lo, hi: int(math.exp(rng.uniform(math.log(lo), math.log(hi))))  # noqa: E731
    return [Req([rng.randrange(100, vocab - 100) for _ in range(log_uniform(*PROMPT_RANGE))],
                log_uniform(*OUTPUT_RANGE)) for _ in range(n)]  # fmt: skip


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True)


# ---- in-process systems -------------------------------------------------------------------------------------


def run_static(model, reqs: list[Req], batch: int) -> Trace:
    """Static batching: fixed batches in arrival order, padded to the longest prompt, run to the longest output."""
    trace, t0 = Trace([[] for _ in reqs]), time.perf_counter()
    for start in range(0, len(reqs), batch):
        group = reqs[start : start + batch]
        for e in sample_stream(model, [r.prompt for r in group], greedy(max(r.out for r in group))):
            if e.token >= 0 and len(trace.times[start + e.row]) < group[e.row].out:
                trace.times[start + e.row].append(time.perf_counter() - t0)
    trace.wall = time.perf_counter() - t0
    return trace


def run_sequential(model, reqs: list[Req]) -> Trace:
    trace, t0 = Trace([[] for _ in reqs]), time.perf_counter()
    for i, r in enumerate(reqs):
        for e in stream_generate(model, r.prompt, greedy(r.out)):
            if e.token >= 0:
                trace.times[i].append(time.perf_counter() - t0)
    trace.wall = time.perf_counter() - t0
    return trace


def run_hf(hf, reqs: list[Req]) -> Trace:
    from transformers.generation.streamers import BaseStreamer

    trace, t0 = Trace([[] for _ in reqs]), time.perf_counter()

    class Clock(BaseStreamer):
        def __init__(self, i: int) -> None:
            self.i, self.prompt_seen = i, False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # the first call carries the prompt
                self.prompt_seen = True
                return
            trace.times[self.i].append(time.perf_counter() - t0)

        def end(self) -> None:
            pass

    with torch.inference_mode():
        for i, r in enumerate(reqs):
            ids = torch.tensor([r.prompt])
            hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=r.out, min_new_tokens=r.out,
                        do_sample=False, streamer=Clock(i), pad_token_id=0)  # fmt: skip
    trace.wall = time.perf_counter() - t0
    return trace


def run_engine(engine: Engine, reqs: list[Req], arrivals: list[float] | None = None) -> tuple[Trace, list[float]]:
    """In-process engine; requests arrive at `arrivals` (s) or all at 0. Returns the trace and the KV waste
    (allocated - used) / allocated measured before every step."""
    trace, waste = Trace([[] for _ in reqs]), []
    arrivals = arrivals or [0.0] * len(reqs)
    order = sorted(range(len(reqs)), key=lambda i: arrivals[i])
    t0 = time.perf_counter()
    while order or engine.has_unfinished():
        now = time.perf_counter() - t0
        while order and arrivals[order[0]] <= now:
            i = order.pop(0)
            engine.add_request(str(i), reqs[i].prompt, greedy(reqs[i].out))
        if not engine.has_unfinished():
            time.sleep(max(0.0, arrivals[order[0]] - now))
            continue
        waste.append(kv_waste(engine))
        for out in engine.step():
            for _ in out.outputs[0].new_token_ids:
                trace.times[int(out.request_id)].append(time.perf_counter() - t0)
    trace.wall = time.perf_counter() - t0
    return trace, waste


def kv_waste(engine: Engine) -> tuple[int, int, int, int, list[int]]:
    """(slots allocated, slots holding a computed token, slots a contiguous cache would reserve, sequences, each
    sequence's computed tokens)."""
    s = engine.scheduler
    bs = s.config.block_size
    held, used, reserved = set(), 0, 0
    for seq in s.running:
        held.update(s.tables.block_ids(seq))
        used += seq.num_computed
        reserved += seq.prompt_len + seq.max_tokens  # what generate()'s ContiguousKVCache allocates per row
    return len(held) * bs, used, reserved, len(s.running), [seq.num_computed for seq in s.running]


# ---- HTTP systems (lmstack serve, llama-server) ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url + "/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


async def http_burst(url: str, model: str, reqs: list[Req]) -> Trace:
    """Send every request at once as a streaming completion; time each chunk. `logprobs=0` makes lmstack send a
    chunk per token even when its text is an incomplete UTF-8 character; llama-server sends one chunk per token
    but holds back incomplete characters, so a few of its gaps span two tokens. Token counts come from usage."""
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=3600)
    trace, t0 = Trace([[] for _ in reqs], counts=[0] * len(reqs)), time.perf_counter()

    async def one(i: int, r: Req) -> None:
        stream = await client.completions.create(model=model, prompt=r.prompt, max_tokens=r.out, temperature=0,
                                                 stream=True, logprobs=0, stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True})  # fmt: skip
        async for chunk in stream:
            if chunk.usage is not None:
                trace.counts[i] = chunk.usage.completion_tokens
            for c in chunk.choices:
                n = len(c.logprobs.tokens) if c.logprobs and c.logprobs.tokens else int(bool(c.text))
                trace.times[i] += [time.perf_counter() - t0] * n
        trace.counts[i] = trace.counts[i] or len(trace.times[i])

    await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs)))
    trace.wall = time.perf_counter() - t0
    await client.close()
    return trace


def serve_lmstack(reqs: list[Req]) -> Trace:
    port = free_port()
    cmd = [sys.executable, "-m", "lmstack.serve.server", f"--model={MODEL}", "--served_model_name=bench",
           f"--port={port}", "--log_level=warning", f"--max_num_seqs={CONCURRENCY}", "--max_num_batched_tokens=512",
           "--kv_cache_bytes=1000000000"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=os.environ | {"OMP_NUM_THREADS": str(THREADS)})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        asyncio.run(http_burst(url, "bench", reqs[:2]))  # warm-up
        return asyncio.run(http_burst(url, "bench", reqs))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


def llama_server_binary() -> Path | None:
    """llama-server from bench/llama_cpp.py's build, or an existing build under $LMSTACK_HOME/llama.cpp."""
    try:
        from bench.llama_cpp import build

        return build()["llama-server"]
    except ImportError:
        home = Path(os.environ.get("LMSTACK_HOME", Path.home() / ".cache" / "lmstack")).expanduser()
        with open("/tmp/llamacpp.lock", "w") as lock:  # a build in progress: wait for it, up to 10 minutes
            for _ in range(600):
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(1)
            else:
                return None
            found = sorted(home.glob("llama.cpp/*/build*/bin/llama-server"))
        return found[-1] if found else None


def serve_llama(binary: Path, gguf: Path, reqs: list[Req]) -> Trace:
    port = free_port()
    ctx = CONCURRENCY * (PROMPT_RANGE[1] + OUTPUT_RANGE[1] + 16)
    cmd = [str(binary), "-m", str(gguf), "-t", str(THREADS), "-tb", str(THREADS), "--host", "127.0.0.1", "--port",
           str(port), "-np", str(CONCURRENCY), "-c", str(ctx), "--no-webui"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc)
        asyncio.run(http_burst(url, "gguf", reqs[:2]))
        return asyncio.run(http_burst(url, "gguf", reqs))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)


def f32_gguf(binary: Path, gguf: Path, out_dir: Path) -> Path | None:
    """The same GGUF with its Q4_1 weights dequantized to F32 (llama-quantize), or None if that fails."""
    out = out_dir / "smollm2-f32.gguf"
    quantize = binary.parent / "llama-quantize"
    done = subprocess.run([str(quantize), "--allow-requantize", str(gguf), str(out), "F32"], capture_output=True)
    return out if done.returncode == 0 and out.is_file() else None


# ---- focused measurements -----------------------------------------------------------------------------------


def prefix_caching(model, tok, n: int) -> list[list[object]]:
    """TTFT of requests that share a 1,000-token system prompt, each arriving after the previous finished."""
    rng, V = random.Random(5), model.config.vocab_size
    system = [rng.randrange(100, V - 100) for _ in range(1000)]
    reqs = [Req(system + [rng.randrange(100, V - 100) for _ in range(20)], 8) for _ in range(n)]
    rows = []
    for caching in (False, True):
        engine = Engine(model, tok, EngineConfig(kv_cache_bytes=400 << 20, max_num_batched_tokens=2048,
                                                 prefix_caching=caching))  # fmt: skip
        ttft = []
        for r in reqs:
            trace, _ = run_engine(engine, [r])
            ttft.append(trace.times[0][0])
        later = statistics.median(ttft[1:])  # the first request has nothing to hit
        rows.append(["on" if caching else "off", round(ttft[0], 3), round(later, 3),
                     f"{engine.metrics().prefix_cache_hit_rate:.0%}"])  # fmt: skip
    cut = 1 - rows[1][2] / rows[0][2]
    rows.append(["TTFT reduction", "", f"{cut:.0%}", ""])
    return rows


def chunked_prefill(model, tok) -> list[list[object]]:
    """p50/p99 inter-token latency of 8 running streams while a 2,000-token prompt arrives, with and without
    chunked prefill (token budget 256 vs the whole prompt in one step)."""
    rng, V = random.Random(6), model.config.vocab_size
    streams = [Req([rng.randrange(100, V - 100) for _ in range(32)], 64) for _ in range(8)]
    long = Req([rng.randrange(100, V - 100) for _ in range(2000)], 4)
    rows = []
    for chunked in (False, True):
        cfg = EngineConfig(kv_cache_bytes=400 << 20, max_num_seqs=16, chunked_prefill=chunked,
                           max_num_batched_tokens=256 if chunked else 2100, prefix_caching=False)  # fmt: skip
        engine = Engine(model, tok, cfg)
        trace, _ = run_engine(engine, streams + [long], arrivals=[0.0] * 8 + [1.5])
        itl = [b - a for t in trace.times[:8] for a, b in zip(t, t[1:])]
        q = lambda xs, p: sorted(xs)[min(len(xs) - 1, math.ceil(p / 100 * len(xs)) - 1)]  # noqa: E731
        rows.append(["chunks of 256" if chunked else "off (one 2,000-token step)", round(1e3 * q(itl, 50)),
                     round(1e3 * q(itl, 99)), round(1e3 * max(itl)), round(trace.times[8][0] - 1.5, 2)])  # fmt: skip
    return rows


def prefill_vs_decode(model) -> list[list[object]]:
    """Tokens/s of one forward: decode steps (1 new token per sequence, B sequences, 256 cached tokens each)
    vs one prefill chunk of T tokens. Decode reads all weights for B tokens (memory-bound: time ~flat in B);
    prefill does ~2 x params FLOPs per token (compute-bound: time ~ T)."""
    rows = []
    V = model.config.vocab_size
    with torch.inference_mode():
        for B in (1, 8, 32):
            cfg = EngineConfig(kv_cache_bytes=400 << 20, max_num_seqs=32, max_num_batched_tokens=8192)
            engine = Engine(model, None, cfg)
            for i in range(B):
                engine.add_request(None, [random.Random(i).randrange(100, V - 100) for _ in range(256)], greedy(8))
            engine.step()  # prefill
            times = []
            for _ in range(5):
                t = time.perf_counter()
                engine.step()
                times.append(time.perf_counter() - t)
            dt = statistics.median(times)
            rows.append([f"decode, batch {B}", B, round(1e3 * dt), round(B / dt)])
        for T in (64, 512):
            ids = torch.randint(100, V - 100, (1, T))
            times = []
            for _ in range(3):
                t = time.perf_counter()
                model(ids)
                times.append(time.perf_counter() - t)
            dt = statistics.median(times)
            rows.append([f"prefill, {T}-token chunk", T, round(1e3 * dt), round(T / dt)])
    return rows


def throughput_table(traces: dict[str, list[Trace]], reqs: list[Req]) -> str:
    rows = []
    for name, ts in traces.items():
        per = [t.row(name, reqs) for t in ts]
        rows.append([name] + [statistics.median(p[k] for p in per) for k in range(1, 7)])
    base = next(r for r in rows if r[0].startswith("(b)"))[2]
    for r in rows:
        r.append(round(r[2] / base, 2))
    head = ["system", "requests/s", "output tok/s", "TTFT p50 s", "TTFT p99 s", "ITL p50 ms", "ITL p99 ms",
            "tok/s vs static"]  # fmt: skip
    return table(head, rows)


def waste_table(waste: list[tuple], max_seq_len: int, block_size: int) -> str:
    alloc, used, reserved = (sum(w[k] for w in waste) for k in range(3))
    max_len = max_seq_len * sum(w[3] for w in waste)
    others = [bs for bs in (8, 16, 32) if bs != block_size]
    other = {bs: sum(-(-n // bs) * bs for w in waste for n in w[4]) for bs in others}  # same lengths, other blocks
    return table(["allocation", "waste"], [
        [f"paged, {block_size}-token blocks (this engine, measured)", f"{(alloc - used) / alloc:.1%}"],
        *[[f"paged, {bs}-token blocks (same sequence lengths)", f"{(other[bs] - used) / other[bs]:.1%}"]
          for bs in others],
        ["contiguous, prompt + max_new_tokens per request (generate's cache)", f"{(reserved - used) / reserved:.1%}"],
        [f"contiguous, max_seq_len ({max_seq_len}) per request", f"{(max_len - used) / max_len:.1%}"],
    ])  # fmt: skip


def main() -> None:
    """Most important claims first; the section is rewritten after each part, so a cut-short run keeps what it
    measured."""
    torch.set_num_threads(THREADS)
    model, tok = load_model(MODEL, device="cpu")
    decode_layout(model, packed=True)  # what `lmstack serve` does to the model it loads (static batching gets it too)
    reqs = workload(N_REQUESTS, seed=0, vocab=model.config.vocab_size)
    warm = reqs[:2]
    run_static(model, warm, CONCURRENCY)
    run_sequential(model, warm[:1])
    intro = [f"### Serving SmolLM2-135M on CPU: {len(reqs)} requests at once, concurrency {CONCURRENCY}\n",
             f"Prompts {PROMPT_RANGE[0]}-{PROMPT_RANGE[1]} tokens and outputs {OUTPUT_RANGE[0]}-{OUTPUT_RANGE[1]} "
             f"tokens (log-uniform; {sum(len(r.prompt) for r in reqs)} prompt and {sum(r.out for r in reqs)} output "
             "tokens in all), greedy, EOS ignored. TTFT includes queueing; ITL is the gap between consecutive tokens "
             "of a stream. (a) and (b) ran twice, interleaved (medians); the others once.\n"]  # fmt: skip
    traces: dict[str, list[Trace]] = {}
    parts: list[str] = []

    def publish(note: str = "") -> None:
        body = "\n".join(intro + [throughput_table(traces, reqs), note] + parts)
        print(body, file=sys.stderr)
        write_section("serve", body)

    for _rep in range(2):  # (a) and (b) interleaved, twice
        traces.setdefault("(a) lmstack serve", []).append(serve_lmstack(reqs))
        traces.setdefault("(b) static batching", []).append(run_static(model, reqs, CONCURRENCY))
        publish()
    engine = Engine(model, tok, EngineConfig(kv_cache_bytes=1_000_000_000, max_num_seqs=CONCURRENCY))
    trace, waste = run_engine(engine, reqs)
    traces["(a') the same engine in-process (no HTTP)"] = [trace]
    parts += ["\n### KV-cache memory waste on that workload ((allocated - used) / allocated, over all steps)\n",
              waste_table(waste, model.config.max_seq_len, engine.config.block_size)]  # fmt: skip
    publish()
    parts += ["\n### Prefix caching: requests sharing a 1,000-token system prompt (+20 own tokens), one at a time\n",
              table(["prefix caching", "TTFT first request s", "TTFT later requests (median) s", "hit rate"],
                    prefix_caching(model, tok, 4 if QUICK else 8))]  # fmt: skip
    parts += ["\n### Chunked prefill: 8 streams decoding while a 2,000-token prompt arrives (t = 1.5 s)\n",
              table(["chunked prefill", "ITL p50 ms", "ITL p99 ms", "ITL max ms", "long prompt TTFT s"],
                    chunked_prefill(model, tok))]  # fmt: skip
    parts += [
        "\n### Prefill vs decode: one forward of SmolLM2-135M (fp32, 2 threads)\n",
        table(["step", "tokens", "ms", "tokens/s"], prefill_vs_decode(model)),
    ]
    publish()
    traces["(c) sequential lmstack generate()"] = [run_sequential(model, reqs)]
    publish()
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(resolve_model(MODEL), dtype=torch.float32).eval()
    run_hf(hf, warm[:1])
    traces["(d) sequential transformers generate"] = [run_hf(hf, reqs)]
    del hf
    publish()
    llama = llama_server_binary()
    if llama is None:
        publish("\n(e) not run: no llama-server build was available (`python bench/llama_cpp.py` builds it).\n")
        return
    gguf = source_path(MODEL)
    traces["(e) llama-server, the Q4_1 GGUF"] = [serve_llama(llama, gguf, reqs)]
    publish()
    with tempfile.TemporaryDirectory() as tmp:
        f32 = f32_gguf(llama, gguf, Path(tmp))
        if f32 is not None:
            traces["(e') llama-server, the same weights as F32"] = [serve_llama(llama, f32, reqs)]
    publish()


if __name__ == "__main__":
    main()
