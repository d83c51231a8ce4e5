"""SIGTERM handled like Ctrl-C: long jobs save and exit cleanly whichever of the two arrives.

Schedulers, `docker stop` and `kill` send SIGTERM; Python's default is to die at once, losing the run. Inside
`interruptible()` a SIGTERM raises `KeyboardInterrupt` in the main thread, so the one `except KeyboardInterrupt`
path every recipe already has (save a checkpoint, exit 130) covers both signals.

    with interruptible():
        try:
            loop()
        except KeyboardInterrupt:
            save()

Outside the main thread (where Python cannot install handlers) it does nothing. The previous handler is put back
on exit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (as SIGINT does)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
