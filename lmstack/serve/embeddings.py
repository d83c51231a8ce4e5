"""`POST /v1/embeddings`: texts -> vectors, in the shape of the OpenAI API's embeddings endpoint.

    lmstack serve --embedding_model all-minilm-l6-v2
    client.embeddings.create(model="all-minilm-l6-v2", input=["first text", "second"])   # the `openai` client

Request: `input` is one string or a list of up to 2,048 strings (OpenAI's limit), none empty and none longer than
the embedder's window (all-MiniLM-L6-v2: 256 tokens, [CLS] and [SEP] included) unless the extension field
`truncate` is true (then the end is cut, as sentence-transformers does); `encoding_format` is `float` (JSON
numbers) or `base64` (the little-endian float32 bytes, what the `openai` client asks for by default and decodes
itself); `dimensions`, if given, must be the model's own (MiniLM was not trained to be truncated). Token-id
arrays are refused: OpenAI's are cl100k ids, which mean nothing to another model's vocabulary (LangChain sends
them unless `check_embedding_ctx_length=False`). Usage counts the tokens the embedder reads.

The serving stage defines only this route and the `TextEmbedder` protocol it calls; the embedder itself (our
BERT running MiniLM, mean pooling, L2 norm) lives in `lmstack.rag.embedder` and is plugged in by
`lmstack/rag/serving.py` (rag sits after serve in the layering). The forward runs on a worker thread, one
request at a time, so the event loop keeps streaming chat tokens meanwhile.
Left out: batching across concurrent requests, token-id input, Matryoshka `dimensions`.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Protocol

import numpy as np
from fastapi import APIRouter, Request

from lmstack.serve.errors import APIError
from lmstack.serve.protocol import EmbeddingRequest

MAX_INPUTS = 2048  # strings per request (OpenAI's limit)

router = APIRouter(prefix="/v1")


class TextEmbedder(Protocol):
    name: str  # the model id clients send
    dim: int  # vector size
    max_tokens: int  # the window, special tokens included

    def count_tokens(self, texts: list[str]) -> list[int]: ...  # tokens each text would need (no truncation)

    def embed(self, texts: list[str]) -> np.ndarray: ...  # (n, dim) float32 unit vectors (truncating long texts)


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """One embedding as JSON floats, or base64 of its little-endian float32 bytes."""
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()


def check_inputs(body: EmbeddingRequest, embedder: TextEmbedder) -> tuple[list[str], list[int]]:
    """The texts to embed and their token counts, or a 400 naming the problem and the input's index."""
    texts = body.input if isinstance(body.input, list) else [body.input]
    if not texts:
        raise APIError(400, "input: expected a string or a non-empty list of strings", param="input")
    if not all(isinstance(t, str) for t in texts):
        raise APIError(400, "input: token-id arrays are not supported (they would be ids of another model's "
                       "vocabulary); send the text itself", param="input")  # fmt: skip
    if len(texts) > MAX_INPUTS:
        raise APIError(400, f"input: {len(texts)} strings; at most {MAX_INPUTS} per request", param="input")
    if body.dimensions is not None and body.dimensions != embedder.dim:
        raise APIError(400, f"dimensions: {embedder.name} produces {embedder.dim}-d vectors and cannot be "
                       f"shortened to {body.dimensions}", param="dimensions")  # fmt: skip
    for i, t in enumerate(texts):
        if not t.strip():
            raise APIError(400, f"input[{i}]: empty string; nothing to embed", param="input")
    counts = embedder.count_tokens(texts)
    if body.truncate:
        return texts, [min(c, embedder.max_tokens) for c in counts]
    for i, c in enumerate(counts):
        if c > embedder.max_tokens:
            raise APIError(400, f"input[{i}] has {c} tokens; {embedder.name} reads at most {embedder.max_tokens} "
                           "(send shorter texts, or \"truncate\": true to cut the end)", param="input",
                           code="context_length_exceeded")  # fmt: skip
    return texts, counts


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    s = request.app.state.serve
    embedder: TextEmbedder | None = s.embedder
    if embedder is None:
        raise APIError(404, "This server has no embedding model; start it with `lmstack serve "
                       "--embedding_model=all-minilm-l6-v2`", param="model", code="model_not_found")  # fmt: skip
    if body.model != embedder.name:
        raise APIError(404, f"The model `{body.model}` does not exist; this server embeds with `{embedder.name}`",
                       param="model", code="model_not_found")  # fmt: skip
    texts, counts = check_inputs(body, embedder)
    async with s.embed_lock:  # one forward at a time, off the event loop
        vectors = await asyncio.to_thread(embedder.embed, texts)
    data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)]  # fmt: skip
    tokens = sum(counts)
    return {"object": "list", "data": data, "model": embedder.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip
