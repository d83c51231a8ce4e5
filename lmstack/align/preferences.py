"""Preference data: (prompt, chosen, rejected) triples from a user JSONL file or built verifiably from a task.

User data: one JSON object per line with string fields `prompt`, `chosen` and `rejected` (extra fields are
ignored). A malformed line is an error naming the file and the 1-based line number; blank lines are skipped;
nothing else is dropped silently.

    {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"}

Embedded default (no download, no labels, no judge): problems from a `reasoning-gym` generator (`tasks.py`);
`chosen` is the oracle answer and `rejected` a near miss the task's own scorer marks wrong (off by one or ten,
digits swapped, sign flipped; `tasks.wrong_answer`). So every pair is right-versus-wrong by construction, and
"preference accuracy" on held-out pairs is "does the model put more probability on the right answer than on a
plausible wrong one". Training pairs come from the task's training problems, held-out pairs from its held-out
problems (`tasks.splits`), with a wrong answer drawn by `random.Random(seed)`.

`encode_pairs` renders pairs into padded rows (`batching.py`): chosen rows first, then rejected rows, so one
forward scores both halves of a batch.
Left out: multi-turn prompts, per-pair margins, ties, more than two ranked responses.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmstack.align.batching import Rows, completion_ids, pad_rows, prompt_ids
from lmstack.align.tasks import splits, wrong_answer

FIELDS = ("prompt", "chosen", "rejected")


@dataclass
class PreferencePair:
    prompt: str
    chosen: str  # the preferred completion
    rejected: str  # the dispreferred completion


def read_jsonl(path: str | Path) -> list[PreferencePair]:
    """Every pair of a JSONL file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"preference data not found: {path}")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{n}: expected an object with {', '.join(FIELDS)}, got {type(record).__name__}")
        for key in FIELDS:
            if key not in record:
                raise ValueError(f"{path}:{n}: missing field {key!r} (each line needs {', '.join(FIELDS)})")
            if not isinstance(record[key], str) or not record[key]:
                raise ValueError(f"{path}:{n}: field {key!r} must be a non-empty string, got {record[key]!r}")
        pairs.append(PreferencePair(record["prompt"], record["chosen"], record["rejected"]))
    if not pairs:
        raise ValueError(f"{path}: no preference pairs (expected JSON lines with {', '.join(FIELDS)})")
    return pairs


def task_pairs(task: str, n_train: int, n_eval: int, seed: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) right-vs-wrong pairs built from a verifiable task (see the module docstring)."""
    rng = random.Random(seed)
    train, held_out = splits(task, n_train, n_eval, seed)
    return [PreferencePair(p.question, p.answer, wrong_answer(p, rng)) for p in train], [
        PreferencePair(p.question, p.answer, wrong_answer(p, rng)) for p in held_out
    ]


def load_pairs(
    data: str, eval_data: str, eval_frac: float, task: str, n_train: int, n_eval: int, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """(train, held-out) pairs: a user file (held-out from `eval_data`, else a fixed `eval_frac` of `data`)
    or, when `data` is "", the embedded task pairs."""
    if not data:
        return task_pairs(task, n_train, n_eval, seed)
    pairs = read_jsonl(data)
    if eval_data:
        return pairs, read_jsonl(eval_data)
    order = random.Random(seed).sample(range(len(pairs)), len(pairs))
    k = int(round(eval_frac * len(pairs)))
    if k >= len(pairs):
        raise ValueError(f"--eval_frac={eval_frac} leaves no training pairs out of {len(pairs)} in {data}")
    return [pairs[i] for i in order[k:]], [pairs[i] for i in order[:k]]


def encode_pairs(tok: Any, pairs: list[PreferencePair], max_len: int = 0) -> Rows:
    """Rows for 2 N sequences: the N chosen completions, then the N rejected ones, each after its prompt."""
    prompts = [prompt_ids(tok, p.prompt) for p in pairs]
    completions = [completion_ids(tok, p.chosen) for p in pairs] + [completion_ids(tok, p.rejected) for p in pairs]
    return pad_rows(prompts + prompts, completions, max_len)


def select(rows: Rows, pair_indices: list[int]) -> Rows:
    """The chosen and rejected rows of some pairs out of `encode_pairs` rows, chosen first."""
    n = rows.input_ids.shape[0] // 2
    idx = torch.tensor(pair_indices + [n + i for i in pair_indices], dtype=torch.long)
    return Rows(rows.input_ids[idx], rows.positions[idx], rows.completion_mask[idx])
