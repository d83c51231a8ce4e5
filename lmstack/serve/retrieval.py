"""Retrieval-augmented chat in the server: what a chat request with `"retrieval"` turns into.

    lmstack serve --rag_index ~/.cache/lmstack/rag/pydocs
    client.chat.completions.create(model=..., messages=[...], extra_body={"retrieval": {"k": 3}})
    -> the usual chat completion, plus `"retrieval": {sources, citations, abstained, reason, confidence}`

For such a request the last user message is the question (earlier turns are not used: multi-turn RAG, which
rewrites a follow-up question with its history, is left out). The flow is `lmstack rag ask`'s, split around the
engine so that the answer is batched and streamed like any other:

    grounded = service.ground(question, options)   retrieve; abstain ("I don't know.", no model call) when the
                                                   best retrieval score is low; else the numbered-sources prompt
    ... the engine generates from grounded.messages (streamed as chat chunks) ...
    report = service.check(grounded, text)         every [n] checked to exist and be supported by source n

Streaming sends the sources with the first chunk (`retrieval.sources`) and the checked report as one more chunk
with no choices after the last token (before the usage chunk). The serving stage knows nothing about indexes:
`lmstack.rag.serving.RetrievalService` implements `RetrievalService` with lmstack.rag's own answer pieces and is
handed to `build_app(retrieval=...)` (rag sits after serve in the layering).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from lmstack.serve.errors import APIError
from lmstack.serve.protocol import ChatCompletionRequest, RetrievalOptions


@dataclass
class Grounded:
    sources: list[dict[str, Any]]  # [{"n", "title", "path", "start", "end", "score", "text"}], [1] first
    messages: list[dict[str, str]] | None  # the prompt to generate from; None = abstain without the model
    reply: str = ""  # the fixed answer when messages is None ("I don't know.")
    info: dict[str, Any] = field(default_factory=dict)  # reported as is (abstained, reason, confidence)
    state: Any = None  # whatever the service needs back in check()


class RetrievalService(Protocol):
    def describe(self) -> dict[str, Any]: ...  # shown in /v1/models: collection, chunks, mode

    def ground(self, question: str, options: RetrievalOptions) -> Grounded: ...

    def check(self, grounded: Grounded, text: str) -> dict[str, Any]: ...  # citations, abstained, reason


def last_user_message(body: ChatCompletionRequest) -> str:
    for m in reversed(body.messages):
        if m.role == "user" and m.text().strip():
            return m.text().strip()
    raise APIError(400, "retrieval: the conversation has no user message to answer", param="messages")


async def ground_request(state: Any, body: ChatCompletionRequest) -> Grounded | None:
    """The grounding of a chat request that asks for retrieval (None when it does not); 400 on bad options."""
    options = body.retrieval
    if options is None:
        return None
    service: RetrievalService | None = state.retrieval
    if service is None:
        raise APIError(400, "retrieval: this server has no collection; start it with `lmstack serve "
                       "--rag_index=DIR` (a collection built by `lmstack rag index`)", param="retrieval")  # fmt: skip
    question = last_user_message(body)
    try:
        return await asyncio.to_thread(service.ground, question, options)  # embedding + search: off the loop
    except ValueError as e:  # a bad filter, a dense mode on a BM25-only collection
        raise APIError(400, f"retrieval: {e}", param="retrieval") from None


def report(state: Any, grounded: Grounded, text: str | None) -> dict[str, Any]:
    """What the response carries: the sources, then (once the answer exists) the checked citations."""
    out: dict[str, Any] = {"sources": grounded.sources}
    if text is not None:
        out |= grounded.info if grounded.messages is None else state.retrieval.check(grounded, text)
    return out
