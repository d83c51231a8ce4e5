"""Logging for long jobs: metrics as JSON lines, progress bars on stderr, messages on stderr.

Library code never prints (STYLE.md): results go to stdout from the CLI, progress and messages to stderr,
metrics to a `metrics.jsonl` that plots and reports read back.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


class JsonlLogger:
    """Appends one JSON object per `log()` call to `path`, with wall time `t` (s since start) added."""

    def __init__(self, path: str | Path | None, append: bool = True) -> None:
        self.path = Path(path) if path is not None else None
        self.start = time.time()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not append:
                self.path.write_text("")

    def log(self, **record: Any) -> dict[str, Any]:
        record = {"t": round(time.time() - self.start, 3), **record}
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(record, default=_jsonable) + "\n")
                f.flush()
        return record


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file; a truncated last line (a crash mid-write) is skipped."""
    records = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(Path(path).read_text().splitlines()) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None
    return records


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return str(x)


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> Iterator[T]:
    """A tqdm bar on stderr; silent when stderr is not a terminal unless `LMSTACK_PROGRESS=1`."""
    import os

    disable = kwargs.pop("disable", None)
    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("LMSTACK_PROGRESS") == "1")
    return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)


def info(msg: str) -> None:
    """A human-readable status line on stderr."""
    print(msg, file=sys.stderr, flush=True)
