"""`/v1/embeddings` on loopback, driven by the official `openai` client: the vectors are lmstack.rag's MiniLM
embedder's and sentence-transformers' (cosine >= 0.9999) in both encodings, usage counts the tokens, and bad
input gets an OpenAI-style 4xx naming the problem."""

from __future__ import annotations

import json
import os

import numpy as np
import openai
import pytest

from lmstack.model.local_models import resolve_model
from lmstack.rag.serving import EmbeddingService
from lmstack.serve.engine import Engine, EngineConfig
from lmstack.serve.server import build_app

from .conftest import LiveServer
from .test_server import raw

NAME = "all-minilm-l6-v2"
TEXTS = ["The cat sat on the mat.", "A feline rested on a rug.", "How do I read a file line by line?",
         "Über naïve café — 你好 😀", "x"]  # fmt: skip


@pytest.fixture(scope="module")
def served(tiny, minilm):
    model, tok = tiny
    app = build_app(Engine(model, tok, EngineConfig(num_blocks=64, block_size=4)), tok, "tiny",
                    max_body_bytes=64 << 10, embedder=EmbeddingService(minilm, NAME))  # fmt: skip
    server = LiveServer(app)
    yield server
    server.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)


def test_vectors_equal_the_rag_embedder_and_sentence_transformers(client, minilm):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(resolve_model(NAME)), device="cpu").encode(TEXTS, normalize_embeddings=True)
    ours = minilm.embed(TEXTS, use_cache=False)
    r = client.embeddings.create(model=NAME, input=TEXTS)  # the client asks for base64 and decodes it
    as_floats = client.embeddings.create(model=NAME, input=TEXTS, encoding_format="float")
    for resp in (r, as_floats):
        got = np.array([d.embedding for d in sorted(resp.data, key=lambda d: d.index)], np.float32)
        assert got.shape == (len(TEXTS), 384) and [d.index for d in resp.data] == list(range(len(TEXTS)))
        np.testing.assert_allclose(got, ours, atol=1e-6)  # the very vectors lmstack.rag indexes with
        assert (got * st).sum(1).min() >= 0.9999
    assert r.model == NAME and r.object == "list" and r.data[0].object == "embedding"
    tokens = sum(len(minilm.tokenizer.encode(t)) + 2 for t in TEXTS)  # [CLS] text [SEP]
    assert r.usage.prompt_tokens == r.usage.total_tokens == tokens
    one = client.embeddings.create(model=NAME, input=TEXTS[2], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, ours[2], atol=1e-6)  # a single string, batch-invariant
    assert [m.id for m in client.models.list().data] == ["tiny", NAME]


LONG = "word " * 300  # 302 tokens > the 256-token window
BAD = [  # (body, status, a word the message must contain, param)
    ({"model": "text-embedding-3-small", "input": "x"}, 404, "does not exist", "model"),
    ({"model": NAME, "input": []}, 400, "non-empty", "input"),
    ({"model": NAME, "input": ["ok", "  "]}, 400, "input[1]: empty", "input"),
    ({"model": NAME, "input": [[101, 2023]]}, 400, "token-id", "input"),
    ({"model": NAME, "input": [1, 2, 3]}, 400, "token-id", "input"),
    ({"model": NAME, "input": ["ok", LONG]}, 400, "input[1] has 302 tokens", "input"),
    ({"model": NAME, "input": ["a"] * 2049}, 400, "at most 2048", "input"),
    ({"model": NAME, "input": "x", "dimensions": 128}, 400, "384-d", "dimensions"),
    ({"model": NAME, "input": "x", "encoding_format": "hex"}, 400, "encoding_format", "encoding_format"),
    ({"model": NAME, "input": 5}, 400, "input", "input"),
    ({"model": NAME}, 400, "input", "input"),
    ({"model": NAME, "input": "x", "extra": 1}, 400, "extra", "extra"),
]


@pytest.mark.parametrize("body, status, word, param", BAD)
def test_bad_embedding_requests_get_openai_errors(served, body, status, word, param):
    code, err = raw(served.url + "/v1/embeddings", json.dumps(body).encode())
    assert code == status, err
    assert word in err["error"]["message"] and err["error"]["param"] == param, err


def test_limits_truncation_and_a_server_without_an_embedder(served, client, tiny):
    code, err = raw(served.url + "/v1/embeddings", json.dumps({"model": NAME, "input": "y" * (70 << 10)}).encode())
    assert code == 413 and err["error"]["code"] == "request_too_large"
    with pytest.raises(openai.BadRequestError, match="context_length_exceeded|302 tokens"):
        client.embeddings.create(model=NAME, input=LONG)
    cut = client.embeddings.create(model=NAME, input=LONG, extra_body={"truncate": True})
    assert cut.usage.prompt_tokens == 256 and len(cut.data[0].embedding) == 384
    model, tok = tiny
    bare = LiveServer(build_app(Engine(model, tok, EngineConfig(num_blocks=16, block_size=4)), tok, "tiny"))
    try:
        code, err = raw(bare.url + "/v1/embeddings", json.dumps({"model": NAME, "input": "x"}).encode())
        assert code == 404 and "--embedding_model" in err["error"]["message"]
    finally:
        bare.close()
