"""Where a model save may write: the rules that keep `save_pretrained` and `convert` from destroying files.

    missing or empty directory   -> written; a missing one appears complete in one rename
    a previous lmstack save       -> its files are replaced (other files in it are kept)
    anything else (non-empty)     -> refused unless `overwrite=True` (`--overwrite`): then the model's files are
                                     written into it and every other file is kept
    not a directory               -> refused

A save never removes a file it did not write. The one cleanup it does: in a previous lmstack save, weight files
of the other layout (a single `model.safetensors` vs shards + index) are removed, so the directory never holds
two different models. An lmstack save is recognized by its weights' safetensors metadata (`saved_by` from
`save_pretrained`, `lmstack_gguf` from a GGUF conversion).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SAVED_BY = "lmstack"  # safetensors metadata {"saved_by": SAVED_BY} on every weight file we write
SINGLE, INDEX = "model.safetensors", "model.safetensors.index.json"
SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def weight_files(directory: Path) -> list[Path]:
    """The weight files of an HF directory: model.safetensors, or the index and the shards it names."""
    files = [directory / SINGLE] if (directory / SINGLE).is_file() else []
    if (directory / INDEX).is_file():
        files.append(directory / INDEX)
        try:
            shards = sorted(set(json.loads((directory / INDEX).read_text()).get("weight_map", {}).values()))
        except (json.JSONDecodeError, AttributeError):
            shards = []
        files += [directory / s for s in shards if (directory / s).is_file()]
    return files


def is_lmstack_save(directory: Path) -> bool:
    """True when `directory` holds a model written by lmstack (save_pretrained or a GGUF conversion)."""
    from safetensors import SafetensorError, safe_open

    weights = [f for f in weight_files(directory) if f.suffix == ".safetensors"]
    if not (directory / "config.json").is_file() or not weights:
        return False
    try:
        with safe_open(str(weights[0]), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError):
        return False
    return meta.get("saved_by") == SAVED_BY or "lmstack_gguf" in meta


def check_save_target(path: Path, overwrite: bool, flag: str = "path") -> bool:
    """Raise unless a model may be saved into `path` (rules above); return True if it holds an lmstack save."""
    if not path.exists():
        return False
    if not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a directory")
    if not any(path.iterdir()):
        return False
    if is_lmstack_save(path):
        return True
    if overwrite:
        return False
    raise ValueError(
        f"{flag} {path}: the directory is not empty and holds no lmstack model; choose an empty or new directory, "
        "or pass --overwrite to write the model's files into it (no other file is touched)"
    )


def remove_stale_weights(path: Path, written: set[str], ours: bool) -> None:
    """After a save into a previous lmstack save: drop weight files of the other layout (they would shadow or
    contradict the new ones). In a foreign directory nothing is removed; a leftover single file that would
    shadow new shards is an error instead."""
    stale = [
        f
        for f in weight_files(path)
        if f.name not in written and (f.name in (SINGLE, INDEX) or SHARD.fullmatch(f.name))
    ]
    if ours:
        for f in stale:
            f.unlink()
    elif INDEX in written and (path / SINGLE).exists():
        raise ValueError(f"{path / SINGLE} (not written by lmstack) would shadow the new shards; remove it first")
