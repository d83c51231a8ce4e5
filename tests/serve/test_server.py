"""The server on loopback, driven by the official `openai` client: answers equal `generate()`, streaming is
well-formed, and every bad request gets an OpenAI-style error with the right status (never a traceback)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from lmstack.generate import GenerationStats, SamplingParams, generate
from lmstack.serve.engine import Engine, EngineConfig
from lmstack.serve.server import build_app
from lmstack.tokenizer.chat import chat_stop_ids, render_prompt

from .conftest import LiveServer

ENGINE = EngineConfig(num_blocks=400, block_size=4, max_num_batched_tokens=32, max_num_seqs=8)


@pytest.fixture(scope="module")
def served(tiny):
    model, tok = tiny
    engine = Engine(model, tok, ENGINE)
    server = LiveServer(build_app(engine, tok, "tiny", max_body_bytes=4096))
    yield server, engine
    server.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0].url + "/v1", api_key="unused", max_retries=0)


def reference(tiny, ids: list[int], params: SamplingParams) -> str:
    model, tok = tiny
    stats = GenerationStats()
    generate(model, [ids], params, tokenizer=tok, stats=stats)
    return stats.texts[0]


def raw(url: str, body: bytes | None = None, headers: dict | None = None, method: str = "POST") -> tuple[int, dict]:
    """Status and JSON body of one HTTP request (errors included)."""
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"} | (
        headers or {}))  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def metric(url: str, name: str) -> float:
    for line in urllib.request.urlopen(url + "/metrics", timeout=30).read().decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_completion_equals_generate(client, tiny):
    tok = tiny[1]
    r = client.completions.create(model="tiny", prompt="the quick brown", max_tokens=12, temperature=0)
    ids = tok.encode("the quick brown")
    assert r.choices[0].text == reference(tiny, ids, SamplingParams(max_new_tokens=12, temperature=0))
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 12
    assert r.choices[0].finish_reason == "length" and r.object == "text_completion"
    batch = client.completions.create(model="tiny", prompt=[ids, [5, 6, 7]], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3] and batch.choices[0].text == batch.choices[1].text
    echo = client.completions.create(model="tiny", prompt="the lazy", max_tokens=3, temperature=0, echo=True,
                                     logprobs=2)  # fmt: skip
    assert echo.choices[0].text.startswith("the lazy") and len(echo.choices[0].logprobs.tokens) == 3


def test_chat_streaming_and_n(client, tiny):
    tok = tiny[1]
    messages = [{"role": "user", "content": "the quick brown fox"}]
    ids = render_prompt(tok, messages)
    want = reference(tiny, ids, SamplingParams(max_new_tokens=20, temperature=0, stop_token_ids=chat_stop_ids(tok)))
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0)
    assert r.choices[0].message.content == want and r.choices[0].message.role == "assistant"
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=20, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"  # the role first
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        r.choices[0].finish_reason]  # fmt: skip
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    many = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.0, n=3, seed=1)
    assert sorted(c.index for c in many.choices) == [0, 1, 2] and many.usage.completion_tokens <= 24
    again = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=1.0, n=3, seed=1)
    assert [c.message.content for c in again.choices] == [c.message.content for c in many.choices]


def test_stop_json_mode_schema_and_logprobs(client, tiny):
    full = client.completions.create(model="tiny", prompt="the lazy dog", max_tokens=20, temperature=0).choices[0]
    stop = full.text[6:8]
    cut = client.completions.create(model="tiny", prompt="the lazy dog", max_tokens=20, temperature=0, stop=stop)
    assert cut.choices[0].text == full.text[: full.text.index(stop)] and cut.choices[0].finish_reason == "stop"
    messages = [{"role": "user", "content": "give me json"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=40, temperature=0,
                                       response_format={"type": "json_object"})  # fmt: skip
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=40, temperature=0.8, seed=0,
                                       response_format=fmt)  # fmt: skip
    assert isinstance(json.loads(r.choices[0].message.content)["n"], int)
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, temperature=0, logprobs=True,
                                       top_logprobs=2)  # fmt: skip
    lps = r.choices[0].logprobs.content
    assert len(lps) == r.usage.completion_tokens and all(len(x.top_logprobs) == 2 for x in lps)
    assert all(x.logprob == x.top_logprobs[0].logprob for x in lps)  # greedy picks the most likely token
    r = client.completions.create(model="tiny", prompt="x", max_tokens=5, temperature=0,
                                  extra_body={"regex": "[0-9]{3}"})  # fmt: skip
    assert len(r.choices[0].text) == 3 and r.choices[0].text.isdigit()


def test_models_health_metrics_and_page(client, served):
    url = served[0].url
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert raw(url + "/health", method="GET") == (200, {"status": "ok"})
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    for name in (
        "lmstack_num_requests_running",
        "lmstack_kv_cache_usage_ratio",
        "lmstack_prefix_cache_hits_total",
        "lmstack_time_to_first_token_seconds_bucket",
        "lmstack_inter_token_latency_seconds_count",
    ):
        assert name in text  # fmt: skip
    page = urllib.request.urlopen(url + "/", timeout=30).read().decode()
    assert "<title>lmstack chat</title>" in page and "/v1/chat/completions" in page


BAD = [  # (body or raw bytes, status, a word the message must contain, param)
    ({"model": "gpt-4", "prompt": "x"}, 404, "does not exist", "model"),
    ({"model": "tiny", "prompt": "x", "temperature": "hot"}, 400, "valid number", "temperature"),
    ({"model": "tiny", "prompt": "x", "max_tokens": 1.5}, 400, "valid integer", "max_tokens"),
    ({"model": "tiny", "prompt": "x", "max_tokens": -5}, 400, "greater than", "max_tokens"),
    ({"model": "tiny", "prompt": "x", "max_tokens": 10_000}, 400, "maximum context length", "max_tokens"),
    ({"model": "tiny", "prompt": "the " * 300}, 400, "context window", "prompt"),
    ({"model": "tiny", "prompt": ""}, 400, "non-empty", "prompt"),
    ({"model": "tiny", "prompt": "x", "top_p": 0}, 400, "greater than 0", "top_p"),
    ({"model": "tiny", "prompt": "x", "frobnicate": 1}, 400, "Extra inputs", "frobnicate"),
    ({"model": "tiny", "prompt": "x", "logit_bias": {"abc": 1}}, 400, "logit_bias", None),
    ({"model": "tiny", "prompt": "x", "suffix": "y"}, 400, "suffix", None),
    ({"model": "tiny", "prompt": "x", "regex": "("}, 400, "", None),
    (b'{"model": "tiny", "prompt": ', 400, "not valid JSON", None),
    (b'{"model": "tiny", "prompt": "' + b"a" * 5000 + b'"}', 413, "exceeds 4096 bytes", None),
]


@pytest.mark.parametrize("body,status,word,param", BAD, ids=[f"{b[1]}-{b[2] or 'regex'}" for b in BAD])
def test_bad_completion_requests_get_openai_errors(served, body, status, word, param):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    code, answer = raw(served[0].url + "/v1/completions", data)
    assert code == status and set(answer) == {"error"}, answer
    err = answer["error"]
    assert word in err["message"] and set(err) == {"message", "type", "param", "code"} and "Traceback" not in str(err)
    if param is not None:
        assert err["param"] == param


def test_bad_chat_requests_through_the_client(client):
    with pytest.raises(openai.BadRequestError, match="at least one message"):
        client.chat.completions.create(model="tiny", messages=[])
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="tiny", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=300)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                       tools=[{"type": "function", "function": {"name": "f"}}])  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])


def test_api_key_queue_limit_disconnect_and_a_failing_request(tiny):
    model, tok = tiny
    engine = Engine(model, tok, EngineConfig(num_blocks=400, block_size=4, max_num_batched_tokens=16, max_num_seqs=2))
    gate = threading.Event()
    step = engine.step

    def gated_step():  # the engine runs once the test opens the gate, and slowly (commands still go through)
        time.sleep(0.01)
        return step() if gate.is_set() else []

    engine.step = gated_step
    advance = engine._advance

    def advance_or_fail(req, *args):  # one poisoned prompt fails inside the engine
        if req.prompt[:4] == [7, 7, 7, 7]:
            raise RuntimeError("poisoned")
        return advance(req, *args)

    engine._advance = advance_or_fail
    server = LiveServer(build_app(engine, tok, "tiny", api_key="s3cret", max_queue=2))
    try:
        url = server.url
        with pytest.raises(openai.AuthenticationError, match="API key"):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert raw(url + "/v1/models", method="GET")[0] == 401
        assert raw(url + "/health", method="GET")[0] == 200  # health and metrics need no key
        c = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        # queue: with the engine held, two requests wait and the third is refused
        streams = [
            c.completions.create(model="tiny", prompt="the", max_tokens=100, stream=True,
                                 stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
            for _ in range(2)
        ]  # fmt: skip
        with pytest.raises(openai.RateLimitError, match="busy"):
            c.completions.create(model="tiny", prompt="the", max_tokens=5)
        gate.set()
        # disconnect: read a few chunks of the first stream, then hang up; the second stream runs to the end
        for i, _ in enumerate(streams[0]):
            if i == 3:
                break
        streams[0].close()
        rest = list(streams[1])
        assert rest[-1].usage.completion_tokens == 100 and rest[-2].choices[0].finish_reason == "length"
        deadline = time.time() + 30
        while metric(url, "lmstack_num_requests_running") or metric(url, "lmstack_kv_cache_blocks_used"):
            assert time.time() < deadline, "the disconnected request kept its blocks"
            time.sleep(0.1)
        assert metric(url, 'lmstack_request_finished_total{reason="abort"}') == 1
        # one request failing inside the engine fails alone
        results = {}

        def ask(name, prompt):
            try:
                results[name] = c.completions.create(model="tiny", prompt=prompt, max_tokens=10, temperature=0)
            except openai.APIStatusError as e:
                results[name] = e

        threads = [threading.Thread(target=ask, args=a) for a in (("bad", [7, 7, 7, 7, 1]), ("good", [5, 6, 7]))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert isinstance(results["bad"], openai.InternalServerError) and "poisoned" in str(results["bad"])
        assert results["good"].choices[0].finish_reason == "length"
        assert raw(url + "/health", method="GET")[0] == 200
    finally:
        gate.set()
        server.close()


def test_replicas_behind_a_load_balancer_answer_alike(tiny):
    """`lmstack serve` keeps no state between requests but its cache, so N replicas behind any HTTP load balancer
    answer a request identically whichever replica gets it (round robin here)."""
    model, tok = tiny
    replicas = [LiveServer(build_app(Engine(model, tok, ENGINE), tok, "tiny")) for _ in range(2)]
    try:
        clients = [openai.OpenAI(base_url=r.url + "/v1", api_key="x", max_retries=0) for r in replicas]
        prompts = ["the quick", "the lazy dog", "fox", "the quick"]
        answers = [[c.completions.create(model="tiny", prompt=p, max_tokens=8, temperature=0).choices[0].text
                    for c in clients] for p in prompts]  # fmt: skip
        assert all(a == b for a, b in answers) and answers[0] == answers[3]
    finally:
        for r in replicas:
            r.close()
