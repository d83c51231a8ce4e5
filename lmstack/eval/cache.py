"""Result cache: a task's result is reused when the same weights are evaluated on the same task with the same
settings.

    key = (model fingerprint, task, sha256 of the task's settings)
    $LMSTACK_HOME/eval/<fingerprint[:16]>/<task>-<settings[:12]>.json

The fingerprint is a sha256 over what decides the model's outputs: config.json, tokenizer.json and the weights —
for a safetensors file its tensor index (names, dtypes, shapes, offsets; the free-form `__metadata__` is left out,
its key order varies between saves) and its data bytes. Hashing 540 MB takes a couple of seconds, so fingerprints
are memoized in $LMSTACK_HOME/eval/fingerprints.json by (path, size, mtime) of each file: a rewritten checkpoint is
hashed again.
Renaming or copying a model keeps its cache; changing one weight does not. `SCORING_VERSION` is part of every
key: bump it when a change to the harness changes scores. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lmstack.common.atomic import atomic_write_text
from lmstack.common.home import lmstack_home

SCORING_VERSION = 1
FINGERPRINT_VERSION = 2  # part of the memo key: a new fingerprint rule re-hashes every model


def _model_files(model_dir: Path) -> list[Path]:
    files = [model_dir / "config.json", *sorted(model_dir.glob("*.safetensors")), model_dir / "tokenizer.json"]
    return [f for f in files if f.is_file()]


def cache_root() -> Path:
    return lmstack_home() / "eval"


def fingerprint(model_dir: str | Path) -> str:
    """sha256 (hex) of the model's config, weights and tokenizer, memoized by file stat."""
    model_dir = Path(model_dir).resolve()
    files = _model_files(model_dir)
    if not any(f.suffix == ".safetensors" for f in files):
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights to fingerprint")
    stat_key = json.dumps([FINGERPRINT_VERSION, *[[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]])
    memo_path = cache_root() / "fingerprints.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if stat_key in memo:
        return memo[stat_key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            if f.suffix == ".safetensors":  # u64 header length, JSON header, then the tensor bytes
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
                header.pop("__metadata__", None)
                h.update(json.dumps(header, sort_keys=True).encode())
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    digest = h.hexdigest()
    memo[stat_key] = digest
    atomic_write_text(memo_path, json.dumps(memo, indent=0))
    return digest


def settings_hash(task: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"task": task, "scoring_version": SCORING_VERSION, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def entry_path(model_fp: str, task: str, settings: dict[str, Any]) -> Path:
    return cache_root() / model_fp[:16] / f"{task}-{settings_hash(task, settings)[:12]}.json"


def load(model_fp: str, task: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The cached result, or None (missing or unreadable)."""
    try:
        return json.loads(entry_path(model_fp, task, settings).read_text())
    except (OSError, ValueError):
        return None


def store(model_fp: str, task: str, settings: dict[str, Any], result: dict[str, Any]) -> Path:
    path = entry_path(model_fp, task, settings)
    atomic_write_text(path, json.dumps(result, indent=1, default=str) + "\n")
    return path


def all_results(model_fp: str) -> list[dict[str, Any]]:
    """Every cached task result of one model (what the report card shows)."""
    out = []
    for f in sorted((cache_root() / model_fp[:16]).glob("*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return out
