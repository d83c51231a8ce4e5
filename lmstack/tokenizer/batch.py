"""Batch encoding over processes: the GIL keeps one Python process on one core, so big batches fork workers.

The batch is cut into `workers` contiguous shares of about equal characters. The calling process encodes the
first share itself while `workers - 1` forked processes (plain `Process` + `Pipe`: a `Pool` costs ~0.1-0.5 s
to start and stop on a busy machine) encode the others, so on 2 cores one fork is made, and the caller's own
share needs no transfer. Workers inherit everything by fork (the tokenizer's tables, its
chunk cache as it is at that moment, and the texts) and receive only the bounds of their share; each returns
its ids as one packed int32 buffer plus per-text lengths (a memory copy, where pickling a list of Python ints
costs about as much as encoding them). Output order equals input order, and ids equal
`[tok.encode(t) for t in texts]` (tests/tokenizer/test_batch.py).

Measured on this 2-core machine (docs/benchmarks.md, `bench/tokenizer.py`): a pool of `workers` forked
processes that all encode and pickle their lists back (the previous design) ran at 0.35-0.55x of one process;
this layout is what makes two cores pay. Threads cannot: the regex split and the merge loop hold the GIL.
Small batches (< PARALLEL_MIN_CHARS characters in total), a single worker, or a platform without fork encode
serially in this process.
"""

from __future__ import annotations

import multiprocessing as mp
from array import array
from bisect import bisect_left
from itertools import accumulate
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from lmstack.tokenizer.special import SpecialSet

if TYPE_CHECKING:
    from lmstack.tokenizer.tokenizer import Tokenizer

PARALLEL_MIN_CHARS = 200_000  # below this, a fork costs more than it saves

_WORKER_STATE: tuple | None = None  # (tokenizer, texts, allowed, disallowed), set in the parent before forking


def _encode_share(tok: Tokenizer, texts: list[str], allowed: SpecialSet, disallowed: SpecialSet) -> list[list[int]]:
    return [tok.encode(t, allowed_special=allowed, disallowed_special=disallowed) for t in texts]


def _worker(conn: Connection, bounds: tuple[int, int]) -> None:
    """In a forked child: encode texts[start:end] (inherited by fork), send (int32 ids, int64 lengths) as raw
    buffers, or the exception."""
    assert _WORKER_STATE is not None, "worker started without a tokenizer"
    tok, texts, allowed, disallowed = _WORKER_STATE
    try:
        out = _encode_share(tok, texts[bounds[0] : bounds[1]], allowed, disallowed)
        ids = array("i")
        for x in out:
            ids.extend(x)
        conn.send(("ok", ids.tobytes(), array("q", map(len, out)).tobytes()))
    except Exception as e:  # noqa: BLE001  (re-raised in the parent)
        conn.send(("error", e, None))
    conn.close()


def _receive(conn: Connection, process: mp.process.BaseProcess) -> list[list[int]]:
    """A worker's ids, unpacked into one list per text (or its exception, raised here)."""
    try:
        status, packed_ids, packed_lengths = conn.recv()
    except EOFError:
        raise RuntimeError(f"encode_batch: worker {process.pid} exited without a result") from None
    finally:
        process.join()
    if status == "error":
        raise packed_ids
    ids, lengths = array("i"), array("q")
    ids.frombytes(packed_ids)
    lengths.frombytes(packed_lengths)
    flat, out, start = ids.tolist(), [], 0
    for n in lengths:
        out.append(flat[start : start + n])
        start += n
    return out


def shares(texts: list[str], n: int) -> list[tuple[int, int]]:
    """`n` contiguous (start, end) ranges of texts, none empty, each cut at the text boundary nearest to an equal
    split of the characters (n <= len(texts))."""
    cum = list(accumulate(map(len, texts)))  # cum[i]: characters in texts[: i + 1]
    cuts: list[int] = []
    for k in range(1, n):
        target = cum[-1] * k / n
        i = bisect_left(cum, target)  # cutting after text i leaves cum[i] on the left, before it cum[i - 1]
        cut = i + 1 if i == 0 or cum[i] - target <= target - cum[i - 1] else i
        cuts.append(min(max(cut, (cuts[-1] if cuts else 0) + 1), len(texts) - (n - k)))
    return list(zip([0, *cuts], [*cuts, len(texts)]))


def encode_batch(
    tok: Tokenizer, texts: list[str], workers: int, allowed: SpecialSet, disallowed: SpecialSet
) -> list[list[int]]:
    total = sum(map(len, texts))
    if workers <= 1 or len(texts) < 2 or total < PARALLEL_MIN_CHARS or "fork" not in mp.get_all_start_methods():
        return _encode_share(tok, texts, allowed, disallowed)
    parts = shares(texts, min(workers, len(texts)))
    global _WORKER_STATE
    _WORKER_STATE = (tok, texts, allowed, disallowed)
    ctx, children = mp.get_context("fork"), []
    try:
        for bounds in parts[1:]:
            receive, send = ctx.Pipe(duplex=False)
            process = ctx.Process(target=_worker, args=(send, bounds), daemon=True)
            process.start()  # forked now: it sees the tables, the texts and the cache as they are
            send.close()
            children.append((receive, process))
        mine = _encode_share(tok, texts[parts[0][0] : parts[0][1]], allowed, disallowed)
        theirs = [_receive(conn, process) for conn, process in children]
    finally:
        _WORKER_STATE = None
        for _, process in children:
            if process.is_alive():
                process.kill()
    return mine + [ids for part in theirs for ids in part]
