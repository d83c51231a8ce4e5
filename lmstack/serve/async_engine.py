"""`AsyncEngine`: the `Engine` on a thread of its own, fed by asyncio coroutines.

The engine is single-threaded state (scheduler, cache, samplers); the HTTP server is an asyncio event loop.
So one background thread owns the engine and loops: apply queued commands (add / abort / snapshot), run one
`step()`, hand each output to the asyncio queue of its request (`loop.call_soon_threadsafe`). Coroutines never
touch the engine; they send commands and await futures or queues. A model step holds the GIL only between
torch ops, so the event loop keeps accepting and streaming while the model runs.

    stream = await engine.submit(request_id, prompt_ids, params)   # raises ValueError if the engine refuses
    async for out in stream:                                      # RequestOutputs until out.finished
        ...
Leaving the `async for` early (a client disconnected, an exception) aborts the request and frees its blocks.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

from lmstack.generate.params import SamplingParams
from lmstack.serve.engine import Engine
from lmstack.serve.outputs import EngineMetrics, RequestOutput


class AsyncEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pending = 0  # submitted, not yet added by the engine thread
        self._pending_lock = threading.Lock()  # `pending` changes on both threads
        self.error: BaseException | None = None  # set if the engine thread died

    # ---- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lmstack-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    @property
    def num_waiting(self) -> int:
        """Requests not running yet (queued in the engine or on their way to it)."""
        return self.engine.scheduler.num_waiting + self.pending

    # ---- coroutine side ------------------------------------------------------------------------------------

    async def submit(
        self, request_id: str, prompt: list[int], params: SamplingParams, logprobs: int | None = None
    ) -> AsyncIterator[RequestOutput]:
        """Add a request (raising the engine's ValueError if it refuses it) and return its output stream."""
        loop = asyncio.get_running_loop()
        accepted, outputs = loop.create_future(), asyncio.Queue()
        self._streams[request_id] = (loop, outputs)
        with self._pending_lock:
            self.pending += 1
        self._send(("add", request_id, prompt, params, logprobs, accepted))
        try:
            await accepted
        except BaseException:  # refused, or the caller was cancelled meanwhile (then drop it if it was added)
            self._streams.pop(request_id, None)
            self.abort(request_id)
            raise
        return self._stream(request_id, outputs)

    async def _stream(self, request_id: str, outputs: asyncio.Queue) -> AsyncIterator[RequestOutput]:
        finished = False
        try:
            while True:
                item = await outputs.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    async def metrics(self) -> EngineMetrics:
        """A snapshot taken by the engine thread between steps."""
        fut = asyncio.get_running_loop().create_future()
        self._send(("metrics", fut))
        return await fut

    def _send(self, command: tuple) -> None:
        self._commands.put(command)
        self._wake.set()

    # ---- engine thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._apply_commands()
                if not self.engine.has_unfinished():
                    self._wake.wait(0.5)
                    self._wake.clear()
                    continue
                for out in self.engine.step():
                    self._deliver(out.request_id, out)
        except BaseException as e:  # an engine bug: fail every open stream, report unhealthy
            self.error = e
            for request_id in list(self._streams):
                self._deliver(request_id, RuntimeError(f"engine stopped: {e!r}"))
            raise

    def _apply_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            kind = command[0]
            if kind == "add":
                _, request_id, prompt, params, logprobs, accepted = command
                with self._pending_lock:
                    self.pending -= 1
                try:
                    self.engine.add_request(request_id, prompt, params, logprobs)
                except Exception as e:
                    self._resolve(accepted, exception=e)
                else:
                    self._resolve(accepted, result=True)
            elif kind == "abort":
                self.engine.abort(command[1])
            elif kind == "metrics":
                self._resolve(command[1], result=self.engine.metrics())

    def _resolve(self, fut: asyncio.Future, result: Any = None, exception: BaseException | None = None) -> None:
        def settle() -> None:
            if fut.done():
                return
            if exception is not None:
                fut.set_exception(exception)
            else:
                fut.set_result(result)

        try:
            fut.get_loop().call_soon_threadsafe(settle)
        except RuntimeError:  # the event loop is closed (shutdown)
            pass

    def _deliver(self, request_id: str, item: RequestOutput | BaseException) -> None:
        target = self._streams.get(request_id)
        if target is None:
            return
        loop, outputs = target
        try:
            loop.call_soon_threadsafe(outputs.put_nowait, item)
        except RuntimeError:
            pass
