"""A bounded load test on loopback: 64 concurrent streaming clients send 320 requests (chat and completions, n up
to 2, some hanging up mid-stream) to a `lmstack serve` subprocess. Zero server errors, every completed stream is
well-formed, and afterwards no request runs, none waits and not one KV block is held."""

from __future__ import annotations

import asyncio
import random
import urllib.request

import openai
import pytest

from .conftest import ServerProcess

pytestmark = pytest.mark.slow

CLIENTS, REQUESTS, HANG_UP_EVERY = 64, 320, 8


def scrape(url: str) -> dict[str, float]:
    out = {}
    for line in urllib.request.urlopen(url + "/metrics", timeout=60).read().decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def one(client: openai.AsyncOpenAI, i: int, rng: random.Random) -> dict:
    """One streaming request; returns what a client can check about it."""
    chat = i % 2 == 0
    n = 2 if i % 5 == 0 else 1
    hang_up = i % HANG_UP_EVERY == 3
    args = dict(model="tiny", max_tokens=rng.randrange(4, 48), n=n, stream=True, temperature=0.8, seed=i,
                stream_options={"include_usage": True})  # fmt: skip
    if hang_up:  # long enough to be cut off mid-stream whatever the sampler draws
        args.update(max_tokens=48, extra_body={"ignore_eos": True})
    if chat:
        stream = await client.chat.completions.create(messages=[{"role": "user", "content": f"fox {i}"}], **args)
    else:
        stream = await client.completions.create(prompt=f"the lazy dog {i}", **args)
    chunks, finishes, usage, roles = 0, {}, None, 0
    async for chunk in stream:
        chunks += 1
        if chunk.usage is not None:
            assert not chunk.choices and usage is None, "usage must come once, in a chunk of its own"
            usage = chunk.usage
            continue
        assert usage is None, "a chunk after the usage chunk"
        for c in chunk.choices:
            assert c.index not in finishes, f"choice {c.index} continued after its finish_reason"
            if c.finish_reason is not None:
                finishes[c.index] = c.finish_reason
            if chat and c.delta.role == "assistant":
                roles += 1
        if hang_up and chunks == 3:
            await stream.close()
            return {"hung_up": True}
    assert sorted(finishes) == list(range(n)) and set(finishes.values()) <= {"stop", "length"}
    assert usage is not None and usage.completion_tokens <= n * args["max_tokens"]
    if chat:
        assert roles == n
    return {"hung_up": False, "tokens": usage.completion_tokens}


async def drive(url: str) -> list[dict]:
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
    jobs: asyncio.Queue = asyncio.Queue()
    for i in range(REQUESTS):
        jobs.put_nowait(i)
    results: list[dict] = []

    async def worker(w: int) -> None:
        rng = random.Random(w)
        while not jobs.empty():
            results.append(await one(client, jobs.get_nowait(), rng))

    await asyncio.wait_for(asyncio.gather(*(worker(w) for w in range(CLIENTS))), timeout=400)
    await client.close()
    return results


def test_64_streaming_clients_no_errors_no_leaks(tiny_dir):
    server = ServerProcess(f"--model={tiny_dir}", "--served_model_name=tiny", "--max_num_seqs=64",
                           "--max_num_batched_tokens=512", "--max_queue=1000", "--kv_cache_bytes=4000000")  # fmt: skip
    try:
        results = asyncio.run(drive(server.url))
        assert len(results) == REQUESTS
        hung = sum(r["hung_up"] for r in results)
        assert hung == REQUESTS // HANG_UP_EVERY and sum(r.get("tokens", 0) for r in results) > 1000
        m = {}
        for _ in range(100):  # aborts reach the engine a moment after the sockets close
            m = scrape(server.url)
            if m["lmstack_num_requests_running"] == m["lmstack_kv_cache_blocks_used"] == 0:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert m["lmstack_num_requests_running"] == m["lmstack_num_requests_waiting"] == 0
        assert m["lmstack_kv_cache_blocks_used"] == 0, "KV blocks leaked"
        codes = {k: v for k, v in m.items() if k.startswith("lmstack_http_responses_total")}
        assert not any(k.split('code="')[1][0] == "5" for k in codes), codes
        finished = sum(v for k, v in m.items() if k.startswith("lmstack_request_finished_total"))
        assert finished >= REQUESTS and 1 <= m.get('lmstack_request_finished_total{reason="abort"}', 0) <= hung
        assert server.stop() == 0
        assert "Traceback" not in server.log and "ERROR" not in server.log, server.log
    finally:
        server.stop()
