"""Batch encoding over processes: the GIL keeps one Python process on one core, so big batches fork workers.

The caller and `workers - 1` forked processes (plain `Process` + `Pipe`: a `Pool` costs ~0.1-0.5 s to start and
stop on a busy machine) take texts from one shared counter, longest first, until none is left. Taking texts as
they go balances the load whatever the texts' lengths and whatever else runs on the machine; longest first
keeps the last texts taken short, so no process waits long for another at the end. Workers inherit everything
by fork (the tokenizer's tables, its chunk cache as it is at that moment, and the texts) and receive nothing.

A worker encodes each text into an `array("i")` through a cache of chunk -> `array("i")` ids, so each chunk's
ids are one memory copy, never a list of Python ints, and sends the array's raw bytes the moment the text is
done (through a pipe widened to 1 MiB, so it rarely waits). Between its own texts the caller turns what has
arrived into lists with one `tolist()` each, the only per-token work it does for a worker's texts (pickling
lists of ints costs about as much as encoding them).
Output order equals input order, and ids equal `[tok.encode(t) for t in texts]` (tests/tokenizer/test_batch.py).

Measured on this 2-core machine (docs/benchmarks.md, `bench/tokenizer.py`, 5 MB in 42 texts): 1.45-1.5x one
process from an empty cache and 1.2-1.3x from a full one (fixed halves, each packing Python lists at the end,
gave 1.1-1.2x; tiktoken's 2 Rust threads give 1.5-1.7x). Garbage collection is off in both processes while
they run: a collection would touch every object they share since the fork, and the copy-on-write faults made
every other batch ~40 % slower. Threads cannot: the regex split and the merge loop hold the GIL.
Small batches (< PARALLEL_MIN_CHARS characters in total), a single worker, or a platform without fork encode
serially in this process. If a text fails (a disallowed special token), the batch raises that text's error
once every process has stopped.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
from array import array
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING

from lmstack.tokenizer.special import SpecialSet
from lmstack.tokenizer.tokenizer import CACHE_MAX

if TYPE_CHECKING:
    from lmstack.tokenizer.tokenizer import Tokenizer

PARALLEL_MIN_CHARS = 200_000  # below this, a fork costs more than it saves

# Set in the parent before forking, inherited by the workers: (tokenizer, texts, order, allowed, disallowed, counter)
_WORKER_STATE: tuple | None = None


def _claim(counter: mp.sharedctypes.Synchronized) -> int:
    """The next position in the shared work order (positions past the end mean: nothing left)."""
    with counter.get_lock():
        k = counter.value
        counter.value = k + 1
    return k


def _worker(conn: Connection) -> None:
    """In a forked child: encode texts taken from the shared counter, sending each as (index, int32 ids as raw
    bytes) the moment it is done, then "done"; or (index, exception) for the first text that fails."""
    assert _WORKER_STATE is not None, "worker started without a tokenizer"
    gc.disable()  # a collection here would touch every inherited object: copy-on-write faults (see module doc)
    tok, texts, order, allowed, disallowed, counter = _WORKER_STATE
    packed: dict[str, array] = {}  # chunk -> its ids as array("i"); the inherited list cache seeds it

    def miss(chunk: str) -> array:
        ids = tok._cache.get(chunk)
        if len(packed) >= CACHE_MAX:
            packed.clear()
        packed[chunk] = out = array("i", ids if ids is not None else tok._encode_chunk(chunk))
        return out

    while (k := _claim(counter)) < len(order):
        i, ids = order[k], array("i")
        try:
            tok._encode_into(texts[i], allowed, disallowed, ids, packed.get, miss)
        except Exception as e:  # noqa: BLE001  (re-raised in the parent)
            conn.send(("error", i, e))
            break
        conn.send(("ok", i, ids.tobytes()))
    else:
        conn.send(("done", -1, None))
    conn.close()


def _widen(conn: Connection) -> None:
    """Let the pipe hold 1 MiB (Linux; 64 KiB by default), so a worker rarely waits for the caller to read."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError):
        pass


def _drain(children: dict, out: list, errors: list, block: bool) -> None:
    """Move finished texts from the workers' pipes into `out` (all of them until every worker is done if
    `block`, else what is already there); a worker that fails or dies is recorded in `errors` and dropped."""
    while children:
        ready = wait(list(children), timeout=None if block else 0)
        if not ready:
            return
        for conn in ready:
            try:
                status, i, payload = conn.recv()
            except EOFError:
                status, i, payload = "error", -1, RuntimeError(f"encode_batch: worker {children[conn].pid} died")
            if status == "ok":
                ids = array("i")
                ids.frombytes(payload)
                out[i] = ids.tolist()
                continue
            if status == "error":
                errors.append((i, payload))
            children.pop(conn).join()


def encode_batch(
    tok: Tokenizer, texts: list[str], workers: int, allowed_special: SpecialSet, disallowed_special: SpecialSet
) -> list[list[int]]:
    allowed, disallowed = tok._special.resolve(allowed_special, disallowed_special)
    total = sum(map(len, texts))
    if workers <= 1 or len(texts) < 2 or total < PARALLEL_MIN_CHARS or "fork" not in mp.get_all_start_methods():
        return [tok.encode(t, allowed, disallowed) for t in texts]
    ctx = mp.get_context("fork")
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # longest first
    counter = ctx.Value("q", 0)
    out: list = [None] * len(texts)
    global _WORKER_STATE
    _WORKER_STATE = (tok, texts, order, allowed, disallowed, counter)
    children: dict[Connection, mp.process.BaseProcess] = {}
    errors: list[tuple[int, Exception]] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as in the workers: while they run, our pages are shared with them
    try:
        for _ in range(min(workers, len(texts)) - 1):
            receive, send = ctx.Pipe(duplex=False)
            _widen(send)
            process = ctx.Process(target=_worker, args=(send,), daemon=True)
            process.start()  # forked now: it sees the tables, the texts and the cache as they are
            send.close()
            children[receive] = process
        while (k := _claim(counter)) < len(order):
            i = order[k]
            try:
                out[i] = tok.encode(texts[i], allowed, disallowed)
            except Exception as e:  # noqa: BLE001  (raised below, once the workers have stopped)
                errors.append((i, e))
            _drain(children, out, errors, block=False)  # unpack what the workers sent, between own texts
            if errors:
                with counter.get_lock():  # stop the workers from taking more texts
                    counter.value = len(order)
                break
        _drain(children, out, errors, block=True)
    finally:
        _WORKER_STATE = None
        if gc_was_enabled:
            gc.enable()
        for process in children.values():
            if process.is_alive():
                process.kill()
    if errors:
        raise min(errors, key=lambda e: e[0])[1]  # the first failing text in input order among those tried
    return out
