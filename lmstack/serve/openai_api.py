"""The OpenAI-compatible endpoints: `/v1/completions`, `/v1/chat/completions`, `/v1/models`.

Each handler validates the body (protocol.py), turns it into prompt ids + `SamplingParams`, submits one engine
request per prompt (AsyncEngine) and answers either one JSON body or a server-sent-event stream of chunks
(`data: {...}\\n\\n` ... `data: [DONE]\\n\\n`), shaped as the OpenAI API reference describes:
  - chat applies the model's chat template (`lmstack.tokenizer.chat.render_prompt`: ChatML, with the template's
    default system prompt when none is given, as HF's `apply_chat_template` does) and stops at `<|im_end|>`;
  - streaming sends the role first, then text deltas, then each choice's finish_reason, then (with
    `stream_options.include_usage`) a usage chunk with no choices;
  - `response_format` json_object / json_schema become the JSON / JSON-schema constraints of lmstack.generate;
  - usage reports `prompt_tokens_details.cached_tokens`: prompt tokens served from the prefix cache;
  - a chat request with `"retrieval"` is answered from the server's collection with numbered sources, and the
    response carries the sources and the checked citations (retrieval.py).
A client that disconnects (mid-stream or while waiting for a JSON body) aborts its engine requests.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from lmstack.generate.params import SamplingParams
from lmstack.generate.stop import token_bytes
from lmstack.serve.errors import APIError
from lmstack.serve.outputs import CompletionOutput, RequestOutput, TokenLogprob
from lmstack.serve.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields
from lmstack.serve.retrieval import Grounded, ground_request, report
from lmstack.tokenizer.chat import PLAIN_STOP, chat_stop_ids, has_chatml, render_prompt, template_system_prompt

router = APIRouter(prefix="/v1")


def _state(request: Request) -> Any:
    return request.app.state.serve


@router.get("/models")
async def list_models(request: Request) -> dict:
    s = _state(request)
    card = {"id": s.model_name, "object": "model", "created": s.created, "owned_by": "lmstack"}
    chat = card | {"max_model_len": s.max_model_len}
    if s.retrieval is not None:  # chat requests may ask for retrieval from this collection (retrieval.py)
        chat["retrieval"] = s.retrieval.describe()
    data = [chat]
    if s.embedder is not None:  # /v1/embeddings (embeddings.py)
        e = s.embedder
        data.append(card | {"id": e.name, "max_model_len": e.max_tokens, "dimensions": e.dim})
    return {"object": "list", "data": data}


def _check_model(s: Any, body: SamplingFields) -> None:
    if body.model != s.model_name:
        raise APIError(404, f"The model `{body.model}` does not exist; this server serves `{s.model_name}`",
                       "invalid_request_error", "model", "model_not_found")  # fmt: skip


def _max_tokens(s: Any, prompts: list[list[int]], asked: int | None, param: str) -> int:
    """The output budget, checked against the context window (400 naming the numbers otherwise)."""
    longest = max(len(p) for p in prompts)
    if longest >= s.max_model_len:
        raise APIError(400, f"The prompt has {longest} tokens; this model's context window is {s.max_model_len} "
                       "tokens and at least one must be left for the output", param="messages" if
                       param == "max_completion_tokens" else "prompt", code="context_length_exceeded")  # fmt: skip
    if asked is None:
        return s.max_model_len - longest
    if longest + asked > s.max_model_len:
        raise APIError(400, f"This model's maximum context length is {s.max_model_len} tokens. However, you "
                       f"requested {longest + asked} tokens ({longest} in the prompt, {asked} in {param}). "
                       f"Reduce {param} or the prompt.", param=param, code="context_length_exceeded")  # fmt: skip
    return asked


def _params(
    s: Any, body: SamplingFields, max_tokens: int, stop_ids: list[int], extra_stop: list[str]
) -> SamplingParams:
    try:
        params = body.sampling_params(max_tokens, s.vocab_size, stop_ids)
        if extra_stop:
            params = params.replace(stop=params.stop + [x for x in extra_stop if x not in params.stop])
        return params
    except ValueError as e:
        raise APIError(400, str(e)) from None


async def _submit(request: Request, prompts: list[list[int]], params: SamplingParams, logprobs: int | None) -> list:
    """One engine request per prompt; 429 when the queue is full, 400 when the engine refuses."""
    s = _state(request)
    if s.engine.num_waiting + len(prompts) > s.max_queue:
        raise APIError(429, f"The server is busy: {s.engine.num_waiting} requests are queued (--max_queue="
                       f"{s.max_queue}); retry later", "rate_limit_exceeded", code="queue_full")  # fmt: skip
    base = uuid.uuid4().hex
    streams = []
    try:
        for i, prompt in enumerate(prompts):
            streams.append(await s.engine.submit(f"{base}-{i}", prompt, params, logprobs))
    except ValueError as e:
        for st in streams:
            await st.aclose()
        raise APIError(400, str(e)) from None
    return streams


async def _merged(streams: list) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Outputs of several engine requests as they come, tagged with the prompt index."""
    if len(streams) == 1:
        async for out in streams[0]:
            yield 0, out
        return
    q: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, st: AsyncIterator[RequestOutput]) -> None:
        try:
            async for out in st:
                await q.put((i, out))
        except Exception as e:
            await q.put((i, e))
        await q.put((i, None))

    tasks = [asyncio.create_task(pump(i, st)) for i, st in enumerate(streams)]
    try:
        left = len(streams)
        while left:
            i, item = await q.get()
            if item is None:
                left -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _collect(request: Request, streams: list) -> list[RequestOutput]:
    """Final outputs of every stream; aborts them if the client goes away first."""

    async def gather() -> list[RequestOutput]:
        final: dict[int, RequestOutput] = {}
        async for i, out in _merged(streams):
            final[i] = out
        return [final[i] for i in range(len(streams))]

    work, gone = asyncio.create_task(gather()), asyncio.create_task(_until_disconnect(request))
    done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    if work not in done:
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise APIError(499, "client disconnected")
    gone.cancel()
    return work.result()


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def _error_event(message: str) -> str:
    return _sse({"error": {"message": message, "type": "server_error", "param": None, "code": None}})


def _usage(outs: list[RequestOutput]) -> dict:
    prompt = sum(len(o.prompt_token_ids) for o in outs)
    completion = sum(len(c.token_ids) for o in outs for c in o.outputs)
    cached = sum(o.num_cached_tokens for o in outs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}  # fmt: skip


def _observe(s: Any, out: RequestOutput, last: dict[str, float]) -> None:
    """Feed the Prometheus latency histograms from an output (first token, next tokens, end)."""
    now = time.perf_counter()
    if out.first_token_time is not None and out.request_id not in last:
        s.metrics.ttft.observe(out.first_token_time - out.arrival_time)
    elif out.request_id in last and any(c.new_token_ids for c in out.outputs):
        s.metrics.itl.observe(now - last[out.request_id])
    last[out.request_id] = now
    if out.finished:
        s.metrics.e2e.observe(now - out.arrival_time)


def _raise_failed(outs: list[RequestOutput]) -> None:
    for o in outs:
        if o.error is not None:
            raise APIError(500, f"the request failed: {o.error}", "server_error")


# ---- /v1/completions ---------------------------------------------------------------------------------------


def _completion_prompts(s: Any, body: CompletionRequest) -> list[list[int]]:
    p = body.prompt
    if isinstance(p, str):
        p = [p]
    if p and isinstance(p[0], int):
        p = [p]
    prompts = [s.tokenizer.encode(x, allowed_special="all") if isinstance(x, str) else list(x) for x in p]
    if not prompts or any(len(x) == 0 for x in prompts):
        raise APIError(400, "prompt: expected non-empty text or token ids", param="prompt")
    for x in prompts:
        if min(x) < 0 or max(x) >= s.vocab_size:
            raise APIError(400, f"prompt: token ids must be in [0, {s.vocab_size})", param="prompt")
    return prompts


def _completion_logprobs(s: Any, lps: list[TokenLogprob], offset: int) -> dict:
    tokens = [s.tokenizer.decode([lp.token]) for lp in lps]
    offsets, pos = [], offset
    for t in tokens:
        offsets.append(pos)
        pos += len(t)
    return {
        "tokens": tokens,
        "token_logprobs": [lp.logprob for lp in lps],
        "top_logprobs": [{s.tokenizer.decode([t]): v for t, v in lp.top} for lp in lps],
        "text_offset": offsets,
    }


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request) -> Any:
    s = _state(request)
    _check_model(s, body)
    if problem := body.problem():
        raise APIError(400, problem)
    prompts = _completion_prompts(s, body)
    max_tokens = _max_tokens(s, prompts, body.max_tokens, "max_tokens")
    params = _params(s, body, max_tokens, [], [])
    streams = await _submit(request, prompts, params, body.logprobs)
    rid, created, n = f"cmpl-{uuid.uuid4().hex}", int(time.time()), params.n
    echo = [s.tokenizer.decode(p) if body.echo else "" for p in prompts]

    def choice(i: int, c: CompletionOutput, text: str, lps: list[TokenLogprob] | None, offset: int) -> dict:
        lp = _completion_logprobs(s, lps, offset) if body.logprobs is not None and lps is not None else None
        return {"index": i * n + c.index, "text": text, "logprobs": lp, "finish_reason": c.finish_reason}

    if not body.stream:
        outs = await _collect(request, streams)
        for o in outs:
            _observe(s, o, {})
        _raise_failed(outs)
        choices = [choice(i, c, echo[i] + c.text, c.logprobs, len(echo[i])) for i, o in enumerate(outs)
                   for c in o.outputs]  # fmt: skip
        return {"id": rid, "object": "text_completion", "created": created, "model": s.model_name,
                "choices": choices, "usage": _usage(outs)}  # fmt: skip

    async def events() -> AsyncIterator[str]:
        head = {"id": rid, "object": "text_completion", "created": created, "model": s.model_name}
        final: dict[int, RequestOutput] = {}
        sent: dict[tuple[int, int], int] = {}  # characters sent per choice (logprobs text_offset)
        ended: set[tuple[int, int]] = set()  # choices whose finish_reason was sent
        last: dict[str, float] = {}
        try:
            if body.echo:
                for i in range(len(prompts)):
                    for j in range(n):
                        yield _sse(head | {"choices": [{"index": i * n + j, "text": echo[i], "logprobs": None,
                                                        "finish_reason": None}]})  # fmt: skip
            async for i, out in _merged(streams):
                _observe(s, out, last)
                final[i] = out
                if out.error is not None:
                    yield _error_event(out.error)
                    continue
                for c in out.outputs:
                    if (i, c.index) in ended:
                        continue
                    if c.finish_reason is not None:
                        ended.add((i, c.index))
                    if c.new_text or c.finish_reason or (body.logprobs is not None and c.new_token_ids):
                        off = sent.get((i, c.index), len(echo[i]))
                        sent[(i, c.index)] = off + len(c.new_text)
                        yield _sse(head | {"choices": [choice(i, c, c.new_text, c.new_logprobs, off)]})
            if body.stream_options is not None and body.stream_options.include_usage:
                yield _sse(head | {"choices": [], "usage": _usage([final[i] for i in sorted(final)])})
        except Exception as e:  # the engine failed mid-stream: tell the client instead of cutting it off
            yield _error_event(f"{type(e).__name__}: {e}")
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


# ---- /v1/chat/completions ----------------------------------------------------------------------------------


def _chat_messages(s: Any, body: ChatCompletionRequest) -> list[dict[str, str]]:
    """The conversation as role/content dicts, with the template's default system prompt when none is given."""
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    if messages[0]["role"] != "system" and (default := template_system_prompt(s.tokenizer)):
        messages = [{"role": "system", "content": default}] + messages
    return messages


def _chat_prompt(s: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[int], list[str]]:
    """Prompt ids, stop ids and stop strings for a conversation, in the model's chat template."""
    ids = render_prompt(s.tokenizer, messages)
    if has_chatml(s.tokenizer):
        return ids, chat_stop_ids(s.tokenizer), []
    return ids, [], list(PLAIN_STOP)


def _chat_logprobs(s: Any, lps: list[TokenLogprob] | None, top: bool) -> dict | None:
    if lps is None:
        return None

    def entry(token: int, logprob: float) -> dict:
        return {"token": s.tokenizer.decode([token]), "logprob": logprob,
                "bytes": list(token_bytes(s.tokenizer, token))}  # fmt: skip

    return {"content": [entry(lp.token, lp.logprob) | {"top_logprobs": [entry(t, v) for t, v in lp.top] if top else []}
                        for lp in lps]}  # fmt: skip


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Any:
    s = _state(request)
    _check_model(s, body)
    if problem := body.problem():
        raise APIError(400, problem, param="messages" if not body.messages else None)
    grounded = await ground_request(s, body)  # retrieval.py: None unless the request asks for retrieval
    if grounded is not None and grounded.messages is None:  # nothing relevant found: abstain, no model call
        return _fixed_reply(s, body, grounded)
    ids, stop_ids, stop_strings = _chat_prompt(s, grounded.messages if grounded else _chat_messages(s, body))
    asked = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    param = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    max_tokens = _max_tokens(s, [ids], asked, param)
    params = _params(s, body, max_tokens, stop_ids, stop_strings)
    top = body.top_logprobs or 0
    logprobs = top if body.logprobs else None
    (stream,) = await _submit(request, [ids], params, logprobs)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "created": created, "model": s.model_name}

    if not body.stream:
        (out,) = await _collect(request, [stream])
        _observe(s, out, {})
        _raise_failed([out])
        choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                    "logprobs": _chat_logprobs(s, c.logprobs, bool(top)), "finish_reason": c.finish_reason}
                   for c in out.outputs]  # fmt: skip
        response = head | {"object": "chat.completion", "choices": choices, "usage": _usage([out])}
        if grounded is not None:
            response["retrieval"] = report(s, grounded, out.outputs[0].text)
        return response

    async def events() -> AsyncIterator[str]:
        chunk = head | {"object": "chat.completion.chunk"}
        sources = {"retrieval": report(s, grounded, None)} if grounded is not None else {}
        for j in range(params.n):
            yield _sse(chunk | {"choices": [{"index": j, "delta": {"role": "assistant", "content": ""},
                                             "logprobs": None, "finish_reason": None}]} | sources)  # fmt: skip
        final = None
        ended: set[int] = set()  # choices whose finish_reason was sent
        last: dict[str, float] = {}
        try:
            async for _, out in _merged([stream]):
                _observe(s, out, last)
                final = out
                if out.error is not None:
                    yield _error_event(out.error)
                    continue
                for c in out.outputs:
                    if c.index in ended:
                        continue
                    if c.new_text or (logprobs is not None and c.new_token_ids):
                        lp = _chat_logprobs(s, c.new_logprobs, bool(top))
                        delta = {
                            "index": c.index,
                            "delta": {"content": c.new_text},
                            "logprobs": lp,
                            "finish_reason": None,
                        }
                        yield _sse(chunk | {"choices": [delta]})
                    if c.finish_reason is not None:
                        ended.add(c.index)
                        yield _sse(chunk | {"choices": [{"index": c.index, "delta": {}, "logprobs": None,
                                                         "finish_reason": c.finish_reason}]})  # fmt: skip
            if final is not None and grounded is not None:
                yield _sse(chunk | {"choices": [], "retrieval": report(s, grounded, final.outputs[0].text)})
            if final is not None and body.stream_options is not None and body.stream_options.include_usage:
                yield _sse(chunk | {"choices": [], "usage": _usage([final])})
        except Exception as e:
            yield _error_event(f"{type(e).__name__}: {e}")
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


def _fixed_reply(s: Any, body: ChatCompletionRequest, grounded: Grounded) -> Any:
    """A retrieval request answered without the model (the sources were not relevant enough): the same shapes."""
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": s.model_name}
    usage = _usage([])
    checked = {"retrieval": report(s, grounded, grounded.reply)}
    if not body.stream:
        message = {"role": "assistant", "content": grounded.reply}
        return head | {"object": "chat.completion", "choices": [{"index": 0, "message": message, "logprobs": None,
                       "finish_reason": "stop"}], "usage": usage} | checked  # fmt: skip

    async def events() -> AsyncIterator[str]:
        chunk = head | {"object": "chat.completion.chunk"}

        def choice(delta: dict, finish: str | None) -> dict:
            return {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        sources = {"retrieval": report(s, grounded, None)}
        yield _sse(chunk | choice({"role": "assistant", "content": ""}, None) | sources)
        yield _sse(chunk | choice({"content": grounded.reply}, None))
        yield _sse(chunk | choice({}, "stop"))
        yield _sse(chunk | {"choices": []} | checked)
        if body.stream_options is not None and body.stream_options.include_usage:
            yield _sse(chunk | {"choices": [], "usage": usage})
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")
