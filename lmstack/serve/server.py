"""`lmstack serve`: the engine behind an OpenAI-compatible HTTP server (FastAPI + uvicorn), with a chat page.

    lmstack serve --model smollm2-135m                # http://127.0.0.1:8000, chat page at /
    curl 127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
         -d '{"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}]}'

Routes, one router per group so more can be added (`app.include_router(...)`): `/v1/completions`,
`/v1/chat/completions`, `/v1/models` (openai_api.py), `/v1/embeddings` (embeddings.py), all behind the optional
API key; `/health`, `/metrics`
(Prometheus text format); `/` (the chat page, static/chat.html). Around them: a body-size limit (413), strict
OpenAI-style errors (errors.py), a bounded queue (429), an API key compared in constant time (401).
The server binds 127.0.0.1 unless `--host` says otherwise. SIGTERM (or Ctrl-C) stops accepting connections,
lets in-flight requests finish (up to `--drain_timeout` seconds), then stops the engine and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib.resources
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmstack.serve.async_engine import AsyncEngine
from lmstack.serve.engine import Engine, EngineConfig
from lmstack.serve.errors import APIError, error_body, error_response
from lmstack.serve.metrics import ServeMetrics

log = logging.getLogger("lmstack.serve")


@dataclass
class ServeConfig:
    model: str = "smollm2-135m"  # model directory, .gguf file or local model name (`lmstack models`)
    host: str = "127.0.0.1"  # address to bind; anything but loopback exposes the server to the network
    port: int = 8000  # TCP port (0 = any free port; the chosen one is printed)
    api_key: str = ""  # require `Authorization: Bearer KEY` on /v1 ("" = $LMSTACK_API_KEY, or no key)
    served_model_name: str = ""  # the model id clients send ("" = the --model name)
    device: str = "auto"  # auto | cpu | cuda[:N] | mps
    dtype: str = ""  # float32 | bfloat16 | float16; "" = the model's own
    kv_cache_bytes: int = 1 << 30  # KV-cache memory budget in bytes, preallocated as blocks
    block_size: int = 8  # tokens per KV block (8: half the last-block waste of 16 at no measured cost on CPU)
    max_num_seqs: int = 64  # sequences running at once
    max_num_batched_tokens: int = 512  # token budget of one engine step (prefill chunks + decodes)
    chunked_prefill: bool = True  # split long prompts over steps so running streams are not stalled
    prefix_caching: bool = True  # reuse KV blocks of earlier requests that share a prefix
    packed_weights: bool = True  # CPU, float32: keep a oneDNN-packed copy of the weights (2-4x faster batched steps)
    max_queue: int = 256  # requests waiting beyond this get 429
    max_body_bytes: int = 1 << 20  # larger request bodies get 413
    drain_timeout: float = 60.0  # on SIGTERM, seconds to let in-flight requests finish (0 = no limit)
    log_level: str = "info"  # uvicorn log level: critical | error | warning | info | debug
    access_log: bool = False  # log every HTTP request

    def __post_init__(self) -> None:
        if not 0 <= self.port < 65536:
            raise ValueError(f"--port={self.port}: expected 0..65535")
        if self.max_queue < 1 or self.max_body_bytes < 1:
            raise ValueError(f"--max_queue={self.max_queue}, --max_body_bytes={self.max_body_bytes}: must be >= 1")
        self.engine_config()

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            kv_cache_bytes=self.kv_cache_bytes,
            block_size=self.block_size,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            chunked_prefill=self.chunked_prefill,
            prefix_caching=self.prefix_caching,
        )


@dataclass
class ServeState:
    """What every route reads (`request.app.state.serve`)."""

    engine: AsyncEngine
    tokenizer: Any
    model_name: str
    max_model_len: int
    vocab_size: int
    max_queue: int
    api_key: str
    metrics: ServeMetrics
    created: int
    embedder: Any = None  # embeddings.TextEmbedder behind /v1/embeddings (None: the route answers 404)
    retrieval: Any = None  # retrieval.RetrievalService for chat requests with "retrieval" (None: 400)
    embed_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one embedding forward at a time


# ---- middleware: body size limit, response counting -----------------------------------------------------------


class BodyLimit:
    """Reads the request body first; more than `max_bytes` (by Content-Length or by counting) is a 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._reject(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._reject(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client to disconnect

        await self.app(scope, replay, send)

    async def _reject(self, scope: dict, receive: Any, send: Any) -> None:
        msg = f"The request body exceeds {self.max_bytes} bytes (--max_body_bytes)"
        response = JSONResponse(error_body(msg, "invalid_request_error", code="request_too_large"), status_code=413)
        await response(scope, receive, send)


class CountResponses:
    """Counts responses by status code for /metrics (`lmstack_http_responses_total`)."""

    def __init__(self, app: Any, metrics: ServeMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                self.metrics.responses.labels(code=str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting_send)


# ---- routes: auth, health, metrics, page ---------------------------------------------------------------------


def check_api_key(request: Request) -> None:
    key = request.app.state.serve.api_key
    if not key:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), key.encode()):  # constant time: no timing oracle on the key
        raise APIError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`",
                       code="invalid_api_key")  # fmt: skip


ops = APIRouter()


@ops.get("/health")
async def health(request: Request) -> JSONResponse:
    ok = request.app.state.serve.engine.alive
    return JSONResponse({"status": "ok" if ok else "engine stopped"}, status_code=200 if ok else 503)


@ops.get("/metrics")
async def metrics(request: Request) -> PlainTextResponse:
    s: ServeState = request.app.state.serve
    if s.engine.alive:
        s.metrics.snapshot = await s.engine.metrics()
    body, content_type = s.metrics.render()
    return PlainTextResponse(body, media_type=content_type)


page = APIRouter()


@page.get("/", response_class=HTMLResponse)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(importlib.resources.files("lmstack.serve").joinpath("static/chat.html").read_text())


# ---- the app -------------------------------------------------------------------------------------------------


def build_app(
    engine: Engine,
    tokenizer: Any,
    model_name: str,
    api_key: str = "",
    max_queue: int = 256,
    max_body_bytes: int = 1 << 20,
    embedder: Any = None,
    retrieval: Any = None,
) -> FastAPI:
    """The ASGI app around `engine`; its lifespan starts and stops the engine thread. `embedder` serves
    /v1/embeddings (embeddings.TextEmbedder), `retrieval` grounds chat requests (retrieval.RetrievalService);
    lmstack/rag/serving.py builds both from `lmstack serve --embedding_model / --rag_index`."""
    from lmstack.serve import embeddings, openai_api

    async_engine = AsyncEngine(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async_engine.start()
        yield
        async_engine.stop()

    app = FastAPI(title="lmstack", lifespan=lifespan, docs_url=None, redoc_url=None)
    serve_metrics = ServeMetrics()
    app.state.serve = ServeState(
        async_engine, tokenizer, model_name, engine.max_model_len, engine.model.config.vocab_size,
        max_queue, api_key, serve_metrics, int(time.time()), embedder, retrieval,
    )  # fmt: skip
    app.include_router(openai_api.router, dependencies=[Depends(check_api_key)])
    app.include_router(embeddings.router, dependencies=[Depends(check_api_key)])
    app.include_router(ops)
    app.include_router(page)

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, e: APIError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(e))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        return error_response(APIError(e.status_code, str(e.detail)))

    @app.exception_handler(Exception)
    async def on_crash(request: Request, e: Exception) -> JSONResponse:
        log.exception("request failed")
        return error_response(APIError(500, f"internal error: {type(e).__name__}: {e}", "server_error"))

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(CountResponses, metrics=serve_metrics)
    return app


def validation_error(e: RequestValidationError) -> APIError:
    """A pydantic error list -> one 400 naming the first bad field."""
    err = e.errors()[0]
    if err.get("type") == "json_invalid":
        return APIError(400, f"The body is not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}")
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    field = loc[0] if loc else None
    where = ".".join(loc) or "body"
    extra = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
    return APIError(400, f"{where}: {err.get('msg')}{extra}", param=field)


def served_name(spec: str) -> str:
    path = Path(spec)
    return path.stem if path.suffix == ".gguf" else (path.name or spec)


def main(cfg: ServeConfig, embedder: Any = None, retrieval: Any = None) -> int:
    """Load the model, build the app (with an embedder / retrieval service if given) and serve until SIGTERM."""
    import uvicorn

    from lmstack.common.log import info
    from lmstack.generate.fast_forward import decode_layout, packed_nbytes
    from lmstack.model import load_model

    model, tok = load_model(cfg.model, cfg.device, cfg.dtype)
    # as `lmstack generate` does (same values, fused q|k|v and gate|up), plus oneDNN-packed copies for batched steps
    decode_layout(model, packed=cfg.packed_weights)
    if extra := packed_nbytes(model):
        info(f"packed the float weights for oneDNN: {extra / 2**20:.0f} MB more memory (--packed_weights false: none)")
    engine = Engine(model, tok, cfg.engine_config())
    name = cfg.served_model_name or served_name(cfg.model)
    api_key = cfg.api_key or os.environ.get("LMSTACK_API_KEY", "")
    app = build_app(engine, tok, name, api_key, cfg.max_queue, cfg.max_body_bytes, embedder, retrieval)
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((cfg.host, cfg.port))
    except OSError as e:
        raise ValueError(f"--host={cfg.host} --port={cfg.port}: cannot bind ({e.strerror})") from None
    sock.listen(2048)  # listening before we say so: a client that reads the line below is never refused
    host, port = sock.getsockname()[:2]
    tokens = engine.num_blocks * cfg.block_size
    info(
        f"lmstack serve: {name} ({model.config.max_seq_len}-token context) on {engine.device}; KV cache "
        f"{engine.num_blocks} blocks x {cfg.block_size} = {tokens} tokens ({engine.cache.nbytes / 2**20:.0f} MiB)"
    )
    if host not in ("127.0.0.1", "::1", "localhost"):
        info(f"lmstack serve: warning: listening on {host}, reachable from the network" + ("" if api_key else
             " without an API key"))  # fmt: skip
    keyed = " (API key required)" if api_key else ""
    info(f"lmstack serve: listening on http://{host}:{port} (chat page at /, API at /v1){keyed}")
    config = uvicorn.Config(
        app,
        log_level=cfg.log_level,
        access_log=cfg.access_log,
        timeout_graceful_shutdown=cfg.drain_timeout or None,
    )
    server = uvicorn.Server(config)
    handle_exit = server.handle_exit

    def drain_then_exit(sig: int, frame: Any) -> None:  # uvicorn re-raises the signal after draining; we exit 0
        handle_exit(sig, frame)
        server._captured_signals.clear()

    server.handle_exit = drain_then_exit
    server.run(sockets=[sock])
    info("lmstack serve: stopped")
    return 0


if __name__ == "__main__":
    from lmstack.cli import main as cli_main

    sys.exit(cli_main(["serve", *sys.argv[1:]]))
