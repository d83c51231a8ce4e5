"""Chat with `"retrieval"` (lmstack/serve/retrieval.py + lmstack/rag/serving.py), driven by the `openai` client: the
server answers from exactly the grounded prompt `lmstack rag ask` builds (same sources, same prompt, same greedy
text as `generate()`), reports the same citation checks, streams the sources first and the checks last, abstains
without the model when retrieval is weak, and refuses bad retrieval requests with a 400."""

from __future__ import annotations

import json

import openai
import pytest

from lmstack.generate import GenerationStats, SamplingParams, generate
from lmstack.rag import Retriever
from lmstack.rag.answer import conclude, ground
from lmstack.rag.serving import RetrievalService, report
from lmstack.serve.engine import Engine, EngineConfig
from lmstack.serve.server import build_app
from lmstack.tokenizer.chat import chat_stop_ids, render_prompt

from .conftest import LiveServer
from .test_server import raw

QUESTION = "How do I read a file line by line?"


@pytest.fixture(scope="module")
def served(long_tiny, collection):
    model, tok = long_tiny
    engine = Engine(model, tok, EngineConfig(num_blocks=256, block_size=16, max_num_batched_tokens=1024))
    server = LiveServer(build_app(engine, tok, "tiny", retrieval=RetrievalService(collection, k=2)))
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def test_grounded_answer_equals_the_rag_pipeline(client, long_tiny, collection):
    model, tok = long_tiny
    g = ground(QUESTION, Retriever(collection, "hybrid", k=2))
    assert g.messages is not None and g.hits[0].path == "tutorial/files.md"
    stats = GenerationStats()
    params = SamplingParams(max_new_tokens=24, temperature=0, stop_token_ids=chat_stop_ids(tok))
    generate(model, [render_prompt(tok, g.messages)], params, tokenizer=tok, stats=stats)
    want = stats.texts[0]
    messages = [{"role": "user", "content": "an earlier turn"}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": QUESTION}]  # fmt: skip
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0,
                                       extra_body={"retrieval": True})  # fmt: skip
    assert r.choices[0].message.content == want
    assert r.usage.prompt_tokens == len(render_prompt(tok, g.messages))  # the grounded prompt, nothing else
    got = r.model_extra["retrieval"]
    assert [(s["n"], s["path"], s["start"], s["end"], s["text"]) for s in got["sources"]] == [
        (n, h.path, h.start, h.end, h.context) for n, h in enumerate(g.hits, 1)]  # fmt: skip
    expected = report(conclude(g, want))
    assert {k: got[k] for k in expected} == json.loads(json.dumps(expected))

    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"retrieval": {"k": 2}}))  # fmt: skip
    assert chunks[0].model_extra["retrieval"] == {"sources": got["sources"]}  # sources before the first token
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
    assert chunks[-2].choices == [] and chunks[-2].model_extra["retrieval"] == got  # the checks after the text
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_request_options_and_abstaining(client):
    few = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "What does json.dumps "
                                         "do?"}], max_tokens=4, temperature=0,
                                         extra_body={"retrieval": {"k": 1, "mode": "bm25",
                                                                   "where": {"path": "library/*"}}})  # fmt: skip
    (source,) = few.model_extra["retrieval"]["sources"]
    assert source["path"] == "library/json.rst"
    messages = [{"role": "user", "content": "Who won the 1962 World Cup?"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8,
                                       extra_body={"retrieval": {"min_score": 0.95}})  # fmt: skip
    info = r.model_extra["retrieval"]
    assert r.choices[0].message.content == "I don't know." and r.usage.completion_tokens == 0
    assert info["abstained"] and info["reason"] == "low retrieval score" and len(info["sources"]) == 2
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, stream=True,
                                                 extra_body={"retrieval": {"min_score": 0.95}}))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "I don't know."
    assert chunks[0].model_extra["retrieval"]["sources"] == info["sources"]
    assert chunks[-1].choices == [] and chunks[-1].model_extra["retrieval"] == info
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, temperature=0)
    assert "retrieval" not in (plain.model_extra or {})  # retrieval is opt-in per request
    card = client.models.list().data[0].model_extra["retrieval"]
    assert card["mode"] == "hybrid" and card["k"] == 2 and card["chunks"] >= 3


BAD = [  # (extra body, a word the message must contain)
    ({"retrieval": {"where": {"path": {"$in": ["a"]}}}}, "expected a string or number"),
    ({"retrieval": {"where": {"bad key!": "x"}}}, "letters, digits"),
    ({"retrieval": {"k": 0}}, "retrieval.k"),
    ({"retrieval": {"mode": "fuzzy"}}, "retrieval"),
    ({"retrieval": "yes"}, "retrieval"),
    ({"retrieval": True, "n": 2}, "n = 1"),
]


@pytest.mark.parametrize("extra, word", BAD)
def test_bad_retrieval_requests_get_400(served, extra, word):
    body = {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2} | extra
    code, err = raw(served.url + "/v1/chat/completions", json.dumps(body).encode())
    assert code == 400 and word in err["error"]["message"], err


def test_a_server_without_a_collection_says_how_to_get_one(tiny):
    model, tok = tiny
    server = LiveServer(build_app(Engine(model, tok, EngineConfig(num_blocks=16, block_size=4)), tok, "tiny"))
    try:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "retrieval": True}
        code, err = raw(server.url + "/v1/chat/completions", json.dumps(body).encode())
        assert code == 400 and "--rag_index" in err["error"]["message"] and err["error"]["param"] == "retrieval"
    finally:
        server.close()
